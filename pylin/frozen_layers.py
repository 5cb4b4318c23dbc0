"""The detached network as a linear map: batched tangents forward (JVP), cotangents backward (VJP).

With every nonlinear coefficient frozen at X* (norm scales r, activated gates g, attention
probabilities P — docs/linearization.md), one decoder layer acting on a tangent T (B, p, d) is

    a  = (T · r_attn) · w_attn                  (pre-attention norm, if the family has one)
    o  = P · (a Wvᵀ)  per head (GQA: kv head = head // group), then  attn = o Woᵀ
    attn = (attn · r_pa) · w_pa                 (post-attention norm, Gemma 3 / OLMo 2)
    h1 = T + attn
    b  = (h1 · r_mlp) · w_mlp;  m = g ⊙ (b Wuᵀ);  mo = m Wdᵀ;  mo = (mo · r_pm) · w_pm
    h2 = h1 + mo

and the VJP runs the transposes backwards.  Only Wv, Wo, Wu, Wd and the norm weights are touched,
every product goes through pylin.kernels on the stored (quantized) weights, and the batch rides in
the kernels' M dimension.  `start` drops the positions before the first token with a non-zero
tangent (causality: they stay zero at every layer); `last_only` keeps just the last position in
the layer holding the output site.  Tests: tests/test_linearization.py (against autograd).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import kernels
from .forward import kernel_linear


@dataclass
class FrozenLayer:
    """One layer's weights and its coefficients frozen at X*, restricted to positions start..n-1."""

    weights: Any  # the model's LayerWeights (v, o, up, down QTensors; norm weights)
    record: Any  # the forward's LayerRecord at X*
    n_heads: int
    n_kv_heads: int
    head_dim: int

    def scale(self, name: str, start: int, last_only: bool = False) -> torch.Tensor | None:
        """A recorded per-position coefficient for positions start..n-1 (or just the last one)."""
        value = getattr(self.record, name)
        if value is None:
            return None
        return value[-1:] if last_only else value[start:]


def _norm(t: torch.Tensor, scale: torch.Tensor | None, weight: torch.Tensor | None) -> torch.Tensor:
    # Same operation order as the forward ((x · r) · w), so F(X*) reproduces it to rounding; a
    # diagonal scaling is its own transpose, so the VJP uses this too.
    if scale is None:
        return t
    return (t * scale) * weight


def _linear_transposed(t: torch.Tensor, w: Any) -> torch.Tensor:
    return kernels.matmul(t.contiguous(), w)


def _attention_mix(layer: FrozenLayer, v: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """o_h = P_h · v_{kv(h)}: v (B, p, kv·hd), probs (H, q, p) -> (B, q, H·hd)."""
    b, p, _ = v.shape
    group = layer.n_heads // layer.n_kv_heads
    v = v.view(b, p, layer.n_kv_heads, layer.head_dim).transpose(1, 2)  # (B, kv, p, hd)
    probs = probs.view(layer.n_kv_heads, group, probs.shape[-2], p)  # (kv, group, q, p)
    o = torch.matmul(probs.unsqueeze(0), v.unsqueeze(2))  # (B, kv, group, q, hd)
    return (
        o.reshape(b, layer.n_heads, -1, layer.head_dim)
        .transpose(1, 2)
        .reshape(b, -1, layer.n_heads * layer.head_dim)
    )


def _attention_mix_transposed(layer: FrozenLayer, go: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Transpose of _attention_mix: go (B, q, H·hd), probs (H, q, p) -> (B, p, kv·hd)."""
    b, q, _ = go.shape
    p = probs.shape[-1]
    group = layer.n_heads // layer.n_kv_heads
    go = go.view(b, q, layer.n_kv_heads, group, layer.head_dim).permute(0, 2, 3, 1, 4)  # (B, kv, g, q, hd)
    probs = probs.view(layer.n_kv_heads, group, q, p)
    gv = torch.matmul(probs.transpose(-1, -2).unsqueeze(0), go).sum(dim=2)  # (B, kv, p, hd)
    return gv.transpose(1, 2).reshape(b, p, layer.n_kv_heads * layer.head_dim)


def _probs(layer: FrozenLayer, start: int, last_only: bool) -> torch.Tensor:
    probs = layer.record.attn_probs[:, start:, start:]
    return probs[:, -1:, :] if last_only else probs


# ---- JVP ----------------------------------------------------------------------------------------


def attention_jvp(
    layer: FrozenLayer, t: torch.Tensor, start: int, last_only: bool, post_norm: bool = True
) -> torch.Tensor:
    """Tangent of the attention branch (as added to the residual, or before its post-norm) for a residual
    tangent t (B, p, d)."""
    w = layer.weights
    a = _norm(t, layer.scale("attn_norm_scale", start), w.attn_norm)
    o = _attention_mix(layer, kernel_linear(a, w.v), _probs(layer, start, last_only))
    attn = kernel_linear(o, w.o)
    if not post_norm:
        return attn
    return _norm(attn, layer.scale("post_attn_norm_scale", start, last_only), w.post_attn_norm)


def mlp_jvp(
    layer: FrozenLayer, h1: torch.Tensor, start: int, last_only: bool, post_norm: bool = True
) -> torch.Tensor:
    """Tangent of the MLP branch for a tangent h1 (B, q, d) of its input (q = 1 when last_only)."""
    w = layer.weights
    b = _norm(h1, layer.scale("mlp_norm_scale", start, last_only), w.mlp_norm)
    m = layer.scale("mlp_gate", start, last_only) * kernel_linear(b, w.up)
    out = kernel_linear(m, w.down)
    if not post_norm:
        return out
    return _norm(out, layer.scale("post_mlp_norm_scale", start, last_only), w.post_mlp_norm)


# What layer_jvp / layer_vjp can stop at (pylin.sites output kinds of a block).
ATTN_STOPS = ("attn_out", "attn_pre_norm")
MLP_STOPS = ("mlp_out", "mlp_pre_norm")


def layer_jvp(
    layer: FrozenLayer, t: torch.Tensor, start: int, stop_at: str = "resid_post", last_only: bool = False
) -> torch.Tensor:
    """Push a residual tangent through one layer; stop_at picks what is returned (a branch, h1 or h2)."""
    attn = attention_jvp(layer, t, start, last_only, post_norm=stop_at != "attn_pre_norm")
    if stop_at in ATTN_STOPS:
        return attn
    h1 = (t[:, -1:] if last_only else t) + attn
    if stop_at == "resid_mid":
        return h1
    mo = mlp_jvp(layer, h1, start, last_only, post_norm=stop_at != "mlp_pre_norm")
    return mo if stop_at in MLP_STOPS else h1 + mo


# ---- VJP ----------------------------------------------------------------------------------------


def attention_vjp(
    layer: FrozenLayer, g_attn: torch.Tensor, start: int, last_only: bool, post_norm: bool = True
) -> torch.Tensor:
    """Cotangent on the residual input (B, p, d) from a cotangent on the attention branch (B, q, d)."""
    w = layer.weights
    g = g_attn
    if post_norm:
        g = _norm(g_attn, layer.scale("post_attn_norm_scale", start, last_only), w.post_attn_norm)
    gv = _attention_mix_transposed(layer, _linear_transposed(g, w.o), _probs(layer, start, last_only))
    return _norm(_linear_transposed(gv, w.v), layer.scale("attn_norm_scale", start), w.attn_norm)


def mlp_vjp(
    layer: FrozenLayer, g_mlp: torch.Tensor, start: int, last_only: bool, post_norm: bool = True
) -> torch.Tensor:
    """Cotangent on the MLP input (B, q, d) from a cotangent on the MLP branch (B, q, d)."""
    w = layer.weights
    g = g_mlp
    if post_norm:
        g = _norm(g_mlp, layer.scale("post_mlp_norm_scale", start, last_only), w.post_mlp_norm)
    gu = _linear_transposed(g, w.down) * layer.scale("mlp_gate", start, last_only)
    return _norm(_linear_transposed(gu, w.up), layer.scale("mlp_norm_scale", start, last_only), w.mlp_norm)


def layer_vjp(
    layer: FrozenLayer, g: torch.Tensor, start: int, stop_at: str = "resid_post", last_only: bool = False
) -> torch.Tensor:
    """Pull a cotangent on the layer's output (h2, or the branch named by stop_at) back to its input.

    With last_only, g holds just the last position (B, 1, d); the result always covers p positions.
    """
    if stop_at in ATTN_STOPS:
        return attention_vjp(layer, g, start, last_only, post_norm=stop_at == "attn_out")
    if stop_at == "resid_mid":
        g_h1 = g
    else:
        g_mlp_in = mlp_vjp(layer, g, start, last_only, post_norm=stop_at != "mlp_pre_norm")
        g_h1 = g_mlp_in if stop_at in MLP_STOPS else g + g_mlp_in
    g_in = attention_vjp(layer, g_h1, start, last_only)
    if last_only:
        g_in[:, -1:] += g_h1
        return g_in
    return g_in + g_h1
