"""GPU benchmark: pylin's CUDA kernels vs cuBLAS, and the engine end to end on synthetic Llama-3 files.

    python bench/gpu.py                          # kernels (8B and 70B layer shapes) + 8B end to end
    python bench/gpu.py --skip-e2e --formats Q4_K,Q6_K
    python bench/gpu.py --e2e llama-3-8b,llama-3.3-70b --data-dir /scratch   # 70B: an 80 GB card, ~40 GB disk

1. Kernels: y = x·wᵀ (matmul_t) and y = g·w (matmul, the VJP) on quantized w, against torch.matmul
   on the same weights dequantized to bfloat16 and float32 (cuBLAS), for the Llama-3-8B and 70B layer
   shapes (q/o, k/v, gate/up, down) and M ∈ {1, 8, 64, 512, 4096}.  CUDA-event timing, warm-up,
   median of --repeats; the 50 MB L2 is not flushed (weights of 8B layers partly stay in it; the 70B
   ones do not).  Prints ms, weight GB/s, TFLOP/s and the ratios cuBLAS_time / pylin_time.
2. End to end on a synthetic Q4_K file (bench/make_synthetic_gguf.py, written once into --data-dir):
   load + upload, linearize, a 64-vector JVP and VJP batch, top-8 SVD and the full last-token
   Jacobian.  Anchors: the paper's 70B 4-bit full Jacobian of a 2-token prompt took ~10 minutes on an
   A100-40GB; a Q4 70B weight pass cannot beat ~40 GB / bandwidth (~13 ms on an H100).
Writes bench/results/gpu-<date>.json naming the card.  Exits with a message when no GPU is usable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_results  # noqa: E402

import pylin  # noqa: E402
from pylin import cuda, kernels  # noqa: E402

SHAPES = {  # (N, K) of each projection, PyTorch order
    "llama-3-8b": {"q/o": (4096, 4096), "k/v": (1024, 4096), "gate/up": (14336, 4096), "down": (4096, 14336)},
    "llama-3.3-70b": {
        "q/o": (8192, 8192),
        "k/v": (1024, 8192),
        "gate/up": (28672, 8192),
        "down": (8192, 28672),
    },
}
MS = (1, 8, 64, 512, 4096)


def gpu_ms(fn: Any, repeats: int, warmup: int = 2) -> float:
    """Median milliseconds of fn() between CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def random_weight(qtype: str, n: int, k: int, rng: np.random.Generator) -> pylin.QTensor:
    """Realistic blocks (std ~0.02) by quantizing Gaussian rows, one slab at a time."""
    rows = []
    for r0 in range(0, n, 2048):
        x = (0.02 * rng.standard_normal((min(2048, n - r0), k))).astype(np.float32)
        rows.append(kernels.quantize(x, qtype).data)
    return pylin.QTensor(np.concatenate(rows), qtype, (n, k))


def time_case(w: Any, w32: torch.Tensor, w16: torch.Tensor, m: int, transposed: bool, repeats: int):
    """(pylin, cuBLAS float32, cuBLAS bfloat16) milliseconds of one product."""
    n, k = w.shape
    x = torch.randn(m, k if transposed else n, device=w32.device)
    x16 = x.bfloat16()
    if transposed:
        fns = (lambda: kernels.matmul_t(x, w), lambda: x @ w32.T, lambda: x16 @ w16.T)
    else:
        fns = (lambda: kernels.matmul(x, w), lambda: x @ w32, lambda: x16 @ w16)
    return tuple(gpu_ms(fn, repeats) for fn in fns)


def bench_kernels(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for model in args.models:
        for proj, (n, k) in SHAPES[model].items():
            for qtype in args.formats:
                w = cuda.upload(random_weight(qtype, n, k, rng), device)
                w32 = cuda.dequantize(w)
                w16 = w32.bfloat16()
                for m in args.m:
                    for transposed in (True, False):
                        t_ours, t_f32, t_bf16 = time_case(w, w32, w16, m, transposed, args.repeats)
                        r = {
                            "model": model, "proj": proj, "op": "matmul_t" if transposed else "matmul",
                            "qtype": qtype, "M": m, "N": n, "K": k,
                            "pylin_ms": t_ours, "cublas_f32_ms": t_f32, "cublas_bf16_ms": t_bf16,
                            "vs_f32": t_f32 / t_ours, "vs_bf16": t_bf16 / t_ours,
                            "weight_GBps": w.nbytes / t_ours / 1e6,
                            "TFLOPs": 2.0 * m * n * k / t_ours / 1e9,
                        }  # fmt: skip
                        rows.append(r)
                        print(f"{model:14s} {proj:8s} {r['op']:8s} {qtype:5s} M={m:5d}  {t_ours:8.3f} ms  "
                              f"{r['weight_GBps']:7.1f} GB/s  x{r['vs_f32']:.2f} vs f32  "
                              f"x{r['vs_bf16']:.2f} vs bf16", flush=True)  # fmt: skip
                torch.cuda.empty_cache()
    return rows


def timed(fn: Any) -> tuple[Any, float]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def bench_e2e(model_name: str, args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """One synthetic Q4_K model end to end; a failing stage is recorded (with its error) and skipped."""
    from make_synthetic_gguf import write

    path = Path(args.data_dir) / f"{model_name}-q4_k.gguf"
    if not path.exists():
        print(f"writing {path} (once) ...", flush=True)
        write(model_name, "Q4_K", path)
    rows: list[dict[str, Any]] = []

    def stage(name: str, fn: Any, **info: Any) -> Any:
        try:
            out, seconds = timed(fn)
        except Exception as error:  # keep the other stages' numbers
            rows.append(
                {"model": model_name, "stage": name, "error": f"{type(error).__name__}: {error}", **info}
            )
            print(f"{model_name:14s} {name:28s} FAILED: {error}", flush=True)
            return None
        rows.append({"model": model_name, "stage": name, "seconds": seconds, **info})
        print(f"{model_name:14s} {name:28s} {seconds:9.3f} s", flush=True)
        return out

    model = stage("load + upload", lambda: cuda.to_device(pylin.load(path), device))
    if model is None:
        return rows
    rows[-1]["gpu_memory_gib"] = torch.cuda.memory_allocated(device) / 2**30
    rng = torch.Generator().manual_seed(0)
    for tokens in args.tokens:
        ids = torch.randint(0, model.config.vocab_size, (tokens,), generator=rng).tolist()
        lin = stage("linearize", lambda ids=ids: model.linearize(ids), tokens=tokens)
        if lin is not None:
            e2e_products(lin, tokens, device, stage)
        torch.cuda.empty_cache()
    rows.append({"model": model_name, "stage": "peak memory", "gpu_memory_gib":
                 torch.cuda.max_memory_allocated(device) / 2**30})  # fmt: skip
    return rows


def e2e_products(lin: Any, tokens: int, device: str, stage: Any) -> None:
    from pylin.svd import svd

    V = torch.randn(64, tokens, lin.d_in, device=device)
    U = torch.randn(64, lin.d_out, device=device)
    stage("jvp x64", lambda: lin.jvp(V), tokens=tokens)
    stage("vjp x64", lambda: lin.vjp(U), tokens=tokens)
    stage("svd top-8 (last token)", lambda: svd(lin, k=8, token=-1), tokens=tokens)
    stage("jacobian (last token)", lambda: lin.jacobian(tokens=-1), tokens=tokens)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--formats", default="Q4_K,Q6_K,Q8_0,Q4_0", type=lambda s: s.split(","))
    parser.add_argument("--models", default="llama-3-8b,llama-3.3-70b", type=lambda s: s.split(","))
    parser.add_argument("--m", default=MS, type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument(
        "--e2e", default=None, help="models to run end to end (default: 8B, plus 70B on >= 75 GiB)"
    )
    parser.add_argument("--tokens", default=[2, 16], type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--data-dir", default="/tmp", help="where the synthetic GGUF files are written")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    if not cuda.available():
        sys.exit(f"bench/gpu.py needs an NVIDIA GPU: {cuda.why_unavailable()}")
    device = args.device
    props = torch.cuda.get_device_properties(device)
    card = {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "sm_count": props.multi_processor_count, "capability": f"sm_{props.major}{props.minor}",
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "pylin_cuda": pylin.build_info()["cuda"]}  # fmt: skip
    print(f"{card['gpu']} ({card['gpu_memory_gib']} GiB, {card['capability']})", flush=True)

    kernel_rows = [] if args.skip_kernels else bench_kernels(args, device)
    e2e_rows: list[dict[str, Any]] = []
    if not args.skip_e2e:
        models = args.e2e.split(",") if args.e2e else ["llama-3-8b"] + (
            ["llama-3.3-70b"] if props.total_memory >= 75 * 2**30 else [])  # fmt: skip
        for name in models:
            e2e_rows += bench_e2e(name, args, device)
    if kernel_rows:
        print_table([r for r in kernel_rows if r["op"] == "matmul_t"], [
            ("model", "model", ""), ("proj", "proj", ""), ("qtype", "type", ""), ("M", "M", "d"),
            ("pylin_ms", "pylin ms", ".3f"), ("weight_GBps", "GB/s", ".0f"), ("vs_f32", "f32/pylin", ".2f"),
            ("vs_bf16", "bf16/pylin", ".2f")])  # fmt: skip
    path = write_results(
        "gpu", kernel_rows + e2e_rows, threads=torch.get_num_threads(), extra=card, tag=args.tag
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
