"""pylin.kernels.matmul_t (x · wᵀ) and matmul (g · w) against a float64 product of gguf-py's weights.

Every format × orientation × ISA variant available here × M ∈ {1, 3, 16, 17, 64, 65, 257} (both
sides of the small-M / large-M switches: 16 for matmul, 64 for matmul_t) × awkward N, K: K of one
block, K = block·odd (not a multiple of 256) for the 32- and 64-blocks (NVFP4), N of 1, 7, 33, 70.
Relative Frobenius error ≤ 1e-6 in float32, ≤ 1e-12 in float64 (conftest.TOLERANCES).  Then the
argument checks: bad input raises ValueError, never crashes.
Covers csrc/cpu/matmul_*.cpp and csrc/bindings.cpp.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from conftest import OUTSIDE_SOURCE_TREE
from reference import (
    QTYPES,
    block_layout,
    dequantize_ref,
    matmul_ref,
    matmul_t_ref,
    random_blocks,
    rel_frobenius,
)

import pylin
from pylin import kernels

ISAS = kernels.available_isas()
MS = (1, 3, 16, 17, 64, 65, 257)


def shapes_for(qtype: str) -> list[tuple[int, int]]:
    """(N, K) pairs: K = one block; K = block·odd; a wider K crossing the 256-wide panels."""
    block = block_layout(qtype)[0]
    if block == 1:  # float formats: K not a multiple of the SIMD width
        return [(1, 1), (7, 37), (70, 301)]
    if block in (32, 64):
        return [(1, block), (7, 23 * block), (70, 9 * block)]
    return [(1, 256), (33, 768), (70, 256)]


@functools.lru_cache(maxsize=64)
def weights(qtype: str, n: int, k: int) -> tuple[pylin.QTensor, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(f"{qtype}-{n}-{k}".encode()))
    data = random_blocks(qtype, n, k, rng, moderate=True)
    return pylin.QTensor(data, qtype, (n, k)), dequantize_ref(data, qtype, n, k)


CASES = [(q, n, k) for q in QTYPES for (n, k) in shapes_for(q)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("qtype,n,k", CASES)
@pytest.mark.parametrize("transposed", [True, False], ids=["matmul_t", "matmul"])
def test_float32_matches_float64_reference(
    transposed: bool, qtype: str, n: int, k: int, m: int, isa: str, rng: np.random.Generator, tolerances
) -> None:
    w, w_ref = weights(qtype, n, k)
    x = rng.standard_normal((m, k if transposed else n)).astype(np.float32)
    with kernels.use_isa(isa):
        got = kernels.matmul_t(x, w) if transposed else kernels.matmul(x, w)
    ref = matmul_t_ref(x, w_ref) if transposed else matmul_ref(x, w_ref)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert rel_frobenius(got, ref) <= tolerances["matmul_float32"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", (1, 17, 257))
@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("transposed", [True, False], ids=["matmul_t", "matmul"])
def test_float64_matches_float64_reference(
    transposed: bool, qtype: str, m: int, isa: str, rng: np.random.Generator, tolerances
) -> None:
    n, k = shapes_for(qtype)[1]
    w, w_ref = weights(qtype, n, k)
    x = rng.standard_normal((m, k if transposed else n))
    with kernels.use_isa(isa):
        got = kernels.matmul_t(x, w) if transposed else kernels.matmul(x, w)
    ref = matmul_t_ref(x, w_ref) if transposed else matmul_ref(x, w_ref)
    assert got.dtype == np.float64
    assert rel_frobenius(got, ref) <= tolerances["matmul_float64"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_K", "Q6_K"])
@pytest.mark.parametrize("transposed", [True, False], ids=["matmul_t", "matmul"])
def test_reductions_deeper_than_a_panel(
    transposed: bool, qtype: str, isa: str, rng: np.random.Generator, tolerances
) -> None:
    """Reductions of thousands of terms: the large-M path adds into y panel by panel (depths up to 1024)."""
    n, k = (40, 9 * 256) if transposed else (2100, 2 * 256)
    w, w_ref = weights(qtype, n, k)
    x = rng.standard_normal((29, k if transposed else n)).astype(np.float32)
    with kernels.use_isa(isa):
        got = kernels.matmul_t(x, w) if transposed else kernels.matmul(x, w)
    ref = matmul_t_ref(x, w_ref) if transposed else matmul_ref(x, w_ref)
    assert rel_frobenius(got, ref) <= tolerances["matmul_float32"]


@pytest.mark.parametrize("isa", ISAS)
def test_threads_do_not_change_results_beyond_tolerance(
    isa: str, rng: np.random.Generator, tolerances
) -> None:
    w, w_ref = weights("Q4_K", 70, 256)
    x = rng.standard_normal((64, 256)).astype(np.float32)
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with kernels.use_isa(isa):
                results.append(kernels.matmul_t(x, w))
    finally:
        torch.set_num_threads(previous)
    for got in results:
        assert rel_frobenius(got, matmul_t_ref(x, w_ref)) <= tolerances["matmul_float32"]


def test_leading_dimensions_and_out(rng: np.random.Generator) -> None:
    w, w_ref = weights("Q8_0", 7, 736)
    x = rng.standard_normal((2, 3, 736)).astype(np.float32)
    got = kernels.matmul_t(x, w)
    assert got.shape == (2, 3, 7)
    out = np.empty((2, 3, 7), dtype=np.float32)
    assert kernels.matmul_t(x, w, out=out) is out
    np.testing.assert_array_equal(out, got)
    g = rng.standard_normal((5, 7)).astype(np.float32)
    assert kernels.matmul(g, w).shape == (5, 736)


# ---- numpy in -> numpy out, torch in -> torch out ---------------------------------------------------


def test_numpy_and_torch_kinds(rng: np.random.Generator) -> None:
    w, _ = weights("Q4_0", 7, 736)
    x = rng.standard_normal((3, 736)).astype(np.float32)
    y_np = kernels.matmul_t(x, w)
    assert isinstance(y_np, np.ndarray)
    y_t = kernels.matmul_t(torch.from_numpy(x), w)
    assert isinstance(y_t, torch.Tensor) and y_t.dtype == torch.float32
    np.testing.assert_array_equal(y_t.numpy(), y_np)
    g = torch.from_numpy(rng.standard_normal((3, 7))).requires_grad_(True)
    y_g = kernels.matmul(g, w)
    assert isinstance(y_g, torch.Tensor) and y_g.dtype == torch.float64 and y_g.shape == (3, 736)


# ---- bad input -> ValueError ------------------------------------------------------------------------


def test_wrong_byte_length_is_refused() -> None:
    data = np.zeros(18 * 3, dtype=np.uint8)
    with pytest.raises(ValueError, match="bytes"):
        pylin.QTensor(data, "Q4_0", (2, 32))
    # the native layer re-checks sizes even when Python is bypassed
    from pylin import _core

    x = np.zeros((1, 32), dtype=np.float32)
    y = np.zeros((1, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="bytes"):
        _core.matmul_t(x, data, 2, 2, 32, y, 1)


def test_unknown_type_id_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        pylin.QTensor(np.zeros(18, dtype=np.uint8), 99, (1, 32))
    from pylin import _core

    x = np.zeros((1, 32), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown"):
        _core.matmul_t(x, np.zeros(18, dtype=np.uint8), 4, 1, 32, np.zeros((1, 1), dtype=np.float32), 1)


@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_with_bad_k_is_refused(qtype: str) -> None:
    with pytest.raises(ValueError, match="multiple of 256"):
        pylin.QTensor(np.zeros(1000, dtype=np.uint8), qtype, (1, 640))
    from pylin import _core

    _, type_size = block_layout(qtype)
    x = np.zeros((1, 640), dtype=np.float32)
    with pytest.raises(ValueError, match="multiple"):
        _core.matmul_t(
            x, np.zeros(type_size * 2, dtype=np.uint8), 12, 1, 640, np.zeros((1, 1), np.float32), 1
        )


def test_mismatched_inner_dimension_is_refused() -> None:
    w, _ = weights("Q8_0", 7, 736)
    with pytest.raises(ValueError, match="last dimension"):
        kernels.matmul_t(np.zeros((2, 735), dtype=np.float32), w)
    with pytest.raises(ValueError, match="last dimension"):
        kernels.matmul(np.zeros((2, 736), dtype=np.float32), w)


def test_out_overlapping_the_input_is_refused() -> None:
    """N == K: out=x, or out half a row past x, passes every shape check but would be read while written."""
    w, _ = weights("Q8_0", 32, 32)
    buffer = np.zeros(5 * 32 + 16, dtype=np.float32)
    x, shifted = buffer[: 5 * 32].reshape(5, 32), buffer[16:].reshape(5, 32)
    for product in (kernels.matmul_t, kernels.matmul):
        for out in (x, shifted):
            with pytest.raises(ValueError, match="overlaps"):
                product(x, w, out=out)


def test_non_contiguous_is_refused() -> None:
    w, _ = weights("Q8_0", 7, 736)
    x = np.zeros((736, 4), dtype=np.float32).T
    with pytest.raises(ValueError, match="contiguous"):
        kernels.matmul_t(x, w)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.matmul_t(torch.zeros(736, 4).T, w)


@pytest.mark.parametrize(
    "x",
    [np.zeros((2, 32), dtype=np.int32), np.zeros((2, 32), dtype=np.float16),
     torch.zeros(2, 32, dtype=torch.int64), torch.zeros(2, 32, dtype=torch.float16),
     torch.zeros(2, 32, dtype=torch.bfloat16)],
    ids=["np-int32", "np-float16", "torch-int64", "torch-float16", "torch-bfloat16"],
)  # fmt: skip
def test_wrong_dtype_is_refused(x) -> None:
    w, _ = weights("Q4_0", 1, 32)
    with pytest.raises(ValueError, match="float32 or float64"):
        kernels.matmul_t(x, w)


def test_zero_sized_dimensions_are_refused() -> None:
    w, _ = weights("Q4_0", 1, 32)
    with pytest.raises(ValueError, match="no rows"):
        kernels.matmul_t(np.zeros((0, 32), dtype=np.float32), w)
    with pytest.raises(ValueError, match="positive"):
        pylin.QTensor(np.zeros(0, dtype=np.uint8), "Q4_0", (0, 32))
    from pylin import _core

    with pytest.raises(ValueError, match="positive"):
        _core.matmul_t(
            np.zeros((1, 0), np.float32), np.zeros(0, np.uint8), 2, 0, 0, np.zeros((1, 0), np.float32), 1
        )


def test_out_of_wrong_kind_is_refused() -> None:
    w, _ = weights("Q4_0", 1, 32)
    x = np.zeros((2, 32), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be"):
        kernels.matmul_t(x, w, out=np.zeros((2, 1), dtype=np.float64))
    with pytest.raises(ValueError, match="out must be"):
        kernels.matmul_t(x, w, out=np.zeros((3, 1), dtype=np.float32))


def test_weight_must_be_a_qtensor() -> None:
    with pytest.raises(ValueError, match="QTensor"):
        kernels.matmul_t(np.zeros((1, 4), dtype=np.float32), np.zeros((4, 4), dtype=np.float32))


# ---- ISA dispatch -----------------------------------------------------------------------------------


def run_python(code: str, isa: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYLIN_ISA=isa)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
        cwd=OUTSIDE_SOURCE_TREE,
    )  # fmt: skip


@pytest.mark.parametrize("isa", ISAS)
def test_env_var_forces_the_variant(isa: str) -> None:
    done = run_python("import pylin.kernels as k; print(k.isa())", isa)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == isa


def test_bad_env_var_fails_at_import_with_a_clear_error() -> None:
    done = run_python("import pylin", "avx9000")
    assert done.returncode != 0
    assert "PYLIN_ISA" in done.stderr and "avx9000" in done.stderr


def test_set_isa_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown ISA"):
        kernels.set_isa("sse9")
