"""Tests for `pylin batch --engine ray` (pylin.batch.ray_engine) on a real local Ray cluster
(`ray.init(num_cpus=2)`): the same rows as the local engine bit for bit (two tiny models, with per-row
arrays, and the real Gemma 3 270M), and an actor killed mid-run (`ray.kill`) that is replaced while
every row is still written exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from batch_helpers import EMPTY, PROMPTS, TINY_SETTINGS, comparable, tiny_gguf, write_jsonl

import pylin.batch
from pylin.batch.ray_engine import init_ray
from pylin.batch.rows import RUN_COLUMNS

ray = pytest.importorskip("ray", reason="optional test dependency ray[data] not installed")
pytest.importorskip("ray.data", reason="optional test dependency ray[data] not installed")

WORKER_CLASS = "_ActorWorker"  # pylin.batch.ray_engine's map_batches callable


@pytest.fixture(scope="module")
def cluster():
    init_ray(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    return [tiny_gguf(root / "a", seed=0), tiny_gguf(root / "b", seed=1)]


def _same_rows(a: pylin.batch.BatchResult, b: pylin.batch.BatchResult) -> None:
    ta, tb = a.table(), b.table()
    assert set(tb["engine"].to_pylist()) == {"ray"} and set(ta["engine"].to_pylist()) == {"local"}
    assert comparable(ta, RUN_COLUMNS) == comparable(tb, RUN_COLUMNS)


def test_ray_equals_local(cluster: None, models: list[Path], tmp_path: Path) -> None:
    """Two models, two actors of one thread each: the rows and arrays of the local engine, bit for bit."""
    from safetensors.torch import load_file

    prompts = write_jsonl(tmp_path / "p.jsonl", [*PROMPTS, EMPTY])
    kw = dict(arrays=True, progress=False, **TINY_SETTINGS)
    local = pylin.batch.run(models, prompts, out=tmp_path / "local", **kw)
    remote = pylin.batch.run(models, prompts, out=tmp_path / "ray", engine="ray", workers=2, **kw)
    assert (remote.computed, remote.errors, remote.rows) == (10, 2, 10)
    _same_rows(local, remote)
    for row in remote.table().to_pylist():
        if row["arrays"] is not None:
            got, want = load_file(remote.out / row["arrays"]), load_file(local.out / row["arrays"])
            assert all(got[n].equal(want[n]) for n in ("U", "S", "Vh"))
    assert remote.cross_model is not None and remote.report is not None
    again = pylin.batch.run(models, prompts, out=tmp_path / "ray", engine="ray", workers=2, **kw)
    assert (again.computed, again.skipped) == (0, 10)  # resumable like the local engine


def _workers(state: str | None = None) -> dict[str, dict]:
    """The batch's worker actors from the GCS actor table (ray.util.state needs the dashboard)."""
    from ray._private.state import actors

    table = actors(actor_state_name=state)
    return {i: a for i, a in table.items() if WORKER_CLASS in a["ActorClassName"]}


def _kill_one_worker(out: Path, killed: list[str]) -> None:
    """Once two rows are written, ray.kill one live worker actor (restartable: no_restart=False)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        shards = list((out / "shards").glob("shard-*.parquet")) if (out / "shards").exists() else []
        alive = _workers("ALIVE") if len(shards) >= 2 else {}
        if alive:
            actor_id = next(iter(alive))
            handle = ray._private.worker.global_worker.core_worker.get_actor_handle(
                ray.ActorID.from_hex(actor_id)
            )  # Ray Data's actors are unnamed: a handle from the id
            ray.kill(handle, no_restart=False)
            killed.append(actor_id)
            return
        time.sleep(0.02)


def test_killed_actor_is_replaced(cluster: None, models: list[Path], tmp_path: Path) -> None:
    # enough rows that the run still goes on when the second is written, on a fast machine too
    prompts = [{"id": f"q{i}", "prompt": f"the {i} cat"} for i in range(32)]
    prompts = write_jsonl(tmp_path / "p.jsonl", prompts)
    kw = dict(progress=False, report=False, **TINY_SETTINGS)
    out = tmp_path / "ray"
    killed: list[str] = []
    killer = threading.Thread(target=_kill_one_worker, args=(out, killed))
    killer.start()
    remote = pylin.batch.run(models[0], prompts, out=out, engine="ray", workers=2, **kw)
    killer.join()
    assert killed, "the run ended before an actor could be killed"
    assert _workers()[killed[0]]["NumRestarts"] >= 1  # Ray restarted it (Ray Data's max_restarts=-1)
    keys = remote.table()["key"].to_pylist()
    assert remote.computed == remote.rows == len(set(keys)) == 32  # every row exactly once
    local = pylin.batch.run(models[0], prompts, out=tmp_path / "local", **kw)
    _same_rows(local, remote)


@pytest.mark.realmodel
def test_ray_real_gemma(cluster: None, gemma_path: str, tmp_path: Path) -> None:
    prompts = [
        {"id": "marin", "prompt": "The bridge out of Marin is the"},
        {"id": "days", "prompt": "Monday, Tuesday,"},
        {"id": "paris", "prompt": "The Eiffel Tower is in the city of"},
        {"id": "empty", "prompt": ""},
    ]
    kw = dict(k=4, tokens="-1", layers="none", nonlinear="off", threads=1, progress=False, report=False)
    remote = pylin.batch.run(gemma_path, prompts, out=tmp_path / "ray", engine="ray", workers=2, **kw)
    local = pylin.batch.run(gemma_path, prompts, out=tmp_path / "local", **kw)
    assert remote.computed == 4 and remote.errors == 1
    _same_rows(local, remote)
    rows = {r["id"]: r for r in remote.table().to_pylist()}
    assert rows["days"]["prediction"].strip() == "Wednesday" and rows["marin"]["rel_error"] < 1e-4
