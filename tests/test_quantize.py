"""pylin.kernels.quantize: bit-exact with gguf-py where gguf-py quantizes, error budgets where it does not.

- The 32-blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and F32/F16/BF16 must equal `gguf.quants.quantize` byte
  for byte (gguf-py's own tests hold those bit-exact with ggml's reference C).
- The K-quants (gguf-py has no quantizer for them) are judged like ggml's tests/test-quantize-fns.cpp
  does: its synthetic signal 0.1 + 2·cos(i) over 4096 values, its error measure sqrt(Σ diff²)/n
  (ggml's `array_rmse`, /n and not /sqrt(n)) and its thresholds MAX_QUANTIZATION_TOTAL_ERROR = 0.002,
  _3BITS = 0.0040, _2BITS = 0.0075 — reproduced faithfully here.  Because those thresholds are loose,
  a second, tighter check bounds the plain relative RMSE on Gaussian data per bit width (pylin's own
  budgets, about 1.3× what this round-to-nearest quantizer measures: Q4_0 0.086, Q4_K 0.072, Q6_K 0.018).
Covers csrc/cpu/quantize.cpp and its binding.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf.quants import quantize as gguf_quantize
from reference import (
    READ_ONLY_QTYPES,
    block_layout,
    dequantize_ref,
    ggml_array_rmse,
    ggml_test_signal,
    ggml_type,
)
from reference import WRITABLE_QTYPES as QTYPES

import pylin
from pylin import kernels

GGUF_QUANTIZES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
K_QUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

# ggml tests/test-quantize-fns.cpp thresholds, per type as that file assigns them.
GGML_TOTAL_ERROR = {"Q2_K": 0.0075, "Q3_K": 0.0040, "Q4_K": 0.002, "Q5_K": 0.002, "Q6_K": 0.002}
GGML_TOTAL_ERROR.update({q: 0.002 for q in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")})

# pylin's budgets for rmse / std on standard normal data (round-to-nearest, simple scale search).
GAUSSIAN_REL_RMSE = {
    "Q2_K": 0.35, "Q3_K": 0.19, "Q4_0": 0.11, "Q4_1": 0.10, "Q4_K": 0.095, "Q5_0": 0.056, "Q5_1": 0.05,
    "Q5_K": 0.047, "Q6_K": 0.023, "Q8_0": 0.007, "BF16": 0.0022, "F16": 0.0003, "F32": 0.0,
}  # fmt: skip


def roundtrip(x: np.ndarray, qtype: str) -> tuple[pylin.QTensor, np.ndarray]:
    q = kernels.quantize(x, qtype)
    return q, kernels.dequantize(q)


def shape_for(qtype: str, n: int, blocks: int) -> tuple[int, int]:
    block = block_layout(qtype)[0]
    return n, (blocks * block if block > 1 else 37 * blocks)


@pytest.mark.parametrize("scale", [1.0, 1e-5, 3e3], ids=["unit", "subnormal-scales", "large"])
@pytest.mark.parametrize("n,blocks", [(1, 1), (3, 7), (17, 2)])
@pytest.mark.parametrize("qtype", GGUF_QUANTIZES)
def test_bit_exact_with_gguf_py(
    qtype: str, n: int, blocks: int, scale: float, rng: np.random.Generator
) -> None:
    shape = shape_for(qtype, n, blocks)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    x[0, : min(3, shape[1])] = 0.0  # zeros inside a block
    got = kernels.quantize(x, qtype).data
    ref = np.asarray(gguf_quantize(x, ggml_type(qtype))).view(np.uint8).reshape(-1)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # gguf-py's fp16 of 6e5
@pytest.mark.parametrize("qtype", GGUF_QUANTIZES)
def test_rounding_ties_and_specials_match_gguf_py(qtype: str) -> None:
    # Q8_0 with max 127: x·id = x exactly, so the .5 values are real ties (round half away from zero).
    ties = np.concatenate([np.arange(-15.5, 16.0, 1.0, dtype=np.float32)[:31], [127.0]]).astype(np.float32)
    rows = [ties, -ties, np.linspace(-8, 7, 32, dtype=np.float32), np.full(32, 65504.0 * 9, np.float32)]
    if qtype in ("F32", "F16", "BF16"):
        # fp16/bf16 round-to-nearest-even ties, subnormals, overflow to inf
        specials = [1 + 2**-11, 1 + 3 * 2**-11, 2**-25, 3 * 2**-26, 65520.0, 1 + 2**-8, 1 + 3 * 2**-8]
        specials = np.array(specials, dtype=np.float32)
        rows.append(np.resize(specials, 32))
    x = np.stack(rows).astype(np.float32)
    got = kernels.quantize(x, qtype).data
    ref = np.asarray(gguf_quantize(x, ggml_type(qtype))).view(np.uint8).reshape(-1)
    np.testing.assert_array_equal(got, ref)


def test_bf16_quiets_nan_like_gguf_py() -> None:
    x = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 1.0], dtype=np.float32)
    x = np.concatenate([x, np.array([0x7F800001, 0xFFC00001], dtype=np.uint32).view(np.float32)])
    got = kernels.quantize(x.reshape(1, -1), "BF16").data
    ref = np.asarray(gguf_quantize(x.reshape(1, -1), ggml_type("BF16"))).view(np.uint8).reshape(-1)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("qtype", [q for q in QTYPES if q not in ("F32", "F16", "BF16")])
def test_ggml_quantize_fns_total_error(qtype: str) -> None:
    x = ggml_test_signal(32 * 128).reshape(1, -1)  # test_size = 32*128 in test-quantize-fns.cpp
    _, y = roundtrip(x, qtype)
    assert ggml_array_rmse(x, y) < GGML_TOTAL_ERROR[qtype]


@pytest.mark.parametrize("qtype", QTYPES)
def test_gaussian_relative_rmse(qtype: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((16, 4096)).astype(np.float32)
    _, y = roundtrip(x, qtype)
    rel = float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2)) / np.std(x))
    assert rel <= GAUSSIAN_REL_RMSE[qtype], f"{qtype}: relative RMSE {rel:.4f}"


@pytest.mark.parametrize("qtype", QTYPES)
def test_zero_rows_quantize_to_zero(qtype: str) -> None:
    shape = shape_for(qtype, 3, 2)
    x = np.zeros(shape, dtype=np.float32)
    x[1] = np.linspace(-1, 1, shape[1], dtype=np.float32)  # a non-zero row between zero rows
    q, y = roundtrip(x, qtype)
    assert not np.any(y[0]) and not np.any(y[2])
    assert np.array_equal(y, dequantize_ref(q.data.reshape(3, -1), qtype, *shape))


@pytest.mark.parametrize("qtype", K_QUANTS)
@pytest.mark.parametrize("n", [1, 5, 33])
def test_k_quants_awkward_shapes(qtype: str, n: int, rng: np.random.Generator) -> None:
    x = (rng.standard_normal((n, 768)) * rng.uniform(0.01, 10, size=(n, 1))).astype(np.float32)
    q, y = roundtrip(x, qtype)
    assert q.shape == (n, 768)
    rel = np.sqrt(np.mean((y.astype(np.float64) - x) ** 2, axis=1)) / np.std(x, axis=1)
    assert np.all(rel <= GAUSSIAN_REL_RMSE[qtype] * 1.5)


def test_quantize_input_checks() -> None:
    with pytest.raises(ValueError, match="float32"):
        kernels.quantize(np.zeros((2, 32), dtype=np.float64), "Q8_0")
    with pytest.raises(ValueError, match="multiple of 256"):
        kernels.quantize(np.zeros((2, 640), dtype=np.float32), "Q4_K")
    with pytest.raises(ValueError, match="empty"):
        kernels.quantize(np.zeros((0, 32), dtype=np.float32), "Q8_0")
    with pytest.raises(ValueError, match="unsupported"):
        kernels.quantize(np.zeros((1, 32), dtype=np.float32), "Q8_1")


@pytest.mark.parametrize("qtype", READ_ONLY_QTYPES)
def test_read_only_formats_say_what_pylin_writes(qtype: str, tmp_path) -> None:
    """pylin reads the i-quants, TQ1_0 / TQ2_0 and MXFP4 but does not write them: a clear refusal, in
    Python, in the native layer, and at load(quantize=...)."""
    k = block_layout(qtype)[0]
    with pytest.raises(ValueError, match=rf"reads {qtype} but cannot write it.*quantizes into F32.*Q6_K"):
        kernels.quantize(np.zeros((1, k), dtype=np.float32), qtype)
    from pylin import _core

    out = np.zeros(block_layout(qtype)[1], dtype=np.uint8)
    with pytest.raises(ValueError, match="cannot write"):
        _core.quantize(np.zeros((1, k), np.float32), int(ggml_type(qtype)), out, 1)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=f"reads {qtype} but cannot write it"):
        pylin.load(tmp_path, quantize=qtype)
