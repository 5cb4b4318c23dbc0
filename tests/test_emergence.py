"""Emergence and dimensionality as the seed computes them (JacobianAnalyzer.compute_jacobian_layers_svd with
tokens_combined=True, compute_jacobian_svd's sign and decoding, plot_dimensionality's stable rank,
transform_to_output), each written out here from torch autograd's float64 Jacobian of the detached model
(pylin.reference) on tiny models, and compared with pylin.emergence's rows; Hutch++'s error bar where J
is never formed, on tests/fake_linearization.py.
"""

from __future__ import annotations

import pytest
import torch
from fake_linearization import FakeLinearization
from tiny_models import make_tiny_hf

import pylin
from pylin import reference
from pylin.dimensionality import stable_rank
from pylin.emergence import emergence, parse_layer_token
from pylin.svd import svd

PROMPT = [2, 17, 5, 33, 8, 21, 11]
SEED_SITE = {"resid": "resid_post", "attn": "attn_pre_norm", "mlp": "mlp_pre_norm"}


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def model(request, tmp_path_factory):
    path, _ = make_tiny_hf(request.param, tmp_path_factory.mktemp(request.param))
    return pylin.load(path, dtype="float64")


def _head(model) -> torch.Tensor:
    return torch.from_numpy(model.weights.lm_head.dequantize()).double()


def _seed_decode(model, u: torch.Tensor, y: torch.Tensor, top: int) -> list[int]:
    """compute_jacobian_svd: usign = sign(ŷ·u) for the model's output y; tokens argsort(−usign·W u)[:top]."""
    usign = torch.sign(y / y.norm() @ u)
    return torch.argsort(-usign * (_head(model) @ u))[:top].tolist()


def test_concatenated_layer_svd_as_the_seed(model) -> None:
    table = emergence(model, PROMPT, layers="all", k=3, show=2, top=3)
    y = reference.site_function(model, "final")(reference.site_input(model, PROMPT)).detach()
    post_norms = model.weights.layers[0].post_attn_norm is not None
    for row in table.rows:
        kind = SEED_SITE[row["component"]] if post_norms else row["site"].split(".")[-1]
        assert row["site"] == f"blocks.{row['layer']}.{kind}"
        J = reference.jacobian(model, PROMPT, output=row["site"], normed=True, dtype=torch.float64)
        M = J.reshape(J.shape[0], -1)  # tokens_combined: (d, n·d)
        U, S, _ = torch.linalg.svd(M, full_matrices=False)
        assert row["token_index"] == "concat"
        assert row["sigma"] == pytest.approx(S[:3].tolist(), rel=1e-6)
        # plot_dimensionality: np.sum(J**2) / max(σ)² of the concatenated J, exact since J was formed
        # (‖J‖_F² exact; σ₁ from block Krylov on the formed J, converged far below its 1e-4 tolerance)
        assert row["stable_rank"] == pytest.approx(float(M.square().sum() / S[0] ** 2), rel=1e-6)
        assert row["stable_rank_stderr"] == 0.0 and row["stable_rank_method"].startswith("exact")
        for a in range(2):
            assert row[f"u{a}_ids"] == _seed_decode(model, U[:, a], y, 3), (row["site"], a)


def test_last_token_and_post_norm_options(model) -> None:
    last = emergence(model, PROMPT, layers=[-1], components=["attn"], k=2, show=1, token="last",
                     branches="post_norm")  # fmt: skip
    row = last[0]
    assert row["site"] == f"blocks.{model.n_layers - 1}.attn_out" and row["token_index"] == len(PROMPT) - 1
    J = reference.jacobian(model, PROMPT, output=row["site"], normed=True, dtype=torch.float64)[:, -1]
    assert row["sigma"] == pytest.approx(torch.linalg.svdvals(J)[:2].tolist(), rel=1e-6)
    assert parse_layer_token("concat") == "concat" and parse_layer_token("last") == -1
    with pytest.raises(ValueError, match="layer token"):
        parse_layer_token("first")


def test_transform_to_output_as_the_seed(model) -> None:
    """compute_jacobian_svd(transform_to_output=True): the un-normed layer J's U mapped by the Jacobian from
    the next block's input to the output, at the token's own position, then signed and decoded."""
    layer = 0
    row = emergence(model, PROMPT, layers=[layer], components=["resid"], k=2, show=2, top=3,
                    transform_to_output=True)[0]  # fmt: skip
    assert row["transformed_to_output"] and not row["normed"]
    J = reference.jacobian(model, PROMPT, output=f"blocks.{layer}.resid_post", dtype=torch.float64)
    U, _, _ = torch.linalg.svd(J.reshape(J.shape[0], -1), full_matrices=False)
    J_end = reference.jacobian(model, PROMPT, output="final", wrt=f"blocks.{layer + 1}.resid_pre",
                               dtype=torch.float64)[:, -1]  # fmt: skip
    y = reference.site_function(model, "final")(reference.site_input(model, PROMPT)).detach()
    for a in range(2):
        assert row[f"u{a}_ids"] == _seed_decode(model, J_end @ U[:, a], y, 3)


def test_hutchpp_error_bar_only_when_j_is_not_formed() -> None:
    f = FakeLinearization(n=4, d_in=96, d_out=64, rank=50, decay=0.9)
    exact = stable_rank(f, "concat", method="exact")
    krylov = svd(f, k=2, token="concat", method="krylov")
    est = stable_rank(f, "concat", svd_result=krylov)
    assert est.method == "hutch++" and est.stderr > 0
    assert abs(est.value - exact.value) <= 4 * est.stderr  # the error bar covers the truth
    assert "±" in str(est)
    formed = svd(f, k=2, token="concat", method="exact")
    again = stable_rank(f, "concat", svd_result=formed)
    assert again.stderr == 0.0 and again.value == pytest.approx(exact.value, rel=1e-9)


def test_analyze_layer_token_flag(tmp_path) -> None:
    import json

    from tiny_models import write_tiny_gguf

    from pylin.cli import main

    _, hf = make_tiny_hf("olmo2", tmp_path / "hf")
    path = tmp_path / "olmo2-vocab.gguf"
    write_tiny_gguf(hf, "olmo2", path, vocab=True)
    for flag, expected in ((None, "concat"), ("last", None)):
        out = tmp_path / f"report-{flag}"
        argv = ["analyze", str(path), "--text", "the cat sat", "--layers", "all", "--k", "3",
                "--out", str(out), "--nonlinear", "off", "--no-progress"]  # fmt: skip
        assert main(argv + ([] if flag is None else ["--layer-token", flag])) == 0
        data = json.loads((out / "report.json").read_text())
        n = len(data["tokens"])
        assert {r["token_index"] for r in data["layers"]} == {expected if expected else n - 1}
        assert {r["site"].split(".")[-1] for r in data["layers"]} == {
            "resid_post",
            "attn_pre_norm",
            "mlp_pre_norm",
        }
    assert (
        main(
            [
                "analyze",
                str(path),
                "--text",
                "the cat",
                "--layer-token",
                "first",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
