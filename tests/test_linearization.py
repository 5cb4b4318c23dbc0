"""The linearization engine against torch autograd, for every family, dtype and site.

The truths here are not pylin's: torch autograd differentiating the pure-PyTorch detached model on
dequantized weights (pylin.reference), and the identities of docs/linearization.md.
"""

from __future__ import annotations

import pytest
import torch
from conftest import engine_tolerance
from tiny_models import FAMILIES, make_tiny_hf

import pylin
from pylin import reference

# autograd and pylin sum in different orders: float32 agreement is limited by rounding, not method
PROMPT = [2, 17, 5, 33, 8, 21, 11]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_path(request, tmp_path_factory):
    path, _ = make_tiny_hf(request.param, tmp_path_factory.mktemp(request.param))
    return path


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["f32", "f64"])
def model(request, tiny_path):
    return pylin.load(tiny_path, dtype="float32" if request.param == torch.float32 else "float64")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def sites(model) -> list[tuple[str, str, bool]]:
    last = model.n_layers - 1
    return [
        ("final", "embed", False),
        ("logit:7", "embed", False),
        (f"blocks.{last}.resid_post", "embed", True),
        ("blocks.0.attn_out", "embed", False),
        ("blocks.0.mlp_out", "embed", True),
        (f"blocks.{last}.resid_post", f"blocks.{last}.resid_pre", False),
        ("final", "blocks.1.resid_pre", False),
    ]


def test_reconstruction_every_site(model):
    for output, wrt, normed in sites(model):
        lin = model.linearize(PROMPT, output=output, wrt=wrt, normed=normed)
        rec = lin.reconstruction()
        assert rec.rel_error <= engine_tolerance(model.dtype), (output, wrt, normed, rec)
        J = lin.jacobian()
        assert lin.reconstruction().method == "jacobian"
        assert lin.reconstruction().rel_error <= 10 * engine_tolerance(model.dtype), (output, wrt)
        assert J.shape == (lin.d_out, len(PROMPT), model.d_model)


def test_jacobian_matches_autograd(model):
    for output, wrt, normed in sites(model):
        lin = model.linearize(PROMPT, output=output, wrt=wrt, normed=normed)
        ref = reference.jacobian(model, PROMPT, output=output, wrt=wrt, normed=normed, detach=True)
        assert rel(lin.jacobian(), ref) <= engine_tolerance(model.dtype, "jacobian"), (output, wrt, normed)


def test_jvp_vjp_match_autograd_and_are_adjoint(model):
    gen = torch.Generator().manual_seed(0)
    lin = model.linearize(PROMPT)
    V = torch.randn(5, len(PROMPT), model.d_model, generator=gen, dtype=model.dtype)
    U = torch.randn(3, lin.d_out, generator=gen, dtype=model.dtype)
    ref_jvp, ref_vjp = reference.jvp_vjp(model, PROMPT, V, U)
    assert rel(lin.jvp(V), ref_jvp) <= engine_tolerance(model.dtype, "jacobian")
    assert rel(lin.vjp(U), ref_vjp) <= engine_tolerance(model.dtype, "jacobian")
    lhs = torch.einsum("bo,co->bc", lin.jvp(V).double(), U.double())
    rhs = torch.einsum("bnd,cnd->bc", V.double(), lin.vjp(U).double())
    assert rel(lhs, rhs) <= 10 * engine_tolerance(model.dtype)


def test_token_subsets_use_causality_and_agree(model):
    lin = model.linearize(PROMPT)
    gen = torch.Generator().manual_seed(1)
    J = lin.jacobian()
    for tokens in ([len(PROMPT) - 1], [2, 4], [0, 6]):
        assert rel(lin.jacobian(tokens=tokens), J[:, tokens]) <= engine_tolerance(model.dtype, "jacobian")
        V = torch.randn(4, len(tokens), model.d_model, generator=gen, dtype=model.dtype)
        full = torch.zeros(4, len(PROMPT), model.d_model, dtype=model.dtype)
        full[:, tokens] = V
        assert rel(lin.jvp(V, tokens=tokens), lin.jvp(full)) <= engine_tolerance(model.dtype, "jacobian")


def test_causality(model):
    """A tangent on a later token never reaches an earlier position (autograd on the detached model)."""
    n = len(PROMPT)
    lin_prefix = model.linearize(PROMPT[:4])
    lin_full = model.linearize(PROMPT)
    # the frozen state of the first 4 positions does not depend on later tokens
    for a, b in zip(lin_prefix.records, lin_full.records, strict=True):
        assert rel(a.resid_post, b.resid_post[:4]) <= engine_tolerance(model.dtype)
    # the last token's block of the last position needs only that position: J_n is the same
    # whether computed alone or inside the whole Jacobian
    assert rel(lin_full.jacobian(tokens=[n - 1])[:, 0], lin_full.jacobian()[:, n - 1]) <= engine_tolerance(
        model.dtype, "jacobian"
    )


def test_frozen_forward_equals_model_logits(model):
    lin = model.linearize(PROMPT)
    logits = model.logits(PROMPT)[-1]
    assert rel(lin.logits, logits) <= engine_tolerance(model.dtype)
    assert lin.next_token[0] == int(torch.argmax(logits))


def test_nonlinear_jacobian_does_not_reconstruct(model):
    lin = model.linearize(PROMPT)
    detached = lin.reconstruction().rel_error
    Jn = lin.nonlinear_jacobian()
    nonlinear = float((torch.einsum("onj,nj->o", Jn, lin.x) - lin.output).norm() / lin.output.norm())
    print(f"{model.arch} {model.dtype}: detached {detached:.2e}, nonlinear {nonlinear:.2e}")
    assert nonlinear > 1e3 * max(detached, 1e-15)
    assert nonlinear > 1e-3


def test_memory_budget_chunks_give_same_result(model):
    lin = model.linearize(PROMPT, memory_budget=1)  # one vector per chunk
    big = model.linearize(PROMPT)
    U = torch.randn(5, lin.d_out, dtype=model.dtype, generator=torch.Generator().manual_seed(2))
    assert torch.equal(lin.vjp(U), big.vjp(U)) or rel(lin.vjp(U), big.vjp(U)) <= engine_tolerance(model.dtype)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"output": "blocks.0.resid_middle"}, "unknown output site"),
        ({"output": "blocks.99.resid_post"}, "out of range"),
        ({"output": "logit:-1"}, "outside the vocabulary"),
        ({"wrt": "blocks.x.resid_pre"}, "unknown input site"),
        ({"wrt": "blocks.1.resid_pre", "output": "blocks.0.attn_out"}, "starts after"),
        ({"memory_budget": "lots"}, "memory size"),
    ],
)
def test_bad_sites(tiny_path, kwargs, match):
    model = pylin.load(tiny_path)
    with pytest.raises(ValueError, match=match):
        model.linearize(PROMPT, **kwargs)


def test_bad_tangents_and_prompts(tiny_path):
    model = pylin.load(tiny_path)
    lin = model.linearize(PROMPT)
    with pytest.raises(ValueError, match="shape"):
        lin.jvp(torch.zeros(2, 3, model.d_model))
    with pytest.raises(ValueError, match="dtype"):
        lin.jvp(torch.zeros(2, len(PROMPT), model.d_model, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        lin.vjp(torch.zeros(2, model.d_model + 1))
    with pytest.raises(ValueError, match="out of range"):
        lin.vjp(torch.zeros(1, model.d_model), tokens=[len(PROMPT)])
    with pytest.raises(ValueError, match="empty"):
        model.linearize("")
    with pytest.raises(ValueError, match="no tokens"):
        model.linearize([])


def test_at_reuses_the_frozen_state(model):
    base = model.linearize(PROMPT)
    for output, wrt, normed in sites(model):
        moved = base.at(output=output, wrt=wrt, normed=normed)
        fresh = model.linearize(PROMPT, output=output, wrt=wrt, normed=normed)
        assert moved.forward_result is base.forward_result
        assert torch.equal(moved.output, fresh.output) and torch.equal(moved.x, fresh.x)
        U = torch.ones(1, moved.d_out, dtype=model.dtype)
        assert torch.equal(moved.vjp(U), fresh.vjp(U))
