"""Tests for `pylin batch` with the local engine (pylin.batch): prompt files in every format and their
errors naming the line, rows equal to pylin.report.analyze's numbers, per-row arrays, bad prompts as
error rows, the cross-model table, report.html in a real browser, reruns that skip what is done, a
process killed between shards and resumed, a corrupt shard, a busy folder, steering, the CLI, and the
real Gemma 3 270M.  The Ray engine: tests/test_batch_ray.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_helpers import EMPTY, PROMPTS, TINY_SETTINGS, TOO_LONG, comparable, tiny_gguf, write_jsonl
from conftest import OUTSIDE_SOURCE_TREE

import pylin
import pylin.batch
from pylin.batch import PromptFileError, read_prompts
from pylin.batch.rows import RUN_COLUMNS
from pylin.cli import main

BASE_SETTINGS = {**TINY_SETTINGS, "layers": "all"}  # both layers: the report's stable rank by layer


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    return [tiny_gguf(root / "a", seed=0), tiny_gguf(root / "b", seed=1)]


@pytest.fixture(scope="module")
def base(models: list[Path], tmp_path_factory: pytest.TempPathFactory) -> pylin.batch.BatchResult:
    """Two tiny models × (4 prompts + an empty one + one longer than the context), with arrays."""
    root = tmp_path_factory.mktemp("base")
    prompts = write_jsonl(root / "prompts.jsonl", [*PROMPTS, EMPTY, TOO_LONG])
    return pylin.batch.run(models, prompts, out=root / "out", arrays=True, progress=False, **BASE_SETTINGS)


# ---- prompt files ---------------------------------------------------------------------------------------


def test_prompt_file_formats(tmp_path: Path) -> None:
    jsonl = read_prompts(write_jsonl(tmp_path / "p.jsonl", PROMPTS))
    pq.write_table(
        pa.Table.from_pylist([{**p, "level": p.get("level")} for p in PROMPTS]), tmp_path / "p.parquet"
    )
    parquet = read_prompts(tmp_path / "p.parquet")
    lines = ["id,prompt,topic"] + [f'{p["id"]},"{p["prompt"]}",{p["topic"]}' for p in PROMPTS]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    csv = read_prompts(tmp_path / "p.csv")
    (tmp_path / "p.txt").write_text(
        "\n".join(p["prompt"] for p in PROMPTS[:2]) + "\n\n" + PROMPTS[2]["prompt"] + "\n"
    )
    txt = read_prompts(tmp_path / "p.txt")
    for got in (jsonl, parquet, csv):
        assert [(p.id, p.text, p.index) for p in got] == [
            (p["id"], p["prompt"], i) for i, p in enumerate(PROMPTS)
        ]
        assert [p.metadata["topic"] for p in got] == [p["topic"] for p in PROMPTS]
    assert jsonl[2].metadata == {"topic": "travel", "level": 2} and parquet[2].metadata["level"] == 2
    # .txt: one prompt a line, blank lines skipped, the id is the line number
    assert [(p.id, p.text) for p in txt] == [
        ("1", PROMPTS[0]["prompt"]),
        ("2", PROMPTS[1]["prompt"]),
        ("4", PROMPTS[2]["prompt"]),
    ]


BAD_FILES = [
    ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"\n', "p.jsonl:3: not valid JSON"),
    ("p.jsonl", '{"prompt": "a"}\n["b"]\n', "p.jsonl:2: expected a JSON object"),
    ("p.jsonl", '{"prompt": "a"}\n\n{"text": "b"}\n', "p.jsonl:3: no 'prompt' field"),
    ("p.jsonl", '{"prompt": 7}\n', "p.jsonl:1: 'prompt' must be a string"),
    ("p.jsonl", '{"prompt": "a", "id": 1.5}\n', "p.jsonl:1: 'id' must be"),
    ("p.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', "p.jsonl:2: id 'x' repeats"),
    ("p.csv", "text,id\nhello,1\n", "p.csv:1: the header has no 'prompt' column"),
    ("p.csv", "prompt,id\nhello,1\nworld,2,extra\n", "p.csv:3: 3 cells"),
    ("p.txt", b"fine\n\xff\xfe bad\n", "p.txt:2: not UTF-8"),
    ("p.yaml", "prompt: a\n", "unknown prompt file type '.yaml'"),
    ("p.parquet", "not parquet", "not a readable parquet file"),
    ("p.jsonl", "\n\n", "no prompts in the file"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_malformed_prompt_file(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PromptFileError, match=None) as info:
        read_prompts(path)
    assert message in str(info.value)


def test_malformed_prompt_file_cli(
    tmp_path: Path, models: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b",}\n')
    assert (
        main(["batch", str(models[0]), "--prompts", str(bad), "--out", str(tmp_path / "o"), "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and err.startswith("pylin: error: ") and "p.jsonl:2: not valid JSON" in err
    )


# ---- the rows ----------------------------------------------------------------------------------------------


def test_rows(base: pylin.batch.BatchResult, models: list[Path]) -> None:
    table = pylin.batch.read_results(base.out)
    assert base.computed == table.num_rows == 12 and base.errors == 4 and base.skipped == 0
    assert table.schema.names[: len(pylin.batch.SCHEMA)] == pylin.batch.SCHEMA.names
    rows = table.to_pylist()
    assert len({r["key"] for r in rows}) == 12
    assert [r["model"] for r in rows] == [m.name for m in models for _ in range(6)]
    assert [r["id"] for r in rows[:6]] == ["p1", "p2", "p3", "p4", "empty", "long"]
    assert [r["meta_topic"] for r in rows[:6]] == [p["topic"] for p in [*PROMPTS, EMPTY, TOO_LONG]]
    tokenizer = pylin.load(models[0])
    for r in rows:
        assert r["threads"] == 1 and r["engine"] == "local" and r["pylin_version"] == pylin.__version__
        if r["id"] == "empty":
            assert r["error"] == "EmptyPromptError: the prompt is empty" and r["rel_error"] is None
            continue
        if r["id"] == "long":
            assert "more than the model's context (64)" in r["error"] and r["sigma"] is None
            continue
        assert r["error"] is None
        assert r["token_ids"] == tokenizer.token_ids(r["prompt"]) and r["n_tokens"] == len(r["token_ids"])
        assert 0 <= r["prediction_id"] < 300 and isinstance(r["prediction"], str)
        assert r["rel_error"] < 1e-4 and r["r2"] > 0.9999
        assert r["svd_tokens"] == [r["n_tokens"] - 1] and len(r["sigma"]) == 1 and len(r["sigma"][0]) == 3
        assert r["sigma"][0] == sorted(r["sigma"][0], reverse=True) and len(r["stable_rank"]) == 1
        assert len(r["decoded"]) == 3 and all(len(d["output"]) == 3 for d in r["decoded"])
        assert [(e["layer"], e["component"]) for e in r["layers"]] == [
            (i, c) for i in (0, 1) for c in ("resid", "attn", "mlp")
        ]
        assert all(e["stable_rank"] >= 1 and len(e["decoded"]) == 3 for e in r["layers"])
        assert len(r["attribution_share"]) == r["n_tokens"] and abs(sum(r["attribution_share"]) - 1) < 1e-4
        assert r["arrays"] == f"arrays/{r['key']}.safetensors"


def test_rows_equal_analyze(base: pylin.batch.BatchResult, models: list[Path]) -> None:
    """A row holds exactly what pylin.report.analyze computes for that prompt (same thread count)."""
    import torch

    from pylin.report import analyze

    row = pylin.batch.read_results(base.out).to_pylist()[7]  # model b, prompt p2
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = {k: v for k, v in BASE_SETTINGS.items() if k != "threads"}
        data = analyze(pylin.load(models[1]), row["prompt"], progress=False, **s)
    finally:
        torch.set_num_threads(before)
    assert row["sigma"] == [data["svd"]["singular_values"]]
    assert row["rel_error"] == data["reconstruction"]["detached"]["rel_error"]
    assert row["prediction_id"] == data["prediction"]["token_id"]
    assert [e["stable_rank"] for e in row["layers"]] == [e["stable_rank"] for e in data["layers"]]
    assert row["attribution_share"] == [e["share"] for e in data["attribution"]["rows"]]


def test_arrays(base: pylin.batch.BatchResult) -> None:
    from safetensors.torch import load_file

    for row in pylin.batch.read_results(base.out).to_pylist():
        if row["error"] is not None:
            assert row["arrays"] is None
            continue
        t = load_file(base.out / row["arrays"])
        assert t["U"].shape == (256, 3) and t["Vh"].shape == (3, 256)
        assert t["S"].tolist() == row["sigma"][0]  # float32 values, bit for bit


def test_jacobian_array(tmp_path: Path, models: list[Path]) -> None:
    """--jacobian stores the formed J of the analysed token; its SVD agrees with the stored U, S, Vh."""
    import torch
    from safetensors.torch import load_file

    res = pylin.batch.run(
        models[0],
        [PROMPTS[0]["prompt"]],
        out=tmp_path,
        jacobian=True,
        report=False,
        progress=False,
        **TINY_SETTINGS,
    )
    row = res.table().to_pylist()[0]
    t = load_file(tmp_path / row["arrays"])
    J = t["J"].double()
    assert J.shape == (256, 1, 256)
    S = torch.linalg.svdvals(J[:, 0, :])[:3]
    assert torch.allclose(S, t["S"].double(), rtol=1e-3)
    assert torch.allclose(
        J[:, 0, :] @ t["Vh"].double().T, t["U"].double() * t["S"].double(), rtol=1e-2, atol=1e-3
    )


def test_cross_model_table(base: pylin.batch.BatchResult, models: list[Path]) -> None:
    wide = pq.read_table(base.cross_model).to_pylist()
    a, b = models[0].name, models[1].name
    assert [r["id"] for r in wide] == ["p1", "p2", "p3", "p4", "empty", "long"]
    rows = {(r["model"], r["id"]): r for r in pylin.batch.read_results(base.out).to_pylist()}
    for w in wide[:4]:
        for m in (a, b):
            assert w[f"{m}:prediction"] == rows[(m, w["id"])]["prediction"]
            assert w[f"{m}:sigma1"] == rows[(m, w["id"])]["sigma"][-1][0]
        assert w["agree"] == (w[f"{a}:prediction"] == w[f"{b}:prediction"])
    assert wide[4]["agree"] is None and wide[4][f"{a}:error"].startswith("EmptyPromptError")


def test_report_in_browser(base: pylin.batch.BatchResult, tmp_path: Path) -> None:
    """report.html is self-contained and renders in a real browser (headless chromium)."""
    html = base.report.read_text()
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert html.count("data:image/png;base64,") >= 4  # error histogram, 2 stable-rank plots, cross-model
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path}",
            "--dump-dom",
            base.report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for heading in (
        "Reconstruction error",
        "Stable rank by layer",
        "Decoded concepts per layer",
        "Cross-model comparison",
        "Errors",
        "EmptyPromptError",
    ):
        assert heading in dom
    assert dom.count("<img") == html.count("<img")


# ---- resuming ---------------------------------------------------------------------------------------------


def test_rerun_skips_done_rows(base: pylin.batch.BatchResult, models: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(base.out, out)
    before = pq.read_table(out / "results.parquet")
    prompts = write_jsonl(tmp_path / "p.jsonl", [*PROMPTS, EMPTY, TOO_LONG])
    again = pylin.batch.run(models, prompts, out=out, arrays=True, progress=False, **BASE_SETTINGS)
    assert (again.computed, again.skipped) == (0, 12)
    assert pq.read_table(out / "results.parquet").equals(before)  # not recomputed: even `created` is the same
    more = write_jsonl(
        tmp_path / "more.jsonl", [*PROMPTS, EMPTY, TOO_LONG, {"id": "p5", "prompt": "one more"}]
    )
    grown = pylin.batch.run(models, more, out=out, arrays=True, progress=False, **BASE_SETTINGS)
    assert (grown.computed, grown.skipped, grown.rows) == (2, 12, 14)
    retried = pylin.batch.run(
        models, more, out=out, arrays=True, progress=False, retry_errors=True, **BASE_SETTINGS
    )
    assert (retried.computed, retried.errors, retried.rows) == (4, 4, 14)
    keys = retried.table()["key"].to_pylist()
    assert len(set(keys)) == len(keys) == 14
    other = pylin.batch.run(models[0], more, out=out, progress=False, **{**BASE_SETTINGS, "k": 2})
    assert other.computed == 7 and other.rows == 21  # other settings: other rows


def test_model_identity(models: list[Path], tmp_path: Path) -> None:
    """stat: a touched file is another model; hash: the same bytes elsewhere are the same model."""
    copy = tmp_path / "elsewhere" / models[0].name
    copy.parent.mkdir()
    shutil.copy2(models[0], copy)
    kw = dict(report=False, progress=False, **TINY_SETTINGS)
    first = pylin.batch.run(models[0], ["the cat"], out=tmp_path / "h", identity="hash", **kw)
    moved = pylin.batch.run(copy, ["the cat"], out=tmp_path / "h", identity="hash", **kw)
    assert (first.computed, moved.computed, moved.skipped) == (1, 0, 1)
    assert pylin.batch.run(copy, ["the cat"], out=tmp_path / "s", **kw).computed == 1
    assert pylin.batch.run(copy, ["the cat"], out=tmp_path / "s", **kw).computed == 0
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert pylin.batch.run(copy, ["the cat"], out=tmp_path / "s", **kw).computed == 1


def test_resume_after_kill(models: list[Path], tmp_path: Path) -> None:
    """SIGKILL between shards: results.parquet stays readable, the rerun computes only the missing rows."""
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"the {i} cat sat on"} for i in range(10)]
    )
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "pylin",
        "batch",
        str(models[0]),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--k",
        "3",
        "--tokens",
        "-1",
        "--layers",
        "last",
        "--nonlinear",
        "off",
        "--threads",
        "1",
        "--no-progress",
        "--no-report",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=OUTSIDE_SOURCE_TREE)
    deadline = time.monotonic() + 120
    while len(list((out / "shards").glob("shard-*.parquet"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no shards written"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [pq.read_table(p).to_pylist()[0] for p in sorted((out / "shards").glob("shard-*.parquet"))]
    assert 3 <= len(first) < 10 and pq.read_table(out / "results.parquet").num_rows == 0
    res = pylin.batch.run(
        models[0],
        prompts,
        out=out,
        progress=False,
        report=False,
        k=3,
        tokens="-1",
        layers="last",
        nonlinear="off",
        threads=1,
    )
    rows = res.table().to_pylist()
    assert res.computed == 10 - len(first) and res.skipped == len(first)
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}" for i in range(10))
    kept = {r["key"]: r for r in rows}
    for r in first:  # the killed run's rows are kept as they were, not recomputed
        assert kept[r["key"]]["worker"] == r["worker"] == f"{os.uname().nodename}:{proc.pid}"
    assert not list((out / "shards").iterdir())


def test_corrupt_shard_and_leftovers(models: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    pylin.batch.run(models[0], [PROMPTS[0]["prompt"]], out=out, report=False, progress=False, **TINY_SETTINGS)
    (out / "shards" / "shard-00000000000000000001-00000001-000001.parquet").write_bytes(b"PAR1 garbage")
    (out / "shards" / ".tmp-123-shard-x.parquet").write_bytes(b"half written")
    with pytest.warns(UserWarning, match="unreadable"):
        res = pylin.batch.run(
            models[0],
            [p["prompt"] for p in PROMPTS[:2]],
            out=out,
            report=False,
            progress=False,
            **TINY_SETTINGS,
        )
    assert (res.computed, res.skipped, res.rows) == (1, 1, 2)
    assert not (out / "shards" / ".tmp-123-shard-x.parquet").exists()
    assert len(list((out / "shards").glob("*.corrupt"))) == 1


def test_busy_folder(models: list[Path], tmp_path: Path) -> None:
    from pylin.batch.store import ResultStore

    with ResultStore(tmp_path), pytest.raises(pylin.batch.BatchBusyError, match="another pylin batch"):
        pylin.batch.run(models[0], ["hello"], out=tmp_path, progress=False, **TINY_SETTINGS)


# ---- options, CLI, the real model --------------------------------------------------------------------------


def test_steering_grid(models: list[Path], tmp_path: Path) -> None:
    steer = {"concept": "the cat", "layer": 0, "strengths": (0.0, 4.0), "max_new_tokens": 4}
    res = pylin.batch.run(
        models[0],
        [PROMPTS[1]["prompt"]],
        out=tmp_path,
        steer=steer,
        report=False,
        progress=False,
        **TINY_SETTINGS,
    )
    row = res.table().to_pylist()[0]
    assert row["error"] is None and row["steer_strengths"] == [0.0, 4.0] and len(row["steer_texts"]) == 2
    assert row["steer_texts"][0] == row["steer_unsteered"]  # λ = 0 adds exactly nothing
    with pytest.raises(ValueError, match="layer"):  # the seed's pairing allows every block, not one past it
        pylin.batch.run(models[0], ["x"], out=tmp_path / "bad", steer={**steer, "layer": 2}, progress=False)


@pytest.mark.parametrize(
    "extra",
    [
        ["--k", "0"],
        ["--steer-layer", "0"],
        ["--workers", "2"],
        ["--layers", "7"],
        ["--engine", "spark"],
        ["--out", "/dev/null/runs"],
    ],  # fmt: skip
)
def test_cli_bad_arguments(
    extra: list[str], models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:1])
    argv = ["batch", str(models[0]), "--prompts", str(prompts), "--out", str(tmp_path / "o"), *extra]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("pylin: error: "), err


def test_cli_batch(models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("the cat sat\n\nthe dog ran\n")
    argv = [
        "batch",
        *map(str, models),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "o"),
        "--k",
        "3",
        "--tokens",
        "-1",
        "--layers",
        "none",
        "--nonlinear",
        "off",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 rows computed (0 with errors), 0 already done" in out and "report.html" in out
    assert "cross_model.parquet" in out
    assert main(argv) == 0 and "0 rows computed (0 with errors), 4 already done" in capsys.readouterr().out
    rows = pylin.batch.read_results(tmp_path / "o").to_pylist()
    assert [r["id"] for r in rows] == ["1", "3", "1", "3"] and all(r["layers"] == [] for r in rows)


def test_run_columns_are_the_only_differences(
    base: pylin.batch.BatchResult, models: list[Path], tmp_path: Path
) -> None:
    """Recomputing the same rows in another folder gives the same table except where/when columns."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [*PROMPTS, EMPTY, TOO_LONG])
    again = pylin.batch.run(
        models, prompts, out=tmp_path / "o", arrays=True, report=False, progress=False, **BASE_SETTINGS
    )
    assert comparable(again.table(), RUN_COLUMNS) == comparable(base.table(), RUN_COLUMNS)


@pytest.mark.realmodel
def test_real_gemma(gemma_path: str, tmp_path: Path) -> None:
    """The demo model (the default MODEL) on 4 prompts: exact reconstruction, sensible predictions."""
    prompts = [
        {"id": "paris", "prompt": "The Eiffel Tower is in the city of"},
        {"id": "marin", "prompt": "The bridge out of Marin is the"},
        {"id": "days", "prompt": "Monday, Tuesday,"},
        {"id": "empty", "prompt": " "},
    ]
    res = pylin.batch.run(
        None,
        prompts,
        out=tmp_path,
        k=4,
        tokens="-1",
        layers="last",
        nonlinear="off",
        threads=1,
        progress=False,
    )
    rows = {r["id"]: r for r in res.table().to_pylist()}
    assert res.computed == 4 and res.errors == 1 and rows["empty"]["error"].startswith("EmptyPromptError")
    assert rows["paris"]["model"] == Path(gemma_path).name
    assert (
        rows["paris"]["prediction"].strip() == "Paris" and rows["days"]["prediction"].strip() == "Wednesday"
    )
    for r in (rows["paris"], rows["marin"], rows["days"]):
        assert r["rel_error"] < 1e-4 and len(r["sigma"][0]) == 4 and r["layers"][0]["layer"] == 17
        assert r["decoded"][0]["output"]
