"""Detached Jacobians on the real Gemma 3 270M: pylin vs the pure-PyTorch seed method.

Question: how fast and how lean is pylin's Jacobian (whole, and the last token's block alone)
compared with the seed's route — torch.autograd.functional.jacobian(vectorize=True) over the
detached model on float32 dequantized weights (pylin.reference) — and how close to the FLOP floor
2 · d_out · n · P (P = parameters of the linear map: Wv, Wo, Wu, Wd) at the float32 GEMM rate
measured in the same run?  Also: a synthetic Llama-3-8B Q4_0 (8 tokens): linearize + one JVP and
one VJP batch of 16 within 8 GiB peak RSS; and a synthetic Llama-3-8B in llama.cpp's IQ4_XS mix
(8 tokens): linearize + the top-8 SVD of the last token's block within 8 GiB.

Every case runs in its own subprocess so that peak RSS is that case's alone.  Peak RSS is reported
whole (torch, the tokenizer and the mapped file included: ~0.5 GiB common to every case) and as the
part above what the process held once the model was loaded (`extra_rss_gib`).

    python bench/jacobian.py                 # 8, 32, 128 tokens
    python bench/jacobian.py --tokens 8 32   # a subset
    python bench/jacobian.py --llama8b PATH  # also the synthetic 8B file (bench/make_synthetic_gguf.py)
    python bench/jacobian.py --tokens --llama8b-svd PATH   # only the 8B (e.g. IQ4_XS_MIX) SVD case
    python bench/jacobian.py --smoke         # 4 tokens, every case, seconds; no results file
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import add_output_args, write_results, writes_results

HERE = Path(__file__).resolve().parent
WORDS = (
    "The bridge out of Marin is the most photographed structure in the city and it glows at "
    "sunset when the fog rolls in from the ocean over the headlands "
).split()


def prompt_ids(model, n_tokens: int) -> list[int]:
    if model.tokenizer is None:  # synthetic GGUFs carry no vocabulary: fixed pseudo-random ids
        return [(7919 * i + 11) % model.config.vocab_size for i in range(n_tokens)]
    ids = model.tokenize(" ".join(WORDS * 20))
    return ids[:n_tokens]


def _status_gib(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in GiB; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def current_rss_gib() -> float:
    rss = _status_gib("VmRSS")
    return float("nan") if rss is None else rss


def peak_rss_gib() -> float:
    """Peak resident set since the last reset_peak_rss() (VmHWM), else since the process started."""
    peak = _status_gib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 if peak is None else peak


def reset_peak_rss() -> None:
    """Start peak-RSS accounting afresh (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def linear_map_params(model) -> int:
    total = 0
    for layer in model.weights.layers:
        for w in (layer.v, layer.o, layer.up, layer.down):
            total += w.shape[0] * w.shape[1]
    return total


def gemm_rate(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.matmul(a, b)
    t0 = time.perf_counter()
    for _ in range(5):
        torch.matmul(a, b)
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0)


def case(kind: str, model_path: str, n_tokens: int, threads: int) -> dict:
    import torch

    import pylin
    from pylin import reference

    torch.set_num_threads(threads)
    model = pylin.load(model_path)
    ids = prompt_ids(model, n_tokens)
    result: dict = {"case": kind, "tokens": len(ids), "load_peak_rss_gib": peak_rss_gib()}
    import gc

    gc.collect()
    reset_peak_rss()  # from here on, the peak is the case's own (the memory map's touched pages included)
    # What every case holds before it starts: torch, the tokenizer, the model's metadata.
    result["base_rss_gib"] = current_rss_gib()
    t0 = time.perf_counter()
    if kind == "pylin_full":
        lin = model.linearize(ids)
        J = lin.jacobian(progress=False)
        result["seconds"] = time.perf_counter() - t0
        result["rel_error"] = lin.reconstruction(method="jacobian").rel_error
    elif kind == "pylin_last":
        lin = model.linearize(ids)
        lin.jacobian(tokens=[len(ids) - 1], progress=False)
        result["seconds"] = time.perf_counter() - t0
        result["rel_error"] = lin.reconstruction(method="jvp").rel_error
    elif kind == "seed_full":
        J, y, x = reference.seed_jacobian(model, ids)
        result["seconds"] = time.perf_counter() - t0
        y_hat = torch.einsum("onj,nj->o", J, x)
        result["rel_error"] = float((y_hat - y).norm() / y.norm())
    elif kind == "llama8b":
        lin = model.linearize(ids)
        result["linearize_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        lin.jvp(torch.randn(16, len(ids), lin.d_in))
        result["jvp16_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        lin.vjp(torch.randn(16, lin.d_out))
        result["vjp16_s"] = time.perf_counter() - t1
        result["seconds"] = time.perf_counter() - t0
        result["rel_error"] = lin.reconstruction().rel_error
    elif kind == "llama8b_svd":
        lin = model.linearize(ids)
        result["linearize_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        svd = lin.svd(k=8, token=-1)
        result["svd8_s"] = time.perf_counter() - t1
        result["sigma"] = svd.S.flatten().tolist()
        result["seconds"] = time.perf_counter() - t0
        result["rel_error"] = lin.reconstruction().rel_error
        result["formats"] = sorted({w.qtype for w in (model.weights.layers[0].q, model.weights.layers[0].v,
                                                      model.weights.layers[0].down)})  # fmt: skip
    result["peak_rss_gib"] = peak_rss_gib()
    result["extra_rss_gib"] = result["peak_rss_gib"] - result["base_rss_gib"]
    if not kind.startswith("llama8b"):
        result["flop_floor"] = 2 * model.d_model * len(ids) * linear_map_params(model)
    return result


def run_case(kind: str, model_path: str, n_tokens: int, threads: int, timeout: float) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        kind,
        "--model",
        model_path,
        "--n",
        str(n_tokens),
        "--threads",
        str(threads),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": kind, "tokens": n_tokens, "error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["killed"]
        return {"case": kind, "tokens": n_tokens, "error": f"exit {proc.returncode}: {tail[0][:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tokens", type=int, nargs="*", default=[8, 32, 128], help="Gemma prompt lengths (none: skip)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--llama8b", help="synthetic Llama-3-8B Q4_0 GGUF (bench/make_synthetic_gguf.py)")
    ap.add_argument("--llama8b-svd", help="synthetic Llama-3-8B (e.g. IQ4_XS_MIX) for linearize + top-8 SVD")
    ap.add_argument("--skip-seed", action="store_true", help="do not run the seed baseline")
    add_output_args(ap)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.case:  # child process: one case, JSON on the last line
        print(json.dumps(case(args.case, args.model, args.n, args.threads)))
        return

    import pylin

    if args.smoke:
        args.tokens = [4]

    model_path = pylin.default_model_path()
    rate = gemm_rate(args.threads)
    rows = []
    for n in args.tokens:
        kinds = ["pylin_full", "pylin_last"] + ([] if args.skip_seed else ["seed_full"])
        for kind in kinds:
            r = run_case(kind, model_path, n, args.threads, args.timeout)
            if "flop_floor" in r:
                r["floor_seconds"] = r["flop_floor"] / rate
                r["x_floor"] = r["seconds"] / r["floor_seconds"]
            rows.append(r)
            print(format_row(r), flush=True)
    for kind, path in (("llama8b", args.llama8b), ("llama8b_svd", args.llama8b_svd)):
        if path:
            r = run_case(kind, path, 8, args.threads, args.timeout)
            rows.append(r)
            print(format_row(r), flush=True)
    summary = summarize(rows)
    for line in summary:
        print(line)
    if any("error" in r for r in rows):
        raise SystemExit("jacobian.py: a case failed (see above)")
    if writes_results(args):
        extra = {"gemm_flops_per_s": rate, "summary": summary}
        path = write_results("jacobian", rows, args.threads, extra=extra, tag=args.tag)
        print(f"wrote {path}")


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['case']:<11} n={r['tokens']:<4} FAILED: {r['error']}"
    extra = f" x_floor={r['x_floor']:.2f}" if "x_floor" in r else ""
    extra += "".join(f" {k}={r[k]:.2f}s" for k in ("linearize_s", "jvp16_s", "vjp16_s", "svd8_s") if k in r)
    if "load_peak_rss_gib" in r:
        extra += f" load_peak={r['load_peak_rss_gib']:.2f}GiB"
    return (
        f"{r['case']:<11} n={r['tokens']:<4} {r['seconds']:9.2f} s  peak RSS {r['peak_rss_gib']:6.2f} GiB "
        f"(+{r.get('extra_rss_gib', float('nan')):.2f} over the loaded model)  "
        f"rel.err {r['rel_error']:.2e}{extra}"
    )


def summarize(rows: list[dict]) -> list[str]:
    by = {(r["case"], r["tokens"]): r for r in rows if "error" not in r}
    lines = []
    for (kind, n), r in sorted(by.items()):
        seed = by.get(("seed_full", n))
        if kind.startswith("pylin") and seed:
            lines.append(
                f"n={n}: {kind} is {seed['seconds'] / r['seconds']:.1f}x faster than the seed's full "
                f"Jacobian, peak RSS {r['peak_rss_gib'] / seed['peak_rss_gib']:.2f}x of the seed's "
                f"(memory above the loaded model: {r['extra_rss_gib'] / seed['extra_rss_gib']:.2f}x)"
            )
    return lines


if __name__ == "__main__":
    main()
