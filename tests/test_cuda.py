"""The CUDA path: kernels vs the float64 reference on every format, and the engine on the GPU.

Without a GPU only the first block runs (it needs just pylin._cuda to be built, as in CI): the
kernels' 8-weight decoders, run on the host, equal gguf-py bit for bit; pylin.cuda says why it is
unavailable.  Everything marked `cuda` is skipped cleanly without a usable GPU and parametrized over
every visible device: matmul_t / matmul in float32 (rel. Frobenius error <= 1e-6) and float64
(<= 1e-12) for every format x orientation x M on both sides of the small/large switch x awkward N, K
(K of one block, K = 32·odd, float rows of 37; float64 over several K steps; the tiled kernels over
several N tiles; real layer sizes, K and N of 4096-28672; a VJP wide enough to split N, in both
dtypes; row views at unaligned byte offsets; unaligned x); M beyond a grid's 65535 slabs; bit-exact
dequantization; two runs bitwise equal; argument checks (out= overlapping x); a failed call that
leaves no error behind; torch side streams and cupy streams honoured; the caller's device kept;
cupy input and output; the engine's reconstruction, JVP/VJP against the CPU and adjointness.
Covers csrc/cuda/*, csrc/cuda_bindings.cpp, pylin/cuda.py.
"""

from __future__ import annotations

import functools
import re
import zlib

import numpy as np
import pytest
import torch
from conftest import engine_tolerance
from reference import (
    QTYPES,
    block_layout,
    dequantize_ref,
    matmul_ref,
    matmul_t_ref,
    random_blocks,
    rel_frobenius,
)
from tiny_models import FAMILIES as TINY_FAMILIES

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
REAL_SIZES = (4096, 14336, 28672)  # Llama-3 8B/70B d_model and d_ff: K of matmul_t, N of the VJP
SLEEP_CYCLES = 50_000_000  # torch.cuda._sleep: ~25 ms at 2 GHz, long enough to expose a missed wait


def shapes_for(qtype: str) -> list[tuple[int, int]]:
    """(N, K): one block; K = block·odd; wider K crossing the kernels' 256 / 1024-weight steps."""
    block = block_layout(qtype)[0]
    if block == 1:
        return [(1, 1), (7, 37), (70, 301), (33, 1100)]
    if block in (32, 64):  # the 32-blocks and NVFP4
        return [(1, block), (7, 23 * block), (70, 9 * block), (33, 41 * block)]
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
    """Whatever PYLIN_CUDA_ARCHITECTURES held (the default list, or sm_90 alone on the H200 check)."""
    archs = pylin.build_info()["cuda"]
    assert archs and all(re.fullmatch(r"sm_\d{2,3}", a) for a in archs), archs
    assert len(set(archs)) == len(archs)
    oldest = cuda.oldest_compiled_capability(_cuda)
    assert f"sm_{oldest[0]}{oldest[1]}" == min(archs, key=lambda a: int(a[3:]))
    if cuda.available():  # some GPU here runs one of them (machine code or PTX of an older arch)
        caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
        assert any(c >= oldest for c in caps)


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
    """Every shape, so float64 matmul_t walks K over more than one 1024-weight step."""
    assert max(k for _, k in shapes_for(qtype)) > 1024
    for n, k in shapes_for(qtype):
        w, w_ref = gpu_weight(qtype, n, k, device)
        x = rng.standard_normal((m, k if transposed else n))
        xd = torch.from_numpy(x).to(device)
        got = kernels.matmul_t(xd, w) if transposed else kernels.matmul(xd, w)
        ref = matmul_t_ref(x, w_ref) if transposed else matmul_ref(x, w_ref)
        assert got.dtype == torch.float64
        assert rel_frobenius(got.cpu().numpy(), ref) <= tolerances["matmul_float64"], (n, k)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", (17, 257))
@pytest.mark.parametrize("qtype", QTYPES)
def test_tiled_kernels_over_several_n_tiles(qtype, m, device, rng, tolerances) -> None:
    """N = 300: matmul_t's tiled kernel over three 128-wide output tiles, the last one partial."""
    n, k = 300, shapes_for(qtype)[-1][1]
    w, w_ref = gpu_weight(qtype, n, k, device)
    x = rng.standard_normal((m, k)).astype(np.float32)
    got = kernels.matmul_t(torch.from_numpy(x).to(device), w).cpu().numpy()
    assert rel_frobenius(got, matmul_t_ref(x, w_ref)) <= tolerances["matmul_float32"]
    g = rng.standard_normal((m, n)).astype(np.float32)
    got = kernels.matmul(torch.from_numpy(g).to(device), w).cpu().numpy()
    assert rel_frobenius(got, matmul_ref(g, w_ref)) <= tolerances["matmul_float32"]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", (1, 16, 300))
@pytest.mark.parametrize("qtype", QTYPES)
def test_real_layer_sizes_within_float32_claim(qtype, m, device, rng, tolerances) -> None:
    """K (matmul_t) and N (the VJP's reduction) of 4096-28672, where float32 accumulation over ~900
    terms per lane (small M) or 1792 partial sums (tiled) is closest to the 1e-6 claim."""
    for size in REAL_SIZES:
        w, w_ref = gpu_weight(qtype, 64, size, device)
        x = rng.standard_normal((m, size)).astype(np.float32)
        got = kernels.matmul_t(torch.from_numpy(x).to(device), w).cpu().numpy()
        assert rel_frobenius(got, matmul_t_ref(x, w_ref)) <= tolerances["matmul_float32"], ("K", size)
        w, w_ref = gpu_weight(qtype, size, 256, device)
        g = rng.standard_normal((m, size)).astype(np.float32)
        got = kernels.matmul(torch.from_numpy(g).to(device), w).cpu().numpy()
        assert rel_frobenius(got, matmul_ref(g, w_ref)) <= tolerances["matmul_float32"], ("N", size)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "Q6_K", "F16"])
@pytest.mark.parametrize("m", [1, 16, 100])
def test_wide_vjp_splits_n_and_row_views(qtype, m, dtype, device, rng, tolerances) -> None:
    """N large against K: the small-M VJP splits N into partials; row views start mid-granule."""
    n, k = 3001, 512
    tol = tolerances["matmul_float32" if dtype == np.float32 else "matmul_float64"]
    w, w_ref = gpu_weight(qtype, n, k, device)
    if dtype == np.float64 or m <= 16:  # the small-M kernel, here with N split
        qid, index = kernels._QTYPE_IDS[qtype], torch.device(device).index
        assert _cuda.matmul_workspace_bytes(m, qid, n, k, dtype == np.float64, index) > 0
    g = rng.standard_normal((m, n)).astype(dtype)
    got = kernels.matmul(torch.from_numpy(g).to(device), w).cpu().numpy()
    assert rel_frobenius(got, matmul_ref(g, w_ref)) <= tol
    view, view_ref = w.rows(5, 2000), w_ref[5:2000]  # byte offset 5·row_bytes: not 16-aligned
    x = rng.standard_normal((m, k)).astype(dtype)
    got = kernels.matmul_t(torch.from_numpy(x).to(device), view).cpu().numpy()
    assert rel_frobenius(got, matmul_t_ref(x, view_ref)) <= tol
    g = rng.standard_normal((m, view.shape[0])).astype(dtype)
    got = kernels.matmul(torch.from_numpy(g).to(device), view).cpu().numpy()
    assert rel_frobenius(got, matmul_ref(g, view_ref)) <= tol


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [1, 16])
def test_unaligned_x_with_k_multiple_of_4(m, device, rng, tolerances) -> None:
    """x 4 bytes past a 16-byte boundary with K % 4 == 0: the small kernel must not use 16-byte loads."""
    w, w_ref = gpu_weight("Q4_K", 33, 768, device)
    x = rng.standard_normal((m, 768)).astype(np.float32)
    buffer = torch.empty(m * 768 + 1, device=device)
    xd = buffer[1:].view(m, 768)
    xd.copy_(torch.from_numpy(x))
    assert xd.data_ptr() % 16 == 4
    got = kernels.matmul_t(xd, w).cpu().numpy()
    assert rel_frobenius(got, matmul_t_ref(x, w_ref)) <= tolerances["matmul_float32"]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "transposed,dtype,m",
    [
        (True, torch.float64, 65535 * 16 + 5),  # matmul_t's small kernel: slabs of 16 on grid.y
        (False, torch.float64, 65535 * 8 + 5),  # the VJP's float64 slabs of 8 on grid.z
        (True, torch.float32, 65535 * 128 + 5),  # the tiled kernel: 128-row tiles on grid.y
        (False, torch.float32, 65535 * 128 + 5),
    ],
    ids=["matmul_t-f64", "matmul-f64", "matmul_t-f32-tiled", "matmul-f32-tiled"],
)
def test_m_beyond_grid_limits_runs_in_pieces(transposed, dtype, m, device, tolerances) -> None:
    """More row slabs than a grid holds (65535): launched in pieces, every row written (NaN-poisoned)."""
    n, k = 3, 32
    w, w_ref = gpu_weight("Q8_0", n, k, device)
    wd = torch.from_numpy(w_ref).to(device, torch.float64)
    x = torch.randn(m, k if transposed else n, device=device, dtype=dtype)
    out = torch.full((m, n if transposed else k), float("nan"), device=device, dtype=dtype)
    (kernels.matmul_t if transposed else kernels.matmul)(x, w, out=out)
    ref = x.double() @ (wd.T if transposed else wd)  # cuBLAS float64
    error = float((out.double() - ref).norm() / ref.norm())
    assert error <= tolerances["matmul_float32" if dtype == torch.float32 else "matmul_float64"]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("m", [1, 16, 300])
def test_two_runs_bitwise_equal(m, dtype, device) -> None:
    """No atomics, fixed summation order: the same product twice gives the same bits (split VJP too)."""
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    for n, k in [(3001, 512), (64, 14336)]:
        w, _ = gpu_weight("Q4_K", n, k, device)
        x, g = (torch.randn(m, size, device=device, dtype=dtype) for size in (k, n))
        for product, a in ((kernels.matmul_t, x), (kernels.matmul, g)):
            first, second = product(a, w), product(a, w)
            assert torch.equal(first.view(bits), second.view(bits)), (product.__name__, n, k)


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
@pytest.mark.parametrize("transposed", [True, False], ids=["matmul_t", "matmul"])
def test_out_batched_and_stream(transposed, device, rng, tolerances) -> None:
    """On a side stream x is written late (after a sleep): a kernel not on that stream reads NaN."""
    n, k = 3001, 512  # the VJP splits N: its workspace comes from torch's allocator on this stream
    w, w_ref = gpu_weight("Q4_K", n, k, device)
    inner, outer = (k, n) if transposed else (n, k)
    host = rng.standard_normal((2, 3, inner)).astype(np.float32)
    base = torch.from_numpy(host).to(device)
    torch.cuda.synchronize(device)
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        x = torch.full_like(base, float("nan"))
        out = torch.full((2, 3, outer), float("nan"), device=device)
        torch.cuda._sleep(SLEEP_CYCLES)
        x.copy_(base)
        product = kernels.matmul_t if transposed else kernels.matmul
        assert product(x, w, out=out) is out
    stream.synchronize()
    ref = (matmul_t_ref if transposed else matmul_ref)(host.reshape(6, inner), w_ref).reshape(2, 3, outer)
    assert rel_frobenius(out.cpu().numpy(), ref) <= tolerances["matmul_float32"]


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
def test_out_overlapping_x_is_rejected(device) -> None:
    """N == K makes out=x pass every shape check; the kernels would read what they overwrite."""
    w, _ = gpu_weight("Q8_0", 64, 64, device)
    x = torch.randn(5, 64, device=device)
    for product in (kernels.matmul_t, kernels.matmul):
        with pytest.raises(ValueError, match="overlaps"):
            product(x, w, out=x)
    buffer = torch.randn(5 * 64 + 32, device=device)
    a, b = buffer[: 5 * 64].view(5, 64), buffer[32:].view(5, 64)  # half a row apart
    with pytest.raises(ValueError, match="overlaps"):
        kernels.matmul_t(a, w, out=b)
    with pytest.raises(ValueError, match="overlaps"):
        kernels.matmul(b, w, out=a)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
def test_error_leaves_no_trace(device, rng, tolerances) -> None:
    """A failed launch (no such device) raises; the next, valid calls must not inherit its error."""
    n, k, m = 3001, 512, 4  # a split VJP: its workspace query runs first
    w, w_ref = gpu_weight("Q4_K", n, k, device)
    qtype, stream = kernels._QTYPE_IDS["Q4_K"], int(torch.cuda.current_stream(device).cuda_stream)
    x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).to(device)
    g = torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).to(device)
    y, z = torch.empty(m, n, device=device), torch.empty(m, k, device=device)
    bad_device = 10_000
    with pytest.raises(RuntimeError, match="pylin CUDA matmul_t failed"):
        _cuda.matmul_t(x.data_ptr(), m, w.data.data_ptr(), w.nbytes, qtype, n, k, y.data_ptr(), False, 0, 0,
                       bad_device, stream)  # fmt: skip
    got = kernels.matmul_t(x, w).cpu().numpy()
    assert rel_frobenius(got, matmul_t_ref(x.cpu().numpy(), w_ref)) <= tolerances["matmul_float32"]
    with pytest.raises(RuntimeError, match="pylin CUDA dequantize failed"):
        _cuda.dequantize(w.data.data_ptr(), w.nbytes, qtype, n, k, z.data_ptr(), bad_device, stream)
    assert np.array_equal(cuda.dequantize(w).cpu().numpy(), w_ref)
    with pytest.raises(ValueError, match="workspace"):  # a split VJP without its workspace
        _cuda.matmul(g.data_ptr(), m, w.data.data_ptr(), w.nbytes, qtype, n, k, z.data_ptr(), False, 0, 0,
                     torch.device(device).index, stream)  # fmt: skip
    got = kernels.matmul(g, w).cpu().numpy()
    assert rel_frobenius(got, matmul_ref(g.cpu().numpy(), w_ref)) <= tolerances["matmul_float32"]


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@needs_gpu
def test_current_device_is_restored() -> None:
    """The kernels switch to the weight's device and back: torch's current device stays as it was."""
    torch.cuda.set_device(0)
    w, _ = gpu_weight("Q4_0", 7, 64, "cuda:1")
    kernels.matmul_t(torch.randn(3, 64, device="cuda:1"), w)
    kernels.matmul(torch.randn(3, 7, device="cuda:1"), w)
    cuda.dequantize(w)
    assert torch.cuda.current_device() == 0


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


@pytest.mark.cuda
@needs_gpu
def test_cupy_out_on_a_side_stream_is_ready(rng, tolerances) -> None:
    """The kernel runs on torch's stream, held up by a sleep; the caller's cupy stream must wait for it
    before it reads `out`, and the kernel for the caller's x (written late on that stream)."""
    cupy = pytest.importorskip("cupy")
    w, w_ref = gpu_weight("Q8_0", 7, 96, "cuda:0")
    x = rng.standard_normal((4, 96)).astype(np.float32)
    side = cupy.cuda.Stream(non_blocking=True)
    with side:
        base = cupy.asarray(x)
        side.synchronize()
        xc = cupy.full_like(base, cupy.nan)
        out = cupy.full((4, 7), cupy.nan, dtype=cupy.float32)
        with torch.cuda.stream(torch.cuda.ExternalStream(side.ptr)):
            torch.cuda._sleep(SLEEP_CYCLES)  # x is written late on the side stream
        xc[...] = base
        torch.cuda._sleep(SLEEP_CYCLES)  # and torch's stream, where the kernel runs, is late too
        assert cuda.matmul_t(xc, w, out=out) is out
        got = cupy.asnumpy(out, stream=side)  # on the side stream, right away
    assert rel_frobenius(got, matmul_t_ref(x, w_ref)) <= tolerances["matmul_float32"]


# ---- the engine on the GPU ------------------------------------------------------------------------

PROMPT = [2, 17, 5, 33, 8, 21, 11]


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny_gguf(request, tmp_path_factory):
    from tiny_models import make_tiny_hf, write_tiny_gguf

    folder = tmp_path_factory.mktemp(request.param)
    # llama.cpp's qwen3 has no sliding-window layers (as in tests/test_models.py)
    options = (
        {"use_sliding_window": False, "layer_types": ["full_attention"] * 2}
        if request.param == "qwen3"
        else {}
    )
    _, hf = make_tiny_hf(request.param, folder, **options)
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
    assert gpu.device == device and pylin.load(tiny_gguf, dtype=dtype, device=device).device == device
    tol = engine_tolerance(cpu.dtype)
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
