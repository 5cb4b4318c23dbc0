"""The results folder of a batch run: atomic shards, compaction into results.parquet, a writer's lock.

    with ResultStore("out/") as store:        # one writer at a time (an flock on out/.lock)
        done = store.done_keys()              # keys already in results.parquet or in shards
        store.write_shard(rows)               # shards/shard-<ns>-<pid>.parquet, written then renamed
        store.compact()                       # results.parquet := old rows ∪ shards, one row per key

Crash safety: a shard is written to a temporary name, fsynced and renamed, so a shard on disk is always
complete; a killed run loses only the rows it had not written yet.  Compaction writes the new
results.parquet under a temporary name, fsyncs and renames it over the old one, and only then deletes the
shards it merged: killed in between, the next compaction finds rows both in results.parquet and in a
shard, and keeps one per key (the last written).  So at every instant results.parquet is either the old
or the new complete file, and no row is lost or doubled.  Tests: tests/test_batch.py.
"""

from __future__ import annotations

import fcntl
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .rows import SCHEMA, to_table
from .settings import ROW_VERSION

__all__ = ["ResultStore", "BatchBusyError", "RESULTS", "read_table"]

RESULTS = "results.parquet"
_VERSION_KEY = b"pylin_row_version"


class BatchBusyError(ValueError):
    """Another process is writing to the same results folder."""


class ResultStore:
    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} exists and is not a folder")
        self.shards = self.out / "shards"
        self.shards.mkdir(parents=True, exist_ok=True)
        self.results = self.out / RESULTS
        self._lock = open(self.out / ".lock", "w")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise BatchBusyError(
                f"another pylin batch is writing to {self.out} (it holds {self.out}/.lock)"
            ) from None
        for tmp in [*self.shards.glob(".tmp-*"), *self.out.glob(".tmp-*"), *self.out.glob("arrays/.tmp-*")]:
            tmp.unlink(missing_ok=True)  # half-written files of a killed run: never renamed, never read
        self._seq = 0

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    # ---- reading --------------------------------------------------------------------------------

    def shard_paths(self) -> list[Path]:
        return sorted(self.shards.glob("shard-*.parquet"))  # names sort in write order (time, pid, seq)

    def done_keys(self, *, retry_errors: bool = False) -> set[str]:
        """Keys of the rows already stored (with retry_errors: only those without an error)."""
        keys: set[str] = set()
        for table in self._tables(columns=["key", "error"]):
            if retry_errors:
                table = table.filter(pc.is_null(table["error"]))
            keys.update(table["key"].to_pylist())
        return keys

    def _tables(self, columns: list[str] | None = None) -> Iterable[pa.Table]:
        if self.results.exists():
            yield _read(self.results, columns)
        for path in self.shard_paths():
            try:
                yield _read(path, columns)
            except (pa.ArrowException, OSError) as e:  # should not happen (atomic writes): set it aside
                bad = path.with_suffix(".corrupt")
                path.rename(bad)
                warnings.warn(
                    f"{path} is unreadable ({e}); moved to {bad.name}, its rows will be recomputed",
                    stacklevel=2,
                )

    # ---- writing --------------------------------------------------------------------------------

    def write_shard(self, rows: list[dict[str, Any]]) -> Path:
        """rows as one new shard, atomically."""
        self._seq += 1
        name = f"shard-{time.time_ns():020d}-{os.getpid():08d}-{self._seq:06d}.parquet"
        path = self.shards / name
        _write_atomic(to_table(rows), path)
        return path

    def compact(self) -> pa.Table:
        """Merge every shard into results.parquet (one row per key, the last written); return the table."""
        shards = self.shard_paths()
        tables = list(self._tables())
        shards = [p for p in shards if p.exists()]  # a corrupt one was moved aside while reading
        table = _unique_last(pa.concat_tables(tables)) if tables else to_table([])
        table = table.sort_by([("model", "ascending"), ("prompt_index", "ascending"), ("key", "ascending")])
        if shards or not self.results.exists():
            _write_atomic(table, self.results)
            for path in shards:
                path.unlink(missing_ok=True)
            _fsync_dir(self.shards)
        return table


def read_table(out: str | Path) -> pa.Table:
    """results.parquet of a results folder (compacted rows only)."""
    path = Path(out) / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"no {RESULTS} in {out}")
    return _read(path, None)


def _read(path: Path, columns: list[str] | None) -> pa.Table:
    meta = pq.read_schema(path).metadata or {}
    version = meta.get(_VERSION_KEY)
    if version is not None and int(version) != ROW_VERSION:
        raise ValueError(
            f"{path} holds rows of pylin's row schema version {int(version)}, this pylin writes version "
            f"{ROW_VERSION}; write to a new --out folder"
        )
    table = pq.read_table(path, columns=columns)
    return table if columns is not None else table.cast(SCHEMA)


def _unique_last(table: pa.Table) -> pa.Table:
    """One row per key: the last occurrence (later shards supersede earlier rows, e.g. a retried error)."""
    keys = table["key"].to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    keep = sorted(last.values())
    return table.take(pa.array(keep, type=pa.int64())) if len(keep) != len(keys) else table


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    table = table.replace_schema_metadata({_VERSION_KEY: str(ROW_VERSION).encode()})
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the directory that holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
