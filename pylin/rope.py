"""Rotary position embeddings: inverse frequencies for every scaling scheme, and their application.

The inverse frequencies are computed in float32 exactly as transformers' `modeling_rope_utils` does
(default, linear, llama3, yarn, longrope), so that float32 logits match it to rounding; the angles,
cosines and sines are then computed in the model's dtype (float64 stays float64).
Two layouts: "neox" rotates the two halves of the rotary dims (transformers, llama.cpp's NEOX), "norm"
rotates adjacent pairs (llama.cpp's NORM style, used with the Q/K rows its converter permuted).
Tests: tests/test_models.py (logits of llama3 / longrope / partial-rotary / local-global models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "longrope")


@dataclass(frozen=True)
class Rope:
    """One layer's rotary embedding: float32 inverse frequencies over the first `rotary_dim` dims."""

    inv_freq: torch.Tensor  # (rotary_dim // 2,) float32
    rotary_dim: int
    style: str = "neox"  # "neox" | "norm"
    attention_scaling: float = 1.0  # multiplies cos and sin (YaRN, LongRoPE)
    # LongRoPE switches to the long factors once the sequence exceeds the pretraining length.
    long_inv_freq: torch.Tensor | None = None
    original_max_positions: int | None = None

    def cos_sin(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (n, rotary_dim) for positions 0..n-1 (the "neox" duplicated layout)."""
        inv_freq = self.inv_freq
        if self.long_inv_freq is not None and n > (self.original_max_positions or n):
            inv_freq = self.long_inv_freq
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        positions = torch.arange(n, dtype=compute)
        freqs = positions[:, None] * inv_freq.to(compute)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, rope: Rope, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (heads, n, head_dim) by (n, rotary_dim) cos/sin; dims past rotary_dim pass."""
    rd = rope.rotary_dim
    x_rot, x_pass = (x, None) if rd == x.shape[-1] else (x[..., :rd], x[..., rd:])
    if rope.style == "neox":
        half = rd // 2
        rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        out = x_rot * cos + rotated * sin
    else:  # "norm": pairs (2i, 2i+1) share frequency i
        pairs = x_rot.unflatten(-1, (rd // 2, 2))
        c, s = cos[..., : rd // 2, None], sin[..., : rd // 2, None]
        even, odd = pairs[..., 0:1], pairs[..., 1:2]
        out = torch.cat((even * c - odd * s, odd * c + even * s), dim=-1).flatten(-2)
    return out if x_pass is None else torch.cat((out, x_pass), dim=-1)


def _base_inv_freq(theta: float, dim: int) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _llama3(inv_freq: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_context = p["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn(theta: float, dim: int, p: dict[str, Any], max_positions: int) -> tuple[torch.Tensor, float]:
    original = p["original_max_position_embeddings"]
    factor = p.get("factor") or max_positions / original

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = p.get("attention_factor")
    if attention is None:
        m, m_all = p.get("mscale"), p.get("mscale_all_dim")
        attention = float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention)


def _longrope(theta: float, dim: int, p: dict[str, Any], max_positions: int) -> dict[str, Any]:
    original = p["original_max_position_embeddings"]
    factor = p.get("factor") or max_positions / original
    attention = p.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim

    def inv(factors: Any) -> torch.Tensor:
        return 1.0 / (torch.as_tensor(factors, dtype=torch.float32) * theta**shape)

    return {
        "inv_freq": inv(p["short_factor"]),
        "long_inv_freq": inv(p["long_factor"]),
        "original_max_positions": int(original),
        "attention_scaling": float(attention),
    }


def make_rope(params: dict[str, Any], head_dim: int, *, style: str = "neox", max_positions: int = 0) -> Rope:
    """A Rope from transformers-style rope parameters (rope_type, rope_theta, factor, ...).

    `params` may carry `partial_rotary_factor`; `inv_freq_divisors` (llama.cpp's `rope_freqs` tensor)
    divides the default frequencies instead of any rope_type scaling.
    """
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    theta = float(params.get("rope_theta", 10000.0))
    dim = int(head_dim * float(params.get("partial_rotary_factor", 1.0) or 1.0))
    if "rotary_dim" in params:
        dim = int(params["rotary_dim"])
    if dim <= 0 or dim % 2 or dim > head_dim:
        raise ValueError(f"rotary dimension {dim} must be even and within head_dim {head_dim}")
    divisors = params.get("inv_freq_divisors")
    if divisors is not None:
        inv = _base_inv_freq(theta, dim) / torch.as_tensor(divisors, dtype=torch.float32)
        return Rope(inv, dim, style)
    if rope_type == "default":
        return Rope(_base_inv_freq(theta, dim), dim, style)
    if rope_type == "linear":
        return Rope(_base_inv_freq(theta, dim) / params["factor"], dim, style)
    if rope_type == "llama3":
        return Rope(_llama3(_base_inv_freq(theta, dim), params), dim, style)
    if rope_type == "yarn":
        inv, attention = _yarn(theta, dim, params, max_positions)
        return Rope(inv, dim, style, attention_scaling=attention)
    if rope_type == "longrope":
        return Rope(rotary_dim=dim, style=style, **_longrope(theta, dim, params, max_positions))
    raise ValueError(f"unsupported rope type {rope_type!r}; pylin supports {', '.join(SUPPORTED_ROPE_TYPES)}")
