"""Prompt files for `pylin batch`: .txt, .jsonl, .csv and .parquet read into `Prompt` records.

    prompts = read_prompts("prompts.jsonl")     # [Prompt(id="a1", text="The bridge …", metadata={…}), …]

- .txt: one prompt a line; blank lines are skipped; the id is the line number (1-based).
- .jsonl: one JSON object a line with "prompt" (text) and optionally "id"; every other key is metadata.
- .csv: a header row with a "prompt" column (and optionally "id"); the other columns are metadata.
- .parquet: a "prompt" column of strings (and optionally "id"); the other columns are metadata.

Ids default to the line (or row) number and must be unique.  A malformed file raises PromptFileError
naming the file and the line; an empty prompt is NOT a file error: it becomes a row whose error column
says so, and the run goes on (pylin.batch.rows).  Tests: tests/test_batch.py.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Prompt", "PromptFileError", "read_prompts", "as_prompts", "SUFFIXES"]

SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
_ID_TYPES = (str, int)


class PromptFileError(ValueError):
    """A prompt file that cannot be read: the message names the file and the line (or row)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: its id (unique in the file), its text and whatever metadata came with it."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # position in the prompt file (0-based): the order of rows in results.parquet


def read_prompts(path: str | Path) -> list[Prompt]:
    """Every prompt of a .txt / .jsonl / .csv / .parquet file, in file order."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise PromptFileError(
            f"{path}: unknown prompt file type {path.suffix or '(none)'!r}; use {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no such prompt file: {path}")
    reader = {".txt": _txt, ".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet}[path.suffix.lower()]
    records = list(reader(path))
    if not records:
        raise PromptFileError(f"{path}: no prompts in the file")
    return _numbered(records)


def as_prompts(prompts: str | Path | Sequence[str | dict[str, Any] | Prompt]) -> list[Prompt]:
    """A prompt file's path, or a Python list of strings / {"prompt", "id", …} dicts / Prompts."""
    if isinstance(prompts, (str, Path)):
        return read_prompts(prompts)
    records = []
    for i, p in enumerate(prompts):
        where = f"prompts[{i}]"
        if isinstance(p, Prompt):
            records.append((where, p.id, p.text, dict(p.metadata)))
        elif isinstance(p, str):
            records.append((where, str(i), p, {}))
        elif isinstance(p, dict):
            records.append(_from_mapping(p, where, str(i)))
        else:
            raise PromptFileError(
                f"{where}: expected a string or a {{'prompt': …}} dict, got {type(p).__name__}"
            )
    if not records:
        raise PromptFileError("the prompt list is empty")
    return _numbered(records)


# ---- one reader per format: yields (where, id, text, metadata); the id defaults to the line ------


def _txt(path: Path) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    text = _read_text(path)
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield f"{path}:{n}", str(n), line, {}


def _jsonl(path: Path) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise PromptFileError(
                f'{where}: expected a JSON object like {{"prompt": …}}, got {type(obj).__name__}'
            )
        yield _from_mapping(obj, where, str(n))


def _csv(path: Path) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    text = _read_text(path)
    reader = csv.DictReader(text.splitlines(keepends=True))
    if reader.fieldnames is None or "prompt" not in reader.fieldnames:
        raise PromptFileError(f"{path}:1: the header has no 'prompt' column (found {reader.fieldnames})")
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:  # more cells than the header names
                raise PromptFileError(
                    f"{where}: {len(row) - 1 + len(row[None])} cells, the header has {len(row) - 1}"
                )
            if any(v is None for v in row.values()):
                raise PromptFileError(f"{where}: fewer cells than the header's {len(reader.fieldnames)}")
            yield _from_mapping(row, where, str(reader.line_num))
    except csv.Error as e:
        raise PromptFileError(f"{path}:{reader.line_num}: {e}") from None


def _parquet(path: Path) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a file that is not parquet
        raise PromptFileError(f"{path}: not a readable parquet file ({e})") from None
    if "prompt" not in table.column_names:
        raise PromptFileError(f"{path}: no 'prompt' column (columns: {table.column_names})")
    for n, row in enumerate(table.to_pylist()):
        yield _from_mapping(row, f"{path}: row {n}", str(n))


# ---- shared checks ------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise PromptFileError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None


def _from_mapping(obj: dict[str, Any], where: str, default_id: str) -> tuple[str, str, str, dict[str, Any]]:
    if "prompt" not in obj:
        raise PromptFileError(f"{where}: no 'prompt' field (keys: {sorted(obj)})")
    text = obj["prompt"]
    if not isinstance(text, str):
        raise PromptFileError(f"{where}: 'prompt' must be a string, got {type(text).__name__}")
    pid = obj.get("id")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, _ID_TYPES)):
        raise PromptFileError(f"{where}: 'id' must be a string or an integer, got {pid!r}")
    if pid is None or (isinstance(pid, str) and not pid.strip()):  # no id, or an empty csv cell
        pid = default_id
    meta = {k: v for k, v in obj.items() if k not in ("prompt", "id")}
    try:
        json.dumps(meta, default=str)
    except (TypeError, ValueError) as e:
        raise PromptFileError(f"{where}: metadata cannot be stored ({e})") from None
    return where, str(pid), text, meta


def _numbered(records: list[tuple[str, str, str, dict[str, Any]]]) -> list[Prompt]:
    """Prompts in order, refusing repeated ids (naming both places)."""
    seen: dict[str, str] = {}
    out = []
    for i, (where, ident, text, meta) in enumerate(records):
        if ident in seen:
            raise PromptFileError(f"{where}: id {ident!r} repeats the id of {seen[ident]}")
        seen[ident] = where
        out.append(Prompt(ident, text, meta, i))
    return out
