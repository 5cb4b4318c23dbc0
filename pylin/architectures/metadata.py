"""The GGUF hyperparameters every family reads, with their types and ranges: one checked table.

check_gguf_metadata(family, meta) runs before any ArchConfig is built, so a file whose metadata would
divide by zero, broadcast a wrong-length tensor, drop layers or give NaN ends in one MetadataError
naming the key, its value and the allowed range (llama.cpp refuses the same files in
llama_model::load_hparams / load_tensors, or crashes on them).  Keys are given after "{arch}.".
Tests: tests/test_reliability.py (one case per rule), tests/test_gguf_layout.py (fuzz).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import MetadataError


@dataclass(frozen=True)
class Key:
    """One hyperparameter: integer or number, required or not, and its lower bound."""

    name: str
    kind: str  # "int" | "float"
    required: bool = False
    minimum: float = 1  # ints: value >= minimum; floats: value > 0 when minimum is 0 (strictly positive)

    def describe(self) -> str:
        return f"an integer ≥ {self.minimum:g}" if self.kind == "int" else "a finite number > 0"


GGUF_KEYS: tuple[Key, ...] = (
    Key("embedding_length", "int", required=True),
    Key("block_count", "int", required=True),
    Key("feed_forward_length", "int", required=True),
    Key("attention.head_count", "int", required=True),
    Key("attention.head_count_kv", "int"),
    Key("attention.key_length", "int", minimum=2),
    Key("rope.dimension_count", "int", minimum=2),
    Key("context_length", "int"),
    Key("rope.freq_base", "float", minimum=0),
    Key("rope.freq_base_swa", "float", minimum=0),
    Key("rope.scaling.factor", "float", minimum=0),
    Key("attention.layer_norm_rms_epsilon", "float", minimum=0),
    Key("attention.sliding_window", "int", minimum=0),
)

_LAYER = re.compile(r"blk\.(\d+)\.")


def _value(meta: Any, arch: str, key: Key) -> Any:
    full = f"{arch}.{key.name}"
    if not meta.has(full):
        if key.required:
            raise MetadataError(f"{meta.path}: missing metadata key {full!r} ({key.describe()})")
        return None
    value = meta.get(full)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    if key.kind == "int" and is_int and value >= key.minimum:
        return value
    if key.kind == "float" and is_number and math.isfinite(value) and value > key.minimum:
        return value
    shown = repr(value) if not isinstance(value, str) else repr(value[:64])
    raise MetadataError(f"{meta.path}: {full} = {shown} must be {key.describe()}")


def check_gguf_metadata(family: Any, meta: Any) -> dict[str, Any]:
    """Every GGUF_KEYS value checked, then the rules between them; returns {key name: value or None}."""
    arch, path = meta.arch, meta.path
    v = {key.name: _value(meta, arch, key) for key in GGUF_KEYS}
    heads, kv = v["attention.head_count"], v["attention.head_count_kv"] or v["attention.head_count"]
    if heads % kv:
        raise MetadataError(
            f"{path}: {arch}.attention.head_count_kv = {kv} does not divide head_count = {heads}"
        )
    d = v["embedding_length"]
    head_dim = v["attention.key_length"]
    if head_dim is None:
        if d % heads or d // heads < 2:
            raise MetadataError(
                f"{path}: embedding_length {d} / head_count {heads} is not a whole head size ≥ 2 "
                f"(and the file has no {arch}.attention.key_length)"
            )
        head_dim = d // heads
    rotary = v["rope.dimension_count"] or head_dim
    if rotary % 2 or rotary > head_dim or (rotary != head_dim and not family.partial_rotary):
        allowed = f"an even number ≤ {head_dim}" if family.partial_rotary else f"the head size {head_dim}"
        raise MetadataError(f"{path}: {arch}.rope.dimension_count = {rotary} must be {allowed}")
    _check_layers(meta, arch, v["block_count"])
    if meta.has_tensor("rope_freqs.weight"):
        shape = meta.tensor_shape("rope_freqs.weight")
        if shape != (rotary // 2,):
            raise MetadataError(
                f"{path}: tensor 'rope_freqs.weight' has shape {shape}; the rope needs ({rotary // 2},) "
                f"(rope.dimension_count / 2)"
            )
    return v | {"head_dim": head_dim, "rotary": rotary, "head_count_kv": kv}


def _check_layers(meta: Any, arch: str, block_count: int) -> None:
    """block_count must be the number of blk.N layers in the file (llama.cpp: "wrong number of tensors")."""
    layers = {int(m.group(1)) for name in meta.tensors if (m := _LAYER.match(name))}
    n_file = max(layers) + 1 if layers else 0
    if block_count != n_file:
        raise MetadataError(
            f"{meta.path}: {arch}.block_count = {block_count}, but the file holds tensors of {n_file} layers"
        )


def sliding_window_pattern(meta: Any, n_layers: int, default_period: int) -> list[bool]:
    """True for sliding-window (local) layers, from `{arch}.attention.sliding_window_pattern`: a period
    ≥ 1 (every period-th layer global) or one bool per layer."""
    key = f"{meta.arch}.attention.sliding_window_pattern"
    value = meta.get(key)
    if value is None:
        return [bool((i + 1) % default_period) for i in range(n_layers)]
    if isinstance(value, list):
        if len(value) != n_layers or not all(isinstance(x, (bool, int)) and x in (0, 1) for x in value):
            raise MetadataError(
                f"{meta.path}: {key} must be {n_layers} booleans (one per layer), got {value!r:.64}"
            )
        return [bool(x) for x in value]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MetadataError(
            f"{meta.path}: {key} = {value!r:.64} must be a period ≥ 1 or one boolean per layer"
        )
    return [bool((i + 1) % value) for i in range(n_layers)]
