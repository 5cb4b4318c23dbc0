"""pylin.planner — will a model's linearization fit a GPU, and how many JVP/VJP vectors per batch?

    plan = pylin.planner.plan("Llama-3.3-70B-Q4_K_M.gguf", "80GiB", tokens=16)   # reads the header only
    print(pylin.planner.format_plan(plan))       # weights, frozen state, per-vector bytes, batch
    pylin.planner.chunk_size(model.config, n_positions, torch.float32, free_bytes)   # for the engine

Everything is computed from shapes and tensor types: a GGUF file's header (gguf-py's GGUFReader
maps the file but reads no tensor data) or a synthetic header dict (tests, what-if questions):

    {"config": {"n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab_size"},
     "tensors": [(name, qtype, shape_in_pytorch_order), ...]}

What lives on the GPU during an analysis (float32 unless dtype says otherwise):
  weights       every tensor, still quantized (bytes by type and shape);
  frozen state  per layer, what the forward records at X* (pylin.forward.LayerRecord): residuals,
                attention / MLP outputs (4·n·d), activated gates n·d_ff, attention probabilities
                heads·n², norm scales (4·n); plus the embeddings and final states (2·n·d);
  per vector    the live tangents of one JVP/VJP vector inside a layer, n·(4·d + 3·d_ff + 3·heads·hd)
                (the same width Linearization._chunk uses);
  workspace     the forward's transient peak (scores, q/k/v, gate/up) and the split-N partials of
                the VJP kernel, plus a fixed reserve for the CUDA context, cuBLAS and allocator slack.
Tests: tests/test_planner.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .qtensor import qtype_name, row_nbytes

CONTEXT_RESERVE = 3 << 29  # 1.5 GiB: CUDA context (~0.5 GiB on an H100), cuBLAS workspaces, allocator slack
SPLIT_PARTIAL_FACTOR = 8  # the VJP kernel's workspace: at most ~8 split partials of 16 x K floats
_SIZES = {"tib": 2**40, "gib": 2**30, "mib": 2**20, "kib": 2**10, "tb": 10**12, "gb": 10**9, "mb": 10**6,
          "kb": 10**3, "t": 2**40, "g": 2**30, "m": 2**20, "k": 2**10, "b": 1}  # fmt: skip


_MAX_BYTES = 1 << 60


class DoesNotFitError(ValueError):
    """The model's weights and frozen state leave no room for even one JVP/VJP vector."""


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int


@dataclass
class Plan:
    """Bytes of everything an analysis keeps on the GPU, and the largest batch that fits."""

    shape: ModelShape
    device_memory: int
    tokens: int
    dtype_bytes: int
    weight_bytes: int
    weight_bytes_by_type: dict[str, int] = field(default_factory=dict)
    frozen_bytes: int = 0
    per_vector_bytes: int = 0
    workspace_bytes: int = 0
    reserve_bytes: int = CONTEXT_RESERVE
    batch: int = 0  # largest JVP/VJP batch that fits (0: does not fit)

    @property
    def fixed_bytes(self) -> int:
        return self.weight_bytes + self.frozen_bytes + self.workspace_bytes + self.reserve_bytes

    @property
    def fits(self) -> bool:
        return self.batch >= 1

    def shortfall(self) -> int:
        """Bytes missing for a batch of one vector (0 when it fits)."""
        return max(0, self.fixed_bytes + self.per_vector_bytes - self.device_memory)

    def message(self) -> str:
        if self.fits:
            return f"fits: batches of up to {self.batch} JVP/VJP vectors at {self.tokens} tokens"
        return (
            f"does not fit: {_size(self.device_memory)} of GPU memory, but the weights need "
            f"{_size(self.weight_bytes)}, the frozen state at {self.tokens} tokens "
            f"{_size(self.frozen_bytes)}, "
            f"workspace and reserve {_size(self.workspace_bytes + self.reserve_bytes)} and one vector "
            f"{_size(self.per_vector_bytes)}: {_size(self.shortfall())} short"
        )


def parse_bytes(size: int | str) -> int:
    """Bytes from an int or a string like '80GiB', '80GB', '24G', '512MiB' — the one parser of every
    memory size pylin takes (memory_budget, --gpu-memory).  At least one byte, at most 2^60."""
    from .indices import is_integer

    if is_integer(size):
        value, text = float(int(size)), str(int(size))
        factor = 1
    elif isinstance(size, str):
        text = size.strip().lower().replace(" ", "")
        unit = next((u for u in _SIZES if text.endswith(u)), "")
        factor = _SIZES.get(unit, 1)
        try:
            value = float(text[: len(text) - len(unit)])
        except ValueError:
            value = math.nan
    else:
        raise ValueError(f"a memory size must be an integer of bytes or a string like '2GiB', got {size!r}")
    if not math.isfinite(value) or value * factor < 1 or value * factor > _MAX_BYTES:
        raise ValueError(
            f"cannot use memory size {size!r}: it must be a finite size from 1 byte to 1 EiB, "
            f"e.g. 536870912, '512MiB', '24GB', '80GiB'"
        )
    return int(value * factor)


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


# ---- headers ------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The synthetic-header dict of a GGUF file: its shapes and tensor types (no tensor data read)."""
    from gguf import GGMLQuantizationType

    from .gguf_file import read_header as read_gguf_header

    head = read_gguf_header(path)
    meta = head["meta"]
    arch = meta.get("general.architecture")
    if arch is None:
        raise ValueError(f"{path} has no general.architecture: not a model GGUF")

    def value(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    def type_name(q: int) -> str:
        try:
            return GGMLQuantizationType(q).name
        except ValueError:
            return f"type{q}"

    tensors = [(name, type_name(q), tuple(shape)) for name, shape, q in head["tensors"]]
    d = int(value("embedding_length"))
    heads = int(value("attention.head_count"))
    embd = next((s for name, _, s in tensors if name == "token_embd.weight"), None)
    config = {
        "n_layers": int(value("block_count")),
        "d_model": d,
        "n_heads": heads,
        "n_kv_heads": int(value("attention.head_count_kv", heads)),
        "head_dim": int(value("attention.key_length", d // heads)),
        "d_ff": int(max(ff) if isinstance(ff := value("feed_forward_length"), list) else ff),
        "vocab_size": int(embd[0]) if embd else int(value("vocab_size", 0)),
    }
    return {"config": config, "tensors": tensors}


def _tensor_bytes(qtype: str, shape: tuple[int, ...]) -> int:
    rows = 1
    for s in shape[:-1]:
        rows *= int(s)
    return rows * row_nbytes(qtype, int(shape[-1]))


def weight_bytes(tensors: Iterable[tuple[Any, ...]]) -> dict[str, int]:
    """Bytes by tensor type, from (name, qtype, shape[, nbytes]) entries."""
    out: dict[str, int] = {}
    for entry in tensors:
        _, qtype, shape = entry[:3]
        try:
            name = qtype_name(qtype)
            nbytes = _tensor_bytes(name, tuple(shape))
        except ValueError:  # a type pylin cannot multiply (e.g. I8 metadata): count its stored bytes
            if len(entry) < 4:
                raise
            name, nbytes = str(qtype), int(entry[3])
        out[name] = out.get(name, 0) + nbytes
    return out


# ---- the plan -----------------------------------------------------------------------------------


def frozen_bytes(s: ModelShape, tokens: int, dtype_bytes: int = 4) -> int:
    """What the forward records at X* for `tokens` positions (see the module docstring)."""
    n = tokens
    per_layer = 4 * n * s.d_model + n * s.d_ff + s.n_heads * n * n + 4 * n
    return (s.n_layers * per_layer + 2 * n * s.d_model + n + s.vocab_size) * dtype_bytes


def per_vector_bytes(s: ModelShape, positions: int, dtype_bytes: int = 4) -> int:
    """Live bytes of one tangent/cotangent vector over `positions` positions inside a layer."""
    width = 4 * s.d_model + 3 * s.d_ff + 3 * s.n_heads * s.head_dim
    return positions * width * dtype_bytes


def forward_transient_bytes(s: ModelShape, tokens: int, dtype_bytes: int = 4) -> int:
    """The forward's transient peak inside one layer: scores and probabilities (heads·n² each, the
    n² part that makes long prompts expensive), q/k/v, gate/up, the residual work."""
    n = tokens
    q_kv = n * (s.n_heads + 2 * s.n_kv_heads) * s.head_dim
    return (2 * s.n_heads * n * n + 3 * n * s.d_ff + 2 * q_kv + 4 * n * s.d_model) * dtype_bytes


def workspace_bytes(s: ModelShape, tokens: int, dtype_bytes: int = 4) -> int:
    """The forward's transient peak in one layer plus the VJP kernel's split partials."""
    forward = forward_transient_bytes(s, tokens, dtype_bytes)
    vjp_partials = SPLIT_PARTIAL_FACTOR * 16 * max(s.d_ff, s.d_model) * dtype_bytes
    logits = s.vocab_size * tokens * 4  # the LM head's output at every position (model.logits)
    return forward + vjp_partials + logits


def plan(
    header: str | os.PathLike[str] | Mapping[str, Any],
    device_memory: int | str,
    tokens: int,
    *,
    dtype_bytes: int = 4,
    reserve_bytes: int = CONTEXT_RESERVE,
    strict: bool = False,
) -> Plan:
    """The memory plan of a model (GGUF path or header dict) on a GPU of `device_memory` bytes.

    strict=True raises DoesNotFitError (with the numbers) instead of returning a plan with batch 0.
    """
    if tokens < 1:
        raise ValueError(f"tokens must be at least 1, got {tokens}")
    if dtype_bytes not in (4, 8):
        raise ValueError(f"dtype_bytes must be 4 (float32) or 8 (float64), got {dtype_bytes}")
    head = read_header(header) if isinstance(header, (str, os.PathLike)) else header
    shape = ModelShape(**{k: int(v) for k, v in head["config"].items()})
    by_type = weight_bytes(head["tensors"])
    p = Plan(
        shape=shape,
        device_memory=parse_bytes(device_memory),
        tokens=tokens,
        dtype_bytes=dtype_bytes,
        weight_bytes=sum(by_type.values()),
        weight_bytes_by_type=dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        frozen_bytes=frozen_bytes(shape, tokens, dtype_bytes),
        per_vector_bytes=per_vector_bytes(shape, tokens, dtype_bytes),
        workspace_bytes=workspace_bytes(shape, tokens, dtype_bytes),
        reserve_bytes=reserve_bytes,
    )
    p.batch = max(0, (p.device_memory - p.fixed_bytes) // p.per_vector_bytes)
    if strict and not p.fits:
        raise DoesNotFitError(p.message())
    return p


def chunk_size(
    config: Any, n_positions: int, dtype_bytes: int, free_bytes: int, cap: int | None = None
) -> int:
    """Vectors per JVP/VJP chunk for the engine: what fits in `free_bytes` (e.g.
    torch.cuda.mem_get_info()[0] minus a margin) at `n_positions` positions; at least 1.
    `config` is a pylin ArchConfig or a ModelShape."""
    s = ModelShape(
        config.n_layers, config.d_model, config.n_heads, config.n_kv_heads, config.head_dim, config.d_ff,
        config.vocab_size,
    )  # fmt: skip
    batch = max(1, int(free_bytes) // per_vector_bytes(s, max(1, n_positions), dtype_bytes))
    return batch if cap is None else min(batch, cap)


def format_plan(p: Plan) -> str:
    """The plan as the text `pylin info MODEL --device cuda --gpu-memory 80GiB --tokens N` prints."""
    s = p.shape
    dtype = "float32" if p.dtype_bytes == 4 else "float64"
    lines = [
        f"model        {s.n_layers} layers, d={s.d_model}, heads={s.n_heads}/{s.n_kv_heads} x {s.head_dim}, "
        f"d_ff={s.d_ff}, vocab={s.vocab_size}",
        f"GPU memory   {_size(p.device_memory)}   tokens {p.tokens}   {dtype}",
        f"weights      {_size(p.weight_bytes)}  ("
        + ", ".join(f"{t} {_size(b)}" for t, b in p.weight_bytes_by_type.items())
        + ")",
        f"frozen state {_size(p.frozen_bytes)}",
        f"workspace    {_size(p.workspace_bytes)}  + reserve {_size(p.reserve_bytes)}",
        f"per vector   {p.per_vector_bytes / 2**20:.2f} MiB",
        f"free         {_size(max(0, p.device_memory - p.fixed_bytes))}",
        p.message(),
    ]
    return "\n".join(lines)


# ---- the forward on this machine -------------------------------------------------------------------


def model_shape(config: Any) -> ModelShape:
    """The ModelShape of a pylin ArchConfig."""
    return ModelShape(config.n_layers, config.d_model, config.n_heads, config.n_kv_heads, config.head_dim,
                      config.d_ff, config.vocab_size)  # fmt: skip


def available_memory(device: str = "cpu") -> int:
    """Bytes a new allocation can get now: the GPU's free memory, or the host's MemAvailable."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in open("/proc/meminfo").read().splitlines():  # noqa: SIM115 - a tiny read
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_forward_memory(
    config: Any, tokens: int, dtype_bytes: int, *, record: bool, device: str = "cpu",
    memory_budget: int | str | None = None,
) -> None:  # fmt: skip
    """Refuse, before anything is allocated, a forward whose attention would not fit: its transient peak
    (2·heads·n² scores and probabilities in one layer) plus, with record=True (what linearize keeps),
    heads·n² probabilities and the residual records of every layer — against memory_budget when given,
    else the memory available now."""
    from .errors import PromptTooLongError

    s = model_shape(config)
    need = forward_transient_bytes(s, tokens, dtype_bytes) + (
        frozen_bytes(s, tokens, dtype_bytes) if record else 0
    )
    limit = available_memory(device) if memory_budget is None else parse_bytes(memory_budget)
    if need > limit:
        what = "the forward and the frozen state linearize keeps" if record else "the forward"
        remedy = "shorten the prompt or free memory" + (
            "" if record else f", or pass memory_budget='{_suggest(need)}' (logits / forward) to try anyway"
        )
        source = "memory_budget" if memory_budget is not None else "the memory available now"
        raise PromptTooLongError(
            f"a prompt of {tokens} tokens needs {_size(need)} for {what} (attention grows as "
            f"{s.n_heads} heads × n² × {dtype_bytes} B per layer, {s.n_layers} layers), more than {source} "
            f"({_size(limit)}); {remedy}"
        )


def _suggest(n: int) -> str:
    return f"{max(1, math.ceil(n / 2**30))}GiB"
