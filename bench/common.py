"""Shared benchmark helpers: timing (warm-up + median of N), peak RSS, the `--smoke` / `--json` flags
every script takes, and a JSON writer that records the commit, the machine, the thread count and the
load on the machine while the benchmark ran.

    from common import add_output_args, time_call, write_results    # bench/ is the script's directory
    ms = time_call(lambda: f(x), repeats=7)             # median milliseconds
    if writes_results(args):
        path = write_results("matmul", rows, threads, extra={...}, tag=args.tag)

Results files are named <benchmark>-<date>-<commit>[-<tag>].json (the tag says what subset ran, e.g.
"small-m"), so runs of two commits sit side by side: `python bench/compare.py OLD.json NEW.json`.
The scripts import the *installed* pylin: bench/ (their own folder) is on sys.path, never the
repository root, whose source `pylin/` has no built native module.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def time_call(fn: Callable[[], Any], repeats: int = 7, warmup: int = 1, min_seconds: float = 0.0) -> float:
    """Median wall time of fn() in milliseconds, after `warmup` untimed calls.  With min_seconds > 0,
    keeps repeating until that much time has been spent (short kernels get more samples)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or (time.perf_counter() - start) < min_seconds:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 1000:
            break
    return statistics.median(samples) * 1e3


def time_interleaved(
    fns: Sequence[Callable[[], Any]],
    repeats: int = 7,
    warmup: int = 1,
    settle_s: float = 0.0,
    evict: Callable[[], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Median milliseconds of each function, timed in alternation (a, b, a, b, ...) so that load from
    other processes on a shared machine hits every contender alike.  settle_s: before each timed call,
    the function runs untimed (at least once) until that long has passed, so each contender is timed in
    its own steady state: not sharing cores with the previous contender's idle threads (torch's OpenMP
    workers spin ~10 ms after each parallel region), and not paying to wake sleeping cores either (a
    plain sleep instead costs ~1 ms per call on the dev VM, which buries millisecond kernels).
    evict: called right before each timed call (e.g. to push the contender's data out of the caches).
    clock: what a timed call is measured with; time.thread_time counts only the CPU time of the calling
    thread (single-threaded contenders on a machine oversubscribed by other jobs)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            while settle_s > 0 and time.perf_counter() - start < settle_s:
                fn()
            if evict is not None:
                evict()
            t0 = clock()
            fn()
            samples[i].append(clock() - t0)
    return [statistics.median(s) * 1e3 for s in samples]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit_hash() -> str:
    """The checkout's short hash (+dirty); PYLIN_COMMIT when set (a copy of the tree without .git, as
    the GPU machine gets); "unknown" when neither says."""
    if os.environ.get("PYLIN_COMMIT"):
        return os.environ["PYLIN_COMMIT"]
    try:
        root = Path(__file__).resolve().parent.parent

        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

        dirty = git("status", "--porcelain", "--untracked-files=no")
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except OSError:
        return "unknown"


def machine_info(threads: int) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "loadavg_1_5_15": [round(v, 2) for v in load],
    }


def add_output_args(parser: Any) -> None:
    """The flags every bench script shares: --smoke (tiny sizes, seconds, the same code path, no results
    file unless --json), --json / --no-json, --tag (suffix of the results file name)."""
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes that run in seconds; writes no results unless --json"
    )
    parser.add_argument("--json", action="store_true", help="write the results file (also with --smoke)")
    parser.add_argument("--no-json", action="store_true", help="print only, write no results file")
    parser.add_argument("--tag", default="", help="what this run covers, appended to the file name")


def writes_results(args: Any) -> bool:
    """Whether a run with these flags writes its JSON: by default yes, with --smoke only if --json."""
    return not args.no_json and (args.json or not args.smoke)


def write_results(
    name: str,
    rows: list[dict[str, Any]],
    threads: int,
    extra: dict[str, Any] | None = None,
    tag: str = "",
    directory: Path | None = None,
) -> Path:
    """Write {meta, rows} to <directory or bench/results>/<name>-<date>-<commit>[-<tag>].json; return
    the path."""
    directory = RESULTS_DIR if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now()
    commit = commit_hash()
    meta = {"benchmark": name, "date": now.isoformat(timespec="seconds"), "commit": commit}
    meta.update(machine_info(threads))
    meta["peak_rss_mb"] = round(peak_rss_mb(), 1)
    meta.update(extra or {})
    stem = f"{name}-{now:%Y-%m-%d}-{commit.replace('+', '-')}{'-' + tag if tag else ''}"
    path = directory / f"{stem}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """columns: (key, header, format) triples; prints an aligned plain-text table."""

    def cell(value: Any, spec: str) -> str:
        return format(value, spec) if isinstance(value, (int, float)) else str(value)

    cells = [[cell(r[k], f) for k, _, f in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))
