"""pylin.steer.sweep and `pylin steer --sweep` / the steer flags, and the seed's figures.

The λ = 0 cell must reproduce the unsteered text exactly with a gain of exactly zero (Δ = 0 adds nothing);
every gain is finite; distinct-n is a fraction; the relative gain is the raw gain minus the uniform shift.
On the real Gemma 3 270M the sweep is run and printed (the measurement docs/steering.md reports), with the
same structural checks only: whether steering injects the concept there is a finding, not a test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny_hf, write_tiny_gguf

import pylin
from pylin import figures, steer
from pylin.cli import main
from pylin.emergence import trajectory
from pylin.steer_sweep import concept_token_ids, distinct_n

TINY_PROMPT = [1, 7, 42, 99, 5]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    _, hf = make_tiny_hf("gemma3", root)
    path = root / "gemma3-vocab.gguf"
    write_tiny_gguf(hf, "gemma3", path, vocab=True)
    return path


def _check_cells(grid: object, strengths: list[float]) -> None:
    assert len(grid.cells) == len({c["layer"] for c in grid.cells}) * len(strengths)
    for c in grid.cells:
        assert 0.0 <= c["distinct"] <= 1.0
        assert all(math.isfinite(c[k]) for k in ("gain_relative", "gain_raw", "gain_uniform")), c
        assert c["gain_relative"] == pytest.approx(c["gain_raw"] - c["gain_uniform"], abs=1e-9)
        if c["strength"] == 0:
            assert c["text"] == grid.unsteered
            assert c["gain_raw"] == 0.0 and c["gain_uniform"] == 0.0 and c["gain_relative"] == 0.0


def test_distinct_n() -> None:
    assert distinct_n([1, 2, 3, 4]) == 1.0
    assert distinct_n([5, 5, 5, 5, 5]) == 0.25  # four bigrams, one distinct
    assert distinct_n([7]) == 1.0
    assert distinct_n([1, 2, 1, 2, 1], n=1) == pytest.approx(2 / 5)


def test_sweep_tiny(tiny_gguf: Path, tmp_path: Path) -> None:
    model = pylin.load(tiny_gguf)
    strengths = [0.0, 0.5, 4.0]
    grid = steer.sweep(model, "the cat", "the dog", layers=[0, 1], strengths=strengths, max_new_tokens=6)
    _check_cells(grid, strengths)
    assert [c["layer"] for c in grid.cells] == [0, 0, 0, 1, 1, 1]
    assert grid.concept_tokens[0] and grid.concept_tokens[1]
    made = grid.write(tmp_path)
    data = json.loads(made["json"].read_text())
    assert len(data["cells"]) == 6 and data["unsteered"] == grid.unsteered
    if figures.available():
        assert made["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gain_relative" in str(grid.table())
    with pytest.raises(ValueError, match="finite"):
        steer.sweep(model, "the cat", "the dog", layers=[0], strengths=[float("nan")])
    op = steer.jacobian_operator(model, "the dog", 0)
    assert (
        concept_token_ids(op) == torch.topk(op.lin.logits, 5).indices.tolist()
    )  # "next": its own prediction
    svd_ids = concept_token_ids(op, k=2, top=3, source="svd")
    assert 3 <= len(svd_ids) <= 6 and len(set(svd_ids)) == len(svd_ids)
    with pytest.raises(ValueError, match="concept tokens"):
        concept_token_ids(op, source="logits")


def test_steer_cli_flags_and_sweep(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["steer", str(tiny_gguf), "--concept", "the dog", "--prompt", "the cat", "--max-new-tokens", "4",
            "--no-progress"]  # fmt: skip
    assert main(base) == 0  # no --layer: the seed's default 2N/3 − 1
    out = capsys.readouterr().out
    assert f"J of block {steer.default_layer(pylin.load(tiny_gguf))}'s output" in out
    assert main([*base, "--layer", "0", "--inject", "after", "--skip-bos", "--no-cache"]) == 0
    assert "into block 1's input" in capsys.readouterr().out
    sweep_out = tmp_path / "sweep"
    argv = [*base, "--sweep", "--layers", "0,1", "--strengths", "0,1", "--out", str(sweep_out)]
    assert main(argv) == 0
    assert "gain_relative" in capsys.readouterr().out
    assert len(json.loads((sweep_out / "sweep.json").read_text())["cells"]) == 4
    assert main([*base, "--sweep", "--strengths", "a,b"]) == 2
    assert main([*base, "--layer", "-1", "--inject", "after"]) == 2  # no block after the last
    assert capsys.readouterr().err.count("\n") == 2


def test_seed_figures(tiny_gguf: Path, tmp_path: Path) -> None:
    model = pylin.load(tiny_gguf, dtype="float64")
    path = trajectory(model, TINY_PROMPT)
    assert path["layers"] == list(range(model.n_layers)) and len(path["points"]) == model.n_layers
    assert path["points"][-1] == pytest.approx([1.0, 1.0, 1.0])  # the last layer on itself
    assert all(abs(v) <= 1 + 1e-9 for p in path["points"] for v in p)
    if not figures.available():
        pytest.skip("matplotlib not installed")
    figures.save(
        figures.concept_trajectory(path["layers"], path["vectors"], path["labels"]), tmp_path / "t.png"
    )
    lin = model.linearize(TINY_PROMPT)
    J = lin.jacobian(tokens=[0])[:, 0]
    figures.save(figures.jacobian_image(J, torch.linalg.svdvals(J)[:16]), tmp_path / "j.png")
    assert (tmp_path / "t.png").stat().st_size > 0 and (tmp_path / "j.png").stat().st_size > 0


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gemma_sweep(gemma) -> None:
    strengths = [0.0, 0.2, 0.5]
    layers = [6, steer.default_layer(gemma)]
    grid = steer.sweep(gemma, "I went to new york to see the", "The bridge out of Marin is the Golden",
                       layers=layers, strengths=strengths, max_new_tokens=16)  # fmt: skip
    print(grid.table())
    _check_cells(grid, strengths)


def test_steer_cli_writes_the_steering_report(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    argv = ["steer", str(tiny_gguf), "--concept", "the dog", "--prompt", "the cat", "--max-new-tokens", "4",
            "--layer", "0", "--strength", "2", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    section = json.loads((out / "report.json").read_text())["steering"]
    assert section["layer"] == section["inject_layer"] == 0 and section["strength"] == 2.0
    assert f"steered:   {section['prompt']}{section['steered']}" in printed
    assert (out / "report.html").stat().st_size > 0
    assert main([*argv[:-1], str(out / "report.json")]) == 2  # --out is a file


def test_generation_and_linearization_notebook_views(tiny_gguf: Path) -> None:
    model = pylin.load(tiny_gguf)
    op = steer.jacobian_operator(model, "the dog", 0)
    gen = steer.generate(model, "the cat", steer=op, strength=1.0, max_new_tokens=3)
    html = gen._repr_html_()
    assert "λ = 1" in html and html.startswith("<div")
    lin = model.linearize("the cat")
    view = lin.report(k=2, layers="none", progress=False)
    assert view.data["tokens"] == lin.tokens and view._repr_html_().startswith("<iframe srcdoc=")
