"""QTensor: a weight matrix kept in its GGUF storage format (raw bytes, never decoded in bulk).

A QTensor is a zero-copy view: the bytes of a memory-mapped GGUF tensor, of a numpy array, or of a
torch tensor's storage.  Shapes are in PyTorch order (rows, K): quant blocks run along the last
dimension, so every row is a whole number of blocks and slicing rows is exact.
Tests: tests/test_qtensor.py, tests/test_dequantize.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# The formats the kernels implement, spelled as GGUF spells them.
SUPPORTED_QTYPES: tuple[str, ...] = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
    "TQ1_0", "TQ2_0", "MXFP4", "NVFP4",
)  # fmt: skip

# The formats kernels.quantize writes (round to nearest; bit-exact with gguf-py where it quantizes).
# The others pylin reads but does not write: the i-quants need an importance matrix to quantize well,
# ternary, MXFP4 and NVFP4 weights come from models trained (or converted by llama.cpp) for them.
WRITABLE_QTYPES: tuple[str, ...] = SUPPORTED_QTYPES[:13]

# GGML type ids and (weights per block, bytes per block) as gguf-py states them (ggml-common.h).
QTYPE_IDS: dict[str, int] = {name: int(GGMLQuantizationType[name]) for name in SUPPORTED_QTYPES}
_BLOCK: dict[str, tuple[int, int]] = {
    name: tuple(GGML_QUANT_SIZES[GGMLQuantizationType[name]]) for name in SUPPORTED_QTYPES
}


def qtype_name(qtype: str | int | GGMLQuantizationType) -> str:
    """Normalize a format given as a name, a GGML type id or a GGMLQuantizationType; reject unknown ones."""
    if isinstance(qtype, GGMLQuantizationType):
        name = qtype.name
    elif isinstance(qtype, (int, np.integer)):
        try:
            name = GGMLQuantizationType(int(qtype)).name
        except ValueError:
            raise ValueError(f"unknown GGML quantization type id {int(qtype)}") from None
    elif isinstance(qtype, str):
        name = qtype.upper().replace("Q4_K_M", "Q4_K")
    else:
        raise ValueError(f"quantization type must be a name or a GGML type id, got {type(qtype).__name__}")
    if name not in _BLOCK:
        raise ValueError(
            f"unsupported quantization type {name!r}; pylin supports {', '.join(SUPPORTED_QTYPES)}"
        )
    return name


def writable_qtype(qtype: str | int | GGMLQuantizationType) -> str:
    """qtype_name for a format pylin can quantize into; a read-only format gets an error saying which
    formats pylin writes and where the read-only ones come from."""
    name = qtype_name(qtype)
    if name not in WRITABLE_QTYPES:
        origin = (
            "i-quants need an importance matrix: make them with llama.cpp's llama-quantize --imatrix"
            if name.startswith("IQ")
            else "ternary, MXFP4 and NVFP4 weights come from models trained for them, converted by llama.cpp"
        )
        raise ValueError(
            f"pylin reads {name} but cannot write it ({origin}); pylin quantizes into "
            f"{', '.join(WRITABLE_QTYPES)}"
        )
    return name


def block_layout(qtype: str | int | GGMLQuantizationType) -> tuple[int, int]:
    """(weights per block, bytes per block) of a format."""
    return _BLOCK[qtype_name(qtype)]


def row_nbytes(qtype: str | int | GGMLQuantizationType, k: int) -> int:
    """Bytes of one row of k weights; raises if k is not a whole number of blocks."""
    block_size, block_bytes = block_layout(qtype)
    if k <= 0 or k % block_size:
        raise ValueError(
            f"{qtype_name(qtype)} rows need K to be a positive multiple of {block_size}, got K = {k}"
        )
    return k // block_size * block_bytes


class QTensor:
    """A weight tensor in a GGUF storage format: raw bytes + format + logical shape (rows, K)."""

    __slots__ = ("data", "qtype", "shape", "name")

    def __init__(
        self, data: Any, qtype: str | int | GGMLQuantizationType, shape: Sequence[int], name: str = ""
    ) -> None:
        self.qtype = qtype_name(qtype)
        self.shape = tuple(int(s) for s in shape)
        self.name = name
        if not self.shape or any(s <= 0 for s in self.shape):
            raise ValueError(f"QTensor shape must have positive dimensions, got {self.shape}")
        self.data = _as_bytes(data)
        k = self.shape[-1]
        expected = int(np.prod(self.shape[:-1], dtype=np.int64)) * row_nbytes(self.qtype, k)
        if self.data.nbytes != expected:
            raise ValueError(
                f"QTensor {name or ''} holds {self.data.nbytes} bytes but {self.qtype} {self.shape} "
                f"needs {expected}"
            )

    @classmethod
    def from_torch(cls, tensor: Any, name: str = "") -> QTensor:
        """Wrap a float32/float16/bfloat16 torch tensor (CPU) without copying."""
        import torch

        qtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
        if tensor.dtype not in qtypes:
            raise ValueError(f"cannot wrap a {tensor.dtype} tensor; expected float32, float16 or bfloat16")
        t = tensor.detach().contiguous()
        raw = t.view(torch.uint8) if t.dtype != torch.uint8 else t
        return cls(raw.numpy(), qtypes[tensor.dtype], tuple(t.shape), name)

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64))

    @property
    def k(self) -> int:
        return self.shape[-1]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def bits_per_weight(self) -> float:
        block_size, block_bytes = block_layout(self.qtype)
        return 8.0 * block_bytes / block_size

    def rows(self, start: int, stop: int) -> QTensor:
        """Rows [start, stop) of a 2-D weight, as a zero-copy QTensor (e.g. q/k/v out of a fused qkv)."""
        if len(self.shape) != 2:
            raise ValueError("rows() needs a 2-D QTensor")
        if not 0 <= start < stop <= self.shape[0]:
            raise ValueError(f"row range [{start}, {stop}) outside 0..{self.shape[0]}")
        per_row = row_nbytes(self.qtype, self.k)
        return QTensor(
            self.data[start * per_row : stop * per_row], self.qtype, (stop - start, self.k), self.name
        )

    def reshape(self, *shape: int) -> QTensor:
        """Same bytes, another logical shape with the same last dimension (blocks run along it)."""
        if shape[-1] != self.k:
            raise ValueError("reshape must keep the last (block) dimension")
        return QTensor(self.data, self.qtype, shape, self.name)

    def dequantize(self) -> np.ndarray:
        from . import kernels

        return kernels.dequantize(self)

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return f"QTensor({label}{self.qtype}, shape={self.shape}, {self.nbytes / 2**20:.2f} MiB)"


def _as_bytes(data: Any) -> np.ndarray:
    """A flat uint8 view of `data` without copying; refuses anything that would need a copy."""
    if hasattr(data, "__dlpack__") and not isinstance(data, np.ndarray):
        if getattr(getattr(data, "device", None), "type", "cpu") != "cpu":
            raise ValueError("QTensor data must live in host memory (device weights come from pylin.load)")
        data = np.from_dlpack(data.detach() if hasattr(data, "detach") else data)
    if not isinstance(data, np.ndarray):
        data = np.frombuffer(memoryview(data), dtype=np.uint8)
    if not data.flags.c_contiguous:
        raise ValueError("QTensor data must be C-contiguous")
    return data.reshape(-1).view(np.uint8)
