"""Tests for the analyses on a linearization: decoding (pylin.readout), stable rank and Hutch++
(pylin.dimensionality), attribution (pylin.attribution), on the fake linearization of
tests/fake_linearization.py; then on tiny models of every family (tests/tiny_models.py) and on the real
Gemma 3 270M (marked realmodel, skipped without the package).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TOLERANCES
from fake_linearization import FakeLinearization, FakeModel

from pylin.attribution import attribute
from pylin.dimensionality import frobenius_sq, stable_rank
from pylin.emergence import emergence
from pylin.readout import show_token
from pylin.svd import subspace_angles, svd
from pylin.table import Table


@pytest.fixture(scope="module")
def planted() -> FakeLinearization:
    """A fake whose last block's top singular pair is planted in the vocabulary: the LM-head row of t7 is
    +u₁, that of t8 is −u₁, and the embedding of t3 is v₁."""
    f = FakeLinearization(n=4, d_in=96, d_out=80, rank=64, decay=0.85, dtype=torch.float32)
    top = svd(f, k=1, token=-1, method="exact")
    g = torch.Generator().manual_seed(1)
    lm = 0.05 * torch.randn(200, f.d_out, generator=g)
    emb = 0.05 * torch.randn(200, f.d_in, generator=g)
    lm[7], lm[8], emb[3] = 5 * top.U[:, 0], -5 * top.U[:, 0], 2 * top.Vh[0]
    f.model = FakeModel(lm, emb)
    return f


def test_decode_left_and_right(planted: FakeLinearization) -> None:
    table = svd(planted, k=3).decode(top=4)
    assert isinstance(table, Table) and len(table) == 3
    first = table[0]
    assert first["output_ids"][0] == 7 and first["output_neg_ids"][0] == 8
    assert first["input_ids"][0] == 3 and first["input_cos"][0] == pytest.approx(1.0, abs=1e-5)
    assert first["token_index"] == planted.n_tokens - 1 and first["i"] == 0
    text = str(table)
    assert "output_neg" in text and "t7" in text
    json.dumps(table.to_dicts())  # plain Python all the way down


def test_decode_stacked_and_concat(planted: FakeLinearization) -> None:
    every = svd(planted, k=2, token="all").decode(top=3)
    assert len(every) == 2 * planted.n_tokens
    assert every.column("token_index") == [j for j in range(planted.n_tokens) for _ in range(2)]
    cat = svd(planted, k=2, token="concat").decode()
    assert len(cat) == 2 and len(cat[0]["input"]) == planted.n_tokens


def test_table_formats() -> None:
    t = Table([{"a": 1, "b": [0.5, 2.0], "c": "x" * 80}], title="demo")
    out = str(t)
    assert out.splitlines()[0] == "demo" and "0.5, 2" in out and "…" in out
    assert t.to_dicts() == [{"a": 1, "b": [0.5, 2.0], "c": "x" * 80}]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            t.to_pandas()
    else:
        assert t.to_pandas().shape == (1, 3)
    assert show_token(" Golden") == "' Golden'" and show_token("a\nb") == "a\\nb"


@pytest.mark.parametrize("token", [-1, "all", "concat"])
def test_hutchpp_vs_exact(token: object) -> None:
    f = FakeLinearization(n=4, d_in=128, d_out=96, rank=80, decay=0.9)
    exact = frobenius_sq(f, token, method="exact")
    hpp = torch.stack([((frobenius_sq(f, token, seed=s) - exact).abs() / exact).max() for s in range(8)])
    hutch = torch.stack(
        [
            ((frobenius_sq(f, token, method="hutchinson", seed=s) - exact).abs() / exact).max()
            for s in range(8)
        ]
    )
    print(f"token={token!r}: Hutch++ mean rel error {hpp.mean():.3f}, Hutchinson {hutch.mean():.3f}")
    assert float(hpp.max()) < 0.1
    assert float(hpp.mean()) <= float(hutch.mean())  # the deflated part is exact: Hutch++ never loses here


def test_stable_rank() -> None:
    f = FakeLinearization(n=3, d_in=64, d_out=48, rank=40, decay=0.8)
    est, exact = stable_rank(f, "all"), stable_rank(f, "all", method="exact")
    assert est.method == "hutch++" and exact.method == "exact"
    for a, b in zip(est.value, exact.value, strict=True):
        assert a == pytest.approx(b, rel=0.05)
    J = f.J[:, -1, :]
    s = torch.linalg.svdvals(J)
    one = stable_rank(f, -1, method="exact")
    assert one.value == pytest.approx(float((s**2).sum() / s[0] ** 2), rel=1e-12)
    # Rank one: stable rank 1; reusing an SVD result for ‖J‖₂ gives the same answer.
    g = FakeLinearization(n=2, d_in=32, d_out=24, rank=1, noise=0.0)
    res = svd(g, k=2, token=-1)
    assert stable_rank(g, -1, svd_result=res).value == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match="method"):
        stable_rank(g, method="frobenius")
    with pytest.raises(ValueError, match="samples"):
        frobenius_sq(g, samples=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attribution_sums_to_y(dtype: torch.dtype) -> None:
    f = FakeLinearization(n=5, d_in=40, d_out=32, rank=20, dtype=dtype)
    att = attribute(f)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    assert att.reconstruction < tol
    assert torch.allclose(att.terms.double().sum(0), f.output.double(), rtol=tol, atol=tol)
    assert float(att.shares.sum()) == pytest.approx(1.0, abs=tol)
    for j in range(f.n_tokens):  # each term is J_j x*_j
        assert torch.allclose(att.terms[j], f.J[:, j, :] @ f.x[j], rtol=tol, atol=tol)
    assert att.logit_token is not None and att.logit is not None
    assert float(att.logit_contributions.sum()) == pytest.approx(att.logit, rel=tol, abs=tol)
    table = att.table()
    assert len(table) == 5 and "relative error" in table.title
    json.dumps(att.to_dict())


# ---- tiny models of every family, and the real Gemma 3 270M ----------------------------------------

TINY_PROMPT = [1, 7, 42, 99, 5, 250, 13]


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen3", "gemma3", "phi3", "olmo2"])
def tiny_lin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> object:
    from tiny_models import make_tiny_hf

    import pylin

    path, _ = make_tiny_hf(request.param, tmp_path_factory.mktemp(request.param))
    return pylin.load(path).linearize(TINY_PROMPT)


def test_tiny_svd_matches_exact(tiny_lin: object) -> None:
    # the defaults, and the matrix-free method explicitly (method="auto" may form every token's blocks
    # of a short prompt, which would make the comparison with "exact" trivial)
    for token in (-1, "all"):
        exact = svd(tiny_lin, k=8, token=token, method="exact")
        for method in ("auto", "krylov"):
            got = tiny_lin.svd(k=8, token=token, method=method)
            rel = float(((got.S - exact.S).abs() / exact.S).max())
            angle = float(subspace_angles(got, exact).max())
            print(f"{tiny_lin.model.arch} token={token!r} {method} ({got.method}): rel sv error {rel:.2e}, "
                  f"subspace angle {angle:.2e}")  # fmt: skip
            assert rel < TOLERANCES["svd_sigma"]


def test_tiny_attribution_and_decoding(tiny_lin: object) -> None:
    att = attribute(tiny_lin)
    assert att.reconstruction < 1e-5
    assert float(att.logit_contributions.sum()) == pytest.approx(att.logit, rel=1e-4, abs=1e-4)
    table = svd(tiny_lin, k=2, token=-1).decode(top=2)
    assert len(table) == 2 and table[0]["output"][0].startswith("<")  # no tokenizer: ids shown


def test_tiny_emergence(tmp_path: object) -> None:
    from tiny_models import make_tiny_hf

    import pylin

    path, _ = make_tiny_hf("llama", tmp_path)
    model = pylin.load(path)
    table = emergence(model, TINY_PROMPT, layers="all", k=3, show=2)
    assert len(table) == 3 * model.n_layers
    assert all(r["stable_rank"] >= 1.0 - 1e-6 for r in table.rows)
    layerwise = emergence(model, TINY_PROMPT, layers=[-1], components=["resid"], k=2, show=1, layerwise=True)
    assert layerwise[0]["wrt"] == f"blocks.{model.n_layers - 1}.resid_pre"
    with pytest.raises(ValueError, match="out of range"):
        emergence(model, TINY_PROMPT, layers=[99])


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_svd_attribution(gemma: object) -> None:
    lin = gemma.linearize("The bridge out of Marin is the")
    exact = svd(lin, k=8, token=-1, method="exact")
    got = lin.svd(k=8, token=-1)
    rel = float(((got.S - exact.S).abs() / exact.S).max())
    print(f"Gemma 3 270M last token: rel sv error {rel:.2e}, angle {float(subspace_angles(got, exact)):.2e}")
    assert rel < TOLERANCES["svd_sigma"]
    att = attribute(lin)
    print(att)
    assert att.reconstruction < 1e-5
    table = got.decode(lin)
    print(table)
    truth = exact.decode(lin)  # the same decoding of the exact SVD's vectors
    for row, ref in zip(table.rows[:3], truth.rows[:3], strict=True):  # σ1..σ3: well separated here
        assert row["output_ids"][:3] == ref["output_ids"][:3], (row["output"], ref["output"])
        assert row["input_ids"][:3] == ref["input_ids"][:3], (row["input"], ref["input"])
