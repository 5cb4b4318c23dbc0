"""Slow truths the kernel tests compare against: gguf-py's dequantizer, float64 products, block generators.

Nothing here calls pylin.  `dequantize_ref` is gguf-py's `gguf.quants.dequantize` (its own tests hold
it bit-exact against ggml's C code); the products are float64 numpy matmuls of those float32 weights.
Used by tests/test_dequantize.py, tests/test_matmul.py and tests/test_quantize.py.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

# Every format pylin implements, spelled as GGUF spells them.
QTYPES: tuple[str, ...] = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip
FLOAT_QTYPES = ("F32", "F16", "BF16")

# Byte offsets of the fp16 scale fields inside one block (ggml-common.h): everything else is bit fields.
SCALE_OFFSETS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
}  # fmt: skip


def ggml_type(qtype: str) -> GGMLQuantizationType:
    return GGMLQuantizationType[qtype]


def block_layout(qtype: str) -> tuple[int, int]:
    """(weights per block, bytes per block) from gguf-py, independent of pylin's own table."""
    return GGML_QUANT_SIZES[ggml_type(qtype)]


def row_bytes(qtype: str, k: int) -> int:
    block_size, type_size = block_layout(qtype)
    assert k % block_size == 0
    return k // block_size * type_size


# ---- random data ----------------------------------------------------------------------------------


def random_fp16_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """n finite fp16 bit patterns over the whole range: random sign, exponent and mantissa, inf/NaN
    excluded, and every fourth one forced subnormal (exponent 0) so subnormals are always exercised."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    exponent = (bits >> 10) & 0x1F
    bits = np.where(exponent == 0x1F, bits & np.uint16(0xBFFF), bits)  # exponent 31 -> 15
    bits[::4] &= np.uint16(0x83FF)  # subnormal (or zero)
    return bits.astype(np.uint16)


def moderate_fp16_bits(rng: np.random.Generator, n: int, lo: float = 1e-3, hi: float = 1e-1) -> np.ndarray:
    """fp16 scales of realistic magnitude with random sign: for products, whose error is then meaningful."""
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    return (mag * rng.choice([-1.0, 1.0], size=n)).astype(np.float16).view(np.uint16)


def random_blocks(
    qtype: str, n_rows: int, k: int, rng: np.random.Generator, moderate: bool = False
) -> np.ndarray:
    """uint8 array (n_rows, row_bytes) of random blocks: random bytes in every bit field, finite fp16
    scales (full range with subnormals, or `moderate` ones).  Float formats get finite random bit
    patterns (or, when `moderate`, standard normal values)."""
    if qtype in FLOAT_QTYPES:
        if moderate:
            values = rng.standard_normal((n_rows, k)).astype(np.float32)
            if qtype == "F32":
                return values.view(np.uint8)
            if qtype == "F16":
                return values.astype(np.float16).view(np.uint8)
            return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)  # BF16 by truncation
        if qtype == "F32":
            bits = rng.integers(0, 1 << 32, size=(n_rows, k), dtype=np.uint64).astype(np.uint32)
            exponent = (bits >> 23) & 0xFF
            bits = np.where(exponent == 0xFF, bits & np.uint32(0xBFFFFFFF), bits).astype(np.uint32)
            return bits.view(np.uint8)
        bits = rng.integers(0, 1 << 16, size=(n_rows, k), dtype=np.uint32).astype(np.uint16)
        if qtype == "F16":
            return (
                np.where(((bits >> 10) & 0x1F) == 0x1F, bits & np.uint16(0xBFFF), bits)
                .astype(np.uint16)
                .view(np.uint8)
            )
        return (
            np.where(((bits >> 7) & 0xFF) == 0xFF, bits & np.uint16(0xBFFF), bits)
            .astype(np.uint16)
            .view(np.uint8)
        )
    block_size, type_size = block_layout(qtype)
    n_blocks = n_rows * (k // block_size)
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in SCALE_OFFSETS[qtype]:
        bits = moderate_fp16_bits(rng, n_blocks) if moderate else random_fp16_bits(rng, n_blocks)
        blocks[:, offset : offset + 2] = bits.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(n_rows, -1)


def zero_blocks(qtype: str, n_rows: int, k: int) -> np.ndarray:
    return np.zeros((n_rows, row_bytes(qtype, k)), dtype=np.uint8)


# ---- truths ---------------------------------------------------------------------------------------


def dequantize_ref(data: np.ndarray, qtype: str, n_rows: int, k: int) -> np.ndarray:
    """float32 (n_rows, k) from gguf-py, for bytes shaped (n_rows, row_bytes)."""
    raw = np.ascontiguousarray(data, dtype=np.uint8).reshape(n_rows, row_bytes(qtype, k))
    out = gguf_dequantize(raw, ggml_type(qtype))
    return np.asarray(out, dtype=np.float32).reshape(n_rows, k)


def matmul_t_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x · wᵀ in float64."""
    return np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64).T


def matmul_ref(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """g · w in float64."""
    return np.asarray(g, dtype=np.float64) @ np.asarray(w, dtype=np.float64)


def rel_frobenius(got: np.ndarray, ref: np.ndarray) -> float:
    """‖got − ref‖_F / ‖ref‖_F in float64 (0 when both are zero)."""
    got64 = np.asarray(got, dtype=np.float64)
    ref64 = np.asarray(ref, dtype=np.float64)
    denom = np.linalg.norm(ref64)
    num = np.linalg.norm(got64 - ref64)
    return float(num / denom) if denom > 0 else float(num)


def ggml_test_signal(n: int, offset: float = 0.0, amplitude: float = 2.0) -> np.ndarray:
    """ggml tests/test-quantize-fns.cpp `generate_data`: 0.1 + amplitude·cos(i + offset), as float32
    (cosf of a float argument, like the C code)."""
    i = np.arange(n, dtype=np.float32)
    return (np.float32(0.1) + np.float32(amplitude) * np.cos(i + np.float32(offset))).astype(np.float32)


def ggml_array_rmse(a: np.ndarray, b: np.ndarray) -> float:
    """ggml test-quantize-fns.cpp `array_rmse`: sqrt(Σ diff²) / n — note /n, not /sqrt(n), as ggml does."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.sum(diff * diff)) / diff.size)
