"""pylin.layers — where concepts emerge: per layer and component, the Jacobian's top singular vectors decoded.

    table = emergence(model, "The bridge out of Marin is the", layers=[0, 6, 12, 17])
    print(table)                                  # layer, component, σ₁, stable rank, decoded u₀ u₁ u₂
    table = emergence(model, text, token=-1)      # the last token's block instead of the concatenated J
    table = emergence(model, text, layerwise=True)  # each layer w.r.t. its own input

As the seed computes it (JacobianAnalyzer.compute_jacobian_layers_svd, tokens_combined=True): for each
chosen layer i and component c ∈ {resid, attn, mlp}, the output site at the last token is
blocks.i.resid_post, and the attention / MLP branch as the seed takes it — BEFORE the Gemma 3 / OLMo 2
post-norms (blocks.i.attn_pre_norm / mlp_pre_norm, the same as attn_out / mlp_out in other families;
branches="post_norm" takes the branches as added to the residual) — normed through the final norm's frozen
scale (so the left singular vectors read through the LM head like a logit lens), with respect to the
input embeddings, or with layerwise=True to layer i's own input (blocks.i.resid_pre).  Its SVD is of the
CONCATENATED Jacobian [J_1 … J_n] (d × n·d, token="concat"); token=-1 (or any index) takes one block.
Each u is decoded with the seed's sign: the one with ⟨u, y⟩ > 0 for the MODEL's final output y
(sign="final"); sign="site" uses the site's own output.  transform_to_output maps each u of the residual
stream (raw, not normed, as the seed does then) through the Jacobian from layer i + 1's input to the final
output, at the last position, before decoding (the seed's transform_to_output).  The stable rank is
‖J‖_F²/σ₁², exact when J was formed, else Hutch++ with its standard error (pylin.dimensionality).
Tests: tests/test_analysis.py, tests/test_emergence.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .dimensionality import stable_rank
from .indices import index
from .readout import logit_lens, show_token
from .svd import signs_toward, svd
from .table import Table

__all__ = [
    "COMPONENTS",
    "SEED_COMPONENTS",
    "component_site",
    "parse_layers",
    "parse_layer_token",
    "emergence",
]

# The branches as added to the residual stream (after any post-norm) …
COMPONENTS = {"resid": "resid_post", "attn": "attn_out", "mlp": "mlp_out"}
# … and as the seed's model_forward returns them for key="attn" / "mlp": before the post-norm.
SEED_COMPONENTS = {"resid": "resid_post", "attn": "attn_pre_norm", "mlp": "mlp_pre_norm"}


def component_site(model: Any, layer: int, component: str, branches: str = "pre_norm") -> str:
    """The output site of a component: the pre-norm branch where the family has a post-norm
    (branches="pre_norm", the seed's), else the branch as added to the residual."""
    if branches not in ("pre_norm", "post_norm"):
        raise ValueError(f"branches must be 'pre_norm' or 'post_norm', got {branches!r}")
    lw = model.weights.layers[layer]
    post = {"attn": lw.post_attn_norm, "mlp": lw.post_mlp_norm}.get(component)
    table = SEED_COMPONENTS if branches == "pre_norm" and post is not None else COMPONENTS
    return f"blocks.{layer}.{table[component]}"


def parse_layer_token(spec: str | int) -> str | int:
    """The Jacobian block each layer's SVD uses: 'concat' (the seed's tokens_combined), 'last' or an index."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec
    text = str(spec).strip().lower()
    if text == "concat":
        return "concat"
    if text == "last":
        return -1
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"layer token must be 'concat', 'last' or a token index, got {spec!r}") from None


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
    token: int | str = "concat",
    normed: bool = True,
    layerwise: bool = False,
    branches: str = "pre_norm",
    sign: str = "final",
    transform_to_output: bool = False,
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
    token = parse_layer_token(token)
    bad = [c for c in components if c not in COMPONENTS]
    if bad or not components:
        raise ValueError(f"components must be among {', '.join(COMPONENTS)}, got {list(components)}")
    if show > k:
        raise ValueError(f"show ({show}) cannot exceed k ({k})")
    if sign not in ("final", "site"):
        raise ValueError(f"sign must be 'final' (the seed's) or 'site', got {sign!r}")
    y_final = frozen.forward_result.hidden[-1]
    jobs = [(i, c) for i in chosen for c in components]
    it: Any = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc="layers", unit="site", leave=False)
    rows = [
        _row(frozen, i, comp, token, k, show, top, normed, layerwise, branches, sign, transform_to_output,
             y_final, samples, seed)
        for i, comp in it
    ]  # fmt: skip
    display = ["layer", "component", "sigma1", "stable_rank_shown", *[f"u{a}" for a in range(show)]]
    what = "each layer w.r.t. its own input" if layerwise else "w.r.t. the input embeddings"
    block = "concatenated over tokens" if token == "concat" else f"token {token}"
    title = f"emergence: top singular vectors of each layer's Jacobian ({what}, {block}), decoded"
    return Table(rows, display, title)


def _row(frozen: Any, i: int, comp: str, token: int | str, k: int, show: int, top: int, normed: bool,
         layerwise: bool, branches: str, sign: str, transform: bool, y_final: torch.Tensor, samples: int,
         seed: int) -> dict[str, Any]:  # fmt: skip
    model = frozen.model
    site = component_site(model, i, comp, branches)
    wrt = f"blocks.{i}.resid_pre" if layerwise and i > 0 else "embed"
    transform = transform and comp == "resid"  # the seed maps the residual stream's u only
    lin = frozen.at(output=site, wrt=wrt, normed=normed and not transform)
    res = svd(lin, k=k, token=token, seed=seed)
    sr = stable_rank(lin, token, samples=samples, seed=seed, svd_result=res)
    u = res.U.mT[:show]  # (show, d); svd signed each toward the site's own output
    if transform:
        u = _to_output(frozen, i, u)
    if sign == "final" or transform:
        u = u * signs_toward(u.T, y_final)[:, None]
    weight = None if (normed or transform) else getattr(model.weights, "final_norm", None)
    decoded = logit_lens(model, u, top, weight)
    row: dict[str, Any] = {
        "layer": i, "component": comp, "site": site, "wrt": lin.wrt, "normed": lin.normed,
        "token_index": res.tokens[0] if token != "concat" else "concat",
        "sigma": [float(s) for s in res.S], "sigma1": float(res.S[0]),
        "stable_rank": float(sr.value), "stable_rank_stderr": float(sr.stderr),
        "stable_rank_method": sr.method, "frobenius_sq": float(sr.frobenius_sq),
        "stable_rank_shown": f"{sr.value:.2f} ± {sr.stderr:.2f}" if sr.stderr else f"{sr.value:.2f}",
        "sign": "final output y" if sign == "final" or transform else "site output",
        "transformed_to_output": transform,
    }  # fmt: skip
    for a, toks in enumerate(decoded):
        row[f"u{a}"] = [show_token(t) for _, t, _ in toks]
        row[f"u{a}_ids"] = [t for t, _, _ in toks]
    return row


def _to_output(frozen: Any, i: int, u: torch.Tensor) -> torch.Tensor:
    """Each row u (residual after block i, last position) through the detached Jacobian to the final
    (normed) output at the last position; after the last block that is the final norm's frozen scale."""
    model = frozen.model
    n = frozen.n_tokens
    if i == model.n_layers - 1:
        scale = frozen.forward_result.final_norm_scale[-1]
        return (u * scale) * model.weights.final_norm.to(u)
    end = frozen.at(output="final", wrt=f"blocks.{i + 1}.resid_pre", normed=False)
    return end.jvp(u[:, None, :].contiguous().to(end.dtype), tokens=[n - 1])


def trajectory(
    source: Any, text_or_ids: Any = None, *, layers: str | Sequence[int] = "all", token: int | str = "concat",
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The seed's plot_path data: per layer the top-3 left singular vectors of the residual stream's
    (normed) Jacobian, each signed toward the model's output y, and their projections on the last chosen
    layer's; `pylin.figures.concept_trajectory` draws it."""
    frozen = _frozen_state(source, text_or_ids)
    model = frozen.model
    chosen = parse_layers(layers, model.n_layers)
    token = parse_layer_token(token)
    y = frozen.forward_result.hidden[-1]
    vectors, labels = [], []
    for i in chosen:
        lin = frozen.at(output=f"blocks.{i}.resid_post", wrt="embed", normed=True)
        U = svd(lin, k=3, token=token, seed=seed).U
        U = U * signs_toward(U, y)[None, :]
        vectors.append(U.detach())
        labels.append(show_token(logit_lens(model, U[:, 0], 1)[0][0][1]))
    from .figures import trajectory_points

    points = trajectory_points(vectors)
    return {"layers": chosen, "vectors": vectors, "labels": labels, "points": points.tolist()}


def _frozen_state(source: Any, text_or_ids: Any) -> Any:
    """The linearization whose frozen state every site reuses: `source` itself, or one forward pass."""
    if hasattr(source, "at") and hasattr(source, "forward_result"):  # a Linearization
        if text_or_ids is not None:
            raise ValueError("pass either a linearization or a model and a prompt, not both")
        return source
    if text_or_ids is None:
        raise ValueError("emergence(model, text_or_ids): the prompt is missing")
    return source.linearize(text_or_ids)
