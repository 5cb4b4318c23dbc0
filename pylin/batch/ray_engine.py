"""`--engine ray`: the rows of a batch computed by a pool of Ray actors (Ray Data `map_batches`).

    for row in ray_rows(spec, settings, todo, out, workers=2, threads=1):   # the driver writes the rows
        ...

Each actor is a `RowWorker`: it loads the model once (a memory-mapped GGUF: the pages are shared by the
actors of one machine through the page cache) and computes one row per call.  With a CUDA device each
actor reserves `num_gpus=1`; on CPU it reserves `threads` CPUs and runs the kernels on exactly that many
threads, so its rows are bit for bit those of the local engine run with the same thread count (the
kernels' float sums can depend on how many threads split them).  Every prompt is its own block, so an
actor holds one row at a time and a dead actor loses only that row: Ray Data's actor pool restarts
actors (max_restarts=-1) and retries their tasks (max_task_retries=-1).  Rows travel back to the driver
as JSON (Python's float repr round-trips exactly), and the driver writes every key once.

`address` joins a running cluster (`ray start --head` / "auto" / "ray://host:10001"); without it a
running `ray.init()` in this process is used, else a local cluster is started for the run and shut down
after.  The cluster's nodes need the same Python environment (pylin installed) and the model file at
the same path (shared storage).  Install with `pip install "pylin[ray]"`.  Tests: tests/test_batch_ray.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .prompts import Prompt
from .rows import RowWorker
from .settings import ModelSpec, Settings

__all__ = ["ray_rows", "plan_workers"]


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data ships with `pip install "ray[data]"`
    except ImportError:
        raise ImportError('--engine ray needs Ray Data: pip install "pylin[ray]"') from None
    return ray


class _ActorWorker:
    """The map_batches callable: one RowWorker per actor, one row per call."""

    def __init__(self, spec: ModelSpec, settings: Settings, out: str, threads: int) -> None:
        self.worker = RowWorker(spec, settings, out, threads=threads, engine="ray")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = []
        for key, pid, text, index, meta in zip(
            batch["key"], batch["id"], batch["text"], batch["index"], batch["metadata"], strict=True
        ):
            prompt = Prompt(str(pid), str(text), json.loads(str(meta)), int(index))
            rows.append(json.dumps(self.worker(prompt, str(key)), ensure_ascii=False))
        return {"key": list(batch["key"]), "row": rows}


def plan_workers(
    resources: dict[str, float], device: str, workers: int | None, threads: int | None
) -> tuple[int, int]:
    """(workers, threads per worker) from the cluster's resources and what was asked.

    GPU: one worker per GPU unless told; CPU: `threads` (default 1) CPUs per worker and as many workers as
    the CPUs allow unless told."""
    cpus = int(resources.get("CPU", 1))
    if device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise ValueError("--device cuda: the Ray cluster has no GPU")
        workers = workers or gpus
        threads = threads or max(1, cpus // workers)
        return workers, threads
    if threads is None:
        threads = max(1, cpus // workers) if workers else 1
    workers = workers or max(1, cpus // threads)
    if workers * threads > cpus:
        raise ValueError(
            f"{workers} workers × {threads} threads need {workers * threads} CPUs, the Ray cluster has {cpus}"
        )
    return workers, threads


@contextlib.contextmanager
def _cwd_without_other_pylin() -> Iterator[None]:
    """Run ray.init() from a directory whose `pylin/` cannot shadow the pylin this process imported.

    Ray puts the driver's cwd on every worker's sys.path (ray._private.worker.connect: "Also add the
    current directory"), so a driver started in pylin's source tree after a non-editable install
    would have its workers import the source `pylin/`, which has no native module.
    """
    here = Path(__file__).resolve().parents[1]
    local = Path.cwd() / "pylin"
    if not (local / "__init__.py").is_file() or local.resolve() == here:
        yield
        return
    cwd = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        yield
    finally:
        os.chdir(cwd)


def _connect(ray: Any, address: str | None) -> bool:
    """Join `address`, reuse this process's ray.init(), or start a local cluster; True when started here."""
    if ray.is_initialized():
        if address is not None:
            raise ValueError("Ray is already initialized in this process; do not pass --address")
        return False
    if address is not None:
        init_ray(address=address, log_to_driver=False)
    else:
        init_ray(include_dashboard=False, log_to_driver=False)
    return True


def init_ray(**kwargs: Any) -> None:
    """`ray.init(**kwargs)` such that the workers import the same pylin as this process.

    Use it instead of ray.init() in scripts run from pylin's source tree (benchmarks, tests).
    """
    import ray

    with _cwd_without_other_pylin():
        ray.init(**kwargs)


def ray_rows(
    spec: ModelSpec,
    settings: Settings,
    todo: list[tuple[Prompt, str]],
    out: str | Path,
    *,
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of `todo` ((prompt, key) pairs) as the actors finish them, in no particular order."""
    ray = _import_ray()
    out = Path(out).resolve()  # the actors write arrays/ there: not relative to their working directory
    started = _connect(ray, address)
    context = ray.data.DataContext.get_current()
    shown = context.enable_progress_bars, context.print_on_execution_start
    try:
        workers, threads = plan_workers(ray.cluster_resources(), settings.device, workers, threads)
        context.enable_progress_bars = False  # the batch driver shows its own bar
        context.print_on_execution_start = False
        items = [
            {"key": key, "id": p.id, "text": p.text, "index": p.index, "metadata": json.dumps(p.metadata)}
            for p, key in todo
        ]
        ds = ray.data.from_items(items, override_num_blocks=len(items))  # one prompt per block and task
        gpu = settings.device.startswith("cuda")
        ds = ds.map_batches(
            _ActorWorker,
            fn_constructor_kwargs={"spec": spec, "settings": settings, "out": str(out), "threads": threads},
            batch_size=1,
            batch_format="numpy",
            # a fixed pool; one task at a time per actor, so a killed actor holds one row
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            num_cpus=threads,
            num_gpus=1 if gpu else None,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for text in batch["row"]:
                yield json.loads(str(text))
    finally:
        context.enable_progress_bars, context.print_on_execution_start = shown
        if started:
            ray.shutdown()
