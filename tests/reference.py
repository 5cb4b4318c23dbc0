"""Slow truths the kernel tests compare against: gguf-py's dequantizer, float64 products, block generators.

Nothing here calls pylin.  `dequantize_ref` is gguf-py's `gguf.quants.dequantize` (its own tests hold
it bit-exact against ggml's C code; for the i-quants, ternary, MXFP4 and NVFP4 formats its grids equal
llama.cpp's ggml-common.h tables, see csrc/common/make_iquant_tables.py --against); the products are
float64 numpy matmuls of those float32 weights.
Used by tests/test_dequantize.py, tests/test_matmul.py and tests/test_quantize.py.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

# Every format pylin writes (kernels.quantize), then every one it reads, spelled as GGUF spells them.
WRITABLE_QTYPES: tuple[str, ...] = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip
READ_ONLY_QTYPES: tuple[str, ...] = (
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
    "TQ1_0", "TQ2_0", "MXFP4", "NVFP4",
)  # fmt: skip
QTYPES: tuple[str, ...] = WRITABLE_QTYPES + READ_ONLY_QTYPES
FLOAT_QTYPES = ("F32", "F16", "BF16")

# Byte offsets of the fp16 scale fields inside one block (ggml-common.h): everything else is bit fields
# (sub-block scales, grid indices, signs), valid for any bytes.  IQ1_M's fp16 scale is split into the
# top nibbles of its 4 scale words (IQ1_M_SCALE_WORDS); MXFP4's scale is an E8M0 byte (always finite),
# NVFP4's are 4 UE4M3 bytes (any byte is a finite scale, 0 .. 240: ggml_ue4m3_to_fp32).
SCALE_OFFSETS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ1_S": (0,), "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ2_S": (0,), "IQ3_XXS": (0,), "IQ3_S": (0,),
    "IQ4_NL": (0,), "IQ4_XS": (0,), "TQ1_0": (52,), "TQ2_0": (64,), "IQ1_M": (), "MXFP4": (),
    "NVFP4": (),
}  # fmt: skip
IQ1_M_SCALE_WORDS = 48  # byte offset of block_iq1_m.scales: 4 little-endian u16
MXFP4_MODERATE_E = (116, 124)  # E8M0 exponents whose weights (2^(e-128) x up to 12) are ~1e-4 .. 0.2
NVFP4_SCALE_BYTES = 4  # d[0..3], one UE4M3 byte per 16 weights, before the 32 bytes of codes
NVFP4_MODERATE_D = (0x01, 0x20)  # UE4M3 bytes whose weights (2^-10 .. 0.06 x up to 12) are ~1e-3 .. 0.7


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
    block_size, _ = block_layout(qtype)
    n_blocks = n_rows * (k // block_size)
    blocks = _random_quant_blocks(qtype, n_blocks, rng, moderate)
    # keep only blocks whose gguf-py weights are finite (MXFP4's largest scales times its largest
    # codes overflow); redraw the others
    for _ in range(100):
        with np.errstate(over="ignore"):
            weights = gguf_dequantize(blocks, ggml_type(qtype)).reshape(n_blocks, -1)
        bad = ~np.isfinite(weights).all(axis=1)
        if not bad.any():
            return blocks.reshape(n_rows, -1)
        blocks[bad] = _random_quant_blocks(qtype, int(bad.sum()), rng, moderate)
    raise AssertionError(f"{qtype}: could not draw finite random blocks")


def _random_quant_blocks(qtype: str, n_blocks: int, rng: np.random.Generator, moderate: bool) -> np.ndarray:
    """Random bytes with the scale fields set: fp16 scales over their range (or moderate ones)."""
    blocks = rng.integers(0, 256, size=(n_blocks, block_layout(qtype)[1]), dtype=np.uint8)

    def scales() -> np.ndarray:
        return moderate_fp16_bits(rng, n_blocks) if moderate else random_fp16_bits(rng, n_blocks)

    for offset in SCALE_OFFSETS[qtype]:
        blocks[:, offset : offset + 2] = scales().view(np.uint8).reshape(n_blocks, 2)
    if qtype == "IQ1_M":
        set_iq1_m_scale(blocks, scales())
    if qtype == "MXFP4" and moderate:
        blocks[:, 0] = rng.integers(*MXFP4_MODERATE_E, size=n_blocks)
    if qtype == "NVFP4" and moderate:
        blocks[:, :NVFP4_SCALE_BYTES] = rng.integers(*NVFP4_MODERATE_D, size=(n_blocks, NVFP4_SCALE_BYTES))
    return blocks


def set_iq1_m_scale(blocks: np.ndarray, bits: np.ndarray) -> None:
    """Write fp16 bit patterns as IQ1_M's split scale: nibble i in the top nibble of scale word i
    (ggml-quants.c dequantize_row_iq1_m, iq1m_scale_t)."""
    words = blocks[:, IQ1_M_SCALE_WORDS : IQ1_M_SCALE_WORDS + 8].copy().view(np.uint16)
    for i in range(4):
        nibble = (bits.astype(np.uint16) >> np.uint16(4 * i)) & np.uint16(0xF)
        words[:, i] = (words[:, i] & np.uint16(0x0FFF)) | (nibble << np.uint16(12))
    blocks[:, IQ1_M_SCALE_WORDS : IQ1_M_SCALE_WORDS + 8] = words.view(np.uint8)


# Extreme scale values: the largest finite fp16, the smallest normal and subnormal, zero of both signs.
EXTREME_FP16 = np.array([65504.0, -65504.0, 2.0**-14, -(2.0**-14), 0.0, -0.0], dtype=np.float16)
EXTREME_E8M0 = np.array([0, 1, 2, 126, 127, 128, 253, 254, 255], dtype=np.uint8)
# UE4M3: zero, the smallest and largest subnormal, the smallest normal, 1.0, the largest (0x7E), E4M3's
# NaN 0x7F (0 in ggml), and bit 7 set (ignored by ggml: 0x80 is 0, 0xF8 is 0x78, 0xFF is 240).
EXTREME_UE4M3 = np.array([0x00, 0x01, 0x07, 0x08, 0x38, 0x7E, 0x7F, 0x80, 0xF8, 0xFF], dtype=np.uint8)


def extreme_blocks(qtype: str, n_rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Random blocks whose scale fields cycle through the extremes (EXTREME_FP16 and the smallest
    subnormal 2^-24; every MXFP4 exponent class; every UE4M3 class of NVFP4): products may overflow to
    inf, which is compared too."""
    block_size, _ = block_layout(qtype)
    n_blocks = n_rows * (k // block_size)
    blocks = rng.integers(0, 256, size=(n_blocks, block_layout(qtype)[1]), dtype=np.uint8)
    pool = np.concatenate([EXTREME_FP16.view(np.uint16), np.array([1, 0x8001], dtype=np.uint16)])
    for j, offset in enumerate(SCALE_OFFSETS[qtype]):
        bits = pool[(np.arange(n_blocks) + 3 * j) % len(pool)]
        blocks[:, offset : offset + 2] = bits.view(np.uint8).reshape(n_blocks, 2)
    if qtype == "IQ1_M":
        set_iq1_m_scale(blocks, pool[np.arange(n_blocks) % len(pool)])
    if qtype == "MXFP4":
        blocks[:, 0] = EXTREME_E8M0[np.arange(n_blocks) % len(EXTREME_E8M0)]
    if qtype == "NVFP4":
        cycle = np.arange(n_blocks * NVFP4_SCALE_BYTES).reshape(n_blocks, NVFP4_SCALE_BYTES)
        blocks[:, :NVFP4_SCALE_BYTES] = EXTREME_UE4M3[cycle % len(EXTREME_UE4M3)]
    return blocks.reshape(n_rows, -1)


def zero_blocks(qtype: str, n_rows: int, k: int) -> np.ndarray:
    return np.zeros((n_rows, row_bytes(qtype, k)), dtype=np.uint8)


# ---- truths ---------------------------------------------------------------------------------------


def dequantize_ref(data: np.ndarray, qtype: str, n_rows: int, k: int) -> np.ndarray:
    """float32 (n_rows, k) from gguf-py, for bytes shaped (n_rows, row_bytes)."""
    raw = np.ascontiguousarray(data, dtype=np.uint8).reshape(n_rows, row_bytes(qtype, k))
    with np.errstate(over="ignore"):  # extreme MXFP4 scales overflow to inf, as in ggml
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
