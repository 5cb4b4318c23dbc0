"""pylin.steer.sweep — steering measured over a grid of layers × strengths.

    grid = sweep(model, "I went to new york to see the", "The bridge out of Marin is the Golden",
                 layers=[6, 9, 11], strengths=[0, 0.2, 0.5, 1.0], max_new_tokens=24)
    print(grid.table())            # layer, λ, relative gain, raw gain, distinct-2, concept word seen, text
    grid.write("out/")             # sweep.json and sweep.png (heatmaps: relative gain, distinct-2)

For each cell (ℓ, λ): the greedy steered continuation; the logit gain of the concept's tokens — by default
the concept prompt's own top-5 next tokens (concept_tokens="next"), or the top tokens of the first left
singular vectors of the concept Jacobian J^(ℓ) decoded through the LM head ("svd") — at every generated
position, steered minus unsteered logits on the same (steered) sequence; and distinct-n of the generated
tokens (unique n-grams / n-grams: 1 = no repeat).
The raw gain is dominated by a shift of ALL logits (steering moves the whole final-normed state: on Gemma 3
270M the vocabulary's mean shift spans −16 … +11 logits over the grid, as large as the raw concept gain
itself, docs/steering.md), so the headline number is the gain RELATIVE to
the mean shift over the whole vocabulary: relative = mean over concept tokens − mean over the vocabulary,
both averaged over the generated positions.  Tests: tests/test_steer_sweep.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .table import Table

__all__ = ["SweepResult", "concept_token_ids", "distinct_n", "sweep"]

# Below this distinct-2 a continuation counts as degenerate (mostly repeated bigrams, "Opera Opera …").
DEGENERATE_DISTINCT = 0.5


def distinct_n(tokens: Sequence[int], n: int = 2) -> float:
    """Unique n-grams / n-grams of a token sequence, in [0, 1]; 1.0 when it has fewer than n tokens."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def concept_token_ids(op: Any, k: int = 3, top: int = 5, source: str = "next") -> list[int]:
    """The concept's tokens.  "next": the concept prompt's own top `top` next tokens (the model's final
    output after it: " Gate" after "… the Golden").  "svd": the top `top` decoded tokens of the first k
    left singular vectors of its Jacobian's last-token block at ℓ (signed toward the concept's output at ℓ;
    on Gemma 3 270M these read as noise at every layer but the last few, see docs/steering.md)."""
    if source == "next":
        return torch.topk(op.lin.logits.double(), top).indices.tolist()
    if source != "svd":
        raise ValueError(f"concept tokens must be 'next' or 'svd', got {source!r}")
    res = op.lin.svd(k=min(k, op.lin.d_out), token=-1)
    rows = res.decode(op.lin, top=top).rows
    return list(dict.fromkeys(t for row in rows for t in row["output_ids"]))


def logit_gain(
    model: Any, op: Any, tokens: list[int], n_prompt: int, strength: float, concept: list[int]
) -> dict[str, float]:
    """Mean over the generated positions of (steered − unsteered) logits: over the concept tokens (raw),
    over the whole vocabulary (uniform), and their difference (relative)."""
    from .steer import steered_logits

    if len(tokens) <= n_prompt:
        return {"raw": float("nan"), "uniform": float("nan"), "relative": float("nan")}
    # The logits at position i predict token i + 1: the generated tokens are predicted from n_prompt − 1 on.
    rows = slice(n_prompt - 1, len(tokens) - 1)
    base = steered_logits(model, tokens, all_positions=True)[rows].double()
    steered = steered_logits(model, tokens, op, strength, all_positions=True)[rows].double()
    diff = steered - base
    raw = float(diff[:, concept].mean())
    uniform = float(diff.mean())
    return {"raw": raw, "uniform": uniform, "relative": raw - uniform}


@dataclass
class SweepResult:
    prompt: str
    concept: str
    unsteered: str
    concept_tokens: dict[int, list[str]]  # per layer: the tokens whose gain is measured
    cells: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> Table:
        display = ["layer", "strength", "gain_relative", "gain_raw", "gain_uniform", "distinct",
                   "concept_seen", "text"]  # fmt: skip
        title = (
            f"steering sweep: concept {self.concept!r} on {self.prompt!r} (unsteered: {self.unsteered!r}); "
            "gain_relative = concept tokens' logit gain minus the mean gain over the vocabulary"
        )
        return Table(self.cells, display, title)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "concept": self.concept,
            "unsteered": self.unsteered,
            "concept_tokens": {str(k): v for k, v in self.concept_tokens.items()},
            "settings": self.settings,
            "cells": self.cells,
            "degenerate_below_distinct": DEGENERATE_DISTINCT,
        }

    def write(self, folder: str | Path) -> dict[str, Path]:
        """sweep.json, and sweep.png when matplotlib is installed."""
        from . import figures

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        made = {"json": out / "sweep.json"}
        made["json"].write_text(json.dumps(self.to_dict(), indent=1, default=_finite))
        if figures.available():
            made["png"] = out / "sweep.png"
            figures.save(figures.steering_sweep(self), made["png"])
        return made


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else str(v)


def _seen(text: str, words: list[str], unsteered: str) -> bool:
    """A concept word (≥ 3 letters) in the steered text that the unsteered text does not have."""
    low, base = text.lower(), unsteered.lower()
    return any(w in low and w not in base for w in {w.strip().lower() for w in words} if len(w) >= 3)


def sweep(
    model: Any,
    prompt: Any,
    concept: Any,
    layers: Sequence[int],
    strengths: Sequence[float],
    *,
    max_new_tokens: int = 24,
    n: int = 2,
    inject: str = "at",
    skip_bos: bool = False,
    concept_tokens: str = "next",
    concept_k: int = 3,
    concept_top: int = 5,
    use_cache: bool = True,
    progress: bool = False,
) -> SweepResult:
    """Steered continuations and their measures for every (layer, strength) (see the module docstring)."""
    from .readout import token_text
    from .steer import generate, jacobian_operator

    if not layers or not strengths:
        raise ValueError("sweep needs at least one layer and one strength")
    bad = [s for s in strengths if not isinstance(s, (int, float)) or not math.isfinite(s)]
    if bad:
        raise ValueError(f"strengths must be finite numbers, got {bad}")
    base = generate(model, prompt, max_new_tokens=max_new_tokens, use_cache=use_cache)
    n_prompt = len(base.tokens) - len(base.new_tokens)
    result = SweepResult(str(prompt), str(concept), base.text, {})
    result.settings = dict(layers=list(layers), strengths=[float(s) for s in strengths], n=n, inject=inject,
                           skip_bos=skip_bos, max_new_tokens=max_new_tokens,
                           concept_tokens=concept_tokens)  # fmt: skip
    jobs = [(layer, s) for layer in layers for s in strengths]
    it: Any = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc="sweep", unit="cell", leave=False)
    ops: dict[int, Any] = {}
    ids: dict[int, list[int]] = {}
    for layer, s in it:
        if layer not in ops:
            ops[layer] = jacobian_operator(model, concept, layer, inject=inject, skip_bos=skip_bos)
            ids[layer] = concept_token_ids(ops[layer], concept_k, concept_top, concept_tokens)
            result.concept_tokens[ops[layer].layer] = [token_text(model, t) for t in ids[layer]]
        op = ops[layer]
        out = generate(model, prompt, steer=op, strength=float(s), max_new_tokens=max_new_tokens,
                       use_cache=use_cache)  # fmt: skip
        gain = logit_gain(model, op, out.tokens, n_prompt, float(s), ids[layer])
        distinct = distinct_n(out.new_tokens, n)
        result.cells.append({
            "layer": op.layer, "strength": float(s), "gain_relative": gain["relative"],
            "gain_raw": gain["raw"], "gain_uniform": gain["uniform"], "distinct": distinct,
            "degenerate": distinct < DEGENERATE_DISTINCT,
            "concept_seen": _seen(out.text, result.concept_tokens[op.layer], base.text),
            "text": out.text, "new_tokens": out.new_tokens,
        })  # fmt: skip
    return result
