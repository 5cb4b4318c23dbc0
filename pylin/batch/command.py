"""`pylin batch`: the command line of pylin.batch.run (registered by pylin.cli).

    pylin batch [MODEL …] --prompts FILE --out DIR [--k 8] [--tokens all|-1|0,3] [--layers auto|all|none|0,4]
                [--dtype float32] [--device cpu|cuda] [--max-tokens N] [--arrays] [--jacobian]
                [--steer-concept TEXT --steer-layer L [--steer-strength 1,2] [--steer-tokens 20]]
                [--engine local|ray] [--workers N] [--threads T] [--address ADDR]
                [--identity stat|hash] [--retry-errors] [--no-report] [--no-progress]

Bad arguments and prompt files end in one line and exit status 2 (pylin.cli's convention: every
validation error is a ValueError).  Tests: tests/test_batch.py.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "main"]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _strengths(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like '0.5,1,2', got {text!r}") from None
    if not values or any(v != v or abs(v) == float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers like '0.5,1,2', got {text!r}")
    return values


def add_parser(sub: Any) -> argparse.ArgumentParser:
    b = sub.add_parser("batch", help="analyze every prompt of a file with one or more models (resumable)")
    b.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="GGUF files or HF folders (default: the Gemma 3 270M demo model)",
    )
    b.add_argument(
        "--prompts", required=True, help="prompt file: .txt (one a line), .jsonl, .csv or .parquet"
    )
    b.add_argument("--out", required=True, help="results folder (results.parquet, report.html, arrays/)")
    b.add_argument("--k", type=_positive, default=8, help="singular triplets per block (default 8)")
    b.add_argument("--tokens", default="all", help="all | concat | -1 | 0,3,-1: which Jacobian blocks")
    b.add_argument("--layers", default="auto", help="auto | all | none | 0,4,8 | start:stop:step")
    b.add_argument("--method", choices=["auto", "krylov", "randomized", "exact"], default="auto")
    b.add_argument("--top", type=_positive, default=5, help="decoded tokens per singular vector")
    b.add_argument("--nonlinear", choices=["auto", "on", "off"], default="auto")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    b.add_argument("--max-tokens", type=_positive, help="prompts longer than this become error rows")
    b.add_argument("--arrays", action="store_true", help="write U, S, Vh per row to arrays/<key>.safetensors")
    b.add_argument("--jacobian", action="store_true", help="also the formed J of the analysed tokens")
    b.add_argument("--steer-concept", help="also steered continuations of each prompt by this concept")
    b.add_argument("--steer-layer", type=int, help="block ℓ: J of its output added into its input")
    b.add_argument("--steer-strength", type=_strengths, default=(1.0,), help="λ, or a grid: 0.5,1,2")
    b.add_argument("--steer-tokens", type=_positive, default=20, help="new tokens per continuation")
    b.add_argument("--engine", choices=["local", "ray"], default="local")
    b.add_argument("--workers", type=_positive, help="Ray actors (default: one per GPU, or CPUs / threads)")
    b.add_argument("--threads", type=_positive, help="kernel threads per worker (default: local all, Ray 1)")
    b.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    b.add_argument(
        "--identity",
        choices=["stat", "hash"],
        default="stat",
        help="model identity in the row key: path+size+mtime, or the file's sha256",
    )
    b.add_argument("--retry-errors", action="store_true", help="recompute rows that failed before")
    b.add_argument("--no-report", action="store_true", help="do not write report.html")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    return b


def main(args: argparse.Namespace) -> int:
    from ..cli import writable_folder
    from . import run

    writable_folder(args.out, "--out")  # before any model loads
    steer = None
    if args.steer_concept is not None or args.steer_layer is not None:
        if args.steer_concept is None or args.steer_layer is None:
            raise ValueError("--steer-concept and --steer-layer go together")
        steer = {
            "concept": args.steer_concept,
            "layer": args.steer_layer,
            "strengths": args.steer_strength,
            "max_new_tokens": args.steer_tokens,
        }
    if args.device == "cuda" and args.engine == "local":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    res = run(
        args.models or None,
        args.prompts,
        out=args.out,
        k=args.k,
        tokens=args.tokens,
        layers=args.layers,
        dtype=args.dtype,
        device=args.device,
        method=args.method,
        top=args.top,
        nonlinear=args.nonlinear,
        seed=args.seed,
        max_tokens=args.max_tokens,
        arrays=args.arrays,
        jacobian=args.jacobian,
        steer=steer,
        engine=args.engine,
        workers=args.workers,
        threads=args.threads,
        address=args.address,
        identity=args.identity,
        retry_errors=args.retry_errors,
        report=not args.no_report,
        progress=not args.no_progress,
    )
    print(
        f"{res.computed} rows computed ({res.errors} with errors), {res.skipped} already done; "
        f"{res.rows} rows in {res.results}"
    )
    if res.errors:
        import pyarrow.compute as pc

        table = res.table()
        bad = table.filter(pc.invert(pc.is_null(table["error"]))).slice(0, 3).to_pylist()
        for row in bad:
            print(f"  error: {row['model']} prompt {row['id']}: {row['error']}")
    if res.cross_model is not None:
        print(f"cross-model table: {res.cross_model}")
    if res.report is not None:
        print(f"report: {res.report}")
    return 0
