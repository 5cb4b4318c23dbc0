"""Structured GGUF fuzz at scale: how pylin answers N one-thing-changed files, judged by a strict
validator written from llama.cpp's rules (tests/gguf_validator.py, tests/gguf_mutations.py).

    python bench/fuzz_gguf.py --n 10000       # ~10 minutes on 2 cores; writes bench/results/fuzz_gguf-*.json
    python bench/fuzz_gguf.py --smoke         # 100 cases, seconds; no results file unless --json

Cases run in child processes, CHUNK at a time, so a native crash (a signal) or a hang (no answer for
HANG_SECONDS) is seen and counted against the case that caused it; the child is then restarted.
Outcomes: valid accepted / clean error / invalid accepted / valid refused / raw exception / blow-up
(> 10 s or > 1 GiB traced) / crash / hang — the goal is zero outside the first two.
Case i of seed S is always the same file (rng seeded with [S, i]), so any one is reproducible.
"""

from __future__ import annotations

import argparse
import json
import selectors
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import add_output_args, print_table, write_results, writes_results

TESTS = Path(__file__).resolve().parent.parent / "tests"
CHUNK = 500
HANG_SECONDS = 60.0  # one case; a child's start-up (imports, the warm-up load) gets STARTUP_SECONDS
STARTUP_SECONDS = 900.0
SEED = 20261202


def worker(seed: int, start: int, count: int, folder: Path) -> None:
    """Child: judge cases start..start+count-1, one JSON line each ("begin" first, so a crash is placed)."""
    sys.path.insert(0, str(TESTS))
    import numpy as np
    from gguf_mutations import judge, mutate
    from gguf_validator import from_bytes
    from test_gguf_errors import write_small_gguf

    small = write_small_gguf(folder / "small.gguf").read_bytes()
    g = from_bytes(small)
    judge(folder / "warm.gguf", small)
    for i in range(start, start + count):
        print(json.dumps({"begin": i}), flush=True)
        kind, data = mutate(g, np.random.default_rng([seed, i]))
        outcome, detail = judge(folder / "case.gguf", data)
        print(json.dumps({"case": i, "kind": kind, "outcome": outcome, "detail": detail}), flush=True)


def run_chunk(seed: int, start: int, count: int, folder: Path) -> list[dict]:
    """Judge a chunk in a child; returns one record per case, crash / hang included."""
    cmd = [sys.executable, __file__, "--worker", str(seed), str(start), str(count), str(folder)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    records, current = [], None
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ)
    started = False
    while True:
        if not sel.select(timeout=HANG_SECONDS if started else STARTUP_SECONDS):
            child.kill()
            child.wait()
            if current is None:  # between cases or before the first: the harness, not a case
                raise RuntimeError(f"fuzz worker for cases {start}.. stalled outside a case")
            records.append({"case": current, "kind": "?", "outcome": "hang", "detail": f"> {HANG_SECONDS} s"})
            break
        line = child.stdout.readline()
        if not line:
            code = child.wait()
            if current is not None and code != 0:
                records.append({"case": current, "kind": "?", "outcome": "crash", "detail": f"exit {code}"})
            break
        msg = json.loads(line)
        started = True
        if "begin" in msg:
            current = msg["begin"]
        else:
            records.append(msg)
            current = None
    done = {r["case"] for r in records}
    rest = [i for i in range(start, start + count) if i not in done]
    return records + (run_chunk(seed, rest[0], start + count - rest[0], folder) if rest else [])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="cases (default 10000)")
    p.add_argument("--seed", type=int, default=SEED)
    add_output_args(p)
    args = p.parse_args()
    n = 100 if args.smoke else args.n
    start_time = time.perf_counter()
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, n, CHUNK):
            records += run_chunk(args.seed, start, min(CHUNK, n - start), Path(tmp))
    elapsed = time.perf_counter() - start_time
    return report(records, n, elapsed, args)


def report(records: list[dict], n: int, elapsed: float, args: argparse.Namespace) -> int:
    sys.path.insert(0, str(TESTS))
    from gguf_mutations import OUTCOMES

    by_kind: dict[str, Counter[str]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], Counter())[r["outcome"]] += 1
    total = Counter(r["outcome"] for r in records)
    rows = [{"mutation": k, **{o: c[o] for o in OUTCOMES}} for k, c in sorted(by_kind.items())]
    rows.append({"mutation": "all", **{o: total[o] for o in OUTCOMES}})
    print(f"{n} cases in {elapsed:.0f} s")
    print_table(rows, [("mutation", "mutation", "")] + [(o, o, "d") for o in OUTCOMES])
    problems = [r for r in records if r["outcome"] not in ("clean error", "valid accepted")]
    for r in problems[:20]:
        print(f"  case {r['case']} ({r['kind']}): {r['outcome']}: {r['detail'][:200]}")
    nonfinite = sum(1 for r in records if r["outcome"] == "valid accepted" and r["detail"])
    if writes_results(args):
        path = write_results(
            "fuzz_gguf", rows, threads=1, tag=args.tag,
            extra={"cases": n, "seed": args.seed, "seconds": round(elapsed, 1), "problems": problems[:200],
                   "valid_nonfinite_logits": nonfinite},
        )  # fmt: skip
        print(f"wrote {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
