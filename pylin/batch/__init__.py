"""pylin.batch — `pylin analyze` over a prompt set and several models, resumable, locally or on Ray.

    import pylin.batch
    res = pylin.batch.run(["gemma-3-270m.gguf"], "prompts.jsonl", out="runs/a", tokens="-1")
    res.table()                        # pyarrow Table: one row per (model, prompt), see rows.SCHEMA
    pylin.batch.read_results("runs/a") # the same, with the prompts' metadata as meta_<name> columns

Writes into `out`: results.parquet (one row per (model, prompt, settings): pylin.batch.rows.SCHEMA),
arrays/<key>.safetensors (U, S, Vh and J when asked), cross_model.parquet (when several models ran: the
prompts side by side), report.html (the corpus report).  Reruns skip every row already done (keyed by
the model's identity, the prompt and the settings: pylin.batch.settings), so a killed run resumes where
it stopped; rows are written as atomic shards and compacted (pylin.batch.store).  `engine="ray"` runs the
rows on a Ray actor pool (pylin.batch.ray_engine) with identical results for the same thread count.
Tests: tests/test_batch.py, tests/test_batch_ray.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..indices import integer
from .prompts import Prompt, PromptFileError, as_prompts, read_prompts
from .settings import ModelSpec, Settings, SteerSettings, row_key

__all__ = [
    "run",
    "read_results",
    "BatchResult",
    "Settings",
    "SteerSettings",
    "ModelSpec",
    "Prompt",
    "PromptFileError",
    "BatchBusyError",
    "read_prompts",
    "SCHEMA",
    "RUN_COLUMNS",
]


def __getattr__(name: str) -> Any:
    # pyarrow loads on use: `pylin --help` and `pylin analyze` import this package for the parser only
    if name in ("SCHEMA", "RUN_COLUMNS"):
        from . import rows

        return getattr(rows, name)
    if name == "BatchBusyError":
        from .store import BatchBusyError

        return BatchBusyError
    raise AttributeError(f"module 'pylin.batch' has no attribute {name!r}")


# Compact the shards into results.parquet after this many: bounds the shard folder and the rows a reader
# of results.parquet misses during a long run, at the cost of rewriting the file (fast: rows are small).
COMPACT_EVERY = 256


@dataclass
class BatchResult:
    out: Path
    computed: int  # rows computed by this run
    skipped: int  # rows already done
    errors: int  # rows of this run whose error column is set
    rows: int  # rows in results.parquet
    report: Path | None
    cross_model: Path | None

    @property
    def results(self) -> Path:
        return self.out / "results.parquet"

    def table(self) -> Any:
        from .store import read_table

        return read_table(self.out)


def run(
    models: str | Path | Sequence[str | Path] | None = None,
    prompts: str | Path | Sequence[Any] = (),
    *,
    out: str | Path,
    k: int = 8,
    tokens: str | int | list[int] = "all",
    layers: str | list[int] = "auto",
    dtype: str = "float32",
    device: str = "cpu",
    method: str = "auto",
    top: int = 5,
    nonlinear: str = "auto",
    seed: int = 0,
    max_tokens: int | None = None,
    arrays: bool = False,
    jacobian: bool = False,
    steer: SteerSettings | dict[str, Any] | None = None,
    engine: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    identity: str = "stat",
    retry_errors: bool = False,
    report: bool = True,
    progress: bool = True,
) -> BatchResult:
    """Analyse every prompt with every model (pylin.report.analyze's options), skipping rows already done.

    models: GGUF files / HF folders (default: the demo model, pylin.default_model_path()).
    prompts: a .txt / .jsonl / .csv / .parquet file, or a list of strings or {"prompt", "id", …} dicts.
    engine: "local" (this process) or "ray" (workers × threads on a Ray cluster at `address`, or local).
    threads: kernel threads per worker (local: torch's default); fix it to compare engines bit for bit.
    identity: "stat" (path, size, mtime) or "hash" (sha256 of the file) as the model's part of the key.
    retry_errors: recompute rows whose error column is set (the new row replaces the old).
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if engine == "local" and (workers not in (None, 1) or address is not None):
        raise ValueError("workers / address are options of engine='ray'; the local engine is one process")
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None:
            integer(value, name, low=1)
    settings = Settings(
        k=k,
        tokens=tokens,
        layers=layers,
        dtype=dtype,
        device=device,
        method=method,
        top=top,
        nonlinear=nonlinear,
        seed=seed,
        max_tokens=max_tokens,
        arrays=arrays,
        jacobian=jacobian,
        steer=steer,
    )
    prompt_list = as_prompts(prompts)
    specs = _model_specs(models, identity)
    from .store import ResultStore

    out = Path(out)
    counts = {"computed": 0, "skipped": 0, "errors": 0}
    with ResultStore(out) as store:
        store.compact()  # rows a killed run left in shards count as done
        done = store.done_keys(retry_errors=retry_errors)
        try:
            for spec in specs:
                todo = _todo(spec, settings, prompt_list, done, counts)
                if todo:
                    loaded = _validated(spec, settings, load_for_local=engine == "local")
                    rows = _engine_rows(engine, spec, settings, todo, out, loaded, workers, threads, address)
                    _drain(rows, store, spec.label, len(todo), counts, progress)
        finally:
            table = store.compact()
        cross = _cross_model(out, table)
        page = _report(out, table) if report else None
    return BatchResult(
        out, counts["computed"], counts["skipped"], counts["errors"], table.num_rows, page, cross
    )


def read_results(out: str | Path, *, metadata: bool = True) -> Any:
    """results.parquet of `out` as a pyarrow Table; metadata=True adds each metadata field as meta_<name>."""
    import json

    import pyarrow as pa

    from .store import read_table

    table = read_table(out)
    if not metadata or table.num_rows == 0:
        return table
    dicts = [json.loads(m) if m else {} for m in table["metadata"].to_pylist()]
    for name in sorted({n for d in dicts for n in d}):
        values = [d.get(name) for d in dicts]
        try:
            column = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types across prompts: keep them as text
            column = pa.array([None if v is None else json.dumps(v, default=str) for v in values])
        table = table.append_column(f"meta_{name}", column)
    return table


# ---- the steps of a run ---------------------------------------------------------------------------------


def _model_specs(models: Any, identity: str) -> list[ModelSpec]:
    if models is None or (isinstance(models, (list, tuple)) and not models):
        from ..loading import default_model_path

        models = [default_model_path()]
    elif isinstance(models, (str, Path)):
        models = [models]
    paths = [Path(m).expanduser().resolve() for m in models]
    missing = [str(m) for m, p in zip(models, paths, strict=True) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such model file or folder: {missing[0]}")
    if len(set(paths)) != len(paths):
        raise ValueError("a model is given twice")
    names = [p.name for p in paths]
    labels = [n if names.count(n) == 1 else f"{p.parent.name}/{n}" for n, p in zip(names, paths, strict=True)]
    if len(set(labels)) != len(labels):
        labels = [str(p) for p in paths]
    return [ModelSpec.of(p, label, identity) for p, label in zip(paths, labels, strict=True)]


def _validated(spec: ModelSpec, settings: Settings, *, load_for_local: bool) -> Any:
    """Load the model (memory-mapped) and check the settings that do not depend on the prompt, so a bad
    --layers or --steer-layer fails the run at once instead of every row."""
    import pylin

    from ..emergence import parse_layers

    device = settings.device if load_for_local else "cpu"
    model = pylin.load(spec.path, dtype=settings.dtype, device=device)
    parse_layers(settings.layers, model.n_layers)
    if settings.steer is not None:
        from ..steer import check_layer

        check_layer(model, settings.steer.layer)
    return model if load_for_local else None


def _todo(
    spec: ModelSpec, settings: Settings, prompts: list[Prompt], done: set[str], counts: dict[str, int]
) -> list[tuple[Prompt, str]]:
    todo, seen, repeats = [], set(), []
    for p in prompts:
        key = row_key(spec, p.text, settings)
        if key in done:
            counts["skipped"] += 1
        elif key in seen:
            repeats.append(p.id)
        else:
            seen.add(key)
            todo.append((p, key))
    if repeats:
        warnings.warn(
            f"{len(repeats)} prompts repeat an earlier prompt's text (ids {repeats[:5]}): one row each "
            "text (rows are keyed by model, prompt and settings)",
            stacklevel=3,
        )
    return todo


def _engine_rows(
    engine: str,
    spec: ModelSpec,
    settings: Settings,
    todo: list[tuple[Prompt, str]],
    out: Path,
    loaded: Any,
    workers: int | None,
    threads: int | None,
    address: str | None,
) -> Iterator[dict[str, Any]]:
    if engine == "ray":
        from .ray_engine import ray_rows

        yield from ray_rows(spec, settings, todo, out, workers=workers, threads=threads, address=address)
        return
    import torch

    from .rows import RowWorker

    before = torch.get_num_threads()
    try:
        worker = RowWorker(spec, settings, out, threads=threads, engine="local", loaded=loaded)
        for prompt, key in todo:
            yield worker(prompt, key)
    finally:
        torch.set_num_threads(before)


def _drain(
    rows: Iterator[dict[str, Any]],
    store: Any,
    label: str,
    total: int,
    counts: dict[str, int],
    progress: bool,
) -> None:
    """Write each finished row as its own shard (at most the rows in flight are lost to a kill), once."""
    from tqdm.auto import tqdm

    written: set[str] = set()
    since_compact = 0
    with tqdm(total=total, desc=f"batch {label}", unit="row", disable=not progress) as bar:
        for row in rows:
            if row["key"] in written:  # a retried task can deliver a row twice: write it once
                continue
            store.write_shard([row])
            written.add(row["key"])
            counts["computed"] += 1
            counts["errors"] += row["error"] is not None
            bar.update(1)
            if counts["errors"]:
                bar.set_postfix(errors=counts["errors"])
            since_compact += 1
            if since_compact >= COMPACT_EVERY:
                store.compact()
                since_compact = 0


def _cross_model(out: Path, table: Any) -> Path | None:
    from .compare import cross_model_table

    wide = cross_model_table(table)
    if wide is None:
        return None
    import pyarrow.parquet as pq

    path = out / "cross_model.parquet"
    tmp = out / ".tmp-cross_model.parquet"
    pq.write_table(wide, tmp)
    tmp.replace(path)
    return path


def _report(out: Path, table: Any) -> Path:
    from .corpus_report import write_report

    return write_report(out, table)
