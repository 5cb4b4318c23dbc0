"""Forward-pass time and peak memory: pylin on quantized weights vs transformers on float32 copies.

Question: how fast is one forward pass (all positions through every layer, logits of the last token,
as llama.cpp's prompt processing does) on the stored quantized weights, and what does it cost in
memory, compared with transformers' forward on the same weights dequantized to float32?
Cases (each in its own subprocess, so peak RSS is that case's alone):
  - Gemma 3 270M Q4_K_M (the real file), 8 / 128 / 512 tokens: pylin and transformers.
  - synthetic Llama-3-8B Q4_0 (bench/make_synthetic_gguf.py), 8 / 128 tokens: pylin only; its float32
    weights (32 GB) do not fit this machine's memory, which the JSON records.
Reference point: llama.cpp measured ~710 tokens/s prompt throughput on the same Gemma file, 2 threads.

    python bench/forward.py                       # everything; JSON to bench/results/forward-<date>.json
    python bench/forward.py --skip-8b             # Gemma only
    python bench/forward.py --omp-passive         # children run with OMP_WAIT_POLICY=PASSIVE
    python bench/forward.py --smoke               # Gemma at 8 tokens, one repeat, no 8B; no results file

pylin's kernels run on their own sleeping thread pool and the forward pass runs torch single-threaded
around them (pylin.kernels.kernel_threads), so torch's spinning OpenMP workers no longer compete with
them.  --omp-passive additionally sets OMP_WAIT_POLICY=PASSIVE (it helps transformers' baseline on a
loaded machine); the JSON records which was used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import add_output_args, peak_rss_mb, print_table, time_call, write_results, writes_results

HERE = Path(__file__).resolve().parent

SYNTHETIC_8B = Path("/tmp/pylin-bench/llama-3-8b-q4_0.gguf")
LLAMA_CPP_GEMMA_TOKENS_PER_S = 710.0  # issue 3: llama.cpp, same file, 2 threads, idle machine


def token_ids(vocab: int, n: int, bos: int | None) -> list[int]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, min(vocab, 100_000), n).tolist()
    if bos is not None:
        ids[0] = bos
    return ids


def transformers_gemma(model):
    """transformers' Gemma3ForCausalLM (float32) holding pylin's Gemma weights, dequantized."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    c = model.config
    rope = {"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}  # fmt: skip
    sizes = dict(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, head_dim=c.head_dim
    )
    heads = dict(
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads
    )
    config = Gemma3TextConfig(
        **sizes,
        **heads,
        rms_norm_eps=c.norm_eps,
        sliding_window=512,
        query_pre_attn_scalar=256,
        rope_parameters=rope,
        tie_word_embeddings=True,
    )
    hf = Gemma3ForCausalLM(config).eval()
    w = model.weights
    sd = {
        "model.embed_tokens.weight": w.token_embd.dequantize(),
        "model.norm.weight": w.final_norm.numpy() - 1,
    }
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
             "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm", "attn_norm": "input_layernorm",
             "post_attn_norm": "post_attention_layernorm", "mlp_norm": "pre_feedforward_layernorm",
             "post_mlp_norm": "post_feedforward_layernorm"}  # fmt: skip
    for i, layer in enumerate(w.layers):
        for slot, hf_name in names.items():
            t = getattr(layer, slot)
            value = t.dequantize() if hasattr(t, "dequantize") else t.numpy() - 1  # norms: file holds 1 + w
            sd[f"model.layers.{i}.{hf_name}.weight"] = value
    hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=False)
    return hf


def run_case(case: str, n_tokens: list[int], repeats: int, path: str) -> list[dict]:
    """One process: load once, time each prompt length; returns rows."""
    import torch

    import pylin

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = pylin.load(path)
    load_s = time.perf_counter() - t0
    forward = None
    if case.endswith("transformers"):
        hf = transformers_gemma(model)
        del model.weights
        bos = 2

        def forward(ids):
            with torch.no_grad():
                return hf(torch.tensor([ids]), logits_to_keep=1).logits

        vocab = hf.config.vocab_size
    else:
        bos, vocab = model.config.bos_token_id, model.config.vocab_size

        def forward(ids):
            return model.logits(ids, last_only=True)

    load_s = time.perf_counter() - t0
    rows = []
    for n in n_tokens:
        ids = token_ids(vocab, n, bos)
        ms = time_call(lambda ids=ids: forward(ids), repeats=repeats if n < 512 else max(2, repeats // 2))
        rows.append({"case": case, "tokens": n, "forward_ms": round(ms, 1),
                     "tokens_per_s": round(n / ms * 1e3, 1), "load_s": round(load_s, 2),
                     "peak_rss_mb": round(peak_rss_mb(), 0)})  # fmt: skip
    return rows


def spawn(case: str, n_tokens: list[int], repeats: int, path: str, passive: bool = False) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", case, "--path", path, "--repeats", str(repeats),
           "--tokens", *map(str, n_tokens)]  # fmt: skip
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE") if passive else None
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return [{"case": case, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}]
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-8b", action="store_true")
    parser.add_argument("--llama8b", type=Path, default=SYNTHETIC_8B)
    parser.add_argument(
        "--omp-passive", action="store_true", help="children run with OMP_WAIT_POLICY=PASSIVE"
    )
    add_output_args(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tokens, args.repeats, args.skip_8b = [8], 1, True
    if args.child:
        print(json.dumps(run_case(args.child, args.tokens, args.repeats, args.path)))
        return

    import pylin

    gemma = pylin.default_model_path()
    gemma_tokens = args.tokens or [8, 128, 512]
    passive = args.omp_passive
    rows = spawn("gemma3-270m pylin", gemma_tokens, args.repeats, gemma, passive)
    rows += spawn("gemma3-270m transformers", gemma_tokens, args.repeats, gemma, passive)
    notes = {
        "llama_cpp_gemma_tokens_per_s": LLAMA_CPP_GEMMA_TOKENS_PER_S,
        "omp_wait_policy": "PASSIVE" if passive else os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    if not args.skip_8b:
        if not args.llama8b.exists():
            args.llama8b.parent.mkdir(parents=True, exist_ok=True)
            from make_synthetic_gguf import write

            write("llama-3-8b", "Q4_0", args.llama8b)
        rows += spawn("llama-3-8b-Q4_0 pylin", [n for n in (args.tokens or [8, 128]) if n <= 128], 3,
                      str(args.llama8b), passive)  # fmt: skip
        rows.append({"case": "llama-3-8b-Q4_0 transformers", "skipped": "not run: float32 weights are "
                     "32 GB, more than this machine's memory"})  # fmt: skip
    ok = [r for r in rows if "error" not in r and "skipped" not in r]
    print_table(ok, [("case", "case", ""), ("tokens", "tokens", "d"), ("forward_ms", "ms", ".1f"),
                     ("tokens_per_s", "tok/s", ".1f"), ("peak_rss_mb", "peak RSS MB", ".0f")])  # fmt: skip
    for r in rows:
        if "error" in r or "skipped" in r:
            print(f"{r['case']}: {r.get('error') or r['skipped']}")
    by = {(r["case"], r["tokens"]): r for r in ok}
    for n in gemma_tokens:
        a, b = by.get(("gemma3-270m pylin", n)), by.get(("gemma3-270m transformers", n))
        if a and b:
            ratio = b["forward_ms"] / a["forward_ms"]
            print(f"gemma3-270m {n} tokens: transformers_time / pylin_time = {ratio:.2f}")
    import torch

    if any("error" in r for r in rows):
        raise SystemExit("forward.py: a case failed (see above)")
    if writes_results(args):
        tag = "-".join(t for t in (args.tag, "omp-passive" if passive else "") if t)
        path = write_results("forward", rows, threads=torch.get_num_threads(), extra=notes, tag=tag)
        print(f"results: {path}")


if __name__ == "__main__":
    main()
