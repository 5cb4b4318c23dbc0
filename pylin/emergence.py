"""pylin.layers — where concepts emerge: per layer and component, the Jacobian's top singular vectors decoded.

    table = emergence(model, "The bridge out of Marin is the", layers=[0, 6, 12, 17])
    print(table)                                  # layer, component, σ₁, stable rank, decoded u₀ u₁ u₂
    table = emergence(model, text, layerwise=True)  # each layer w.r.t. its own input

For each chosen layer i and component c ∈ {resid, attn, mlp}, the output site is blocks.i.resid_post /
attn_out / mlp_out at the last token, normed through the final norm's frozen scale (normed=True, as the
paper does, so the left singular vectors read through the LM head like a logit lens), with respect to the
input embeddings — or, with layerwise=True, with respect to layer i's own input (blocks.i.resid_pre: the
Jacobian of that one layer).  Each row carries the top-k singular values of the chosen token's block,
the top tokens of the first left singular vectors, and the stable rank (Hutch++, pylin.dimensionality).
Tests: tests/test_analysis.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .dimensionality import stable_rank
from .indices import index
from .readout import logit_lens, show_token
from .svd import svd
from .table import Table

__all__ = ["COMPONENTS", "parse_layers", "emergence"]

COMPONENTS = {"resid": "resid_post", "attn": "attn_out", "mlp": "mlp_out"}


def parse_layers(spec: str | Sequence[int] | None, n_layers: int) -> list[int]:
    """'auto', 'all', 'none', 'last', '0,4,8', '0:18:3' (a range), or ints (negative from the end)."""
    if spec is None or spec == "none":
        return []
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return list(range(n_layers))
        if text == "last":
            return [n_layers - 1]
        if text == "auto":  # about six evenly spaced layers, always the first and the last
            return (
                sorted({round(i * (n_layers - 1) / 5) for i in range(6)})
                if n_layers > 6
                else list(range(n_layers))
            )
        try:
            if ":" in text:
                parts = [int(p) if p else None for p in text.split(":")]
                items = list(range(n_layers))[slice(*parts)]
            else:
                items = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise ValueError(
                f"cannot read layers {spec!r}; use 'all', 'none', '0,4,8' or 'start:stop:step'"
            ) from None
    else:
        items = list(spec)
    out = list(dict.fromkeys(index(i, n_layers, "layer") for i in items))  # repeats dropped, order kept
    if not out:
        raise ValueError(f"layers {spec!r} selects no layer")
    return out


def emergence(
    source: Any,
    text_or_ids: Any = None,
    *,
    layers: str | Sequence[int] = "all",
    components: Sequence[str] = ("resid", "attn", "mlp"),
    k: int = 4,
    show: int = 3,
    top: int = 3,
    token: int = -1,
    normed: bool = True,
    layerwise: bool = False,
    samples: int = 48,
    seed: int = 0,
    progress: bool = False,
) -> Table:
    """The emergence table (see the module docstring): one row per (layer, component).

    source: a Model (with the prompt as text_or_ids) or a Linearization of the prompt, whose frozen
    state every site then reuses (no second forward pass).
    """
    frozen = _frozen_state(source, text_or_ids)
    model = frozen.model
    chosen = parse_layers(layers, model.n_layers)
    bad = [c for c in components if c not in COMPONENTS]
    if bad or not components:
        raise ValueError(f"components must be among {', '.join(COMPONENTS)}, got {list(components)}")
    if show > k:
        raise ValueError(f"show ({show}) cannot exceed k ({k})")
    jobs = [(i, c) for i in chosen for c in components]
    it: Any = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc="layers", unit="site", leave=False)
    rows = []
    for i, comp in it:
        site = f"blocks.{i}.{COMPONENTS[comp]}"
        wrt = f"blocks.{i}.resid_pre" if layerwise and i > 0 else "embed"
        lin = frozen.at(output=site, wrt=wrt, normed=normed)
        res = svd(lin, k=k, token=token, seed=seed)
        sr = stable_rank(lin, token, samples=samples, seed=seed, svd_result=res)
        u = res.U.mT[:show]  # svd signs each u toward y (svd.signs_toward)
        weight = None if normed else getattr(model.weights, "final_norm", None)
        decoded = logit_lens(model, u, top, weight)
        row: dict[str, Any] = {
            "layer": i,
            "component": comp,
            "site": site,
            "wrt": lin.wrt,
            "normed": lin.normed,
            "token_index": res.tokens[0],
            "sigma": [float(s) for s in res.S],
            "sigma1": float(res.S[0]),
            "stable_rank": float(sr.value),
            "frobenius_sq": float(sr.frobenius_sq),
        }
        for a, toks in enumerate(decoded):
            row[f"u{a}"] = [show_token(t) for _, t, _ in toks]
            row[f"u{a}_ids"] = [t for t, _, _ in toks]
        rows.append(row)
    display = ["layer", "component", "sigma1", "stable_rank", *[f"u{a}" for a in range(show)]]
    what = "each layer w.r.t. its own input" if layerwise else "w.r.t. the input embeddings"
    title = f"emergence: top singular vectors of each layer's Jacobian ({what}), decoded"
    return Table(rows, display, title)


def _frozen_state(source: Any, text_or_ids: Any) -> Any:
    """The linearization whose frozen state every site reuses: `source` itself, or one forward pass."""
    if hasattr(source, "at") and hasattr(source, "forward_result"):  # a Linearization
        if text_or_ids is not None:
            raise ValueError("pass either a linearization or a model and a prompt, not both")
        return source
    if text_or_ids is None:
        raise ValueError("emergence(model, text_or_ids): the prompt is missing")
    return source.linearize(text_or_ids)
