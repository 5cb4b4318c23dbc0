"""pylin.kernels — products of float activations with GGUF-quantized weights, never dequantized in bulk.

    matmul_t(x, w)  = x · wᵀ   x: (..., K), w: QTensor (N, K)  -> (..., N)   forward pass and JVPs
    matmul(g, w)    = g · w    g: (..., N), w: QTensor (N, K)  -> (..., K)   VJPs
    dequantize(w)   -> float32 array, bit-exact with gguf-py's gguf.quants.dequantize
    quantize(x, qtype) -> QTensor (round-to-nearest; F32 … Q6_K: the i-quants, TQ*, MXFP4, NVFP4 read only)

Activations are float32 (float32 accumulation) or float64 (float64 accumulation, for exact
verification); numpy arrays and CPU torch tensors are accepted and returned in kind, without copies.
The CPU variant (generic / avx2 / avx512) is chosen from CPUID, forced by PYLIN_ISA or `set_isa`.
Threads follow torch.get_num_threads() when torch is loaded, else OMP_NUM_THREADS.
Tests: tests/test_matmul.py, tests/test_dequantize.py, tests/test_quantize.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import _core, cuda  # pylin.cuda imports no torch or CUDA until it is used
from .qtensor import QTYPE_IDS, QTensor, row_nbytes, writable_qtype

# Resolve the CPU variant now, so that a bad PYLIN_ISA fails `import pylin` with its own message
# instead of the first matmul.
try:
    _core.active_isa()
except ValueError as error:
    raise ImportError(f"pylin: {error}") from None

_QTYPE_IDS = QTYPE_IDS


# Thread counts, safe to use from several Python threads at once (docs/reliability.md):
#  - the native kernels take their thread count per call (csrc/cpu/parallel.h), and the pool runs one
#    job at a time behind a mutex, so concurrent calls are correct and only queue;
#  - a kernel_threads block pins the count for ITS thread (a thread-local), never for the others;
#  - torch's count is process-wide: the first block to enter (in any thread) sets it, the last to leave
#    restores it, under a lock; while any block runs, num_threads() elsewhere still answers the count
#    torch had before, not the temporary one.
_pinned = threading.local()
_torch_lock = threading.Lock()
_torch_blocks = 0  # kernel_threads blocks running now, all threads together
_torch_before: int | None = None  # torch's thread count before the first of them


def num_threads() -> int:
    """Threads the kernels use: torch's setting when torch is loaded, else OMP_NUM_THREADS or all cores
    (inside kernel_threads: the count pinned when the block began)."""
    pinned = getattr(_pinned, "threads", None)
    if pinned is not None:
        return pinned
    torch = sys.modules.get("torch")
    if torch is not None:
        before = _torch_before
        return max(1, before if _torch_blocks and before is not None else torch.get_num_threads())
    env = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(env)) if env.isdigit() else (os.cpu_count() or 1)


@contextlib.contextmanager
def kernel_threads(torch_threads: int = 1) -> Iterator[None]:
    """Give the cores to pylin's kernels for a block of mixed kernel + torch work.

    Inside, the kernels keep the thread count they would have had and torch runs on `torch_threads`
    threads (1 by default; callers whose torch work is large pass more).
    torch's idle OpenMP workers spin after each of its parallel regions; interleaved with pylin's
    kernels they steal the cores the kernels' threads need (measured on the 2-core dev machine under
    load: a Gemma 3 270M last-token Jacobian 7.4 s with both threaded, 1.0 s like this).  The
    engine's own torch work (elementwise scalings, attention mixing) is a few percent of its time.
    torch's setting is process-wide: a block changes it only while no other thread is inside a block
    (a nested block of the same thread may), and the last block to leave restores torch's own setting;
    a block that starts while another thread's runs keeps the setting it finds.
    """
    global _torch_blocks, _torch_before
    torch = sys.modules.get("torch")
    threads = num_threads()
    previous_pin, depth = getattr(_pinned, "threads", None), getattr(_pinned, "depth", 0)
    _pinned.threads, _pinned.depth = threads, depth + 1
    restore = None
    with _torch_lock:
        if torch is not None and _torch_blocks == depth:  # no other thread is inside a block
            if _torch_blocks == 0:
                _torch_before = torch.get_num_threads()
            wanted, now = max(1, min(torch_threads, threads)), torch.get_num_threads()
            if wanted != now:
                torch.set_num_threads(wanted)
                restore = now
        _torch_blocks += 1
    try:
        yield
    finally:
        _pinned.threads, _pinned.depth = previous_pin, depth
        with _torch_lock:
            _torch_blocks -= 1
            if torch is not None and _torch_before is not None:
                if _torch_blocks == 0:  # the last block of all: torch's own setting back
                    restore, _torch_before = _torch_before, None
                if restore is not None and torch.get_num_threads() != restore:
                    torch.set_num_threads(restore)


# ---- ISA variants -------------------------------------------------------------------------------


def available_isas() -> list[str]:
    """CPU kernel variants this build contains and this CPU can run, e.g. ['generic', 'avx2', 'avx512']."""
    return list(_core.supported_isas())


def isa() -> str:
    """The variant in use now."""
    return str(_core.active_isa())


def set_isa(name: str) -> None:
    """Force a variant ('generic', 'avx2', 'avx512') or go back to the best one ('auto')."""
    _core.set_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Run a block with one variant forced, restoring the previous one after."""
    previous = isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


# ---- array adaptation ---------------------------------------------------------------------------


def _host_view(a: Any, name: str) -> tuple[np.ndarray, bool]:
    """(numpy view, was_torch). Refuses non-float, non-contiguous or device arrays with a ValueError."""
    is_torch = type(a).__module__.startswith("torch")
    if is_torch:
        if a.device.type != "cpu":
            raise ValueError(f"{name} is on {a.device}; the CPU kernels need a CPU tensor")
        a = a.detach().numpy() if a.dtype.is_floating_point and a.dtype.itemsize >= 4 else a.detach()
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    elif not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (call .contiguous() / np.ascontiguousarray)")
    return a, is_torch


def _empty_like_kind(shape: tuple[int, ...], dtype: np.dtype, as_torch: bool) -> tuple[Any, np.ndarray]:
    if as_torch:
        import torch

        t = torch.empty(shape, dtype=torch.float32 if dtype == np.float32 else torch.float64)
        return t, t.numpy()
    arr = np.empty(shape, dtype=dtype)
    return arr, arr


def _check_weight(w: Any) -> QTensor:
    if not isinstance(w, QTensor):
        raise ValueError(f"w must be a pylin.QTensor, got {type(w).__name__}")
    if len(w.shape) != 2:
        raise ValueError(f"w must be a 2-D weight (N, K), got shape {w.shape}")
    return w


def _product(transposed: bool, x: Any, w: Any, out: Any | None) -> Any:
    w = _check_weight(w)
    on_gpu = getattr(x, "is_cuda", False) or hasattr(x, "__cuda_array_interface__")
    if on_gpu or isinstance(w, cuda.CudaQTensor):
        return cuda.matmul(transposed, x, w, out)  # checks that x and w are both on the GPU
    name = "x" if transposed else "g"
    xa, is_torch = _host_view(x, name)
    n, k = w.shape
    inner, outer = (k, n) if transposed else (n, k)
    if xa.ndim < 1 or xa.shape[-1] != inner:
        raise ValueError(
            f"{name} has shape {xa.shape}; its last dimension must be {inner} for w of shape {w.shape}"
        )
    lead = xa.shape[:-1]
    m = int(np.prod(lead, dtype=np.int64))
    if m == 0:
        raise ValueError(f"{name} has no rows (shape {xa.shape})")
    if out is None:
        result, out_view = _empty_like_kind((*lead, outer), xa.dtype, is_torch)
    else:
        result = out
        out_view, _ = _host_view(out, "out")
        if out_view.shape != (*lead, outer) or out_view.dtype != xa.dtype:
            raise ValueError(
                f"out must be {xa.dtype} of shape {(*lead, outer)}, got {out_view.dtype} {out_view.shape}"
            )
    fn = _core.matmul_t if transposed else _core.matmul
    fn(xa.reshape(m, inner), w.data, _QTYPE_IDS[w.qtype], n, k, out_view.reshape(m, outer), num_threads())
    return result


def matmul_t(x: Any, w: QTensor, out: Any | None = None) -> Any:
    """x · wᵀ for x of shape (..., K) and a quantized w of shape (N, K); returns (..., N) like x."""
    return _product(True, x, w, out)


def matmul(g: Any, w: QTensor, out: Any | None = None) -> Any:
    """g · w for g of shape (..., N) and a quantized w of shape (N, K); returns (..., K) like g."""
    return _product(False, g, w, out)


def dequantize(w: QTensor) -> np.ndarray:
    """float32 values of w, shaped like w; bit-exact with gguf.quants.dequantize."""
    if not isinstance(w, QTensor):
        raise ValueError(f"dequantize needs a pylin.QTensor, got {type(w).__name__}")
    out = np.empty(w.shape, dtype=np.float32)
    _core.dequantize(w.data, _QTYPE_IDS[w.qtype], w.n_rows, w.k, out.reshape(w.n_rows, w.k), num_threads())
    return out


def quantize(x: Any, qtype: str) -> QTensor:
    """Quantize float32 rows (shape (..., K)) into `qtype` with round-to-nearest; returns a QTensor.

    Writes the formats in qtensor.WRITABLE_QTYPES; the i-quants, TQ1_0 / TQ2_0, MXFP4 and NVFP4 are read only
    (a ValueError says so)."""
    name = writable_qtype(qtype)
    xa, _ = _host_view(x, "x")
    if xa.dtype != np.float32:
        raise ValueError(f"quantize needs float32 input, got {xa.dtype}")
    if xa.ndim < 1 or xa.size == 0:
        raise ValueError(f"cannot quantize an empty array of shape {xa.shape}")
    k = xa.shape[-1]
    rows = xa.size // k
    data = np.empty(rows * row_nbytes(name, k), dtype=np.uint8)
    _core.quantize(xa.reshape(rows, k), _QTYPE_IDS[name], data, num_threads())
    return QTensor(data, name, xa.shape)
