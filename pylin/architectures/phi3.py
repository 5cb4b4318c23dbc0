"""Phi 3 / Phi 4 (HF `phi3`, GGUF `phi3`): fused qkv_proj and gate_up_proj, partial rotary, LongRoPE.

The fused weights are split into zero-copy row views (q, k, v; gate = first half, up = second half).
In GGUF, LongRoPE's factors are the `rope_factors_short` / `rope_factors_long` tensors.
Tests: tests/test_models.py::test_hf_logits[phi3] (short and long prompts), test_gguf_logits[phi3-*].
"""

from dataclasses import replace
from typing import Any

from ..rope import make_rope
from .base import ArchConfig, Family


def _gguf_longrope(config: ArchConfig, meta: Any) -> ArchConfig:
    if not meta.has_tensor("rope_factors_short.weight"):
        return config
    arch = meta.arch
    original = meta.get_int(f"{arch}.rope.scaling.original_context_length", 0)
    context = meta.get_int(f"{arch}.context_length", original)
    params = {
        "rope_type": "longrope",
        "rope_theta": meta.get_float(f"{arch}.rope.freq_base", 10000.0),
        "rotary_dim": config.rope[0].rotary_dim,
        "short_factor": meta.float_tensor("rope_factors_short.weight"),
        "long_factor": meta.float_tensor("rope_factors_long.weight"),
        "original_max_position_embeddings": original or context,
    }
    attn_factor = meta.get_float(f"{arch}.rope.scaling.attn_factor", 0.0)
    if attn_factor:
        params["attention_factor"] = attn_factor
    rope = make_rope(params, config.head_dim, max_positions=context)
    return replace(config, rope=[rope] * config.n_layers)


FAMILY = Family(
    name="phi3",
    hf_model_types=("phi3",),
    gguf_archs=("phi3",),
    hf_norms={"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"},
    gguf_norms={"attn_norm": "attn_norm", "mlp_norm": "ffn_norm"},
    fused=True,
    partial_rotary=True,
    gguf_config_hook=_gguf_longrope,
)
