"""GPU benchmark: pylin's CUDA kernels vs cuBLAS, and the engine end to end on synthetic Llama-3 files.

    python bench/gpu.py                                   # the kernel table (8B and 70B layer shapes)
    python bench/gpu.py --formats Q4_K --budget-s 120     # stop starting cases after 120 s
    python bench/gpu.py --skip-kernels --e2e llama-3-8b:Q4_K --data-dir /scratch --write
    python bench/gpu.py --smoke                           # seconds; exits 0 with the reason without a GPU

1. Kernels: y = x·wᵀ (matmul_t) and y = g·w (matmul, the VJP) on quantized w, against torch.matmul
   on the same weights dequantized to float32 and bfloat16 (cuBLAS; TF32 off), for the Llama-3-8B
   and 70B layer shapes (q/o, k/v, gate/up, down) and M ∈ {1, 8, 64, 512, 4096}.  Every case is
   checked first: pylin's and cuBLAS float32's relative error against cuBLAS float64 on the same
   dequantized weights (pylin must be within 1e-6).  Timing: CUDA events, warm-up, median of up to
   --repeats (fewer once a contender has run 0.3 s), each contender cycling through enough copies of
   its weights to exceed twice the L2, so that no case is timed from the cache.  A device-to-device
   copy measures the card's bandwidth first: rows give weight bytes/s as a fraction of it.
2. End to end (--e2e MODEL:FORMAT, explicit): a synthetic file (bench/make_synthetic_gguf.py) in
   --data-dir, written only with --write and only if the disk has room (70B Q4_K_M: ~42 GB): load +
   upload, linearize (--tokens), reconstruction error, a 64-vector JVP and VJP batch (with their
   adjointness), top-8 SVD and the full Jacobian block of the last token.  Anchor: the paper's 70B
   4-bit full Jacobian of a 2-token prompt took ~10 minutes on an A100-40GB.
Writes <--out-dir or bench/results>/gpu-<date>-<commit>-<card>[-tag].json (card, driver, CUDA version,
the measured bandwidth), rewritten after every row so a run stopped early keeps what it measured; with
--smoke only when --json is given.  Used by bench/gpu_check.sh; docs/cuda.md says how to run it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (not the repo root: pylin is installed)
from common import add_output_args, print_table, write_results, writes_results  # noqa: E402

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
TOLERANCE = 1e-6  # pylin float32 vs cuBLAS float64 on the same weights (the kernels' claim)
CONTENDER_SECONDS = 0.3  # stop repeating a contender after this much timed work


# ---- the card ------------------------------------------------------------------------------------


def card_info(device: str) -> dict[str, Any]:
    props, build = torch.cuda.get_device_properties(device), pylin.build_info()
    driver = None
    try:  # the driver version only nvidia-smi tells (a single-GPU machine: its first line)
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "sm_count": props.multi_processor_count, "capability": f"sm_{props.major}{props.minor}",
            "l2_mib": round(getattr(props, "L2_cache_size", 0) / 2**20, 1), "driver": driver,
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "pylin_cuda": build["cuda"], "pylin_cuda_version": build["cuda_version"]}  # fmt: skip


def card_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200' (the results file's card)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-") or "gpu"


def copy_bandwidth(device: str, nbytes: int = 2 << 30) -> float:
    """Device-to-device copy in GB/s, bytes read plus written (METHOD.md: measure the ceiling)."""
    pair = [torch.empty(nbytes, dtype=torch.uint8, device=device) for _ in range(2)]
    seconds = gpu_ms(lambda: pair[1].copy_(pair[0]), repeats=10) / 1e3
    pair.clear()
    torch.cuda.empty_cache()
    return 2 * nbytes / seconds / 1e9


# ---- kernels ----------------------------------------------------------------------------------------


def gpu_ms(fn: Any, repeats: int, warmup: int = 2, budget_s: float = CONTENDER_SECONDS) -> float:
    """Median milliseconds of fn() between CUDA events on the current stream (at least 3 samples)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats and (len(times) < 3 or sum(times) < budget_s * 1e3):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def random_weight(qtype: str, n: int, k: int, rng: np.random.Generator) -> pylin.QTensor:
    """Blocks with weights of std ~0.02: random quant bytes and scales (bench/make_synthetic_gguf.py)."""
    from make_synthetic_gguf import BLOCK_TYPES, random_blocks

    if qtype in BLOCK_TYPES:
        block = pylin.qtensor.block_layout(qtype)[0]
        return pylin.QTensor(random_blocks(rng, n * k // block, qtype), qtype, (n, k))
    return kernels.quantize((0.02 * rng.standard_normal((n, k))).astype(np.float32), qtype)


class Rotation:
    """Copies of one operand, handed out in turn, so that a timed loop never finds it in the L2."""

    def __init__(self, first: Any, nbytes: int, l2_bytes: int, make_copy: Any) -> None:
        count = int(min(64, max(1, -(-2 * l2_bytes // max(nbytes, 1)))))
        self.items, self.i = [first] + [make_copy() for _ in range(count - 1)], 0

    def next(self) -> Any:
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm())


def kernel_case(w: Any, ws: dict[str, Rotation], m: int, transposed: bool, repeats: int) -> dict[str, Any]:
    """One product: its errors against cuBLAS float64, then the three contenders' median times."""
    n, k = w.shape
    w32 = ws["f32"].items[0]
    x = torch.randn(m, k if transposed else n, device=w32.device)
    ref = x.double() @ (w32.double().T if transposed else w32.double())
    ours = kernels.matmul_t(x, w) if transposed else kernels.matmul(x, w)
    theirs = x @ (w32.T if transposed else w32)
    row = {"err_pylin": relative_error(ours, ref), "err_cublas_f32": relative_error(theirs, ref)}
    del ref, ours, theirs
    x16 = x.bfloat16()

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ (b.T if transposed else b)

    pylin_product = kernels.matmul_t if transposed else kernels.matmul
    row["pylin_ms"] = gpu_ms(lambda: pylin_product(x, ws["pylin"].next()), repeats)
    row["cublas_f32_ms"] = gpu_ms(lambda: product(x, ws["f32"].next()), repeats)
    row["cublas_bf16_ms"] = gpu_ms(lambda: product(x16, ws["bf16"].next()), repeats)
    return row


class Results:
    """The rows so far, rewritten to the results file after every row (a run stopped early keeps them)."""

    def __init__(self, card: dict[str, Any], tag: str, directory: Path | None, write: bool) -> None:
        self.rows: list[dict[str, Any]] = []
        self.card, self.tag, self.directory, self.write = card, tag, directory, write

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        self.save()
        return row

    def save(self) -> None:
        if self.write:
            threads = torch.get_num_threads()
            write_results("gpu", self.rows, threads, extra=self.card, tag=self.tag, directory=self.directory)


def bench_kernels(args: argparse.Namespace, device: str, results: Results) -> None:
    """The kernel table, format by format (the first format's rows come first); stops at the budget."""
    rng, deadline = np.random.default_rng(0), time.monotonic() + args.budget_s
    for qtype in args.formats:
        for model in args.models:
            for proj, (n, k) in SHAPES[model].items():
                if time.monotonic() > deadline:
                    print(f"kernel budget of {args.budget_s:.0f} s spent: {qtype} {model} {proj} and after "
                          "not run", flush=True)  # fmt: skip
                    return
                where = {"model": model, "proj": proj, "qtype": qtype, "N": n, "K": k}
                bench_weight(random_weight(qtype, n, k, rng), where, args, device, results)
                torch.cuda.empty_cache()


def bench_weight(
    host: Any, where: dict[str, Any], args: argparse.Namespace, device: str, results: Results
) -> None:
    """Every M and orientation on one weight."""
    card = results.card
    l2_bytes = int(card["l2_mib"] * 2**20) or 50 << 20
    w = cuda.upload(host, device)
    w32 = cuda.dequantize(w)
    w16 = w32.bfloat16()
    ws = {"pylin": Rotation(w, w.nbytes, l2_bytes, lambda: cuda.upload(host, device)),
          "f32": Rotation(w32, w32.nbytes, l2_bytes, w32.clone),
          "bf16": Rotation(w16, w16.nbytes, l2_bytes, w16.clone)}  # fmt: skip
    n, k = w.shape
    for m in args.m:
        for transposed in (True, False):
            r = {**where, "op": "matmul_t" if transposed else "matmul", "M": m,
                 **kernel_case(w, ws, m, transposed, args.repeats)}  # fmt: skip
            ms = r["pylin_ms"]
            r.update(check="ok" if r["err_pylin"] <= TOLERANCE else "FAIL",
                     vs_f32=r["cublas_f32_ms"] / ms, vs_bf16=r["cublas_bf16_ms"] / ms,
                     weight_GBps=w.nbytes / ms / 1e6, TFLOPs=2.0 * m * n * k / ms / 1e9)  # fmt: skip
            r["bw_fraction"] = r["weight_GBps"] / card["copy_GBps"]
            results.add(r)
            print(
                f"{r['model']:14s} {r['proj']:8s} {r['op']:8s} {r['qtype']:5s} M={m:5d} "
                f"{r['pylin_ms']:8.3f} ms {r['weight_GBps']:7.1f} GB/s x{r['vs_f32']:.2f} f32 "
                f"x{r['vs_bf16']:.2f} bf16 err {r['err_pylin']:.1e} {r['check']}",
                flush=True,
            )


# ---- end to end -------------------------------------------------------------------------------------


def synthetic_file(spec: str, args: argparse.Namespace) -> Path:
    """The GGUF of `model:format`, written first only when --write asks and the disk has room."""
    from make_synthetic_gguf import file_size, write

    model, _, qtype = spec.partition(":")
    qtype = qtype or "Q4_K"
    path = Path(args.data_dir) / f"{model}-{qtype.lower()}.gguf"
    if path.exists() and path.stat().st_size >= file_size(model, qtype):
        return path
    size = file_size(model, qtype)
    if not args.write:
        raise SystemExit(f"{path} does not exist: pass --write to write it ({size / 1e9:.1f} GB)")
    free = shutil.disk_usage(path.parent).free
    if free < size + (2 << 30):
        raise SystemExit(f"{path.parent} has {free / 1e9:.1f} GB free; {spec} needs {size / 1e9:.1f} GB")
    print(f"writing {path} ({size / 1e9:.1f} GB) ...", flush=True)
    write(model, qtype, path, workers=args.workers)
    return path


def bench_e2e(spec: str, args: argparse.Namespace, device: str, results: Results) -> None:
    """One synthetic model end to end; a failing stage is recorded (with its error) and skipped, and no
    stage starts after the budget."""
    path = synthetic_file(spec, args)
    deadline = time.monotonic() + args.budget_s

    def stage(name: str, fn: Any, **info: Any) -> Any:
        row = {"model": spec, "stage": name, **info}
        if time.monotonic() > deadline:
            results.add({**row, "skipped": "budget spent"})
            return None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            out = fn()
            torch.cuda.synchronize()
        except Exception as error:  # keep the other stages' numbers
            results.add({**row, "error": f"{type(error).__name__}: {error}"})
            print(f"{spec:20s} {name:28s} FAILED: {error}", flush=True)
            return None
        results.add({**row, "seconds": time.perf_counter() - t0})
        print(f"{spec:20s} {name:28s} {results.rows[-1]['seconds']:9.3f} s  {info or ''}", flush=True)
        return out

    model = stage("load + upload", lambda: pylin.load(path, device=device), file_gb=path.stat().st_size / 1e9)
    if model is None:
        return
    results.rows[-1]["gpu_memory_gib"] = torch.cuda.memory_allocated(device) / 2**30
    rng = torch.Generator().manual_seed(0)
    for tokens in args.tokens:
        ids = torch.randint(0, model.config.vocab_size, (tokens,), generator=rng).tolist()
        lin = stage("linearize", lambda ids=ids: model.linearize(ids), tokens=tokens)
        if lin is not None:
            e2e_products(lin, tokens, device, stage, results)
        del lin
        torch.cuda.empty_cache()
    results.add({"model": spec, "stage": "peak memory", "gpu_memory_gib":
                 torch.cuda.max_memory_allocated(device) / 2**30})  # fmt: skip


def adjointness(lin: Any, tokens: int, device: str, stage: Any, results: Results) -> None:
    """The 64-vector JVP and VJP batches, timed, and <U, J V> = <Jᵀ U, V> vector by vector."""
    gen = torch.Generator(device=device).manual_seed(1)
    V = torch.randn(64, tokens, lin.d_in, device=device, generator=gen)
    U = torch.randn(64, lin.d_out, device=device, generator=gen)
    jv = stage("jvp x64", lambda: lin.jvp(V), tokens=tokens)
    ju = stage("vjp x64", lambda: lin.vjp(U), tokens=tokens)
    if jv is not None and ju is not None:
        lhs, rhs = (U.double() * jv.double()).sum(1), (ju.double() * V.double()).sum((1, 2))
        results.rows[-1]["adjoint_rel_error"] = float((lhs - rhs).abs().max() / rhs.abs().max())
        results.save()


def e2e_products(lin: Any, tokens: int, device: str, stage: Any, results: Results) -> None:
    from pylin.svd import svd

    rec = stage("reconstruction", lin.reconstruction, tokens=tokens)
    if rec is not None:
        results.rows[-1].update(rel_error=rec.rel_error, r2=rec.r2)
    adjointness(lin, tokens, device, stage, results)
    result = stage("svd top-8 (last token)", lambda: svd(lin, k=8, token=-1), tokens=tokens)
    if result is not None:
        results.rows[-1]["sigma"] = [float(s) for s in result.S[:8]]
    stage("jacobian (last token)", lambda: lin.jacobian(tokens=-1, progress=False), tokens=tokens)
    results.save()


# ---- main -------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--formats", default="Q4_K,Q6_K,Q8_0,Q4_0", type=lambda s: s.split(","))
    parser.add_argument("--models", default="llama-3-8b,llama-3.3-70b", type=lambda s: s.split(","))
    parser.add_argument("--m", default=MS, type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=1e9, help="start no kernel case / e2e stage after")
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--e2e", default=None, help="MODEL:FORMAT to run end to end, e.g. llama-3-8b:Q4_K")
    parser.add_argument("--tokens", default=[16], type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--data-dir", default="/tmp", help="where the synthetic GGUF files live")
    parser.add_argument("--write", action="store_true", help="write the --e2e file if it is missing")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing it")
    parser.add_argument("--out-dir", default=None, help="results folder (default bench/results)")
    add_output_args(parser)  # --smoke (one small shape; without a GPU: exit 0 with the reason), --json, --tag
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not cuda.available():
        message = f"bench/gpu.py needs an NVIDIA GPU: {cuda.why_unavailable()}"
        if args.smoke:
            print(f"{message} (--smoke: nothing to run)")
            return
        sys.exit(message)
    if args.smoke:
        args.formats, args.models, args.m, args.repeats = args.formats[:1], ["llama-3-8b"], [1, 64], 3
        SHAPES["llama-3-8b"] = {"q/o": (4096, 4096)}
    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 baseline is float32
    torch.backends.cudnn.allow_tf32 = False
    device = args.device
    card = card_info(device)
    card["copy_GBps"] = copy_bandwidth(device)
    print(f"{card['gpu']} ({card['gpu_memory_gib']} GiB, {card['capability']}, driver {card['driver']}, "
          f"CUDA {card['cuda_runtime']}): device copy {card['copy_GBps']:.0f} GB/s", flush=True)  # fmt: skip
    tag = "-".join(t for t in (card_slug(card["gpu"]), args.tag) if t)
    out_dir = Path(args.out_dir) if args.out_dir else None
    results = Results(card, tag, out_dir, write=writes_results(args))
    if not args.skip_kernels:
        bench_kernels(args, device, results)
    if args.e2e:
        bench_e2e(args.e2e, args, device, results)
    results.save()
    rows = results.rows
    table = [r for r in rows if r.get("op") == "matmul_t"]
    if table:
        print_table(
            table,
            [
                ("model", "model", ""),
                ("proj", "proj", ""),
                ("qtype", "type", ""),
                ("M", "M", "d"),
                ("pylin_ms", "pylin ms", ".3f"),
                ("bw_fraction", "of copy BW", ".2f"),
                ("vs_f32", "f32/pylin", ".2f"),
                ("vs_bf16", "bf16/pylin", ".2f"),
                ("err_pylin", "error", ".1e"),
            ],
        )
    failed = [r for r in rows if r.get("check") == "FAIL"]
    print(f"{len(rows)} rows; {len(failed)} kernel cases beyond {TOLERANCE:g}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
