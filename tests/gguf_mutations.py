"""Structured GGUF mutations and how pylin's answer to each is judged (tests/test_gguf_layout.py,
bench/fuzz_gguf.py).

mutate(g, rng) changes ONE thing of a parsed valid file (tests/gguf_validator.Gguf) — a tensor's offset,
dims, type, the counts, a string length, the alignment, a duplicate key or tensor name, a metadata value
with a type, a dropped key, the version — and returns (kind, bytes).  judge(path, data) loads the file
and runs a forward pass, and names the outcome against tests/gguf_validator.validate:
  valid accepted / clean error (invalid, refused with a pylin.errors exception) / invalid accepted /
  valid refused / raw exception (any other exception) / blow-up (> BLOWUP_SECONDS or > BLOWUP_BYTES
  traced by tracemalloc).  Crashes and hangs are seen by the bench, which runs cases in child processes.
"""

from __future__ import annotations

import copy
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from gguf_validator import ARRAY, F32, F64, GGML_BLOCKS, I32, KV, STRING, U32, U64, Gguf, validate, write

BLOWUP_SECONDS = 10.0
BLOWUP_BYTES = 1 << 30
OUTCOMES = ("valid accepted", "clean error", "invalid accepted", "valid refused", "raw exception", "blow-up",
            "crash", "hang")  # fmt: skip

_LLAMA_KEYS = ["context_length", "embedding_length", "block_count", "feed_forward_length",
               "attention.head_count",
               "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "rope.freq_base",
               "rope.dimension_count", "attention.key_length"]  # fmt: skip
_INT_VALUES = [0, 1, 2, 3, 4, 16, 31, 32, 33, 64, 100, 2**31 - 1, 2**32 - 1, 10**8]
_FLOAT_VALUES = [0.0, -1.0, 1e-30, 1e-6, 1.0, 1e4, 1e30, float("nan"), float("inf"), float("-inf")]
_TYPES = [U32, I32, U64, F32, F64, STRING, 7, ARRAY]


def _pick(rng: np.random.Generator, options: Any) -> Any:
    """One of options, as given (rng.choice would turn 2**64 - 1 into a float)."""
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _value_of(vtype: int, rng: np.random.Generator) -> Any:
    if vtype in (U32, U64):
        return _pick(rng, _INT_VALUES)
    if vtype == I32:
        return _pick(rng, [*[v for v in _INT_VALUES if v < 2**31], -1, -(2**31)])
    if vtype in (F32, F64):
        return _pick(rng, _FLOAT_VALUES)
    if vtype == STRING:
        return _pick(rng, ["", "x", "32", "llama"])
    if vtype == 7:
        return bool(rng.integers(2))
    return (U32, [int(v) for v in rng.choice(_INT_VALUES, int(rng.integers(0, 3)))])


def _running_offsets(g: Gguf) -> list[int]:
    out, running, align = [], 0, g.alignment
    for t in g.tensors:
        out.append(running)
        running += -(-len(t.data) // align) * align
    return out


def mutate(g0: Gguf, rng: np.random.Generator) -> tuple[str, bytes]:
    g = copy.deepcopy(g0)
    kinds = [
        "offset",
        "dims",
        "type",
        "counts",
        "string_length",
        "alignment",
        "duplicate",
        "metadata",
        "drop",
        "version",
        "truncate",
        "none",
    ]
    weights = [0.14, 0.14, 0.1, 0.06, 0.1, 0.1, 0.06, 0.18, 0.04, 0.02, 0.04, 0.02]
    kind = kinds[int(rng.choice(len(kinds), p=weights))]
    i = int(rng.integers(len(g.tensors)))
    t = g.tensors[i]
    if kind == "offset":
        offsets, align = _running_offsets(g), g.alignment
        prev = offsets[i - 1] if i else 0
        t.offset = _pick(rng, [0, prev, offsets[i] + 1, offsets[i] - align, offsets[i] + align,
                                   offsets[i] + 1 + int(rng.integers(64)), 2**40, 2**64 - 1])  # fmt: skip
        t.offset = max(0, t.offset)
    elif kind == "dims":
        j = int(rng.integers(len(t.dims)))
        new = [0, 1, t.dims[j] * 2, max(1, t.dims[j] // 2), t.dims[j] + 32, 2**32, 2**62, 2**64 - 1]
        choice = int(rng.integers(len(new) + 3))
        if choice < len(new):
            t.dims[j] = int(new[choice])
        elif choice == len(new):
            t.dims.append(1)
        elif choice == len(new) + 1:
            t.dims = []
        else:
            t.dims = t.dims + [1, 1, 1, 1][: 5 - len(t.dims)]
    elif kind == "type":
        t.type_id = _pick(rng, [*GGML_BLOCKS, 4, 5, 31, 99, 2**32 - 1])
    elif kind == "counts":
        which, delta = ("n_kv", "n_tensors")[int(rng.integers(2))], _pick(rng, [-1, 1, 2, 10**6, 2**62])
        base = len(g.kvs) if which == "n_kv" else len(g.tensors)
        setattr(g, which, max(0, base + delta))
    elif kind == "string_length":
        n_strings = _count_strings(g)
        index = int(rng.integers(n_strings))
        g.string_patches[index] = _pick(rng, [0, 1, 63, 64, 1000, 2**20, 2**40, 2**63, 2**64 - 1])
    elif kind == "alignment":
        value = _pick(rng, [0, 1, 3, 8, 16, 24, 64, 4096, 2**21, 2**31, 2**32 - 1])
        vtype = _pick(rng, [U32, U32, U32, U64, I32])
        g.kvs = [kv for kv in g.kvs if kv.key != "general.alignment"]
        g.kvs.insert(int(rng.integers(len(g.kvs) + 1)), KV("general.alignment", vtype, value))
        if rng.random() < 0.5:  # also lay the data out at the new alignment (a valid file when it is one)
            for tensor in g.tensors:
                tensor.offset = None
    elif kind == "duplicate":
        if rng.random() < 0.5:
            kv = copy.deepcopy(g.kvs[int(rng.integers(len(g.kvs)))])
            g.kvs.insert(int(rng.integers(len(g.kvs) + 1)), kv)
        else:
            t.name = g.tensors[(i + 1 + int(rng.integers(len(g.tensors) - 1))) % len(g.tensors)].name
    elif kind == "metadata":
        key = "llama." + _pick(rng, _LLAMA_KEYS)
        vtype = _pick(rng, _TYPES)
        g.kvs = [kv for kv in g.kvs if kv.key != key] + [KV(key, vtype, _value_of(vtype, rng))]
    elif kind == "drop":
        if rng.random() < 0.5:
            del g.kvs[int(rng.integers(len(g.kvs)))]
        else:
            del g.tensors[i]
            for tensor in g.tensors:
                tensor.offset = None
    elif kind == "version":
        g.version = _pick(rng, [0, 1, 2, 4, 2**24 * 3])
    data = write(g)
    if kind == "truncate":
        data = data[: int(rng.integers(len(data)))]
    return kind, data


def _count_strings(g: Gguf) -> int:
    n = 0
    for kv in g.kvs:
        n += (
            1
            + (kv.vtype == STRING)
            + (len(kv.value[1]) if kv.vtype == ARRAY and kv.value[0] == STRING else 0)
        )
    return n + len(g.tensors)


def judge(path: Path, data: bytes) -> tuple[str, str]:
    """(outcome, detail) of loading `data` written at `path` and running a 3-token forward pass."""
    import pylin
    from pylin import errors

    pylin_errors = tuple(c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception))
    expected = validate(data)
    path.write_bytes(data)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        model = pylin.load(path)
        context = model.config.context_length  # a context of 1 or 2 is valid: the prompt must fit it
        logits = model.logits([1, 2, 3][: context or 3])
        finite = bool(np.isfinite(logits.numpy()).all())
        # A valid file may still give non-finite logits: a type swapped for one of the same block size
        # (F16 <-> BF16, Q4_0 <-> IQ4_NL) reads other values from the same bytes, as llama.cpp would.
        outcome = "valid accepted" if expected is None else "invalid accepted"
        detail = expected or ("" if finite else "non-finite logits")
    except pylin_errors as e:
        outcome, detail = ("clean error" if expected is not None else "valid refused"), str(e)[:300]
    except Exception as e:  # noqa: BLE001 - the point: name whatever escaped
        outcome, detail = "raw exception", f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        elapsed, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if elapsed > BLOWUP_SECONDS or peak > BLOWUP_BYTES:
        return "blow-up", f"{elapsed:.1f} s, {peak / 2**20:.0f} MiB traced: {detail}"
    return outcome, detail
