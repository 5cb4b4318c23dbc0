"""Two benchmark results side by side: the same rows of two JSON files, their metrics and the ratio.

    python bench/compare.py bench/results/matmul-2026-11-25-0bb2272-small-m.json NEW.json
    python bench/compare.py OLD.json NEW.json --metric pylin_ms          # one metric only

Rows are matched on their parameters (text fields such as shape, format, case, and the integer fields
named like parameters: M, tokens, k, ...; or --key); metrics are the float fields both files have
(or --metric).  `new/old` below 1 means
the new run takes less of that quantity (for times and memory: better).  Rows only one file has are
listed at the end.  Writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, add_output_args, print_table

DEFAULT_METRICS = ("pylin_ms", "torch_ms", "ratio", "forward_ms", "tokens_per_s", "seconds", "peak_rss_mb")
# Integer fields that are a row's settings (other integers, e.g. pass counts, are measurements).
PARAMETER_INTS = {
    "M",
    "m",
    "n",
    "k",
    "tokens",
    "n_tokens",
    "new_tokens",
    "threads",
    "workers",
    "prompts",
    "batch",
}


def load_rows(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        data = json.loads(path.read_text())
        return data.get("meta", {}), list(data["rows"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"compare.py: error: cannot read results file {path}: {e}") from None


def row_key(row: dict[str, Any], keys: list[str] | None = None) -> tuple[tuple[str, Any], ...]:
    """A row's parameters: `keys`, else its text / bool fields and the PARAMETER_INTS."""
    if keys:
        return tuple((k, row.get(k)) for k in keys)

    def is_parameter(k: str, v: Any) -> bool:
        return isinstance(v, (str, bool)) or v is None or (isinstance(v, int) and k in PARAMETER_INTS)

    return tuple(sorted((k, v) for k, v in row.items() if is_parameter(k, v)))


def metrics_of(rows: list[dict[str, Any]]) -> set[str]:
    return {k for r in rows for k, v in r.items() if isinstance(v, float)}


def compare(
    old: list[dict[str, Any]], new: list[dict[str, Any]], metrics: list[str], keys: list[str] | None = None
) -> list[dict[str, Any]]:
    """One output row per (matched row, metric): the parameters, old, new and new/old."""
    by_key = {row_key(r, keys): r for r in old}
    out = []
    for r in new:
        before = by_key.get(row_key(r, keys))
        if before is None:
            continue
        label = ", ".join(f"{k}={v}" for k, v in row_key(r, keys))
        for m in metrics:
            a, b = before.get(m), r.get(m)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                out.append(
                    {"row": label, "metric": m, "old": a, "new": b, "new/old": b / a if a else float("nan")}
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", type=Path, nargs="?", help="with --smoke: default the newest results file")
    parser.add_argument("new", type=Path, nargs="?", help="default: the same file")
    parser.add_argument("--metric", action="append", help="metric field(s) to compare (default: common ones)")
    parser.add_argument("--key", help="comma-separated fields that identify a row (default: its parameters)")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.old is None:
        if not args.smoke:
            parser.error("name the results file(s) to compare")
        args.old = max(RESULTS_DIR.glob("*.json"), key=lambda p: p.stat().st_mtime)
    old_meta, old = load_rows(args.old)
    new_meta, new = load_rows(args.new or args.old)
    shared = metrics_of(old) & metrics_of(new)
    metrics = args.metric or [m for m in DEFAULT_METRICS if m in shared] or sorted(shared)
    print(
        f"old: {args.old} (commit {old_meta.get('commit', '?')}, load {old_meta.get('loadavg_1_5_15', '?')})"
    )
    new_path = args.new or args.old
    print(
        f"new: {new_path} (commit {new_meta.get('commit', '?')}, load {new_meta.get('loadavg_1_5_15', '?')})"
    )
    keys = args.key.split(",") if args.key else None
    rows = compare(old, new, metrics, keys)
    if rows:
        print_table(rows, [("row", "row", ""), ("metric", "metric", ""), ("old", "old", ".4g"),
                           ("new", "new", ".4g"), ("new/old", "new/old", ".3f")])  # fmt: skip
    unmatched = {row_key(r, keys) for r in new} ^ {row_key(r, keys) for r in old}
    if unmatched:
        print(f"{len(unmatched)} rows are in only one of the files")
    return 0 if rows or not (old and new) else 1


if __name__ == "__main__":
    sys.exit(main())
