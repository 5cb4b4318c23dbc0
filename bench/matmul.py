"""How fast are pylin's quantized CPU matmuls next to torch's float32 matmul on pre-dequantized weights?

    python bench/matmul.py --quick                  # a subset, < 2 minutes
    python bench/matmul.py --smoke                  # every format once at a small shape; no results file
    python bench/matmul.py --formats Q4_0,Q4_K --shapes llama-o --m 1,8,512

Layer shapes of Llama-3-8B and Gemma-3-270M (N x K = out x in), formats Q4_0, Q4_K, Q5_0, Q6_K, Q8_0,
BF16 and the table-decoded IQ4_XS, IQ3_S, IQ2_XS, MXFP4, NVFP4 (any format pylin reads with --formats),
M in {1, 8, 64, 512, 2048}, both orientations: matmul_t (y = x wᵀ, forward/JVP) and matmul
(y = g w, VJP).  Baseline: torch.matmul on the same weights dequantized to float32 beforehand, same
thread count, same process; the two are timed in alternation and the medians compared, so load from
other processes on a shared machine hits both alike.  Before each timed call the contender runs
untimed for --settle-ms: torch's OpenMP workers spin ~10 ms after every torch.matmul, and a kernel
timed inside that window shares a core with them (pylin's own callers avoid this with
kernels.kernel_threads); --settle-ms 0 measures that interaction instead.  Then --evict-mb of memory
is rewritten (numpy, one thread), so that neither contender finds its weights in the 32 MB L3, as
when a model's layers are streamed in turn.  Targets (issue 2): M <= 16 at least 2x torch,
M >= 512 at least 0.8x torch.  --clock cpu (with --threads 1) times each call by the calling thread's CPU
time instead of wall time: on a machine oversubscribed by other jobs it leaves out the time slices a
contender spent descheduled.  Writes bench/results/matmul-<date>-<commit>.json.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from common import add_output_args, print_table, time_interleaved, write_results, writes_results

import pylin
from pylin import kernels, synthetic

SHAPES: dict[str, tuple[int, int]] = {  # name: (N, K) = (out, in)
    "llama-v": (1024, 4096), "llama-o": (4096, 4096), "llama-up": (14336, 4096), "llama-down": (4096, 14336),
    "gemma-v": (256, 640), "gemma-o": (640, 1024), "gemma-up": (2048, 640), "gemma-down": (640, 2048),
}  # fmt: skip
FORMATS = ("Q4_0", "Q4_K", "Q5_0", "Q6_K", "Q8_0", "BF16", "IQ4_XS", "IQ3_S", "IQ2_XS", "MXFP4", "NVFP4")
MS = (1, 8, 64, 512, 2048)
QUICK = {"shapes": ("llama-o", "gemma-up"), "formats": ("Q4_0", "Q4_K", "Q8_0", "BF16"), "m": (1, 8, 512)}
SMOKE = {"shapes": ("llama-v",), "formats": FORMATS, "m": (1, 65)}

# fp16 scale fields of each block (ggml-common.h); random bytes elsewhere decode to valid weights.
_SCALES = {"Q4_0": (0,), "Q5_0": (0,), "Q8_0": (0,), "Q4_K": (0, 2), "Q6_K": (208,)}


def random_weight(qtype: str, n: int, k: int, rng: np.random.Generator) -> pylin.QTensor:
    """A weight of random blocks with realistic fp16 scales (speed does not depend on the values;
    quantizing 58M weights first would only slow the benchmark down)."""
    if qtype == "BF16":
        values = rng.standard_normal((n, k), dtype=np.float32)
        return pylin.QTensor((values.view(np.uint32) >> 16).astype(np.uint16), "BF16", (n, k))
    if qtype not in _SCALES:  # the i-quants, TQ*, MXFP4, NVFP4: pylin.synthetic knows their scales
        return synthetic.random_qtensor(qtype, (n, k), 0.01, seed=int(rng.integers(2**31)))
    block_size, block_bytes = pylin.qtensor.block_layout(qtype)
    blocks = rng.integers(0, 256, size=(n * k // block_size, block_bytes), dtype=np.uint8)
    for offset in _SCALES[qtype]:
        scales = rng.uniform(1e-3, 2e-2, size=len(blocks)).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return pylin.QTensor(blocks.reshape(-1), qtype, (n, k))


def repeats_for(flops: float) -> int:
    return 3 if flops > 2e10 else 5 if flops > 2e9 else 9 if flops > 1e8 else 25


def run(
    shapes: list[str],
    formats: list[str],
    ms: list[int],
    orientations: list[str],
    settle_s: float,
    evict_mb: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict]:
    rng = np.random.default_rng(0)
    junk = np.zeros(evict_mb << 18, dtype=np.float32)

    def evict() -> None:
        np.add(junk, 1.0, out=junk)

    rows: list[dict] = []
    for shape in shapes:
        n, k = SHAPES[shape]
        for qtype in formats:
            if pylin.qtensor.block_layout(qtype)[0] > 1 and k % pylin.qtensor.block_layout(qtype)[0]:
                print(f"# skip {shape} {qtype}: K = {k} is not a multiple of the block size", flush=True)
                continue
            w = random_weight(qtype, n, k, rng)
            w_f32 = torch.from_numpy(kernels.dequantize(w))
            w_f32_t = w_f32.T
            for m in ms:
                for orientation in orientations:
                    x = torch.randn(m, k if orientation == "matmul_t" else n)
                    pylin_fn = kernels.matmul_t if orientation == "matmul_t" else kernels.matmul
                    w_torch = w_f32_t if orientation == "matmul_t" else w_f32
                    fns = [
                        lambda x=x, w=w, f=pylin_fn: f(x, w),
                        lambda x=x, b=w_torch: torch.matmul(x, b),
                    ]
                    flops = 2.0 * m * n * k
                    got, want = fns[0](), fns[1]()  # both compute the same product: check before timing
                    rel_err = float((got - want).norm() / want.norm())
                    if not rel_err < 1e-4:
                        raise SystemExit(
                            f"matmul.py: {shape} {qtype} M={m} {orientation}: rel. error {rel_err:.1e}"
                        )
                    pylin_ms, torch_ms = time_interleaved(
                        fns,
                        repeats=repeats_for(flops),
                        settle_s=settle_s,
                        evict=evict if evict_mb else None,
                        clock=clock,
                    )
                    row = {
                        "shape": shape, "N": n, "K": k, "format": qtype, "M": m, "orientation": orientation,
                        "pylin_ms": pylin_ms, "torch_ms": torch_ms, "ratio": torch_ms / pylin_ms,
                        "rel_err": rel_err,
                        "gflops": flops / pylin_ms / 1e6, "weight_gbs": w.nbytes / pylin_ms / 1e6,
                    }  # fmt: skip
                    target = 2.0 if m <= 16 else 0.8 if m >= 512 else None
                    row["target"] = target
                    row["meets_target"] = None if target is None else bool(row["ratio"] >= target)
                    rows.append(row)
                    print(
                        f"{shape:10s} {qtype:5s} M={m:<5d} {orientation:8s} pylin {pylin_ms:9.3f} ms  "
                        f"torch {torch_ms:9.3f} ms  x{row['ratio']:.2f}",
                        flush=True,
                    )
            del w_f32, w_f32_t
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a subset that runs in under two minutes")
    parser.add_argument("--formats", help=f"comma-separated, default {','.join(FORMATS)}")
    parser.add_argument("--shapes", help=f"comma-separated from {','.join(SHAPES)}")
    parser.add_argument("--m", help=f"comma-separated M values, default {','.join(map(str, MS))}")
    parser.add_argument("--orientation", choices=["matmul_t", "matmul", "both"], default="both")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--settle-ms", type=float, default=30.0, help="untimed runs before each timed call (0: none)"
    )
    parser.add_argument("--evict-mb", type=int, default=64, help="memory rewritten before each timed call")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="cpu: the calling thread's CPU time (needs --threads 1): on a machine oversubscribed by other "
             "jobs, wall time also counts the time slices the contenders were not running",
    )  # fmt: skip
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread: use it with --threads 1")

    subset = SMOKE if args.smoke else QUICK if args.quick else {"shapes": SHAPES, "formats": FORMATS, "m": MS}
    shapes, formats, ms = list(subset["shapes"]), list(subset["formats"]), list(subset["m"])
    if args.smoke:
        args.settle_ms, args.evict_mb = 0.0, 0
    if args.shapes:
        shapes = args.shapes.split(",")
    if args.formats:
        formats = [f.upper() for f in args.formats.split(",")]
    if args.m:
        ms = [int(v) for v in args.m.split(",")]
    orientations = ["matmul_t", "matmul"] if args.orientation == "both" else [args.orientation]
    torch.set_num_threads(args.threads)

    print(
        f"# pylin {pylin.__version__}, ISA {kernels.isa()}, {args.threads} threads, torch {torch.__version__}"
    )
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    rows = run(shapes, formats, ms, orientations, args.settle_ms / 1e3, args.evict_mb, clock)
    print()
    print_table(
        rows,
        [("shape", "shape", ""), ("format", "format", ""), ("M", "M", "d"), ("orientation", "orient", ""),
         ("pylin_ms", "pylin ms", ".3f"), ("torch_ms", "torch ms", ".3f"), ("ratio", "torch/pylin", ".2f"),
         ("gflops", "GFLOP/s", ".1f"), ("weight_gbs", "weight GB/s", ".2f")],
    )  # fmt: skip
    if writes_results(args):
        extra = {"isa": kernels.isa(), "torch": torch.__version__, "pylin": pylin.__version__,
                 "baseline": "torch.matmul, float32 weights dequantized beforehand, same threads, timed "
                             "in alternation with pylin (median of repeats)",
                 "settle_ms": args.settle_ms, "evict_mb": args.evict_mb, "clock": args.clock,
                 "note": "shared 2-core machine: other processes ran during the measurement "
                         "(see loadavg_1_5_15)"}  # fmt: skip
        path = write_results("matmul", rows, args.threads, extra, tag=args.tag)
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
