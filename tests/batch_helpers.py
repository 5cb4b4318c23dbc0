"""Shared by tests/test_batch.py and tests/test_batch_ray.py: tiny GGUF models with a tokenizer, prompt
files, and the comparison of two results tables column by column (bit for bit)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PROMPTS = [
    {"id": "p1", "prompt": "the cat sat on the mat", "topic": "animals"},
    {"id": "p2", "prompt": "in the beginning was the", "topic": "text"},
    {"id": "p3", "prompt": "she went to see the", "topic": "travel", "level": 2},
    {"id": "p4", "prompt": "at the end of the day", "topic": "text"},
]
EMPTY = {"id": "empty", "prompt": "", "topic": "bad"}
TOO_LONG = {"id": "long", "prompt": "the " * 80, "topic": "bad"}  # the tiny models' context is 64 tokens
# Cheap settings for the tiny models: every analysis runs, with small sizes (~0.3 s a row).  One kernel
# thread: the engines are compared like with like, and a loaded 2-core machine runs 1 thread fastest.
TINY_SETTINGS: dict[str, Any] = {
    "k": 3,
    "tokens": "-1",
    "layers": "last",
    "top": 3,
    "nonlinear": "off",
    "threads": 1,
}


def tiny_gguf(folder: Path, seed: int = 0) -> Path:
    """A tiny random Llama (2 layers, d = 256, vocab 300) as a Q8_0 GGUF with a byte-level tokenizer."""
    from tiny_models import make_tiny_hf, write_tiny_gguf

    folder.mkdir(parents=True, exist_ok=True)
    _, hf = make_tiny_hf("llama", folder / "hf", seed=seed)
    path = folder / f"tiny-llama-{seed}.gguf"
    write_tiny_gguf(hf, "llama", path, vocab=True, seed=seed)
    return path


def write_jsonl(path: Path, prompts: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return path


def comparable(table: Any, drop: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows without the run columns, floats as their exact repr (so NaN == NaN and -0.0 != 0.0)."""
    return [_exact({k: v for k, v in row.items() if k not in drop}) for row in table.to_pylist()]


def _exact(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else float.hex(v)
    if isinstance(v, dict):
        return {k: _exact(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_exact(x) for x in v]
    return v
