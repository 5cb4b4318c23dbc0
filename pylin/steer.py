"""pylin.steer — steering generation with detached Jacobians (Golden 2025) or with a constant vector.

    op = jacobian_operator(model, "The Golden", layer=6)       # the paper's operator
    out = generate(model, "I'm going to arizona to see the", steer=op, strength=1.0, max_new_tokens=20)
    op = singular_vector(lin, index=0, layer=6)                # constant-vector steering (the simple variant)

Both operators add a vector Δ_i to the residual stream at every position i of the sequence, at the
residual stream AFTER layer ℓ (= entering layer ℓ + 1: the space the concept Jacobian J^(ℓ) maps into).

The paper's operator: J^(ℓ) is the detached Jacobian of the (final-norm-)normed residual output of layer ℓ
at the last token of a concept prompt of n₀ tokens, shape (d, n₀, d).  For a sequence with input
embeddings e_1 … e_m, Δ_i = Σ_{k≤i} J^(ℓ)[:, k mod n₀, :] e_k, rescaled to λ·‖h_i‖ / (2‖Δ_i‖) · Δ_i with h_i
the residual stream where it is added (docs/linearization.md, "Steering").  J^(ℓ) is never formed: the terms
J^(ℓ)[:, k mod n₀, :] e_k for all k come from ONE JVP batch of the concept's linearization (tangent k puts
e_k on concept token k mod n₀), and are cached per position so each generated token costs one tangent.
Greedy decoding re-runs the whole steered forward for every new token, as the paper does; λ = 0 adds
exactly zero, so it reproduces the unsteered text.  Tests: tests/test_steer.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .generation import continuation_text, eos_token_ids, greedy
from .indices import finite, index, integer

# |λ| above which steering is refused: at λ = 1000 the added vector is 500× the hidden state's norm, so
# the prompt no longer matters; larger values only walk toward float32 overflow (λ = 1e300 gave NaN
# logits and a run of <pad> tokens).
MAX_STRENGTH = 1000.0

__all__ = [
    "SteeringOperator",
    "JacobianOperator",
    "VectorOperator",
    "jacobian_operator",
    "singular_vector",
    "vector_operator",
    "generate",
    "Generation",
    "steered_logits",
]


def _check_layer(model: Any, layer: int) -> int:
    n = int(model.n_layers)
    i = index(layer, n, "layer")
    if i == n - 1:
        raise ValueError(
            f"layer {layer} out of range: steering adds after layer ℓ (into layer ℓ + 1), so ℓ must be in "
            f"0..{n - 2} for this {n}-layer model"
        )
    return i


def _scaled(delta: torch.Tensor, h: torch.Tensor, strength: float) -> torch.Tensor:
    """λ·‖h_i‖/(2‖Δ_i‖)·Δ_i per position (rows); rows with Δ_i = 0 stay zero."""
    norm = delta.norm(dim=-1, keepdim=True)
    scale = strength * h.norm(dim=-1, keepdim=True) / (2 * norm)
    return torch.where(norm > 0, delta * scale, torch.zeros_like(delta))


class SteeringOperator:
    """Produces the additive vector Δ_i for every position of the residual stream after layer `layer`."""

    layer: int

    @property
    def inject_layer(self) -> int:
        """The index i of the layer whose input (resid_hook(i, h)) receives Δ."""
        return self.layer + 1

    def raw_delta(self, model: Any, tokens: list[int]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def delta(self, model: Any, tokens: list[int], h: torch.Tensor, strength: float) -> torch.Tensor:
        """Δ (m, d) to add to the residual h (m, d) after layer `layer`, for the sequence `tokens`."""
        if strength == 0:
            return torch.zeros_like(h)
        return _scaled(self.raw_delta(model, tokens).to(h), h, float(strength))

    def hook(
        self, model: Any, tokens: list[int], strength: float, trace: dict[str, torch.Tensor] | None = None
    ) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """A resid_hook for the model's forward; `trace` (if given) receives h, the added Δ and h + Δ."""

        def hook(i: int, h: torch.Tensor) -> torch.Tensor:
            if i != self.inject_layer:
                return h
            d = self.delta(model, tokens, h, strength)
            out = h + d
            if trace is not None:
                trace.update(h=h.detach().clone(), delta=d.detach().clone(), steered=out.detach().clone())
            return out

        return hook


@dataclass
class JacobianOperator(SteeringOperator):
    """The paper's operator: the concept prompt's detached Jacobian at layer ℓ applied to the embeddings."""

    lin: Any  # the concept's Linearization (output blocks.ℓ.resid_post, normed, wrt embed)
    layer: int
    concept: str = ""
    _cache: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def n_concept(self) -> int:
        return int(self.lin.n_tokens)

    def terms(self, model: Any, tokens: list[int]) -> torch.Tensor:
        """J^(ℓ)[:, k mod n₀, :] e_k for k = 0 … m−1, (m, d): one JVP batch over the uncached positions."""
        missing = [k for k, t in enumerate(tokens) if (k, t) not in self._cache]
        if missing:
            emb = model.embed([tokens[k] for k in missing]).to(self.lin.dtype)
            V = torch.zeros(
                len(missing), self.n_concept, self.lin.d_in, dtype=self.lin.dtype, device=self.lin.x.device
            )
            V[torch.arange(len(missing)), torch.tensor([k % self.n_concept for k in missing])] = emb
            W = self.lin.jvp(V)
            for row, k in enumerate(missing):
                self._cache[(k, tokens[k])] = W[row]
        return torch.stack([self._cache[(k, t)] for k, t in enumerate(tokens)])

    def raw_delta(self, model: Any, tokens: list[int]) -> torch.Tensor:
        return torch.cumsum(self.terms(model, tokens), dim=0)  # Δ_i = Σ_{k≤i}


@dataclass
class VectorOperator(SteeringOperator):
    """Constant-vector steering: the same direction at every position, scaled like the paper's operator."""

    vector: torch.Tensor
    layer: int
    label: str = ""

    def raw_delta(self, model: Any, tokens: list[int]) -> torch.Tensor:
        return self.vector.reshape(1, -1).expand(len(tokens), -1)


def jacobian_operator(model: Any, concept_text: str, layer: int) -> JacobianOperator:
    """The paper's steering operator from a concept prompt, for the residual stream after `layer`."""
    if isinstance(concept_text, str) and not concept_text.strip():
        raise ValueError("the concept text is empty")
    i = _check_layer(model, layer)
    lin = model.linearize(concept_text, output=f"blocks.{i}.resid_post", wrt="embed", normed=True)
    return JacobianOperator(lin, i, concept_text)


def singular_vector(
    lin: Any, index: int, layer: int, *, sign: int = 1, k: int | None = None
) -> VectorOperator:
    """The `index`-th left singular vector of `lin`'s last-token Jacobian block (signed toward y, or away
    with sign=-1), added after `layer`."""
    index = integer(index, "index", low=0)
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    i = _check_layer(lin.model, layer)
    if lin.d_out != lin.model.d_model:
        raise ValueError(f"the linearization's output ({lin.d_out} values) is not a residual-stream vector")
    res = lin.svd(k=max(index + 1, k or 0), token=-1)
    return VectorOperator(sign * res.U[:, index].detach().clone(), i, f"u{index} of {lin.output_site.name}")


def vector_operator(model: Any, vector: torch.Tensor, layer: int) -> VectorOperator:
    """Constant-vector steering with any direction of size d_model."""
    if vector.numel() != model.d_model:
        raise ValueError(
            f"steering vector has {vector.numel()} values, the model's residual has {model.d_model}"
        )
    return VectorOperator(vector.detach().reshape(-1).clone(), _check_layer(model, layer))


# ---- generation ------------------------------------------------------------------------------------


def _forward_logits(model: Any, tokens: list[int], hook: Any) -> torch.Tensor:
    """Last-position logits of `tokens` with `hook` on the residual stream."""
    res = model.forward(model.embed(tokens), resid_hook=hook)
    return model.lm_head(res.hidden[-1:])[0]


def steered_logits(
    model: Any, text_or_ids: Any, steer: SteeringOperator | None = None, strength: float = 1.0
) -> torch.Tensor:
    """Next-token logits of a prompt with the steering operator applied (all positions)."""
    strength = finite(strength, "strength", bound=MAX_STRENGTH)
    tokens = model.token_ids(text_or_ids)
    hook = None if steer is None else steer.hook(model, tokens, strength)
    return _forward_logits(model, tokens, hook)


@dataclass
class Generation:
    prompt: str
    tokens: list[int]  # prompt + generated
    new_tokens: list[int]
    text: str  # the generated continuation only
    strength: float
    steer: str

    def __str__(self) -> str:
        return f"{self.prompt}{self.text}"


def generate(
    model: Any,
    prompt: str | list[int],
    *,
    steer: SteeringOperator | None = None,
    strength: float = 1.0,
    max_new_tokens: int = 20,
    stop_at_eos: bool = True,
    progress: bool = False,
) -> Generation:
    """Greedy continuation of `prompt` steered by `steer` at strength λ (whole forward redone per token)."""
    strength = finite(strength, "strength", bound=MAX_STRENGTH)
    max_new_tokens = integer(max_new_tokens, "max_new_tokens", low=0)
    tokens = model.token_ids(prompt)

    def next_logits(ids: list[int]) -> torch.Tensor:
        return _forward_logits(model, ids, None if steer is None else steer.hook(model, ids, strength))

    eos = eos_token_ids(model.config) if stop_at_eos else None
    new = greedy(next_logits, tokens, max_new_tokens, eos=eos, progress=progress)
    label = "none" if steer is None else repr_operator(steer)
    return Generation(str(prompt), tokens + new, new, continuation_text(model, new), float(strength), label)


def repr_operator(op: SteeringOperator) -> str:
    if isinstance(op, JacobianOperator):
        return f"jacobian({op.concept!r}, layer {op.layer})"
    if isinstance(op, VectorOperator):
        return f"vector({op.label or 'custom'}, layer {op.layer})"
    return type(op).__name__
