"""Smoke check of an installed pylin wheel, run from outside the source tree by .ci/wheel.

Import, build_info(), a matmul in both orientations under every CPU variant this machine runs (against
numpy on the dequantized weight), and one linearization of a tiny random Llama written by transformers.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import pylin
from pylin import kernels


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        sys.exit(1)


def main() -> None:
    check("site-packages" in pylin.__file__, f"pylin imported from the installed wheel: {pylin.__file__}")
    info = pylin.build_info()
    print(info)
    check(set(info["isa_available"]) <= set(info["isa_compiled"]), "the available ISA variants were compiled")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 512), dtype=np.float32)
    g = rng.standard_normal((3, 40), dtype=np.float32)
    for qtype in ("Q8_0", "Q4_K"):
        w = kernels.quantize(rng.standard_normal((40, 512), dtype=np.float32), qtype)
        dense = w.dequantize().astype(np.float64)
        for isa in kernels.available_isas():
            with kernels.use_isa(isa):
                y, v = kernels.matmul_t(x, w), kernels.matmul(g, w)
            err_t = np.linalg.norm(y - x @ dense.T) / np.linalg.norm(x @ dense.T)
            err = np.linalg.norm(v - g @ dense) / np.linalg.norm(g @ dense)
            check(max(err_t, err) < 1e-6, f"{qtype} matmul_t / matmul under {isa}: {err_t:.1e} / {err:.1e}")
    with tempfile.TemporaryDirectory() as folder:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        sizes = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
        heads = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        config = LlamaConfig(**sizes, **heads)
        LlamaForCausalLM(config).save_pretrained(folder)
        model = pylin.load(Path(folder))
        rec = model.linearize([1, 5, 9, 20]).reconstruction()
        check(rec.rel_error < 1e-5, f"tiny Llama linearized: {rec}")


if __name__ == "__main__":
    main()
