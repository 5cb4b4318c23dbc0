"""What a batch row depends on: the analysis settings, the model's identity and the prompt → the row key.

    settings = Settings(k=8, tokens="-1", layers="auto")
    model = ModelSpec.of("gemma-3-270m.gguf", identity="stat")   # path + size + mtime (or "hash": sha256)
    key = row_key(model, "The bridge out of Marin is the", settings)

A row is done when a row with its key is in the results: reruns skip it, so the key holds everything
that changes the row's numbers (the row schema's version, the model's identity, the prompt text, every
setting below) and nothing that does not (the prompt's id and metadata, the engine, the thread count,
the worker).  Tests: tests/test_batch.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..indices import integer

__all__ = ["ROW_VERSION", "Settings", "SteerSettings", "ModelSpec", "model_identity", "row_key"]

# Bump when a row's columns or their meaning change: rows of another version are never "done".
ROW_VERSION = 1
_HASH_CHUNK = 1 << 24  # 16 MiB reads when hashing a model file


@dataclass(frozen=True)
class SteerSettings:
    """Steered greedy continuations of every prompt (pylin.steer, the paper's Jacobian operator)."""

    concept: str
    layer: int
    strengths: tuple[float, ...] = (1.0,)
    max_new_tokens: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.concept, str) or not self.concept.strip():
            raise ValueError("steer concept must be a non-empty text")
        integer(self.layer, "steer layer")
        integer(self.max_new_tokens, "steer max_new_tokens", low=1)
        strengths = tuple(float(s) for s in self.strengths)
        if not strengths or any(s != s or abs(s) == float("inf") for s in strengths):
            raise ValueError(f"steer strengths must be finite numbers, got {self.strengths!r}")
        object.__setattr__(self, "strengths", strengths)


@dataclass(frozen=True)
class Settings:
    """The analysis of each (model, prompt): pylin.report.analyze's options plus what a row stores.

    max_tokens: prompts longer than this (or than the model's context) become error rows.
    arrays: write U, S, Vh of the SVD to a per-row file; jacobian: also the formed J of those tokens.
    """

    k: int = 8
    tokens: str = "all"
    layers: str = "auto"
    dtype: str = "float32"
    device: str = "cpu"
    method: str = "auto"
    top: int = 5
    nonlinear: str = "auto"
    seed: int = 0
    max_tokens: int | None = None
    arrays: bool = False
    jacobian: bool = False
    steer: SteerSettings | None = None

    def __post_init__(self) -> None:
        integer(self.k, "k", low=1)
        integer(self.top, "top", low=1)
        integer(self.seed, "seed")
        if self.max_tokens is not None:
            integer(self.max_tokens, "max_tokens", low=1)
        for name, allowed in (
            ("dtype", ("float32", "float64")),
            ("method", ("auto", "krylov", "randomized", "exact")),
            ("nonlinear", ("auto", "on", "off")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.device != "cpu" and not str(self.device).startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        # tokens / layers are kept as the text the user wrote (normalized): analyze parses them per model
        object.__setattr__(self, "tokens", _spec(self.tokens))
        object.__setattr__(self, "layers", _spec(self.layers))
        if self.jacobian and not self.arrays:
            object.__setattr__(self, "arrays", True)
        if isinstance(self.steer, dict):
            object.__setattr__(self, "steer", SteerSettings(**self.steer))

    def keyed(self) -> dict[str, Any]:
        """The settings as plain JSON values: what the row key hashes and the `settings` column holds."""
        return asdict(self)


def _spec(value: Any) -> str:
    """'all' / '-1' / '0,3' / [0, 3] / 3 -> one canonical text, so equal choices give equal keys."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(integer(v, "index")) for v in value)
    if isinstance(value, str):
        return ",".join(p.strip() for p in value.strip().lower().split(","))
    return str(integer(value, "index"))


@dataclass(frozen=True)
class ModelSpec:
    """A model of the run: its path, its label in the tables (`model` column) and its identity."""

    path: str
    label: str
    identity: str
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, path: str | Path, label: str | None = None, identity: str = "stat") -> ModelSpec:
        p = Path(path).expanduser().resolve()
        if not p.exists():
            raise FileNotFoundError(f"no such model file or folder: {path}")
        return cls(str(p), label or p.name, model_identity(p, identity))


def model_identity(path: Path, how: str = "stat") -> str:
    """ "stat:<path>:<bytes>:<mtime_ns>" (instant) or "sha256:<hex>" of the contents (reads every byte; the
    same file elsewhere keeps its identity).  A Hugging Face folder: every file in it, by name."""
    if how not in ("stat", "hash"):
        raise ValueError(f"identity must be 'stat' or 'hash', got {how!r}")
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    if how == "stat":
        parts = [
            f"{f.relative_to(path) if path.is_dir() else f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
            for f in files
        ]
        return f"stat:{path}:" + ";".join(parts)
    digest = hashlib.sha256()
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def row_key(model: ModelSpec, prompt_text: str, settings: Settings) -> str:
    """sha256 of (row version, model identity, prompt text, settings): the row's identity in the results."""
    blob = json.dumps(
        [ROW_VERSION, model.identity, prompt_text, settings.keyed()], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def worker_name() -> str:
    """host:pid of this process (the row's `worker` column)."""
    return f"{os.uname().nodename}:{os.getpid()}"
