"""The shared description of a decoder family: its configuration (ArchConfig) and its naming (Family).

A family module (llama.py, gemma3.py, ...) is one `Family` value: which norms it has and where, how its
tensors are named in Hugging Face and GGUF checkpoints, and small hooks for what its config.json or GGUF
metadata say differently.  Everything else (reading files, the forward pass) is generic.
Tests: tests/test_models.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..rope import Rope, make_rope

NORM_SLOTS = ("attn_norm", "post_attn_norm", "mlp_norm", "post_mlp_norm")

# Hugging Face module names (after "model.layers.{i}.") of the slots every family shares.
HF_COMMON = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
    "qkv": "self_attn.qkv_proj", "gate_up": "mlp.gate_up_proj",
}  # fmt: skip
# GGUF tensor names (after "blk.{i}."), as llama.cpp's converter writes them.
GGUF_COMMON = {
    "q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
    "q_norm": "attn_q_norm", "k_norm": "attn_k_norm",
    "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down",
    "qkv": "attn_qkv", "gate_up": "ffn_up",
}  # fmt: skip


@dataclass
class ArchConfig:
    """Everything the forward pass needs to know about a model, independent of the file format."""

    family: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    norm_eps: float
    rope: list[Rope]
    sliding_window: list[int | None]
    qk_norm: str | None = None  # None | "head" (per head, before RoPE) | "full" (whole projection)
    activation: str = "silu"  # "silu" | "gelu_tanh"
    embed_scale: float = 1.0
    attn_scale: float = 0.0  # 0 -> head_dim ** -0.5
    pre_norms: bool = True  # attn_norm / mlp_norm before each block
    post_norms: bool = False  # post_attn_norm / post_mlp_norm inside each branch
    tie_word_embeddings: bool = False
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    context_length: int = 0  # positions the model was trained for (GGUF context_length); 0: unknown

    def __post_init__(self) -> None:
        if self.attn_scale == 0.0:
            self.attn_scale = self.head_dim**-0.5
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")


@dataclass(frozen=True)
class Family:
    """A decoder family: its norms, names and the settings in which it differs from Llama."""

    name: str
    hf_model_types: tuple[str, ...]
    gguf_archs: tuple[str, ...]
    hf_norms: dict[str, str]  # slot -> HF module name under model.layers.{i}
    gguf_norms: dict[str, str]  # slot -> GGUF name under blk.{i}
    qk_norm: str | None = None
    activation: str = "silu"
    gguf_rope_style: str = "neox"  # llama.cpp's converter permutes Q/K rows for "norm" families
    fused: bool = False  # phi3: qkv_proj and gate_up_proj
    partial_rotary: bool = False  # phi3: RoPE on part of each head (else rope.dimension_count == head size)
    hf_norm_offset: float = 0.0  # gemma: the effective weight is 1 + w (GGUF stores it already added)
    embed_scale_sqrt_d: bool = False
    tie_default: bool = False
    # Hooks: (config, family-specific source dict) -> config with the family's extras applied.
    hf_config_hook: Callable[[ArchConfig, dict[str, Any]], ArchConfig] | None = None
    gguf_config_hook: Callable[[ArchConfig, Any], ArchConfig] | None = None

    @property
    def pre_norms(self) -> bool:
        return "attn_norm" in self.hf_norms

    @property
    def post_norms(self) -> bool:
        return "post_attn_norm" in self.hf_norms


# ---- Hugging Face config.json -> ArchConfig ------------------------------------------------------


def hf_rope_params(cfg: dict[str, Any], layer_type: str | None) -> dict[str, Any]:
    """transformers-style rope parameters of one layer type from a config dict (v4 or v5 spelling)."""
    rp = cfg.get("rope_parameters") or {}
    if layer_type is not None and isinstance(rp.get(layer_type), dict):
        params = dict(rp[layer_type])
    elif rp and not any(isinstance(v, dict) for v in rp.values()):
        params = dict(rp)
    else:
        params = dict(cfg.get("rope_scaling") or {})
        if layer_type == "sliding_attention" and cfg.get("rope_local_base_freq"):
            params = {"rope_theta": cfg["rope_local_base_freq"]}
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    if cfg.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", cfg["partial_rotary_factor"])
    if params["rope_type"] in ("llama3", "yarn", "longrope"):
        original = cfg.get("original_max_position_embeddings") or params.get(
            "original_max_position_embeddings"
        )
        params["original_max_position_embeddings"] = original or cfg.get("max_position_embeddings")
    return params


def hf_layer_types(cfg: dict[str, Any], n_layers: int) -> list[str]:
    types = cfg.get("layer_types")
    if types:
        return list(types)[:n_layers]
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True):
        return ["sliding_attention"] * n_layers
    return ["full_attention"] * n_layers


def config_from_hf(family: Family, cfg: dict[str, Any]) -> ArchConfig:
    """ArchConfig from a (text) config dict, as transformers' config classes spell it."""
    d, h = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or d // h)
    n_layers = int(cfg["num_hidden_layers"])
    types = hf_layer_types(cfg, n_layers)
    max_pos = int(cfg.get("max_position_embeddings") or 0)  # also the context length
    ropes = {t: make_rope(hf_rope_params(cfg, t), head_dim, max_positions=max_pos) for t in set(types)}
    window = cfg.get("sliding_window")
    tie = cfg.get("tie_word_embeddings")
    config = ArchConfig(
        family=family.name,
        d_model=d,
        n_layers=n_layers,
        n_heads=h,
        n_kv_heads=int(cfg.get("num_key_value_heads") or h),
        head_dim=head_dim,
        d_ff=int(cfg["intermediate_size"]),
        vocab_size=int(cfg["vocab_size"]),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope=[ropes[t] for t in types],
        sliding_window=[int(window) if t == "sliding_attention" and window else None for t in types],
        qk_norm=family.qk_norm,
        activation=family.activation,
        embed_scale=_float32(math.sqrt(d)) if family.embed_scale_sqrt_d else 1.0,
        pre_norms=family.pre_norms,
        post_norms=family.post_norms,
        tie_word_embeddings=family.tie_default if tie is None else bool(tie),
        attn_logit_softcap=cfg.get("attn_logit_softcapping"),
        final_logit_softcap=cfg.get("final_logit_softcapping"),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        context_length=max_pos,
    )
    return family.hf_config_hook(config, cfg) if family.hf_config_hook else config


def _float32(value: float) -> float:
    """A Python float rounded to float32, as transformers' float32 buffers hold such constants."""
    import numpy as np

    return float(np.float32(value))


# ---- GGUF metadata -> ArchConfig -----------------------------------------------------------------


def config_from_gguf(family: Family, meta: Any) -> ArchConfig:
    """ArchConfig from a GGUF file's metadata (`meta` is a pylin.gguf_file.GGUFFile)."""
    from .metadata import check_gguf_metadata

    arch = meta.arch
    checked = check_gguf_metadata(family, meta)  # types, ranges and the rules between keys, or MetadataError
    d, h, n_layers = checked["embedding_length"], checked["attention.head_count"], checked["block_count"]
    head_dim, kv, rotary = checked["head_dim"], checked["head_count_kv"], checked["rotary"]
    params: dict[str, Any] = {
        "rope_theta": meta.get_float(f"{arch}.rope.freq_base", 10000.0),
        "rotary_dim": rotary,
    }
    scaling = meta.get_str(f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        params.update(rope_type="linear", factor=meta.get_float(f"{arch}.rope.scaling.factor", 1.0))
    elif scaling == "yarn":
        params.update(
            rope_type="yarn",
            factor=meta.get_float(f"{arch}.rope.scaling.factor", 1.0),
            original_max_position_embeddings=meta.get_int(f"{arch}.rope.scaling.original_context_length", 0),
        )
    if meta.has_tensor("rope_freqs.weight"):
        params["inv_freq_divisors"] = meta.float_tensor("rope_freqs.weight")
    rope = make_rope(params, head_dim, style=family.gguf_rope_style)
    window = meta.get_int(f"{arch}.attention.sliding_window", 0) or None
    embd = meta.tensor_shape("token_embd.weight")
    config = ArchConfig(
        family=family.name,
        d_model=d,
        n_layers=n_layers,
        n_heads=h,
        n_kv_heads=kv,
        head_dim=head_dim,
        d_ff=meta.require_int(f"{arch}.feed_forward_length"),
        vocab_size=embd[0] if embd else 0,
        context_length=checked["context_length"] or 0,
        norm_eps=meta.get_float(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6),
        rope=[rope] * n_layers,
        sliding_window=[window] * n_layers,
        qk_norm=family.qk_norm,
        activation=family.activation,
        embed_scale=_float32(math.sqrt(d)) if family.embed_scale_sqrt_d else 1.0,
        pre_norms=family.pre_norms,
        post_norms=family.post_norms,
        tie_word_embeddings=not meta.has_tensor("output.weight"),
        attn_logit_softcap=meta.get_float(f"{arch}.attn_logit_softcapping", 0.0) or None,
        final_logit_softcap=meta.get_float(f"{arch}.final_logit_softcapping", 0.0) or None,
        bos_token_id=meta.get_int("tokenizer.ggml.bos_token_id", -1)
        if meta.has("tokenizer.ggml.bos_token_id")
        else None,
        eos_token_id=meta.get_int("tokenizer.ggml.eos_token_id", -1)
        if meta.has("tokenizer.ggml.eos_token_id")
        else None,
    )
    scale = meta.get_float(f"{arch}.attention.scale", 0.0)
    if scale:
        config = replace(config, attn_scale=scale)
    return family.gguf_config_hook(config, meta) if family.gguf_config_hook else config
