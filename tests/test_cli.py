"""Tests for the `pylin` command line (pylin.cli, pylin.report, pylin.figures): bad arguments end in one
line and exit status 2; `info` reads a GGUF header; `analyze` on a tiny model and on the real Gemma 3 270M
writes report.json, the PNG figures and a self-contained report.html, all valid and non-empty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OUTSIDE_SOURCE_TREE

import pylin
from pylin.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "--text", "hi", "--k", "0"],
        ["analyze", "--text", "   "],
        ["analyze", "--text", "hi", "--dtype", "float16"],
        ["analyze", "/no/such/model.gguf", "--text", "hi"],
        ["steer", "--concept", "x"],
        ["steer", "--concept", "x", "--prompt", "y", "--layer", "two"],
        ["steer", "--concept", "x", "--prompt", "y", "--layer", "1", "--strength", "nan"],
        ["info", "/no/such/file.gguf"],
        ["frobnicate"],
        [],
    ],
)
def test_bad_arguments_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("pylin: error: "), err


def test_python_dash_m_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pylin", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=OUTSIDE_SOURCE_TREE,
    )
    assert "analyze" in out.stdout and "steer" in out.stdout and "info" in out.stdout


def _check_report(out: Path, nonlinear: bool) -> dict:
    data = json.loads((out / "report.json").read_text())
    assert (
        data["tokens"] and data["svd"]["singular_values"] and data["decoded"] and data["attribution"]["rows"]
    )
    assert data["reconstruction"]["detached"]["rel_error"] < 1e-4
    assert (data["reconstruction"]["nonlinear"] is not None) == nonlinear
    assert set(data["figures"]) >= {"reconstruction", "spectra", "decoded", "attribution"}
    for name in data["figures"].values():
        blob = (out / name).read_bytes()
        assert blob.startswith(PNG_MAGIC) and len(blob) > 1000
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert html.count("data:image/png;base64,") == len(data["figures"]) and "<table>" in html
    assert "http://" not in html and "https://" not in html.replace("arXiv", "")  # self-contained
    return data


def test_analyze_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tiny_models import make_tiny_hf

    path, _ = make_tiny_hf("qwen3", tmp_path / "model")
    # No tokenizer in a tiny checkpoint: the CLI reports that as a bad argument, in one line.
    assert main(["analyze", str(path), "--text", "hello", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "tokenizer" in capsys.readouterr().err

    import pylin
    from pylin.report import analyze

    model = pylin.load(path)
    analyze(model, [1, 5, 9, 17, 33], k=4, layers="all", out=tmp_path / "rep", progress=False)
    data = _check_report(tmp_path / "rep", nonlinear=True)
    assert len(data["layers"]) == 3 * model.n_layers and "emergence" in data["figures"]
    assert (
        data["reconstruction"]["nonlinear"]["rel_error"]
        > 100 * data["reconstruction"]["detached"]["rel_error"]
    )


@pytest.mark.realmodel
def test_info_real_model(gemma_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", gemma_path, "--tokens", "8,128"]) == 0
    out = capsys.readouterr().out
    assert "gemma3" in out and "Q4_K" in out and "block_count" in out and "128 tokens" in out
    assert main(["info", gemma_path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["config"]["embedding_length"] == 640
        and info["memory"]["32"]["full_jacobian"] == 640 * 32 * 640 * 4
    )


@pytest.mark.realmodel
@pytest.mark.slow
def test_analyze_real_model(gemma_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["analyze", gemma_path, "--text", "The bridge out of Marin is the", "--k", "4", "--tokens", "-1",
            "--layers", "0,17", "--nonlinear", "off", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    print(capsys.readouterr().out)
    data = _check_report(tmp_path, nonlinear=False)
    assert data["prediction"]["token"] and len(data["layers"]) == 6


def test_info_without_model_prints_the_build(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    build = pylin.build_info()
    assert {k: info[k] for k in build} == build and info["demo_model"] == pylin.default_model_path()
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"active {info['isa_active']}" in text and "demo model" in text


def test_import_from_a_source_tree_without_native_module(tmp_path: Path) -> None:
    """A checkout with no built _core: one ImportError saying what happened, not a circular import."""
    (tmp_path / "CMakeLists.txt").write_text("# a source tree\n")
    shutil.copytree(Path(pylin.__file__).parent, tmp_path / "pylin", ignore=shutil.ignore_patterns("*.so"))
    done = subprocess.run(
        [sys.executable, "-c", "import pylin"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("ImportError: pylin is being imported from its source tree")
        and "pip install -e" in last
    )
