"""Tests for pylin.svd: matrix-free top-k SVD (block Krylov, randomized subspace iteration) vs exact.

Runs on tests/fake_linearization.py (an explicit J behind the engine's interface); the same checks on
tiny models and the real Gemma 3 270M are in tests/test_analysis.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TOLERANCES
from fake_linearization import FakeLinearization

from pylin.svd import SVDResult, principal_angles, subspace_angles, svd

# Tolerances in one place: singular values relative to exact (the 1e-3 goal, with room to spare
# for the default settings), and the largest principal angle of the top-k subspaces (radians).
SV_REL = {torch.float32: 1e-4, torch.float64: 1e-8}
ANGLE = {torch.float32: 1e-2, torch.float64: 1e-3}


def _rel(a: SVDResult, b: SVDResult) -> float:
    return float(((a.S - b.S).abs() / b.S).max())


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["f32", "f64"])
def fake(request: pytest.FixtureRequest) -> FakeLinearization:
    return FakeLinearization(n=4, d_in=160, d_out=128, rank=96, decay=0.9, dtype=request.param)


@pytest.mark.parametrize("token", [-1, 0, [1, 3], "all", "concat"])
def test_krylov_matches_exact(fake: FakeLinearization, token: object) -> None:
    exact = svd(fake, k=8, token=token, method="exact")
    got = svd(fake, k=8, token=token, method="krylov")
    rel, angle = _rel(got, exact), float(subspace_angles(got, exact).max())
    print(f"token={token!r} {fake.dtype}: max rel sv error {rel:.2e}, max subspace angle {angle:.2e} rad")
    assert got.method == "krylov" and got.converged
    assert rel < SV_REL[fake.dtype]
    assert angle < ANGLE[fake.dtype]
    assert float(subspace_angles(got, exact, side="right").max()) < ANGLE[fake.dtype]


@pytest.mark.parametrize("token", [-1, "all"])
def test_randomized_matches_exact(fake: FakeLinearization, token: object) -> None:
    exact = svd(fake, k=8, token=token, method="exact")
    got = svd(fake, k=8, token=token, method="randomized")
    angle = float(subspace_angles(got, exact).max())
    print(f"randomized token={token!r}: rel {_rel(got, exact):.2e}, angle {angle:.2e}")
    assert _rel(got, exact) < TOLERANCES["svd_sigma"]
    assert got.iterations == 4 and got.n_jvp == 5 and got.n_vjp == 5


def test_shapes_and_orthonormality(fake: FakeLinearization) -> None:
    n, d_in, d_out, k = fake.n_tokens, fake.d_in, fake.d_out, 5
    one = svd(fake, k=k, token=-1)
    assert (one.U.shape, one.S.shape, one.Vh.shape, one.token, one.stacked) == (
        (d_out, k), (k,), (k, d_in), n - 1, False
    )  # fmt: skip
    every = svd(fake, k=k, token="all")
    assert (every.U.shape, every.S.shape, every.Vh.shape) == ((n, d_out, k), (n, k), (n, k, d_in))
    assert every.tokens == list(range(n)) and every.stacked
    cat = svd(fake, k=k, token="concat")
    assert cat.Vh.shape == (k, n * d_in) and cat.vh_blocks().shape == (k, n, d_in)
    eye = torch.eye(k, dtype=fake.dtype)
    tol = 1e-5 if fake.dtype == torch.float32 else 1e-12
    for res in (one, cat):
        assert torch.allclose(res.U.mT @ res.U, eye, atol=tol)
        assert torch.allclose(res.Vh @ res.Vh.mT, eye, atol=tol)
        assert bool((res.S[:-1] >= res.S[1:]).all())
    # Signs: each left singular vector points along y (the paper's convention for decoding).
    assert bool((one.U.mT @ fake.output >= 0).all())


def test_deterministic_for_a_seed(fake: FakeLinearization) -> None:
    for method in ("krylov", "randomized"):
        a = svd(fake, k=6, token="all", method=method, seed=3)
        b = svd(fake, k=6, token="all", method=method, seed=3)
        assert torch.equal(a.U, b.U) and torch.equal(a.S, b.S) and torch.equal(a.Vh, b.Vh)
    c = svd(
        fake, k=6, token="all", method="krylov", seed=4
    )  # another seed: another start, the same answer within tolerance
    assert float(((c.S - a.S).abs() / a.S).max()) < TOLERANCES["svd_sigma"]


def test_pass_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    # token="all": the first pass is ONE VJP batch serving every token; the later ones batch the tokens
    # into as few engine calls as the shared-pass row budget allows (block-diagonal tangents), each
    # with tokens=[...] so that causality lets the engine skip positions before the group's first.
    f = FakeLinearization(n=6, d_in=64, d_out=48, rank=40)
    res = svd(f, k=4, token="all", method="krylov", power_iters=1)
    assert f.calls[0] == ("vjp", res.block_size, 6)
    assert res.n_jvp == 2 and res.n_vjp == 2
    assert all(c[2] == 6 for c in f.calls[1:])  # small problem: every token in one call per pass
    assert len(f.calls) == 1 + (res.n_jvp + res.n_vjp - 1)
    exact = svd(f, k=4, token="all", method="exact")
    # a tiny budget forces one token per call: the same answer from many more, smaller calls
    monkeypatch.setattr("pylin.operators.SHARED_PASS_ROWS", 1)
    f.calls.clear()
    split = svd(f, k=4, token="all", method="krylov", power_iters=1)
    assert all(c[2] == 1 for c in f.calls[1:])
    assert len(f.calls) == 1 + 6 * (split.n_jvp + split.n_vjp - 1)
    assert torch.allclose(split.S, res.S, rtol=1e-10) and torch.allclose(res.S, exact.S, rtol=1e-3)
    f.calls.clear()
    svd(f, k=4, token=-1, method="krylov", power_iters=1)
    assert all(c[2] == 1 for c in f.calls) and len(f.calls) == 4


def test_rank_deficient_and_tiny_blocks() -> None:
    # J of rank 3 asked for k = 8: the Krylov space runs out; the basis must stay orthonormal.
    f = FakeLinearization(n=2, d_in=40, d_out=30, rank=3, noise=0.0)
    exact = svd(f, k=8, token=-1, method="exact")
    got = svd(f, k=8, token=-1)
    assert torch.allclose(got.S[:3], exact.S[:3], rtol=1e-10)
    assert float(got.S[3:].abs().max()) < 1e-10
    assert torch.allclose(got.U.mT @ got.U, torch.eye(8, dtype=f.dtype), atol=1e-10)
    # d_out = 1 (a single logit as the output site): one singular value, the block's norm.
    g = FakeLinearization(n=3, d_in=16, d_out=1, rank=1)
    one = svd(g, k=1, token=-1)
    assert torch.allclose(one.S[0], torch.linalg.vector_norm(g.J[:, -1, :]), rtol=1e-10)


def test_principal_angles() -> None:
    a = torch.eye(4, dtype=torch.float64)[:, :2]
    b = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 0.0, 1, 0])], dim=1).double()
    ang = principal_angles(a, b)
    assert torch.allclose(ang, torch.tensor([0.0, torch.pi / 2], dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(k=0), "k must be a positive integer"),
        (dict(k=500), "exceeds"),
        (dict(token=7), "out of range"),
        (dict(token="last"), "token must be"),
        (dict(token=[]), "empty"),
        (dict(token=[1, 1]), "repeat"),
        (dict(method="lanczos"), "method must be"),
        (dict(oversample=-1), "oversample"),
        (dict(power_iters=-2), "power_iters"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    f = FakeLinearization(n=3, d_in=16, d_out=12, rank=8)
    with pytest.raises(ValueError, match=message):
        svd(f, **kwargs)


def test_auto_forms_the_blocks_when_that_is_cheaper() -> None:
    # every token's block of a short prompt: d_out VJP rows per position beat ~16 passes of l vectors
    # over n²/2 positions; one token at the end, or the concatenated J, of a wide output: iterative wins
    f = FakeLinearization(n=6, d_in=64, d_out=512, rank=40)
    got, exact = svd(f, k=4, token="all"), svd(f, k=4, token="all", method="exact")
    assert got.method == "formed" and got.converged
    assert torch.allclose(got.S, exact.S, rtol=1e-6)
    assert float(subspace_angles(got, exact).max()) < 1e-3
    assert svd(f, k=4, token=-1).method == "krylov"
    assert svd(f, k=4, token="concat").method == "krylov"
