"""pylin.cuda — the GPU path: why CUDA is (not) usable, weight upload, and the quantized products.

    pylin.cuda.available()            # True, or False with pylin.cuda.why_unavailable() saying why
    w_gpu = pylin.cuda.upload(w)      # QTensor -> CudaQTensor (the same raw GGUF bytes, on the GPU)
    y = pylin.kernels.matmul_t(x_gpu, w_gpu)   # dispatches here when x is a CUDA tensor
    model = pylin.cuda.to_device(model)        # every projection uploaded, norms moved

Weights stay quantized on the GPU: a CudaQTensor holds the GGUF blocks in a torch CUDA uint8
tensor, uploaded tensor by tensor straight from the memory map (no host copy of the file).
Activations are torch CUDA tensors, or cupy arrays (through DLPack; returned as cupy), float32 or
float64.  Arguments are validated here; the native module (pylin._cuda) re-checks sizes and runs on
torch's current stream.  Tests: tests/test_cuda.py (skipped without a GPU, except the checks that
need none).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import numpy as np

from .qtensor import QTYPE_IDS, QTensor, row_nbytes

_QTYPE_IDS = QTYPE_IDS


class CudaUnavailableError(RuntimeError):
    """A CUDA operation was asked for where it cannot run; the message says why and what to do."""


# ---- availability -------------------------------------------------------------------------------


def _native() -> Any:
    from . import _cuda  # type: ignore[attr-defined]

    return _cuda


@functools.lru_cache(maxsize=1)
def why_unavailable() -> str | None:
    """None when the CUDA kernels can run here, else the reason (module, torch, driver, device)."""
    try:
        native = _native()
    except ImportError as error:
        return (
            f"pylin was built without its CUDA module (pylin._cuda: {error}); nvcc was not found at build "
            "time. Reinstall with the CUDA toolkit on PATH (PYLIN_CUDA=ON makes its absence a build error)"
        )
    try:
        import torch
    except ImportError:
        return "torch is not installed; the CUDA path exchanges activations as torch CUDA tensors"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch"
    count, why = native.device_count()
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        if "driver" in why.lower():
            return f"no usable NVIDIA driver: {why}{hint}"
        return f"no CUDA device is visible: {why or 'the driver reports none'}{hint}"
    if not torch.cuda.is_available():
        return "the CUDA runtime sees a GPU but torch.cuda.is_available() is False (driver/torch mismatch?)"
    caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    oldest = oldest_compiled_capability(native)
    if all(c < oldest for c in caps):
        found = ", ".join(f"sm_{a}{b}" for a, b in caps)
        built = native.BUILD_INFO["archs"].replace(",", ", sm_")
        return (
            f"the GPU(s) here ({found}) predate sm_{oldest[0]}{oldest[1]}, the oldest architecture this "
            f"pylin._cuda holds (built for sm_{built}; rebuild with PYLIN_CUDA_ARCHITECTURES naming yours)"
        )
    return None


def oldest_compiled_capability(native: Any) -> tuple[int, int]:
    """(major, minor) of the oldest architecture in the build: CMake embeds each one's machine code and
    PTX, so any GPU of that capability or newer runs the kernels."""
    archs = [int(a) for a in str(native.BUILD_INFO["archs"]).split(",") if a.strip()]
    return divmod(min(archs), 10)


def available() -> bool:
    """Whether pylin's CUDA kernels can run here (see why_unavailable() when not)."""
    return why_unavailable() is None


def require() -> None:
    """Raise CudaUnavailableError with the reason when the CUDA kernels cannot run here."""
    why = why_unavailable()
    if why is not None:
        raise CudaUnavailableError(f"pylin's CUDA kernels cannot run: {why}")


# ---- weights on the GPU -------------------------------------------------------------------------


class CudaQTensor(QTensor):
    """A QTensor whose raw GGUF bytes live on a GPU (`data`: torch CUDA uint8 tensor)."""

    __slots__ = ("device",)

    def __init__(self, data: Any, qtype: str, shape: tuple[int, ...], name: str = "") -> None:
        # no QTensor.__init__: that one insists on host memory
        self.data, self.qtype, self.shape, self.name = data, qtype, tuple(shape), name
        self.device = data.device

    @property
    def nbytes(self) -> int:
        return int(self.data.numel())

    def rows(self, start: int, stop: int) -> CudaQTensor:
        """Rows [start, stop) as a zero-copy view (e.g. q/k/v out of a fused qkv)."""
        if len(self.shape) != 2 or not 0 <= start < stop <= self.shape[0]:
            raise ValueError(f"row range [{start}, {stop}) outside 0..{self.shape[0]} of {self.shape}")
        per_row = row_nbytes(self.qtype, self.k)
        return CudaQTensor(
            self.data[start * per_row : stop * per_row], self.qtype, (stop - start, self.k), self.name
        )

    def reshape(self, *shape: int) -> CudaQTensor:
        if shape[-1] != self.k:
            raise ValueError("reshape must keep the last (block) dimension")
        return CudaQTensor(self.data, self.qtype, shape, self.name)

    def dequantize(self) -> np.ndarray:
        """float32 values on the host (the QTensor contract: numpy), decoded on the GPU."""
        return dequantize(self).cpu().numpy()

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        size = f"{self.nbytes / 2**20:.2f} MiB"
        return f"CudaQTensor({label}{self.qtype}, shape={self.shape}, {size}, {self.device})"


def _device(device: Any) -> Any:
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {device!r}")
    return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)


def upload(w: QTensor, device: Any = "cuda") -> CudaQTensor:
    """Copy a QTensor's raw bytes to the GPU (still quantized).  Reads the memory map once."""
    require()
    import torch

    if isinstance(w, CudaQTensor):
        return (
            w
            if w.device == _device(device)
            else CudaQTensor(w.data.to(_device(device)), w.qtype, w.shape, w.name)
        )
    if not isinstance(w, QTensor):
        raise ValueError(f"upload needs a pylin.QTensor, got {type(w).__name__}")
    with warnings.catch_warnings():
        # a read-only memory map: torch warns that the view is not writable; it is only read
        warnings.simplefilter("ignore", UserWarning)
        host = torch.from_numpy(w.data)
    data = torch.empty(w.nbytes, dtype=torch.uint8, device=_device(device))
    data.copy_(host)
    return CudaQTensor(data, w.qtype, w.shape, w.name)


def upload_weights(weights: Any, device: Any = "cuda") -> Any:
    """A copy of pylin.model.ModelWeights with every projection uploaded and every norm moved."""
    dev = _device(device)
    return weights.map_linear(lambda w: upload(w, dev) if isinstance(w, QTensor) else w.to(dev)).map_norms(
        lambda t: t.to(dev)
    )


def to_device(model: Any, device: Any = "cuda") -> Any:
    """Move a loaded pylin.Model's weights to the GPU in place (tensor by tensor) and return it."""
    model.weights = upload_weights(model.weights, device)
    model.device = str(_device(device))
    return model


# ---- products -----------------------------------------------------------------------------------


def _stream(device: Any) -> int:
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def dequantize(w: CudaQTensor) -> Any:
    """float32 torch tensor on w's GPU, bit-exact with gguf.quants.dequantize."""
    require()
    import torch

    if not isinstance(w, CudaQTensor):
        raise ValueError(f"dequantize needs a CudaQTensor (pylin.cuda.upload), got {type(w).__name__}")
    out = torch.empty(w.shape, dtype=torch.float32, device=w.device)
    _native().dequantize(
        w.data.data_ptr(),
        w.nbytes,
        _QTYPE_IDS[w.qtype],
        w.n_rows,
        w.k,
        out.data_ptr(),
        w.device.index,
        _stream(w.device),
    )
    return out


def _as_torch(a: Any, name: str) -> tuple[Any, bool]:
    """(torch view, was_cupy): torch CUDA tensors as they are, cupy arrays through DLPack."""
    import torch

    if isinstance(a, torch.Tensor):
        return a, False
    if hasattr(a, "__cuda_array_interface__") and hasattr(a, "__dlpack__"):
        return torch.from_dlpack(a), True
    raise ValueError(f"{name} must be a torch CUDA tensor or a cupy array, got {type(a).__name__}")


def _check_activation(a: Any, name: str, w: CudaQTensor) -> None:
    import torch

    if a.device != w.device:
        raise ValueError(f"{name} is on {a.device} but w lives on {w.device}")
    if a.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    if not a.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous())")


def matmul(transposed: bool, x: Any, w: Any, out: Any | None = None) -> Any:
    """x · wᵀ (transposed) or x · w on the GPU; the backend of pylin.kernels.matmul_t / matmul.

    Runs on torch's current stream; cupy arrays (in or out) are ordered against cupy's current
    stream through DLPack and, for a cupy `out`, an event."""
    require()
    name = "x" if transposed else "g"
    if not isinstance(w, CudaQTensor):
        raise ValueError(
            f"{name} is on the GPU but w is a host {type(w).__name__}: upload it with pylin.cuda.upload "
            "(or move the model with pylin.cuda.to_device)"
        )
    if len(w.shape) != 2:
        raise ValueError(f"w must be a 2-D weight (N, K), got shape {w.shape}")
    xt, x_was_cupy = _as_torch(x, name)
    _check_activation(xt, name, w)
    result, out_was_cupy = _output(transposed, xt, w, out, name)
    _launch(transposed, xt, w, result)
    if out is not None:
        if out_was_cupy:
            _cupy_waits_for_torch(xt.device)
        return out
    if x_was_cupy:
        import cupy

        return cupy.from_dlpack(result)  # the DLPack exchange orders cupy's stream after torch's
    return result


def _output(transposed: bool, xt: Any, w: CudaQTensor, out: Any | None, name: str) -> tuple[Any, bool]:
    """(the torch tensor to write, whether it is a cupy array's view), checked against x and w."""
    import torch

    n, k = w.shape
    inner, outer = (k, n) if transposed else (n, k)
    if xt.dim() < 1 or xt.shape[-1] != inner:
        raise ValueError(
            f"{name} has shape {tuple(xt.shape)}; its last dimension must be {inner} for w {w.shape}"
        )
    lead = tuple(xt.shape[:-1])
    if int(np.prod(lead, dtype=np.int64)) == 0:
        raise ValueError(f"{name} has no rows (shape {tuple(xt.shape)})")
    if out is None:
        return torch.empty((*lead, outer), dtype=xt.dtype, device=xt.device), False
    result, was_cupy = _as_torch(out, "out")
    _check_activation(result, "out", w)
    if tuple(result.shape) != (*lead, outer) or result.dtype != xt.dtype:
        raise ValueError(
            f"out must be {xt.dtype} of shape {(*lead, outer)}, got {result.dtype} {tuple(result.shape)}"
        )
    return result, was_cupy


def _launch(transposed: bool, xt: Any, w: CudaQTensor, result: Any) -> None:
    """The native product (pylin._cuda checks sizes, byte lengths and overlaps again)."""
    import torch

    n, k = w.shape
    m = xt.numel() // xt.shape[-1]
    is_double = xt.dtype == torch.float64
    index = xt.device.index
    workspace = _workspace(transposed, m, w, is_double, index)
    fn = _native().matmul_t if transposed else _native().matmul
    fn(
        xt.data_ptr(),
        m,
        w.data.data_ptr(),
        w.nbytes,
        _QTYPE_IDS[w.qtype],
        n,
        k,
        result.data_ptr(),
        is_double,
        0 if workspace is None else workspace.data_ptr(),
        0 if workspace is None else workspace.numel(),
        index,
        _stream(xt.device),
    )


def _workspace(transposed: bool, m: int, w: CudaQTensor, is_double: bool, index: int) -> Any | None:
    """The split-N partials of a VJP, from torch's caching allocator on the current stream (the
    engine lets torch hold most of the free memory, so a second allocator beside it could fail)."""
    if transposed:
        return None
    import torch

    n, k = w.shape
    nbytes = _native().matmul_workspace_bytes(m, _QTYPE_IDS[w.qtype], n, k, is_double, index)
    return torch.empty(nbytes, dtype=torch.uint8, device=w.device) if nbytes else None


def _cupy_waits_for_torch(device: Any) -> None:
    """Order cupy's current stream after torch's (where the kernel ran), so that a cupy `out=` is
    ready for the caller's next cupy operation."""
    import cupy

    with cupy.cuda.Device(device.index):
        done = cupy.cuda.Event(disable_timing=True)
        done.record(cupy.cuda.ExternalStream(_stream(device), device.index))
        cupy.cuda.get_current_stream().wait_event(done)


def matmul_t(x: Any, w: CudaQTensor, out: Any | None = None) -> Any:
    """x · wᵀ for x (..., K) on the GPU and w (N, K) uploaded; returns (..., N)."""
    return matmul(True, x, w, out)
