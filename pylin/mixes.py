"""pylin.mixes — which type llama.cpp's quantizer gives each tensor of a Llama-family model in a named mix.

    pylin.mixes.tensor_types("IQ3_M", names, n_layers=80, n_heads=64, n_kv_heads=8)
    # {"token_embd.weight": "IQ3_S", "blk.0.attn_v.weight": "Q5_K", "blk.0.ffn_down.weight": "Q4_K", ...}

A GGUF "file type" such as Q4_K_M or IQ3_M is not one format: llama.cpp's `llama_tensor_get_type`
(src/llama-quant.cpp) starts from the mix's default type and moves tensors up or down by role and
layer (attn_v and ffn_down get more bits in some layers, the output layer gets Q6_K / Q5_K, ...).
This module restates those rules for the tensors of a dense Llama-family model (llama, mistral,
qwen3, ...: token_embd, attn_q/k/v/output, ffn_gate/up/down, output), so that synthetic files
(bench/make_synthetic_gguf.py), the planner's what-if questions and the tests see the type mix a
downloaded file has.  Assumed as for the files people download: quantized with an importance matrix
(`has_imatrix`, which IQ2_XS and below require), no per-tensor overrides, no experts.
Tests: tests/test_gguf_new_types.py (70B sizes against the published files' sizes), tests of the
planner and of tiny models written in each mix.
"""

from __future__ import annotations

from collections.abc import Iterable

# The mix's default type (llama_model_quantize_impl's switch over llama_ftype).
DEFAULT_TYPE: dict[str, str] = {
    "Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "IQ4_XS": "IQ4_XS", "IQ4_NL": "IQ4_NL", "IQ3_M": "IQ3_S",
    "IQ3_S": "IQ3_S", "IQ3_XXS": "IQ3_XXS", "IQ2_M": "IQ2_S", "IQ2_S": "IQ2_XS", "IQ2_XS": "IQ2_XS",
    "IQ2_XXS": "IQ2_XXS", "IQ1_M": "IQ1_M", "IQ1_S": "IQ1_S", "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0",
}  # fmt: skip
MIXES: tuple[str, ...] = tuple(DEFAULT_TYPE)
_LOW_BIT = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")  # llama.cpp's first IQ2/IQ1 branch


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def tensor_type(
    mix: str,
    name: str,
    *,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    has_imatrix: bool = True,
    has_output: bool = True,
) -> str:
    """The type llama.cpp's quantizer gives tensor `name` (GGUF naming) of a dense Llama-family model.

    1-D tensors (norms, rope factors) are not quantized: F32.  A 70B model (80 layers) gets llama.cpp's
    extra attn_v bump (LLM_TYPE_70B).  Without an output.weight (tied embeddings) token_embd.weight is
    typed as the output layer."""
    if mix not in DEFAULT_TYPE:
        raise ValueError(f"unknown mix {mix!r}; pylin.mixes knows {', '.join(MIXES)}")
    if not name.endswith(".weight") or "norm" in name or name.startswith("rope_"):
        return "F32"
    default, gqa, i = DEFAULT_TYPE[mix], n_heads // n_kv_heads, _layer(name)
    if name == "output.weight" or (name == "token_embd.weight" and not has_output):
        if mix in (*_LOW_BIT, "IQ3_XXS"):
            return "Q5_K"
        return "Q6_K" if default != "Q8_0" else default
    if name == "token_embd.weight":
        if mix in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return "Q2_K"
        if mix in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return "IQ3_S"
        return "Q4_K" if mix in ("TQ1_0", "TQ2_0") else default
    if mix in _LOW_BIT:
        return _low_bit_type(mix, name, default, gqa, i, n_layers)
    if "attn_v.weight" in name:
        return _attn_v_type(mix, default, gqa, i, n_layers, has_imatrix)
    if "attn_k.weight" in name or "attn_q.weight" in name:
        return "IQ2_S" if mix == "IQ3_XXS" else default
    if "ffn_down" in name:
        if mix == "IQ3_XXS" and not has_imatrix:
            return "Q4_K" if i < n_layers // 8 else "Q3_K"
        if mix == "IQ3_M" and i < n_layers // 8:
            return "Q4_K"
        if mix in ("Q4_K_M", "Q5_K_M"):
            return "Q6_K" if _use_more_bits(i, n_layers) else default
        if i < n_layers // 8 and mix in ("IQ4_NL", "IQ4_XS") and not has_imatrix:
            return "Q5_K"
        return default
    if "attn_output.weight" in name:
        return {"IQ3_XXS": "IQ3_S", "IQ3_M": "Q4_K"}.get(mix, default)
    return default


def _low_bit_type(mix: str, name: str, default: str, gqa: int, i: int, n_layers: int) -> str:
    two_m = mix in ("IQ2_S", "IQ2_M")
    if "attn_v.weight" in name:
        return "Q4_K" if gqa >= 4 else ("IQ3_S" if two_m else "Q2_K")
    if "ffn_down" in name and i < n_layers // 8:
        return "IQ3_S" if two_m else "Q2_K"
    if "attn_output.weight" in name:
        return "IQ2_XXS" if mix in ("IQ1_S", "IQ1_M") else "IQ3_S" if two_m else default
    return default


def _attn_v_type(mix: str, default: str, gqa: int, i: int, n_layers: int, has_imatrix: bool) -> str:
    new = default
    if mix == "IQ3_XXS":
        new = "Q4_K" if gqa >= 4 else ("IQ3_S" if not has_imatrix else "IQ3_XXS")
    elif mix == "IQ3_S" and gqa >= 4:
        new = "Q4_K"
    elif mix == "IQ3_M":
        new = "Q4_K"
    elif mix in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
        new = "Q5_K"
    elif mix in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n_layers):
        new = "Q6_K"
    if n_layers == 80 and new in ("Q3_K", "Q4_K"):  # llama.cpp: LLM_TYPE_70B's attn_v gets Q5_K
        new = "Q5_K"
    return new


def tensor_types(
    mix: str, names: Iterable[str], *, n_layers: int, n_heads: int, n_kv_heads: int, has_imatrix: bool = True
) -> dict[str, str]:
    """{name: type} for every tensor name of one model (see tensor_type)."""
    names = list(names)
    shape = {"n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "has_imatrix": has_imatrix}
    return {n: tensor_type(mix, n, has_output="output.weight" in names, **shape) for n in names}
