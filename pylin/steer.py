"""pylin.steer — steering generation with detached Jacobians (Golden 2025) or with a constant vector.

    op = jacobian_operator(model, "The bridge is the Golden")   # the paper's operator, at its layer 2N/3
    out = generate(model, "I went to new york to see the", steer=op, strength=0.17, max_new_tokens=28)
    op = singular_vector(lin, index=0, layer=6)                  # constant-vector steering (simple variant)
    grid = sweep(model, prompt, concept, layers=[6, 9, 11], strengths=[0, 0.2, 0.5])   # pylin.steer_sweep

The paper's operator (its code: `JacobianAnalyzer.apply_steering_operator`): J^(ℓ) is the detached Jacobian
of the final-normed residual stream after block ℓ (`blocks.ℓ.resid_post`, normed) at the last token of a
concept prompt of n₀ tokens, shape (d, n₀, d).  For a sequence with input embeddings e_1 … e_m,
Δ_i = Σ_{k≤i} J^(ℓ)[:, k mod n₀, :] e_k, rescaled to λ·‖h_i‖ / (2‖Δ_i‖) · Δ_i at every position i (BOS
included), and added to the residual stream h ENTERING block ℓ (`blocks.ℓ.resid_pre`, the seed's
`layer_input` of its `lsplit − 1`) — the block whose output J^(ℓ) measures.  `inject="after"` adds it one
block later instead (entering ℓ + 1: the space J^(ℓ) maps into, pylin's first choice).  `layer=None` is the
seed's default lsplit = ⌊2N/3⌋, i.e. ℓ = ⌊2N/3⌋ − 1 here (its lsplit counts blocks, ℓ indexes them).
J^(ℓ) is never formed: the terms J^(ℓ)[:, k mod n₀, :] e_k come from ONE JVP batch of the concept's
linearization (tangent k puts e_k on concept token k mod n₀), cached per position, so each generated token
costs one tangent.  Generation is KV-cached (pylin.forward.KVCache): Δ_i of a cached position never changes
when a token is appended (a cumulative sum over k ≤ i, scaled by that position's own h_i), so the cached
rows are exact; use_cache=False redoes the whole forward per token as the seed does.  λ = 0 adds exactly
zero and reproduces the unsteered text.  Tests: tests/test_steer.py, tests/test_generate.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .generation import continuation_text, eos_token_ids, greedy, next_logits_function
from .indices import finite, index, integer

# |λ| above which steering is refused: at λ = 1000 the added vector is 500× the hidden state's norm, so
# the prompt no longer matters; larger values only walk toward float32 overflow (λ = 1e300 gave NaN
# logits and a run of <pad> tokens).
MAX_STRENGTH = 1000.0

__all__ = [
    "SteeringOperator",
    "JacobianOperator",
    "VectorOperator",
    "check_layer",
    "default_layer",
    "jacobian_operator",
    "singular_vector",
    "vector_operator",
    "generate",
    "Generation",
    "steered_logits",
    "sweep",
]

Inject = Literal["at", "after"]
INJECT = ("at", "after")


def default_layer(model: Any) -> int:
    """The seed's default: lsplit = 2N // 3 blocks run before the split, so ℓ = 2N // 3 − 1."""
    return max(0, 2 * int(model.n_layers) // 3 - 1)


def check_layer(model: Any, layer: int | None, inject: Inject = "at") -> int:
    """The steering layer ℓ as an index (None: `default_layer`); "after" needs a block after ℓ."""
    if inject not in INJECT:
        raise ValueError(f"inject must be 'at' or 'after', got {inject!r}")
    n = int(model.n_layers)
    if layer is None:
        return default_layer(model)
    i = index(layer, n, "layer")
    if inject == "after" and i == n - 1:
        raise ValueError(
            f"layer {layer} out of range: inject='after' adds into block ℓ + 1, so ℓ must be in "
            f"0..{n - 2} for this {n}-layer model"
        )
    return i


def _scaled(delta: torch.Tensor, h: torch.Tensor, strength: float) -> torch.Tensor:
    """λ·‖h_i‖/(2‖Δ_i‖)·Δ_i per position (rows); rows with Δ_i = 0 stay zero."""
    norm = delta.norm(dim=-1, keepdim=True)
    scale = strength * h.norm(dim=-1, keepdim=True) / (2 * norm)
    return torch.where(norm > 0, delta * scale, torch.zeros_like(delta))


class SteeringOperator:
    """Produces the additive vector Δ_i for every position of the residual stream entering `inject_layer`."""

    layer: int
    inject: Inject

    @property
    def inject_layer(self) -> int:
        """The index i of the block whose input (resid_hook(i, h)) receives Δ: ℓ, or ℓ + 1 for "after"."""
        return self.layer + (1 if self.inject == "after" else 0)

    def raw_delta(self, model: Any, tokens: list[int]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def delta(
        self, model: Any, tokens: list[int], h: torch.Tensor, strength: float, offset: int = 0
    ) -> torch.Tensor:
        """Δ (m, d) to add to the residual h (m, d) of the positions offset … offset + m − 1 of `tokens`."""
        if strength == 0:
            return torch.zeros_like(h)
        raw = self.raw_delta(model, tokens)[offset : offset + h.shape[0]]
        return _scaled(raw.to(h), h, float(strength))

    def hook(
        self,
        model: Any,
        tokens: list[int],
        strength: float,
        trace: dict[str, torch.Tensor] | None = None,
        offset: int = 0,
    ) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """A resid_hook for a forward over tokens[offset:] (offset > 0: a KV-cached step); `trace` (if
        given) receives h, the added Δ and h + Δ."""

        def hook(i: int, h: torch.Tensor) -> torch.Tensor:
            if i != self.inject_layer:
                return h
            d = self.delta(model, tokens, h, strength, offset)
            out = h + d
            if trace is not None:
                trace.update(h=h.detach().clone(), delta=d.detach().clone(), steered=out.detach().clone())
            return out

        return hook


@dataclass
class JacobianOperator(SteeringOperator):
    """The paper's operator: the concept prompt's detached Jacobian at layer ℓ applied to the embeddings.

    skip_bos: drop the BOS position's term J^(ℓ)[:, 0, :]·e_BOS from every Δ_i (the seed keeps it; on
    Gemma the BOS residual is huge, see `bos_share`)."""

    lin: Any  # the concept's Linearization (output blocks.ℓ.resid_post, normed, wrt embed)
    layer: int
    concept: str = ""
    inject: Inject = "at"
    skip_bos: bool = False
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

    def _is_bos(self, model: Any, tokens: list[int]) -> bool:
        bos = getattr(getattr(model, "config", None), "bos_token_id", None)
        return bos is not None and len(tokens) > 0 and tokens[0] == bos

    def raw_delta(self, model: Any, tokens: list[int]) -> torch.Tensor:
        terms = self.terms(model, tokens)
        if self.skip_bos and self._is_bos(model, tokens):
            terms = torch.cat([torch.zeros_like(terms[:1]), terms[1:]])
        return torch.cumsum(terms, dim=0)  # Δ_i = Σ_{k≤i}

    def bos_share(self, model: Any, tokens: list[int]) -> torch.Tensor:
        """Per position i, the BOS term's share ⟨t_0, Δ_i⟩ / ‖Δ_i‖² of Δ_i (the shares of all terms sum to
        1; 0 where the sequence does not start with BOS), with the seed's Δ (BOS kept)."""
        terms = self.terms(model, tokens).double()
        delta = torch.cumsum(terms, dim=0)
        if not self._is_bos(model, tokens):
            return torch.zeros(len(tokens), dtype=torch.float64)
        return (delta @ terms[0]) / delta.square().sum(-1).clamp_min(1e-300)


@dataclass
class VectorOperator(SteeringOperator):
    """Constant-vector steering: the same direction at every position, scaled like the paper's operator."""

    vector: torch.Tensor
    layer: int
    label: str = ""
    inject: Inject = "at"

    def raw_delta(self, model: Any, tokens: list[int]) -> torch.Tensor:
        return self.vector.reshape(1, -1).expand(len(tokens), -1)


def jacobian_operator(
    model: Any,
    concept_text: Any,
    layer: int | None = None,
    *,
    inject: Inject = "at",
    skip_bos: bool = False,
) -> JacobianOperator:
    """The paper's steering operator from a concept prompt (text or ids): J of blocks.ℓ.resid_post (normed),
    added entering block ℓ ("at", the seed's pairing) or ℓ + 1 ("after"); layer=None: `default_layer`."""
    if isinstance(concept_text, str) and not concept_text.strip():
        raise ValueError("the concept text is empty")
    i = check_layer(model, layer, inject)
    lin = model.linearize(concept_text, output=f"blocks.{i}.resid_post", wrt="embed", normed=True)
    return JacobianOperator(lin, i, concept_text if isinstance(concept_text, str) else "", inject, skip_bos)


def singular_vector(
    lin: Any,
    index: int,
    layer: int | None = None,
    *,
    sign: int = 1,
    k: int | None = None,
    inject: Inject = "at",
) -> VectorOperator:
    """The `index`-th left singular vector of `lin`'s last-token Jacobian block (signed toward y, or away
    with sign=-1), added entering block `layer` (or `layer` + 1 with inject="after")."""
    index = integer(index, "index", low=0)
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    i = check_layer(lin.model, layer, inject)
    if lin.d_out != lin.model.d_model:
        raise ValueError(f"the linearization's output ({lin.d_out} values) is not a residual-stream vector")
    res = lin.svd(k=max(index + 1, k or 0), token=-1)
    label = f"u{index} of {lin.output_site.name}"
    return VectorOperator(sign * res.U[:, index].detach().clone(), i, label, inject)


def vector_operator(
    model: Any, vector: torch.Tensor, layer: int | None = None, *, inject: Inject = "at"
) -> VectorOperator:
    """Constant-vector steering with any direction of size d_model."""
    if vector.numel() != model.d_model:
        raise ValueError(
            f"steering vector has {vector.numel()} values, the model's residual has {model.d_model}"
        )
    return VectorOperator(vector.detach().reshape(-1).clone(), check_layer(model, layer, inject), "", inject)


# ---- generation ------------------------------------------------------------------------------------


def steered_logits(
    model: Any,
    text_or_ids: Any,
    steer: SteeringOperator | None = None,
    strength: float = 1.0,
    *,
    all_positions: bool = False,
) -> torch.Tensor:
    """Next-token logits of a prompt with the steering operator applied (all positions steered): the last
    position's (vocab,), or every position's (n, vocab) with all_positions."""
    strength = finite(strength, "strength", bound=MAX_STRENGTH)
    tokens = model.token_ids(text_or_ids)
    hook = None if steer is None else steer.hook(model, tokens, strength)
    hidden = model.forward(model.embed(tokens), resid_hook=hook).hidden
    return model.lm_head(hidden) if all_positions else model.lm_head(hidden[-1:])[0]


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

    def _repr_html_(self) -> str:
        from .html import generation_html

        return generation_html(self)


def generate(
    model: Any,
    prompt: str | list[int],
    *,
    steer: SteeringOperator | None = None,
    strength: float = 1.0,
    max_new_tokens: int = 20,
    stop_at_eos: bool = True,
    progress: bool = False,
    use_cache: bool = True,
) -> Generation:
    """Greedy continuation of `prompt` steered by `steer` at strength λ (KV-cached unless use_cache=False)."""
    strength = finite(strength, "strength", bound=MAX_STRENGTH)
    max_new_tokens = integer(max_new_tokens, "max_new_tokens", low=0)
    tokens = model.token_ids(prompt)

    def hook_for(ids: list[int], offset: int) -> Any:
        return steer.hook(model, ids, strength, offset=offset)

    next_logits = next_logits_function(model, None if steer is None else hook_for, use_cache)
    eos = eos_token_ids(model.config) if stop_at_eos else None
    new = greedy(next_logits, tokens, max_new_tokens, eos=eos, progress=progress)
    label = "none" if steer is None else repr_operator(steer)
    return Generation(str(prompt), tokens + new, new, continuation_text(model, new), float(strength), label)


def repr_operator(op: SteeringOperator) -> str:
    where = f"layer {op.layer}" + (" (into block ℓ+1)" if op.inject == "after" else "")
    if isinstance(op, JacobianOperator):
        return f"jacobian({op.concept!r}, {where}{', BOS skipped' if op.skip_bos else ''})"
    if isinstance(op, VectorOperator):
        return f"vector({op.label or 'custom'}, {where})"
    return type(op).__name__


def sweep(*args: Any, **kwargs: Any) -> Any:
    """A grid of layers × strengths, measured (see pylin.steer_sweep.sweep)."""
    from .steer_sweep import sweep as run

    return run(*args, **kwargs)
