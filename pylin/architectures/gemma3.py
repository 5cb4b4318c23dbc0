"""Gemma 3 (HF `gemma3_text`, or the language part of `gemma3`; GGUF `gemma3`).

(1 + w) norms (GGUF stores w + 1 already), embeddings × √d (as a float32 constant, like transformers),
four norms per layer, GeGLU with tanh-GELU, per-head q/k norms, attention scale
query_pre_attn_scalar^-½, local (sliding window, rope θ 10k) and global layers.  GGUF files carry no
layer pattern or local θ: llama.cpp uses every 6th layer global and θ = 10000, and so does pylin unless
the file has `gemma3.attention.sliding_window_pattern` / `gemma3.rope.freq_base_swa`.
Tests: tests/test_models.py::test_hf_logits[gemma3], test_gguf_logits[gemma3-*], test_real_gemma.
"""

from dataclasses import replace
from typing import Any

from ..rope import make_rope
from .base import ArchConfig, Family
from .metadata import sliding_window_pattern


def _hf(config: ArchConfig, cfg: dict[str, Any]) -> ArchConfig:
    scalar = cfg.get("query_pre_attn_scalar") or config.head_dim
    return replace(config, attn_scale=float(scalar) ** -0.5)


def _gguf(config: ArchConfig, meta: Any) -> ArchConfig:
    arch = meta.arch
    local = sliding_window_pattern(meta, config.n_layers, default_period=6)
    window = config.sliding_window[0]
    theta_local = meta.get_float(f"{arch}.rope.freq_base_swa", 10000.0)
    local_rope = make_rope(
        {"rope_theta": theta_local, "rotary_dim": config.rope[0].rotary_dim}, config.head_dim
    )
    scale = config.attn_scale
    if not meta.has(f"{arch}.attention.scale") and config.n_layers == 62:
        scale = (config.d_model / config.n_heads) ** -0.5  # llama.cpp: Gemma 3 27B's query_pre_attn_scalar
    return replace(
        config,
        rope=[local_rope if is_local else config.rope[i] for i, is_local in enumerate(local)],
        sliding_window=[window if is_local else None for is_local in local],
        attn_scale=scale,
    )


FAMILY = Family(
    name="gemma3",
    hf_model_types=("gemma3_text", "gemma3"),
    gguf_archs=("gemma3",),
    hf_norms={
        "attn_norm": "input_layernorm",
        "post_attn_norm": "post_attention_layernorm",
        "mlp_norm": "pre_feedforward_layernorm",
        "post_mlp_norm": "post_feedforward_layernorm",
    },
    gguf_norms={
        "attn_norm": "attn_norm",
        "post_attn_norm": "post_attention_norm",
        "mlp_norm": "ffn_norm",
        "post_mlp_norm": "post_ffw_norm",
    },
    qk_norm="head",
    activation="gelu_tanh",
    hf_norm_offset=1.0,
    embed_scale_sqrt_d=True,
    tie_default=True,
    hf_config_hook=_hf,
    gguf_config_hook=_gguf,
)
