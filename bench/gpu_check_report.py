"""The report of bench/gpu_check.sh: what came back from the GPU machine, in the files $OUT may hold.

    python bench/gpu_check_report.py summarize --work DIR --out DIR [--part main|70b] [--rehearse]
    python bench/gpu_check_report.py verify --out DIR
    python bench/gpu_check_report.py --smoke     # both on a made-up run in a temporary folder

summarize reads the run's working folder (steps.tsv from the script's step runner, the pytest JUnit
XML, the sanitizer log, bench/gpu.py's result files) and writes into --out:
  summary.txt               steps with status and seconds, test and sanitizer counts, the headline
                            numbers against issue 15's goals, and a README GPU row to paste
  gpu-check.json            the same, machine-readable
  gpu-<date>-<commit>-<card>.json   bench/gpu.py's rows merged (kernels, 8B end to end), in
                            bench/results' format and naming: copy it there as it is (the 70B
                            command: ...-<card>-70b.json)
verify checks what the device tool hands back: at most 8 files, 16 MiB each, 64 MiB together, no more
than 2 folders deep, names of letters, digits, '.', '_' and '-' (the device README's limits).
Standard library only, so it runs even when the build failed.  Exercised by `gpu_check.sh --rehearse`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES, MAX_DEPTH = 8, 16 << 20, 64 << 20, 2
NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def read_steps(work: Path) -> list[dict[str, Any]]:
    """steps.tsv: name, status, exit code, seconds, budget, note (one line per step)."""
    steps = []
    path = work / "logs" / "steps.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, rc, seconds, budget, note = (line.split("\t") + [""] * 6)[:6]
        steps.append({"step": name, "status": status, "rc": int(rc or 0), "seconds": int(seconds or 0),
                      "budget": int(budget or 0), "note": note})  # fmt: skip
    return steps


def read_junit(path: Path) -> dict[str, Any]:
    """Counts and the names of failed tests from pytest's --junitxml."""
    if not path.exists():
        return {"ran": False}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"ran": True, **counts, "failed": failed[:50]}


def read_sanitizer(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"ran": False}
    text = path.read_text(errors="replace")
    found = re.findall(r"ERROR SUMMARY: (\d+) error", text)
    kinds = sorted(set(re.findall(r"=========\s+(Invalid [^\n]*?|Program hit [^\n]*?)(?: at |\n)", text)))[
        :20
    ]
    return {"ran": bool(found), "errors": int(found[-1]) if found else None, "kinds": kinds}


def merge_results(results: Path) -> dict[str, Any] | None:
    """bench/gpu.py's files (kernels, end to end) as one {meta, rows}; None when there are none."""
    files = sorted(results.glob("gpu-*.json")) if results.exists() else []
    if not files:
        return None
    parts = [json.loads(f.read_text()) for f in files]
    meta = dict(parts[0]["meta"])
    meta["sources"] = [f.name for f in files]
    return {"meta": meta, "rows": [row for p in parts for row in p["rows"]]}


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers issue 15's goals name, from the merged rows."""
    kernels = [r for r in rows if "op" in r]
    out: dict[str, Any] = {
        "kernel_cases": len(kernels),
        "kernel_failures": sum(r["check"] != "ok" for r in kernels),
    }
    if kernels:
        out["max_err_pylin"] = max(r["err_pylin"] for r in kernels)
        small = [r for r in kernels if r["M"] <= 8]
        large = [r for r in kernels if r["M"] >= 512]
        m1 = [r for r in kernels if r["M"] == 1 and r["qtype"] == "Q4_K"]
        if small:
            out["min_vs_bf16_m_le_8"] = min(r["vs_bf16"] for r in small)
        if large:
            out["min_vs_f32_m_ge_512"] = min(r["vs_f32"] for r in large)
        if m1:
            out["q4_k_m1_bw_fraction"] = [
                min(r["bw_fraction"] for r in m1),
                max(r["bw_fraction"] for r in m1),
            ]
    for r in rows:
        if "stage" in r and "seconds" in r:
            out[f"{r['model']} {r['stage']}"] = round(r["seconds"], 3)
        if r.get("stage") == "reconstruction" and "rel_error" in r:
            out[f"{r['model']} reconstruction rel_error"] = r["rel_error"]
    return out


def readme_row(
    meta: dict[str, Any], head: dict[str, Any], tests: dict[str, Any], sanitizer: dict[str, Any]
) -> str:
    parts = [f"{meta.get('gpu')} (driver {meta.get('driver')}, CUDA {meta.get('cuda_runtime')})"]
    if tests.get("ran"):
        parts.append(f"CUDA tests {tests['passed']} passed, {tests['failures'] + tests['errors']} failed")
    if sanitizer.get("ran"):
        parts.append(f"memcheck {sanitizer['errors']} errors")
    if "max_err_pylin" in head:
        parts.append(f"kernels within {head['max_err_pylin']:.1e} of float64")
    if "min_vs_bf16_m_le_8" in head:
        parts.append(f"M ≤ 8 ≥ {head['min_vs_bf16_m_le_8']:.2f}× torch bf16")
    if "min_vs_f32_m_ge_512" in head:
        parts.append(f"M ≥ 512 ≥ {head['min_vs_f32_m_ge_512']:.2f}× cuBLAS f32")
    for key, label in (("svd top-8 (last token)", "top-8 SVD"), ("jacobian (last token)", "J_n")):
        for name, value in head.items():
            if name.endswith(key):
                parts.append(f"{name.split()[0]} {label} {value:.2f} s")
    return "| GPU | " + "; ".join(parts) + " |"


def summarize(args: argparse.Namespace) -> int:
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = read_steps(work)
    tests = read_junit(work / "logs" / "tests.xml")
    sanitizer = read_sanitizer(work / "logs" / "sanitizer.log")
    merged = merge_results(work / "results")
    date = dt.date.today().isoformat()
    card = "rehearsal" if args.rehearse else "nogpu"
    if merged is not None:
        card = re.sub(
            r"[^a-z0-9]+", "-", str(merged["meta"].get("gpu", "gpu")).lower().replace("nvidia", "")
        ).strip("-")
    suffix = "" if args.part == "main" else f"-{args.part}"
    commit = str(merged["meta"].get("commit", "unknown")).replace("+", "-") if merged else "unknown"
    head = headline(merged["rows"]) if merged else {}
    check = {"part": args.part, "rehearse": args.rehearse, "date": date, "steps": steps, "tests": tests,
             "sanitizer": sanitizer, "headline": head}  # fmt: skip
    if merged is not None:
        merged["meta"]["check"] = {k: check[k] for k in ("part", "steps", "tests", "sanitizer")}
        (out / f"gpu-{date}-{commit}-{card}{suffix}.json").write_text(json.dumps(merged, indent=1) + "\n")
    (out / "gpu-check.json").write_text(json.dumps(check, indent=1) + "\n")
    lines = [f"gpu_check {args.part}{' (rehearsal)' if args.rehearse else ''} {date}", ""]
    lines += [
        f"  {s['step']:12s} {s['status']:8s} {s['seconds']:4d} s / {s['budget']:4d} s  {s['note']}"
        for s in steps
    ]
    if tests.get("ran"):
        counts = f"{tests['failures']} failed, {tests['errors']} errors, {tests['skipped']} skipped"
        lines.append(f"tests: {tests['passed']} passed, {counts}")
        lines += [f"  FAILED {name}" for name in tests["failed"]]
    lines.append(f"sanitizer: {sanitizer}")
    lines += [f"{k}: {v}" for k, v in head.items()]
    if merged is not None:
        lines += ["", "README row:", readme_row(merged["meta"], head, tests, sanitizer)]
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    print(text, end="")
    return 0


def verify(args: argparse.Namespace) -> int:
    """Check $OUT against the device tool's limits on what comes back; print what would be lost."""
    out = Path(args.out)
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = []
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files (at most {MAX_FILES} come back)")
    total = sum(p.stat().st_size for p in files)
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total} bytes in all (at most {MAX_TOTAL_BYTES})")
    for p in files:
        rel = p.relative_to(out)
        if p.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {p.stat().st_size} bytes (at most {MAX_FILE_BYTES})")
        if len(rel.parts) - 1 > MAX_DEPTH:
            problems.append(f"{rel}: more than {MAX_DEPTH} folders down")
        if not all(NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, '.', '_', '-'")
    for name in args.expect:
        if not any(p.match(name) for p in files):
            problems.append(f"missing {name}")
    for p in sorted(files):
        print(f"  {p.relative_to(out)}  {p.stat().st_size} bytes")
    for problem in problems:
        print(f"verify: {problem}")
    print(f"verify: {len(files)} files, {total} bytes: {'OK' if not problems else 'PROBLEMS'}")
    return 1 if problems else 0


def smoke() -> int:
    """summarize and verify on a made-up run (two steps, no tests, no results) in a temporary folder."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work, out = Path(tmp) / "work", Path(tmp) / "out"
        (work / "logs").mkdir(parents=True)
        (work / "logs" / "steps.tsv").write_text("env\tok\t0\t1\t30\tnote\nbuild\tskipped\t0\t0\t0\tsmoke\n")
        out.mkdir()
        (out / "logs.tar.gz").write_bytes(b"")
        if summarize(argparse.Namespace(work=work, out=out, part="main", rehearse=True)) != 0:
            return 1
        return verify(argparse.Namespace(out=out, expect=["summary.txt", "gpu-check.json", "logs.tar.gz"]))


def main() -> int:
    if sys.argv[1:] == ["--smoke"]:  # bench/ scripts' shared flag (.ci/run runs every one with it)
        return smoke()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize")
    s.add_argument("--work", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--part", default="main")
    s.add_argument("--rehearse", action="store_true")
    v = sub.add_parser("verify")
    v.add_argument("--out", required=True)
    v.add_argument("--expect", nargs="*", default=["summary.txt", "gpu-check.json", "logs.tar.gz"])
    args = parser.parse_args()
    return summarize(args) if args.command == "summarize" else verify(args)


if __name__ == "__main__":
    sys.exit(main())
