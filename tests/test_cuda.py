"""The CUDA path: kernels vs the float64 reference on every format, and the engine on the GPU.

Without a GPU only the first block runs (it needs just pylin._cuda to be built, as in CI): the
kernels' 8-weight decoders, run on the host, equal gguf-py bit for bit; pylin.cuda says why it is
unavailable.  Everything marked `cuda` is skipped cleanly without a usable GPU and parametrized over
every visible device: matmul_t / matmul in float32 (rel. Frobenius error <= 1e-6) and float64
(<= 1e-12) for every format x orientation x M on both sides of the small/large switch x awkward N, K
(K of one block, K = 32·odd, float rows of 37; a VJP wide enough to split N; row views at unaligned
byte offsets); bit-exact dequantization; argument checks; cupy input; the engine's reconstruction,
JVP/VJP against the CPU and adjointness.  Covers csrc/cuda/*, csrc/cuda_bindings.cpp, pylin/cuda.py.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pytest
import torch
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
from pylin import cuda, kernels

try:
    from pylin import _cuda  # type: ignore[attr-defined]
except ImportError:  # built without nvcc
    _cuda = None

needs_module = pytest.mark.skipif(_cuda is None, reason="pylin was built without pylin._cuda")
needs_gpu = pytest.mark.skipif(not cuda.available(), reason=f"no usable GPU: {cuda.why_unavailable()}")
DEVICES = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if cuda.available() else ["cuda:0"]
MS = (1, 3, 16, 17, 64, 257)


def shapes_for(qtype: str) -> list[tuple[int, int]]:
    """(N, K): one block; K = block·odd; wider K crossing the kernels' 256 / 1024-weight steps."""
    block = block_layout(qtype)[0]
    if block == 1:
        return [(1, 1), (7, 37), (70, 301), (33, 1100)]
    if block == 32:
        return [(1, 32), (7, 23 * 32), (70, 9 * 32), (33, 41 * 32)]
    return [(1, 256), (33, 768), (70, 256), (9, 1280)]


@functools.lru_cache(maxsize=128)
def host_weights(qtype: str, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(f"{qtype}-{n}-{k}".encode()))
    data = random_blocks(qtype, n, k, rng, moderate=True)
    return data, dequantize_ref(data, qtype, n, k)


def gpu_weight(qtype: str, n: int, k: int, device: str) -> tuple[cuda.CudaQTensor, np.ndarray]:
    data, ref = host_weights(qtype, n, k)
    return cuda.upload(pylin.QTensor(data, qtype, (n, k)), device), ref


# ---- without a GPU --------------------------------------------------------------------------------


@needs_module
@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("moderate", [False, True], ids=["full-range", "moderate"])
def test_chunk_decoders_bit_exact_on_host(qtype: str, moderate: bool, rng: np.random.Generator) -> None:
    """decode_chunk (what every CUDA kernel decodes with) equals gguf-py bit for bit, on the CPU."""
    for n, k in shapes_for(qtype):
        data = random_blocks(qtype, n, k, rng, moderate=moderate)
        got = _cuda.decode_chunks_host(data.reshape(-1), kernels._QTYPE_IDS[qtype], n, k)
        ref = dequantize_ref(data, qtype, n, k)
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (qtype, n, k)
    zeros = np.zeros_like(random_blocks(qtype, 2, shapes_for(qtype)[1][1], rng))
    k = shapes_for(qtype)[1][1]
    assert not _cuda.decode_chunks_host(zeros.reshape(-1), kernels._QTYPE_IDS[qtype], 2, k).any()


@needs_module
def test_build_info_lists_the_compiled_architectures() -> None:
    archs = pylin.build_info()["cuda"]
    assert archs and all(a.startswith("sm_") for a in archs)
    assert "sm_80" in archs


def test_unavailable_says_why() -> None:
    if cuda.available():
        cuda.require()
        return
    reason = cuda.why_unavailable()
    assert reason and len(reason) > 20
    with pytest.raises(cuda.CudaUnavailableError, match="cannot run"):
        cuda.require()
    with pytest.raises(cuda.CudaUnavailableError):
        cuda.upload(pylin.QTensor(np.zeros(18, np.uint8), "Q4_0", (1, 32)))


# ---- kernels on the GPU ---------------------------------------------------------------------------

CASES = [(q, n, k) for q in QTYPES for (n, k) in shapes_for(q)]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("qtype,n,k", CASES)
@pytest.mark.parametrize("transposed", [True, False], ids=["matmul_t", "matmul"])
def test_float32_matches_float64_reference(transposed, qtype, n, k, m, device, rng, tolerances) -> None:
    w, w_ref = gpu_weight(qtype, n, k, device)
    x = rng.standard_normal((m, k if transposed else n)).astype(np.float32)
    xd = torch.from_numpy(x).to(device)
    got = kernels.matmul_t(xd, w) if transposed else kernels.matmul(xd, w)
    ref = matmul_t_ref(x, w_ref) if transposed else matmul_ref(x, w_ref)
    assert got.is_cuda and got.dtype == torch.float32 and tuple(got.shape) == ref.shape
    assert rel_frobenius(got.cpu().numpy(), ref) <= tolerances["matmul_float32"]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", (1, 17, 257))
@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("transposed", [True, False], ids=["matmul_t", "matmul"])
def test_float64_matches_float64_reference(transposed, qtype, m, device, rng, tolerances) -> None:
    n, k = shapes_for(qtype)[1]
    w, w_ref = gpu_weight(qtype, n, k, device)
    x = rng.standard_normal((m, k if transposed else n))
    xd = torch.from_numpy(x).to(device)
    got = kernels.matmul_t(xd, w) if transposed else kernels.matmul(xd, w)
    ref = matmul_t_ref(x, w_ref) if transposed else matmul_ref(x, w_ref)
    assert got.dtype == torch.float64
    assert rel_frobenius(got.cpu().numpy(), ref) <= tolerances["matmul_float64"]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "Q6_K", "F16"])
@pytest.mark.parametrize("m", [1, 16, 100])
def test_wide_vjp_splits_n_and_row_views(qtype, m, device, rng, tolerances) -> None:
    """N large against K: the small-M VJP splits N into partials; row views start mid-granule."""
    n, k = 3001, 512
    w, w_ref = gpu_weight(qtype, n, k, device)
    g = rng.standard_normal((m, n)).astype(np.float32)
    got = kernels.matmul(torch.from_numpy(g).to(device), w).cpu().numpy()
    assert rel_frobenius(got, matmul_ref(g, w_ref)) <= tolerances["matmul_float32"]
    view, view_ref = w.rows(5, 2000), w_ref[5:2000]  # byte offset 5·row_bytes: not 16-aligned
    x = rng.standard_normal((m, k)).astype(np.float32)
    got = kernels.matmul_t(torch.from_numpy(x).to(device), view).cpu().numpy()
    assert rel_frobenius(got, matmul_t_ref(x, view_ref)) <= tolerances["matmul_float32"]
    g = rng.standard_normal((m, view.shape[0])).astype(np.float32)
    got = kernels.matmul(torch.from_numpy(g).to(device), view).cpu().numpy()
    assert rel_frobenius(got, matmul_ref(g, view_ref)) <= tolerances["matmul_float32"]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("qtype", QTYPES)
def test_dequantize_bit_exact(qtype, device, rng) -> None:
    n, k = shapes_for(qtype)[1]
    data = random_blocks(qtype, n, k, rng)  # full fp16 range, subnormals included
    w = cuda.upload(pylin.QTensor(data, qtype, (n, k)), device)
    got = cuda.dequantize(w).cpu().numpy()
    assert np.array_equal(got.view(np.uint32), dequantize_ref(data, qtype, n, k).view(np.uint32))
    assert np.array_equal(w.dequantize(), got)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
def test_out_batched_and_stream(device, rng, tolerances) -> None:
    w, w_ref = gpu_weight("Q4_K", 33, 768, device)
    x = torch.from_numpy(rng.standard_normal((2, 3, 768)).astype(np.float32)).to(device)
    out = torch.empty(2, 3, 33, device=device)
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        assert kernels.matmul_t(x, w, out=out) is out
    stream.synchronize()
    ref = matmul_t_ref(x.cpu().numpy().reshape(6, 768), w_ref).reshape(2, 3, 33)
    assert rel_frobenius(out.cpu().numpy(), ref) <= tolerances["matmul_float32"]


@pytest.mark.cuda
@needs_gpu
def test_bad_arguments_raise_value_error(rng) -> None:
    host = pylin.QTensor(*host_weights("Q4_0", 7, 64)[:1], "Q4_0", (7, 64))
    w = cuda.upload(host, "cuda:0")
    x = torch.zeros(3, 64, device="cuda:0")
    with pytest.raises(ValueError, match="upload"):
        cuda.matmul(True, x, host)
    with pytest.raises(ValueError, match="float32 or float64"):
        kernels.matmul_t(x.half(), w)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.matmul_t(torch.zeros(64, 3, device="cuda:0").T, w)
    with pytest.raises(ValueError, match="last dimension"):
        kernels.matmul_t(torch.zeros(3, 65, device="cuda:0"), w)
    with pytest.raises(ValueError, match="no rows"):
        kernels.matmul_t(torch.zeros(0, 64, device="cuda:0"), w)
    with pytest.raises(ValueError, match="out must be"):
        kernels.matmul_t(x, w, out=torch.empty(3, 8, device="cuda:0"))
    with pytest.raises(ValueError):
        cuda.matmul(True, x.cpu(), w)


@pytest.mark.cuda
@needs_gpu
def test_cupy_arrays_in_and_out(rng, tolerances) -> None:
    cupy = pytest.importorskip("cupy")
    w, w_ref = gpu_weight("Q8_0", 7, 96, "cuda:0")
    x = rng.standard_normal((4, 96)).astype(np.float32)
    got = cuda.matmul_t(cupy.asarray(x), w)
    assert isinstance(got, cupy.ndarray)
    assert rel_frobenius(cupy.asnumpy(got), matmul_t_ref(x, w_ref)) <= tolerances["matmul_float32"]


# ---- the engine on the GPU ------------------------------------------------------------------------

PROMPT = [2, 17, 5, 33, 8, 21, 11]
ENGINE_TOL = {torch.float32: 1e-5, torch.float64: 1e-11}


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny_gguf(request, tmp_path_factory):
    from tiny_models import make_tiny_hf, write_tiny_gguf

    folder = tmp_path_factory.mktemp(request.param)
    _, hf = make_tiny_hf(request.param, folder)
    path = folder / "tiny.gguf"
    write_tiny_gguf(hf, request.param, path, qtypes="Q8_0")
    return path


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_engine_on_gpu_matches_cpu(tiny_gguf, dtype, device) -> None:
    cpu = pylin.load(tiny_gguf, dtype=dtype)
    gpu = cuda.to_device(pylin.load(tiny_gguf, dtype=dtype), device)
    tol = ENGINE_TOL[cpu.dtype]
    lin_cpu, lin_gpu = cpu.linearize(PROMPT), gpu.linearize(PROMPT)
    assert lin_gpu.reconstruction().rel_error <= tol
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(5, len(PROMPT), cpu.d_model, generator=gen, dtype=cpu.dtype)
    U = torch.randn(5, lin_cpu.d_out, generator=gen, dtype=cpu.dtype)
    jv, ju = lin_gpu.jvp(V.to(device)), lin_gpu.vjp(U.to(device))
    assert jv.is_cuda and ju.is_cuda

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.cpu().double() - b.double()).norm() / b.double().norm())

    assert rel(jv, lin_cpu.jvp(V)) <= tol
    assert rel(ju, lin_cpu.vjp(U)) <= tol
    # adjointness on the GPU: <U, J V> = <Jᵀ U, V>
    lhs, rhs = float((U.to(device) * jv).sum()), float((ju * V.to(device)).sum())
    assert abs(lhs - rhs) <= 10 * tol * max(abs(lhs), 1.0)
