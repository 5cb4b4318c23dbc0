"""pylin.synthetic — random but valid GGUF blocks of any format pylin reads, with a chosen weight scale.

    blocks = pylin.synthetic.random_blocks("IQ2_XS", n_blocks=4096, std=0.02, rng=rng)  # (4096, 74) uint8
    w = pylin.synthetic.random_qtensor("IQ4_XS", (4096, 14336), std=0.02, seed=0)

For benchmarks and synthetic models (bench/make_synthetic_gguf.py writes whole Llama-shaped files with
it) and for tests that need weights in a format pylin cannot write (the i-quants): every bit field
of a block is random (grid indices, signs, sub-block scales, nibbles are valid for any bytes) and the
block's scale fields are set so that the decoded weights have about `std` (each block's scale drawn
from 0.5 .. 1.5 times that, with a random sign, so weights average zero).  Bytes are generated
directly, never quantized, so writing runs at memory speed.
Tests: tests/test_gguf_new_types.py (scale and validity of every format).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from .qtensor import SUPPORTED_QTYPES, QTensor, block_layout, qtype_name

# Byte offsets of each format's fp16 scale fields (ggml-common.h).  IQ1_M's fp16 scale is split over
# the top nibbles of the four u16 words at byte 48; MXFP4's scale is an E8M0 exponent byte at 0,
# NVFP4's four UE4M3 bytes at 0..3 (one per 16 weights).
FP16_SCALE_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ1_S": (0,), "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ2_S": (0,), "IQ3_XXS": (0,), "IQ3_S": (0,),
    "IQ4_NL": (0,), "IQ4_XS": (0,), "TQ1_0": (52,), "TQ2_0": (64,), "IQ1_M": (), "MXFP4": (),
    "NVFP4": (),
}  # fmt: skip
_IQ1_M_SCALE_WORDS = 48
_MXFP4_BIAS = 128  # an E8M0 byte e decodes (halved) to 2^(e - 128)


def _ue4m3_half_values() -> np.ndarray:
    """What UE4M3 bytes 1 .. 0x7E decode to (halved, as ggml's ggml_ue4m3_to_fp32): increasing."""
    byte = np.arange(1, 0x7F)
    exponent, mantissa = byte >> 3, byte & 7
    return np.where(exponent == 0, mantissa * 2.0**-10, (8 + mantissa) * 2.0 ** (exponent - 11))


_UE4M3_HALF_VALUES = _ue4m3_half_values()


def random_blocks(
    qtype: str, n_blocks: int, std: float = 0.02, rng: np.random.Generator | None = None
) -> np.ndarray:
    """n_blocks random valid blocks of a block format, (n_blocks, block_bytes) uint8, weights ~ std."""
    name = qtype_name(qtype)
    if name not in FP16_SCALE_FIELDS:
        raise ValueError(f"random blocks need a block format, got {name}")
    rng = np.random.default_rng() if rng is None else rng
    block_bytes = block_layout(name)[1]
    blocks = np.frombuffer(rng.bytes(n_blocks * block_bytes), dtype=np.uint8).reshape(n_blocks, block_bytes)
    blocks = blocks.copy()
    scale = std / _unit_std(name) * rng.uniform(0.5, 1.5, n_blocks)
    _set_scales(name, blocks, scale * rng.choice([-1.0, 1.0], n_blocks))
    return blocks


def random_qtensor(
    qtype: str, shape: Sequence[int], std: float = 0.02, seed: int = 0, name: str = ""
) -> QTensor:
    """A QTensor of random valid weights (floats formats: normal values of that std)."""
    qt = qtype_name(qtype)
    rng = np.random.default_rng(seed)
    rows, k = int(np.prod(shape[:-1], dtype=np.int64)), int(shape[-1])
    if qt in ("F32", "F16", "BF16"):
        values = (rng.standard_normal((rows, k)) * std).astype(np.float32)
        data = {"F32": values, "F16": values.astype(np.float16)}.get(qt)
        if data is None:  # BF16 by truncation
            data = (values.view(np.uint32) >> 16).astype(np.uint16)
        return QTensor(data.view(np.uint8), qt, tuple(shape), name)
    block_size = block_layout(qt)[0]
    if k % block_size:
        raise ValueError(f"{qt} rows need K to be a multiple of {block_size}, got {k}")
    return QTensor(random_blocks(qt, rows * k // block_size, std, rng).reshape(-1), qt, tuple(shape), name)


def _set_scales(qtype: str, blocks: np.ndarray, scale: np.ndarray) -> None:
    """Write per-block scale values into every scale field (a K-quant's d and dmin alike)."""
    if qtype == "MXFP4":  # only powers of two; the sign cannot be stored (the codes are symmetric)
        exponent = np.round(np.log2(np.abs(scale))) + _MXFP4_BIAS
        blocks[:, 0] = np.clip(exponent, 2, 254).astype(np.uint8)
        return
    if qtype == "NVFP4":  # the nearest UE4M3 scale (in ratio) in all four sub-blocks; unsigned, as MXFP4's
        log_values, target = np.log(_UE4M3_HALF_VALUES), np.log(np.abs(scale))
        i = np.clip(np.searchsorted(log_values, target), 1, len(log_values) - 1)
        i -= target - log_values[i - 1] < log_values[i] - target  # the value below is nearer
        blocks[:, :4] = (i + 1).astype(np.uint8)[:, None]  # value i is byte i + 1
        return
    bits = scale.astype(np.float16).view(np.uint16)
    for offset in FP16_SCALE_FIELDS[qtype]:
        blocks[:, offset : offset + 2] = bits.view(np.uint8).reshape(-1, 2)
    if qtype == "IQ1_M":  # nibble i of d in the top nibble of scale word i (ggml's iq1m_scale_t)
        words = blocks[:, _IQ1_M_SCALE_WORDS : _IQ1_M_SCALE_WORDS + 8].copy().view(np.uint16)
        for i in range(4):
            nibble = (bits >> np.uint16(4 * i)) & np.uint16(0xF)
            words[:, i] = (words[:, i] & np.uint16(0x0FFF)) | (nibble << np.uint16(12))
        blocks[:, _IQ1_M_SCALE_WORDS : _IQ1_M_SCALE_WORDS + 8] = words.view(np.uint8)


@functools.lru_cache(maxsize=len(SUPPORTED_QTYPES))
def _unit_std(qtype: str) -> float:
    """Standard deviation of the weights of random blocks whose scales are ±1 (measured once; random
    signs as in random_blocks, which matters for the formats with an offset, e.g. Q4_1's d*q + m)."""
    from . import kernels

    rng = np.random.default_rng(1234)
    n, (block_size, block_bytes) = 2048, block_layout(qtype)
    blocks = np.frombuffer(rng.bytes(n * block_bytes), dtype=np.uint8).reshape(n, block_bytes).copy()
    _set_scales(qtype, blocks, rng.choice([-1.0, 1.0], n))
    weights = kernels.dequantize(QTensor(blocks.reshape(-1), qtype, (n, block_size)))
    return float(weights.std())
