"""Tests for pylin.steer: the paper's Jacobian steering operator and constant-vector steering.

Unit tests on tests/fake_linearization.py (Δ_i = Σ_{k≤i} J[:, k mod n₀, :] e_k and its rescaling); then on
tiny models of tests/tiny_models.py: λ = 0 reproduces the unsteered greedy text, the steered residual after
layer ℓ differs from the unsteered one by exactly the added vector; and on the real Gemma 3 270M, the
concept's top decoded tokens gain logit under steering (measured and printed).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from fake_linearization import FakeLinearization

from pylin import steer


def _fake_model(lin: FakeLinearization, vocab: int = 50) -> SimpleNamespace:
    table = torch.randn(vocab, lin.d_in, generator=torch.Generator().manual_seed(5), dtype=lin.dtype)
    return SimpleNamespace(
        n_layers=4, d_model=lin.d_out, embed=lambda ids: table[torch.tensor(ids)], table=table
    )


def test_jacobian_operator_delta() -> None:
    lin = FakeLinearization(n=3, d_in=24, d_out=24, rank=12)
    model = _fake_model(lin)
    op = steer.JacobianOperator(lin, layer=1, concept="fake")
    tokens = [4, 9, 9, 2, 17]  # longer than the concept: positions wrap around k mod n₀
    E = model.table[torch.tensor(tokens)]
    expected = torch.stack([lin.J[:, k % 3, :] @ E[k] for k in range(len(tokens))]).cumsum(0)
    raw = op.raw_delta(model, tokens)
    assert torch.allclose(raw, expected, rtol=1e-12, atol=1e-12)
    lin.calls.clear()
    op.raw_delta(model, tokens + [3])  # a generated token: only its own term is computed
    assert lin.calls == [("jvp", 1, 3)]
    h = torch.randn(len(tokens), 24, dtype=lin.dtype)
    d = op.delta(model, tokens, h, strength=0.8)
    assert torch.allclose(d.norm(dim=1), 0.8 * h.norm(dim=1) / 2, rtol=1e-12)
    cos = torch.nn.functional.cosine_similarity(d, expected, dim=1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-12)
    assert torch.equal(op.delta(model, tokens, h, strength=0.0), torch.zeros_like(h))
    assert op.inject_layer == 2


def test_vector_operator_and_hook() -> None:
    lin = FakeLinearization(n=2, d_in=16, d_out=16, rank=8)
    model = _fake_model(lin)
    v = torch.randn(16, dtype=lin.dtype)
    op = steer.vector_operator(model, v, layer=0)
    trace: dict[str, torch.Tensor] = {}
    hook = op.hook(model, [1, 2, 3], strength=2.0, trace=trace)
    h = torch.randn(3, 16, dtype=lin.dtype)
    assert hook(0, h) is h  # other layers untouched
    out = hook(1, h)
    assert torch.allclose(out - h, trace["delta"], rtol=0, atol=1e-15)
    assert torch.allclose(trace["delta"].norm(dim=1), h.norm(dim=1), rtol=1e-12)  # λ = 2: ‖Δ‖ = ‖h‖


@pytest.mark.parametrize(
    ("layer", "message"), [(3, "out of range"), (-5, "out of range"), (1.5, "integer")]
)  # fmt: skip
def test_bad_layers(layer: object, message: str) -> None:
    lin = FakeLinearization(n=2, d_in=16, d_out=16, rank=8)
    with pytest.raises(ValueError, match=message):
        steer.vector_operator(_fake_model(lin), torch.zeros(16), layer)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="values"):
        steer.vector_operator(_fake_model(lin), torch.zeros(5), 0)


# ---- tiny models and the real Gemma 3 270M -------------------------------------------------------------

TINY_PROMPT = [1, 7, 42, 99, 5]


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> object:
    from tiny_models import make_tiny_hf

    import pylin

    path, _ = make_tiny_hf(request.param, tmp_path_factory.mktemp(request.param))
    return pylin.load(path)


def test_zero_strength_reproduces_greedy_text(tiny: object) -> None:
    op = steer.jacobian_operator(tiny, [1, 30, 60], layer=0)
    plain = steer.generate(tiny, TINY_PROMPT, max_new_tokens=5)
    zero = steer.generate(tiny, TINY_PROMPT, steer=op, strength=0.0, max_new_tokens=5)
    assert zero.new_tokens == plain.new_tokens
    assert plain.text == "".join(f"<{t}>" for t in plain.new_tokens)
    strong = steer.generate(tiny, TINY_PROMPT, steer=op, strength=4.0, max_new_tokens=5)
    print(f"{tiny.arch}: unsteered {plain.new_tokens}, steered (λ=4) {strong.new_tokens}")


def test_steered_residual_differs_by_exactly_delta(tiny: object) -> None:
    layer = tiny.n_layers - 2
    op = steer.jacobian_operator(tiny, [1, 30, 60, 90], layer=layer)
    trace: dict[str, torch.Tensor] = {}
    x = tiny.embed(TINY_PROMPT)
    base = tiny.forward(x, record=True)
    steered = tiny.forward(x, record=True, resid_hook=op.hook(tiny, TINY_PROMPT, 1.5, trace))
    before = base.layers[layer + 1].resid_pre
    after = steered.layers[layer + 1].resid_pre
    assert torch.equal(trace["h"], before)  # nothing upstream of the injection point changed
    assert torch.equal(after, before + trace["delta"])
    assert torch.allclose(trace["delta"].norm(dim=1), 1.5 * before.norm(dim=1) / 2, rtol=1e-5)
    vec = steer.singular_vector(tiny.linearize(TINY_PROMPT), index=1, layer=layer)
    assert vec.vector.shape == (tiny.d_model,) and vec.inject_layer == layer + 1


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_concept_tokens_gain_logit(gemma) -> None:
    from pylin.svd import svd

    model = gemma
    prompt = "I'm going to arizona to see the"
    op = steer.jacobian_operator(model, "The Golden", layer=model.n_layers // 2)
    concept = svd(op.lin, k=3, token=-1).decode(op.lin, top=5)
    ids = sorted({t for row in concept.rows for t in row["output_ids"]})
    base = steer.steered_logits(model, prompt)
    strength = 1.0
    steered = steer.steered_logits(model, prompt, op, strength)
    gain = steered[ids] - base[ids]
    words = [model.decode([t]) for t in ids]
    print(f"concept tokens {words}: mean logit gain {float(gain.mean()):+.3f} at λ = {strength}")
    print("per token:", {w: round(float(g), 3) for w, g in zip(words, gain, strict=True)})
    assert float(gain.mean()) > 0
    plain = model.generate(prompt, max_new_tokens=4)
    zero = steer.generate(model, prompt, steer=op, strength=0.0, max_new_tokens=4)
    assert zero.text == plain
