"""Benchmark: `pylin batch` throughput on Gemma 3 270M — the local engine against Ray with 2 workers.

    python bench/batch.py [--prompts 8] [--tokens-per-prompt 16] [--tag NAME]
    python bench/batch.py --smoke        # 2 prompts of 8 tokens, k = 2, no layer table; no results file

Prompts of exactly 16 tokens (BOS included) are analysed with the settings of a corpus question about
the prediction (k = 8 of the last token's block, the layer table on 6 layers, no nonlinear Jacobian:
216 batched JVP/VJP passes a row on Gemma 3 270M), three ways in this process on this machine:
  local-2t  the local engine, one process, 2 kernel threads (the baseline: all cores),
  local-1t  the local engine with 1 thread (what each Ray worker runs: the same numbers bit for bit),
  ray-2x1t  Ray Data, 2 actors × 1 thread on a local cluster (`ray.init(num_cpus=2)`).
The local runs come before and after the Ray run and are averaged, so load from other processes on a
shared machine hits both sides alike.  Per configuration: prompts/hour over the whole run (Ray: actor
start-up included, the cluster's own start-up reported apart), the steady rate workers × 3600 / median
seconds per row, Ray's overhead as wall time / (Σ row seconds / workers) and as its throughput against
2 × local-1t (the like-with-like ideal), and the peak resident memory per worker (it counts the
memory-mapped GGUF pages, which the workers of one machine share).
Writes bench/results/batch-<date>-<commit>[-<tag>].json (with --smoke only if --json).  Imports the
installed pylin (bench/ is on sys.path, never the repository root).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from common import add_output_args, print_table, write_results, writes_results

WORDS = (
    "the bridge out of marin is the golden gate and the city across the bay is san francisco where fog "
    "rolls in every summer evening over the hills while ferries cross to oakland"
).split()


def prompts_of(model: Any, n_prompts: int, n_tokens: int) -> list[str]:
    """n_prompts distinct texts of exactly n_tokens tokens (BOS included), cut from a rotating word list."""
    out: list[str] = []
    start = 0
    while len(out) < n_prompts:
        words, n = [], 0
        while n < n_tokens:
            words.append(WORDS[(start + len(words)) % len(WORDS)])
            n = len(model.token_ids(" ".join(words)))
        text = " ".join(words)
        if n == n_tokens and text not in out:
            out.append(text)
        start += 1
    return out


def measure(
    name: str, prompts: list[str], settings: dict[str, Any], n_workers: int, **kw: Any
) -> dict[str, Any]:
    import pylin.batch

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = pylin.batch.run(None, prompts, out=out, report=False, progress=False, **settings, **kw)
        wall = time.perf_counter() - t0
        rows = res.table().to_pylist()
    errors = [r["error"] for r in rows if r["error"]]
    if errors:
        raise RuntimeError(f"{name}: {errors[0]}")
    seconds = [r["elapsed_s"] for r in rows]
    per_worker: dict[str, int] = {}
    for r in rows:
        per_worker[r["worker"]] = max(per_worker.get(r["worker"], 0), r["peak_rss_bytes"])
    return {
        "config": name,
        "workers": n_workers,
        "threads": rows[0]["threads"],
        "prompts": len(rows),
        "wall_s": round(wall, 3),
        "median_row_s": round(statistics.median(seconds), 4),
        "prompts_per_hour": round(len(rows) / wall * 3600, 1),
        "steady_prompts_per_hour": round(n_workers * 3600 / statistics.median(seconds), 1),
        "overhead": round(wall / (sum(seconds) / n_workers), 3),
        "peak_rss_mib_per_worker": round(max(per_worker.values()) / 2**20, 1),
        "worker_processes": len(per_worker),
    }


def mean_rows(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The before/after runs of one local configuration, averaged (rates by total prompts over total time)."""
    row = dict(a)
    row["wall_s"] = round((a["wall_s"] + b["wall_s"]) / 2, 3)
    row["median_row_s"] = round((a["median_row_s"] + b["median_row_s"]) / 2, 4)
    row["prompts_per_hour"] = round((a["prompts"] + b["prompts"]) / (a["wall_s"] + b["wall_s"]) * 3600, 1)
    row["steady_prompts_per_hour"] = round(a["workers"] * 3600 / row["median_row_s"], 1)
    row["overhead"] = round((a["overhead"] + b["overhead"]) / 2, 3)
    row["peak_rss_mib_per_worker"] = max(a["peak_rss_mib_per_worker"], b["peak_rss_mib_per_worker"])
    row["runs"] = [a, b]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens-per-prompt", type=int, default=16)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--layers", default="auto")
    add_output_args(p)
    args = p.parse_args()
    if args.smoke:
        args.prompts, args.tokens_per_prompt, args.k, args.layers = 2, 8, 2, "none"

    import ray

    import pylin
    from pylin.batch.ray_engine import init_ray

    model = pylin.load(pylin.default_model_path())
    prompts = prompts_of(model, args.prompts, args.tokens_per_prompt)
    del model
    settings = {"k": args.k, "tokens": "-1", "layers": args.layers, "nonlinear": "off"}
    before = [
        measure("local-2t", prompts, settings, 1, threads=2),
        measure("local-1t", prompts, settings, 1, threads=1),
    ]
    t0 = time.perf_counter()
    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - t0
    remote = measure("ray-2x1t", prompts, settings, 2, engine="ray", workers=2, threads=1)
    ray.shutdown()
    after = (
        before
        if args.smoke
        else [  # --smoke: the same code path, once
            measure("local-2t", prompts, settings, 1, threads=2),
            measure("local-1t", prompts, settings, 1, threads=1),
        ]
    )
    rows = [mean_rows(before[0], after[0]), mean_rows(before[1], after[1]), remote]
    base = rows[0]["prompts_per_hour"]
    for r in rows:
        r["throughput_vs_local_2t"] = round(r["prompts_per_hour"] / base, 3)
    # like with like: each Ray worker runs what local-1t runs, so the ideal is workers × local-1t
    remote["scaling_vs_workers_x_local_1t"] = round(
        remote["prompts_per_hour"] / (2 * rows[1]["prompts_per_hour"]), 3
    )
    remote["cluster_start_s"] = round(cluster_start, 2)
    print(
        f"Gemma 3 270M, {len(prompts)} prompts of {args.tokens_per_prompt} tokens, settings {settings}; "
        f"Ray cluster start {cluster_start:.1f} s (not in the Ray row)"
    )
    print_table(
        rows,
        [
            ("config", "config", ""),
            ("workers", "workers", "d"),
            ("threads", "threads", "d"),
            ("wall_s", "wall s", ".1f"),
            ("median_row_s", "s/row", ".2f"),
            ("prompts_per_hour", "prompts/h", ".0f"),
            ("steady_prompts_per_hour", "steady/h", ".0f"),
            ("overhead", "wall/ideal", ".2f"),
            ("throughput_vs_local_2t", "vs local-2t", ".2f"),
            ("peak_rss_mib_per_worker", "MiB/worker", ".0f"),
        ],
    )
    if not writes_results(args):
        return
    extra = {
        "model": "gemma-3-270m Q4_K_M",
        "settings": settings,
        "tokens_per_prompt": args.tokens_per_prompt,
        "pylin_version": pylin.__version__,
        "ray_version": ray.__version__,
    }
    path = write_results("batch", rows, threads=2, extra=extra, tag=args.tag)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
