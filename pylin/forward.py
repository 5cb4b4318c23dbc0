"""The one decoder forward pass every family runs, written with torch ops over a pluggable linear backend.

    forward(model_or_config, weights, x, linear=kernel_linear, detach=False, record=False, ...)

`kernel_linear` multiplies by the stored (quantized) weights with pylin.kernels; `torch_linear` by plain
float tensors with `x @ w.T`, so the same code is differentiable by autograd (pylin.reference).
With detach=True the frozen coefficients of the detached linearization are cut from the graph, and only
they: every RMSNorm scale r = rsqrt(mean(x²)+ε), the whole activated MLP gate, the attention
probabilities (docs/linearization.md).  Operation order and precision follow
transformers, so float32 logits match it to rounding.
With cache=KVCache(n_layers) the forward runs only the NEW positions x (m, d) and attends to the keys and
values the cache holds for the earlier ones (greedy generation: one row per token instead of the whole
sequence); `full recompute` (no cache) stays the reference it is tested against.
Tests: tests/test_models.py (logits vs transformers, records, detach/autograd), tests/test_generate.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .architectures.base import ArchConfig
from .rope import apply_rope

Linear = Callable[[torch.Tensor, Any], torch.Tensor]
ResidHook = Callable[[int, torch.Tensor], torch.Tensor]


def kernel_linear(x: torch.Tensor, w: Any) -> torch.Tensor:
    """x · wᵀ on a stored QTensor with pylin.kernels (float32 / float64 CPU activations)."""
    from . import kernels

    return kernels.matmul_t(x.contiguous(), w)


def torch_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x · wᵀ on a float tensor (dequantized weights): differentiable by autograd."""
    return x @ w.T


@dataclass
class LayerRecord:
    """What one layer computed at the input (model dtype, detached)."""

    resid_pre: torch.Tensor  # (n, d) residual entering the layer (after any resid_hook)
    attn_norm_scale: torch.Tensor | None  # (n, 1)
    attn_probs: torch.Tensor  # (n_heads, n, n) after softmax and masking
    attn_out: torch.Tensor  # (n, d) attention branch as added to the residual
    post_attn_norm_scale: torch.Tensor | None
    mlp_norm_scale: torch.Tensor | None
    mlp_gate: torch.Tensor  # (n, d_ff) activated gate
    mlp_out: torch.Tensor  # (n, d) MLP branch as added to the residual
    post_mlp_norm_scale: torch.Tensor | None
    resid_post: torch.Tensor  # (n, d)
    # The branches before their post-norms (Gemma 3 / OLMo 2; the same as attn_out / mlp_out elsewhere:
    # the seed's `attn` / `mlp` keys) and the residual between attention and MLP (its `attn_plus_residual`).
    attn_pre_norm: torch.Tensor | None = None
    mlp_pre_norm: torch.Tensor | None = None
    resid_mid: torch.Tensor | None = None


@dataclass
class ForwardResult:
    hidden: torch.Tensor | None  # (n, d) final-normed states, when the forward reached the last layer
    output: torch.Tensor  # (n, d) residual stream after the last layer run (before the final norm)
    layers: list[LayerRecord] = field(default_factory=list)  # when record=True
    final_norm_scale: torch.Tensor | None = None  # (n, 1) when record=True and hidden is set
    resid: list[torch.Tensor] = field(default_factory=list)  # per-layer outputs when return_resid=True


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, detach: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x · r · w, r) with r = rsqrt(mean(x²) + eps) over the last dimension."""
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if detach:
        r = r.detach()
    return x * r * weight, r


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "silu":
        return torch.nn.functional.silu(x)
    if name == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    raise ValueError(f"unknown activation {name!r}")


class Positions:
    """Per-forward cache of RoPE tables and attention masks, shared by layers with equal settings.

    The forward's rows are the positions offset … offset + n − 1 (offset > 0: a KV-cached step)."""

    def __init__(
        self, n: int, dtype: torch.dtype, device: torch.device | str = "cpu", offset: int = 0
    ) -> None:
        self.n, self.dtype, self.device, self.offset = n, dtype, device, offset
        self._rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mask: dict[int | None, torch.Tensor] = {}

    def cos_sin(self, rope: Any) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(rope)
        if key not in self._rope:
            # The table of the whole length: LongRoPE picks its factors from the total length.
            cos, sin = rope.cos_sin(self.offset + self.n, self.dtype)
            cos, sin = cos[self.offset :], sin[self.offset :]
            self._rope[key] = (cos.to(self.device), sin.to(self.device))
        return self._rope[key]

    def masked(self, window: int | None) -> torch.Tensor:
        """True where query i may NOT see key j: j > i, or (sliding) i - j >= window; (n, offset + n)."""
        if window not in self._mask:
            i = torch.arange(self.offset, self.offset + self.n, device=self.device)[:, None]
            j = torch.arange(self.offset + self.n, device=self.device)[None, :]
            blocked = j > i
            if window is not None:
                blocked = blocked | (i - j >= window)
            self._mask[window] = blocked
        return self._mask[window]


class KVCache:
    """Keys (after q/k norm and RoPE, before the GQA repeat) and values of every layer, for the positions
    a cached forward has run so far (gpt-fast / transformers' DynamicCache, kept as plain tensors).

    A cached step is exact up to rounding: row i of every layer depends only on positions ≤ i (causal
    attention), so the keys and values of the earlier positions are what a full recompute would give —
    as long as nothing they depend on changes (a steering Δ_i that is a cumulative sum over k ≤ i, yes;
    LongRoPE switching to its long factors when the length passes its pretraining context, no: see
    `stale_for`)."""

    def __init__(self, n_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0  # positions held

    def extend(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append layer i's keys/values (kv heads, m, hd) and return all of them (kv heads, T, hd)."""
        if self.keys[i] is not None:
            k = torch.cat([self.keys[i], k], dim=1)
            v = torch.cat([self.values[i], v], dim=1)
        self.keys[i], self.values[i] = k, v
        return k, v

    def stale_for(self, cfg: ArchConfig, new_length: int) -> bool:
        """True when a rope of the model changes its frequencies between the cached length and
        new_length (LongRoPE past its pretraining length): the cached keys no longer match."""
        if self.length == 0:
            return False
        for rope in {id(r): r for r in cfg.rope}.values():
            limit = getattr(rope, "original_max_positions", None)
            if getattr(rope, "long_inv_freq", None) is not None and limit is not None:
                if (self.length > limit) != (new_length > limit):
                    return True
        return False


def attention_branch(
    cfg: ArchConfig,
    i: int,
    lw: Any,
    h: torch.Tensor,
    linear: Linear,
    detach: bool,
    pos: Positions,
    cache: KVCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o_proj(P · V), P) for the normed input h (n, d); with a cache, P is (heads, n, offset + n)."""
    n, hd, n_heads, n_kv = h.shape[0], cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    q, k, v = linear(h, lw.q), linear(h, lw.k), linear(h, lw.v)
    if cfg.qk_norm == "full":
        q, _ = rms_norm(q, lw.q_norm, cfg.norm_eps, detach)
        k, _ = rms_norm(k, lw.k_norm, cfg.norm_eps, detach)
    q, k, v = (t.view(n, -1, hd).transpose(0, 1) for t in (q, k, v))  # (heads, n, hd)
    if cfg.qk_norm == "head":
        q, _ = rms_norm(q, lw.q_norm, cfg.norm_eps, detach)
        k, _ = rms_norm(k, lw.k_norm, cfg.norm_eps, detach)
    rope = cfg.rope[i]
    cos, sin = pos.cos_sin(rope)
    q, k = apply_rope(q, rope, cos, sin), apply_rope(k, rope, cos, sin)
    if cache is not None:
        k, v = cache.extend(i, k, v)
    if n_kv != n_heads:
        k = k.repeat_interleave(n_heads // n_kv, dim=0)
        v = v.repeat_interleave(n_heads // n_kv, dim=0)
    scores = torch.matmul(q, k.transpose(1, 2)) * cfg.attn_scale
    if cfg.attn_logit_softcap:
        scores = torch.tanh(scores / cfg.attn_logit_softcap) * cfg.attn_logit_softcap
    scores = scores.masked_fill(pos.masked(cfg.sliding_window[i]), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if detach:
        probs = probs.detach()
    mixed = torch.matmul(probs, v).transpose(0, 1).reshape(n, n_heads * hd)
    return linear(mixed, lw.o), probs


def mlp_branch(
    cfg: ArchConfig, lw: Any, h: torch.Tensor, linear: Linear, detach: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(down(act(gate(h)) ⊙ up(h)), act(gate(h)))."""
    gate = _activation(cfg.activation, linear(h, lw.gate))
    if detach:
        gate = gate.detach()
    return linear(gate * linear(h, lw.up), lw.down), gate


def optional_norm(
    x: torch.Tensor, w: torch.Tensor | None, eps: float, detach: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """rms_norm(x, w) for a family that has this norm (w given), else (x, None)."""
    if w is None:
        return x, None
    return rms_norm(x, w, eps, detach)


@dataclass
class LayerValues:
    """Everything one layer computes from its input x, still attached to autograd's graph."""

    x: torch.Tensor
    attn_norm_scale: torch.Tensor | None
    attn_probs: torch.Tensor
    attn_out: torch.Tensor
    post_attn_norm_scale: torch.Tensor | None
    mid: torch.Tensor  # x + attn_out
    mlp_norm_scale: torch.Tensor | None
    mlp_gate: torch.Tensor
    mlp_out: torch.Tensor
    post_mlp_norm_scale: torch.Tensor | None
    out: torch.Tensor  # mid + mlp_out
    attn_pre_norm: torch.Tensor | None = None  # the attention branch before its post-norm
    mlp_pre_norm: torch.Tensor | None = None  # the MLP branch before its post-norm

    def record(self) -> LayerRecord:
        """The detached record the linearization freezes."""

        def keep(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach()

        return LayerRecord(
            resid_pre=self.x.detach(),
            attn_norm_scale=keep(self.attn_norm_scale),
            attn_probs=self.attn_probs.detach(),
            attn_out=self.attn_out.detach(),
            post_attn_norm_scale=keep(self.post_attn_norm_scale),
            mlp_norm_scale=keep(self.mlp_norm_scale),
            mlp_gate=self.mlp_gate.detach(),
            mlp_out=self.mlp_out.detach(),
            post_mlp_norm_scale=keep(self.post_mlp_norm_scale),
            resid_post=self.out.detach(),
            attn_pre_norm=keep(self.attn_pre_norm),
            mlp_pre_norm=keep(self.mlp_pre_norm),
            resid_mid=self.mid.detach(),
        )


def layer_values(
    cfg: ArchConfig,
    i: int,
    lw: Any,
    x: torch.Tensor,
    linear: Linear,
    detach: bool,
    pos: Positions,
    cache: KVCache | None = None,
) -> LayerValues:
    """One decoder layer: x + attn_branch, then + mlp_branch; each branch optionally pre-/post-normed."""
    eps = cfg.norm_eps
    h, attn_norm_r = optional_norm(x, lw.attn_norm, eps, detach)
    attn_raw, probs = attention_branch(cfg, i, lw, h, linear, detach, pos, cache)
    attn, post_attn_r = optional_norm(attn_raw, lw.post_attn_norm, eps, detach)
    mid = x + attn
    h, mlp_norm_r = optional_norm(mid, lw.mlp_norm, eps, detach)
    mlp_raw, gate = mlp_branch(cfg, lw, h, linear, detach)
    mlp, post_mlp_r = optional_norm(mlp_raw, lw.post_mlp_norm, eps, detach)
    return LayerValues(
        x, attn_norm_r, probs, attn, post_attn_r, mid, mlp_norm_r, gate, mlp, post_mlp_r, mid + mlp,
        attn_raw, mlp_raw,
    )  # fmt: skip


def forward(
    model_or_config: Any,
    weights: Any,
    x: torch.Tensor,
    *,
    linear: Linear = kernel_linear,
    detach: bool = False,
    record: bool = False,
    start_layer: int = 0,
    stop_layer: int | None = None,
    resid_hook: ResidHook | None = None,
    return_resid: bool = False,
    cache: KVCache | None = None,
) -> ForwardResult:
    """Run layers [start_layer, stop_layer) on the residual stream x (n, d) entering start_layer.

    `resid_hook(i, h)` may replace the residual stream entering layer i (steering).  `hidden` (the
    final-normed states) is set only when the last layer ran.  With `cache`, x holds the positions after
    the cache.length ones it already holds, all layers run, and the cache is extended by them.
    """
    cfg: ArchConfig = getattr(model_or_config, "config", model_or_config)
    stop = cfg.n_layers if stop_layer is None else stop_layer
    if not 0 <= start_layer <= stop <= cfg.n_layers:
        raise ValueError(f"layers [{start_layer}, {stop}) outside 0..{cfg.n_layers}")
    if x.ndim != 2 or x.shape[1] != cfg.d_model or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n > 0, {cfg.d_model}), got {tuple(x.shape)}")
    offset = 0
    if cache is not None:
        if start_layer != 0 or stop != cfg.n_layers or record:
            raise ValueError("a KV-cached forward runs every layer and records nothing")
        offset = cache.length
    pos = Positions(x.shape[0], x.dtype, x.device, offset)
    result = ForwardResult(hidden=None, output=x)
    for i in range(start_layer, stop):
        if resid_hook is not None:
            x = resid_hook(i, x)
        values = layer_values(cfg, i, weights.layers[i], x, linear, detach, pos, cache)
        x = values.out
        if record:
            result.layers.append(values.record())
        if return_resid:
            result.resid.append(x)
    result.output = x
    if cache is not None:
        cache.length += x.shape[0]
    if stop == cfg.n_layers:
        result.hidden, scale = rms_norm(x, weights.final_norm, cfg.norm_eps, detach)
        if record:
            result.final_norm_scale = scale.detach()
    return result
