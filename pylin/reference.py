"""pylin.reference — the seed method in pure PyTorch: the detached model on dequantized weights,
differentiated by torch autograd.

This is the truth the engine is tested against and the baseline of the benchmarks.  It runs the same
decoder code as pylin (pylin.forward) but with `torch_linear` on float copies of every weight, and
lets autograd — not pylin's hand-written transposes — produce JVPs, VJPs and Jacobians.  With
detach=False it gives the ordinary Jacobian of the nonlinear network (which does not reconstruct the
output: the paper's Fig. 2).  Small models only: every weight is dequantized.
Tests: tests/test_linearization.py.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import torch

from . import forward
from .sites import parse_input, parse_output

# Float copies of each model's weights per dtype, dropped with the model (no reference from the model).
_FLOAT_WEIGHTS: weakref.WeakKeyDictionary[Any, dict[torch.dtype, Any]] = weakref.WeakKeyDictionary()


def dequantized_weights(model: Any, dtype: torch.dtype | None = None) -> Any:
    """Float copies of the model's weights (cached per model and dtype while the model lives)."""
    dtype = dtype or model.dtype
    cache = _FLOAT_WEIGHTS.setdefault(model, {})
    if dtype not in cache:
        # The embedding table and LM head stay quantized: the reference needs only the prompt's rows
        # (model.embed) and, for a logit site, one row of the head.
        full = model.weights
        floats = full.dequantized(dtype) if _small(full.token_embd) else _layers_dequantized(full, dtype)
        cache[dtype] = type(full)(floats.layers, full.token_embd, floats.final_norm, full.lm_head)
    return cache[dtype]


# Embedding tables up to this many values are dequantized whole with the layers (16 MiB in float32: every
# tiny test model); bigger ones (Gemma's 262k × 640) stay quantized, only the prompt's rows are read.
SMALL_TABLE_VALUES = 1 << 22


def _small(table: Any) -> bool:
    return table.shape[0] * table.shape[1] <= SMALL_TABLE_VALUES


def _layers_dequantized(full: Any, dtype: torch.dtype) -> Any:
    """Float copies of the layers and the final norm only (big vocabularies stay quantized)."""
    from dataclasses import replace

    from .model import LINEAR_FIELDS
    from .qtensor import QTensor

    def deq(w: Any) -> torch.Tensor:
        return torch.from_numpy(w.dequantize()).to(dtype) if isinstance(w, QTensor) else w.to(dtype)

    def norm(t: Any) -> Any:
        return None if t is None else t.to(dtype)

    layers = []
    for lw in full.layers:
        changes = {f.name: norm(getattr(lw, f.name)) for f in fields(lw) if f.name not in LINEAR_FIELDS}
        changes.update({f: deq(getattr(lw, f)) for f in LINEAR_FIELDS})
        layers.append(replace(lw, **changes))
    return type(full)(layers, full.token_embd, full.final_norm.to(dtype), full.lm_head)


def _head_row(weights: Any, token_id: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(weights.lm_head.rows(token_id, token_id + 1).dequantize()[0]).to(dtype)


def _block_site(cfg: Any, i: int, lw: Any, x: torch.Tensor, detach: bool, kind: str) -> torch.Tensor:
    """A value inside layer i (a branch, before or after its post-norm, or the mid residual) for the
    residual x entering it, differentiably."""
    pos = forward.Positions(x.shape[0], x.dtype, x.device)
    values = forward.layer_values(cfg, i, lw, x, forward.torch_linear, detach, pos)
    pick = {"attn_out": values.attn_out, "mlp_out": values.mlp_out, "attn_pre_norm": values.attn_pre_norm,
            "mlp_pre_norm": values.mlp_pre_norm, "resid_mid": values.mid}  # fmt: skip
    return pick[kind]


def site_function(
    model: Any,
    output: str = "final",
    wrt: str = "embed",
    *,
    normed: bool = False,
    detach: bool = True,
    dtype: torch.dtype | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(X) = the output site (last token) as a function of the input site X (n, d)."""
    cfg = model.config
    weights = dequantized_weights(model, dtype)
    out = parse_output(output, model.n_layers, weights.lm_head.shape[0])
    start = parse_input(wrt, model.n_layers).layer

    def run(x: torch.Tensor, stop: int | None) -> Any:
        return forward.forward(cfg, weights, x, linear=forward.torch_linear, detach=detach,
                               start_layer=start, stop_layer=stop)  # fmt: skip

    def f(x: torch.Tensor) -> torch.Tensor:
        if out.kind in ("final", "logit"):
            y = run(x, None).hidden[-1]
            return y if out.kind == "final" else (y @ _head_row(weights, out.token_id, y.dtype)).reshape(1)
        if out.kind == "resid_post":
            v = run(x, out.layer + 1).output[-1]
        else:  # a value inside layer `out.layer`, from the residual entering it
            entering = run(x, out.layer).output
            v = _block_site(cfg, out.layer, weights.layers[out.layer], entering, detach, out.kind)[-1]
        if not normed:
            return v
        r = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
        return (v * (r.detach() if detach else r)) * weights.final_norm

    return f


def site_input(
    model: Any, ids: Sequence[int], wrt: str = "embed", dtype: torch.dtype | None = None
) -> torch.Tensor:
    """X*: the embeddings, or the residual stream entering layer i, computed on dequantized weights."""
    dtype = dtype or model.dtype
    x = model.embed(list(ids)).to(dtype)
    start = parse_input(wrt, model.n_layers).layer
    if start == 0:
        return x
    weights = dequantized_weights(model, dtype)
    return forward.forward(model.config, weights, x, linear=forward.torch_linear, stop_layer=start).output


def jacobian(
    model: Any,
    ids: Sequence[int],
    *,
    output: str = "final",
    wrt: str = "embed",
    normed: bool = False,
    detach: bool = True,
    dtype: torch.dtype | None = None,
    vectorize: bool = True,
) -> torch.Tensor:
    """The (detached, or with detach=False ordinary) Jacobian (d_out, n, d) by autograd."""
    f = site_function(model, output, wrt, normed=normed, detach=detach, dtype=dtype)
    x = site_input(model, ids, wrt, dtype)
    return torch.autograd.functional.jacobian(f, x, vectorize=vectorize)


def jvp_vjp(
    model: Any,
    ids: Sequence[int],
    V: torch.Tensor,
    U: torch.Tensor,
    *,
    output: str = "final",
    wrt: str = "embed",
    normed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(J·V, Jᵀ·U) for batches V (B, n, d) and U (B', d_out) by torch.func forward / reverse mode."""
    f = site_function(model, output, wrt, normed=normed, detach=True, dtype=V.dtype)
    x = site_input(model, ids, wrt, V.dtype)
    jvps = torch.stack([torch.func.jvp(f, (x,), (v,))[1] for v in V])
    _, pullback = torch.func.vjp(f, x)
    vjps = torch.stack([pullback(u)[0] for u in U])
    return jvps, vjps


def seed_jacobian(model: Any, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seed paper's route, as the benchmark baseline: float32 dequantized weights, the detached
    model, torch.autograd.functional.jacobian(vectorize=True).  Returns (J, y, x)."""
    f = site_function(model, "final", "embed", detach=True, dtype=torch.float32)
    x = site_input(model, ids, "embed", torch.float32)
    J = torch.autograd.functional.jacobian(f, x, vectorize=True)
    with torch.no_grad():
        y = f(x)
    return J, y, x
