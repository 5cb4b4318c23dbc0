"""Will a Llama-3.3-70B fit my card?  pylin.planner on the headers of the files people download.

    python bench/plan_70b.py                          # Q4_K_M, IQ4_XS, IQ3_M, IQ2_XS on 24/40/48/80 GiB
    python bench/plan_70b.py --mixes IQ3_XXS,IQ2_M --gpus 24GiB,32GiB --tokens 16,64
    python bench/plan_70b.py --smoke                  # one mix, one card; no results file

Each mix is written as a sparse GGUF (bench/make_synthetic_gguf.py --sparse: llama.cpp's per-tensor
types, header only, data left as holes), then planned exactly as `pylin info FILE --device cuda
--gpu-memory G --tokens N` plans it: weights (still quantized), the frozen state at N tokens, bytes
per JVP/VJP vector, the largest batch and the verdict.  This is the planner's model of GPU memory
(pylin/planner.py), not a measurement on a GPU.  Writes bench/results/plan70b-<date>-<commit>.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import make_synthetic_gguf
from common import add_output_args, print_table, write_results, writes_results

from pylin import planner


def run(mixes: list[str], gpus: list[str], tokens: list[int], folder: Path) -> list[dict]:
    rows = []
    for mix in mixes:
        path = make_synthetic_gguf.write(
            "llama-3.3-70b", mix + "_MIX", folder / f"l70-{mix}.gguf", sparse=True
        )
        for n in tokens:
            for gpu in gpus:
                p = planner.plan(path, gpu, tokens=n)
                rows.append({
                    "mix": mix, "gpu": gpu, "tokens": n, "weights_gb": p.weight_bytes / 1e9,
                    "weights_gib": p.weight_bytes / 2**30, "frozen_gib": p.frozen_bytes / 2**30,
                    "per_vector_mib": p.per_vector_bytes / 2**20, "batch": p.batch,
                    "verdict": "fits" if p.fits else f"{p.shortfall() / 2**30:.1f} GiB short",
                    "by_type_gib": {t: b / 2**30 for t, b in p.weight_bytes_by_type.items()},
                })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixes", default="Q4_K_M,IQ4_XS,IQ3_M,IQ2_XS")
    ap.add_argument("--gpus", default="24GiB,40GiB,48GiB,80GiB")
    ap.add_argument("--tokens", default="16")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.mixes, args.gpus = "IQ2_XS", "24GiB"
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(
            args.mixes.split(","), args.gpus.split(","), [int(t) for t in args.tokens.split(",")], Path(tmp)
        )
    print_table(
        rows,
        [("mix", "mix", ""), ("gpu", "GPU", ""), ("tokens", "tokens", "d"),
         ("weights_gb", "weights GB", ".2f"), ("frozen_gib", "frozen GiB", ".2f"),
         ("per_vector_mib", "MiB/vector", ".2f"), ("batch", "batch", "d"), ("verdict", "verdict", "")],
    )  # fmt: skip
    if writes_results(args):
        extra = {"model": "llama-3.3-70b", "source": "pylin.planner on sparse synthetic GGUF headers"}
        print(f"\nwrote {write_results('plan70b', rows, 1, extra)}")


if __name__ == "__main__":
    main()
