"""pylin.report — the analysis of one prompt: report.json, PNG figures and an interactive report.html.

    data = analyze(model, "The bridge out of Marin is the", out="report/")   # what `pylin analyze` runs
    pylin.report.show(model, "The bridge out of Marin is the")             # the same page, inline in Jupyter

report.json is the complete record (schema: pylin/assets/report.schema.json): tokens, prediction and its
probability, the reconstruction of y by the detached Jacobian and by the ordinary one (the paper's Fig. 2,
both ŷ vectors kept), singular values and decoded singular vectors per token, stable ranks, attributions,
the per-layer emergence table, the freeze audit (what was frozen, how many values, the measured error)
and, for a steering report, the texts and the sweep.  report.html is one offline file built by the shared
page shell (pylin.page): the same JSON embedded, rendered by pylin/assets/report.js; the matplotlib
figures are embedded as PNGs, drawn from the same numbers.  Tests: tests/test_report.py,
tests/test_report_browser.py, tests/test_cli.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import io
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import figures, page
from .attribution import attribute
from .dimensionality import stable_rank
from .emergence import emergence, parse_layers
from .indices import indices
from .linearization import Reconstruction, reconstruction_error
from .svd import svd
from .table import Table

__all__ = ["analyze", "nonlinear_reconstruction", "parse_tokens", "render_page", "show", "steering_report",
           "write_report"]  # fmt: skip

# The ordinary (nonlinear) Jacobian's reconstruction Σ_j J_j x*_j = J·X* is ONE forward-mode JVP with X* as
# tangent (torch.func.jvp over pylin.reference's differentiable forward, detach=False), not d_out
# backward passes.  Its cost, measured by bench/nonlinear.py on the 2-core dev VM under load (load average
# ~13; Gemma 3 270M Q4_K_M, 1.0e8 layer weights): dequantizing + JVP 4.6 s at 7 tokens, 5.2 s at 32, 41 s at
# 130 (autograd's full ordinary Jacobian: 44 s and 276 s at 7 and 32 tokens); not linear in the tokens
# (short prompts are bound by passes over the float weights).  The estimate below is an upper bound of
# those runs: 4e-8 s per layer weight plus 1.2e-9 s per multiply-add of the JVP (3 · weights · tokens),
# i.e. 6.5 s, 15.5 s and 51 s.  "auto" computes the contrast when the estimate stays under
# NONLINEAR_AUTO_SECONDS (Gemma 3 270M: up to ~70 tokens) and the float copy of the layers under
# NONLINEAR_MAX_BYTES, and says why when it does not.
NONLINEAR_AUTO_SECONDS = 30.0
NONLINEAR_MAX_BYTES = 4 << 30
SECONDS_PER_LAYER_WEIGHT = 4e-8
SECONDS_PER_JVP_MAC = 1.2e-9
# Singular triplets per (layer, component) in the layer table: the emergence figure shows three decoded
# vectors; one more keeps the third's σ gap visible.  Each extra triplet costs a wider Krylov block.
LAYER_TABLE_K = 4


def parse_tokens(spec: str | int | list[int], n_tokens: int) -> int | str | list[int]:
    """'-1' / '3' (one token), 'all', 'concat', or '0,3,-1' (a list) → the svd `token` argument."""
    if isinstance(spec, str) and spec.strip().lower() in ("all", "concat"):
        return spec.strip().lower()
    chosen = indices(spec, n_tokens, "token")
    return chosen[0] if len(chosen) == 1 and not isinstance(spec, list) else chosen


class _Steps:
    """A progress bar over the analysis steps (tqdm), or nothing."""

    def __init__(self, names: list[str], progress: bool) -> None:
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(names), desc="analyze", unit="step")
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._t, 4)
        self._t = now
        if self.bar is not None:
            self.bar.set_postfix_str(name)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def layer_weights(model: Any) -> int:
    """Weights of every layer's linear maps (what pylin.reference dequantizes for the ordinary Jacobian)."""
    from .model import LINEAR_FIELDS

    total = 0
    for lw in model.weights.layers:
        for name in LINEAR_FIELDS:
            w = getattr(lw, name, None)
            if w is not None:
                total += math.prod(w.shape)
    return total


def nonlinear_cost(lin: Any) -> dict[str, float]:
    """The estimated seconds and bytes of the ordinary Jacobian's reconstruction (see the constants)."""
    weights = layer_weights(lin.model)
    itemsize = torch.finfo(lin.dtype).bits // 8
    seconds = weights * SECONDS_PER_LAYER_WEIGHT + 3 * weights * lin.n_tokens * SECONDS_PER_JVP_MAC
    return {"seconds": seconds, "bytes": float(weights * itemsize), "weights": float(weights)}


def nonlinear_skip_reason(lin: Any, mode: str) -> str | None:
    """Why "auto" (or "off") does not compute the ordinary Jacobian's reconstruction; None: compute it."""
    if mode == "off":
        return "--nonlinear off"
    if mode == "on":
        return None
    cost = nonlinear_cost(lin)
    if cost["bytes"] > NONLINEAR_MAX_BYTES:
        return (f"a float copy of the layers needs {cost['bytes'] / 2**30:.1f} GiB "
                f"(auto limit {NONLINEAR_MAX_BYTES / 2**30:.0f} GiB; --nonlinear on forces it)")  # fmt: skip
    if cost["seconds"] > NONLINEAR_AUTO_SECONDS:
        return (f"estimated {cost['seconds']:.0f} s (auto limit {NONLINEAR_AUTO_SECONDS:.0f} s; "
                "--nonlinear on forces it)")  # fmt: skip
    return None


def nonlinear_reconstruction(lin: Any) -> Reconstruction:
    """Σ_j J_j x*_j with J the ORDINARY Jacobian (nothing detached) against y: the paper's Fig. 2 contrast.

    One forward-mode JVP, tangent X*, through pylin.reference's forward on dequantized weights; y is that
    forward's own output (the engine's y agrees to rounding)."""
    from . import reference

    f = reference.site_function(lin.model, lin.output_site.name, lin.wrt, normed=lin.normed, detach=False,
                                dtype=lin.dtype)  # fmt: skip
    x = reference.site_input(lin.model, lin.tokens, lin.wrt, lin.dtype).to(lin.x.device)
    y, y_hat = torch.func.jvp(f, (x,), (x,))
    return reconstruction_error(y_hat.detach().reshape(-1), y.detach().reshape(-1), "ordinary jvp")


# Tokens whose rows the static PNG figures (spectra, decoded) show: the page's token strip has them all,
# and a figure row per token of a 128-token prompt would be a 6000-pixel image.
FIGURE_TOKENS = 24
# The page shows each PNG at its pixel size (up to the page width): 110 dpi makes matplotlib's 6-8 pt labels
# 9-12 px, readable without zooming.
FIGURE_DPI = 110
# Significant digits of the y / ŷ vectors kept for the scatter (float32 carries ~7).
VECTOR_DIGITS = 7


def _vector(t: torch.Tensor) -> list[float]:
    return [float(f"{v:.{VECTOR_DIGITS}g}") for v in t.detach().double().reshape(-1).cpu().tolist()]


def freeze_audit(lin: Any, rel_error: float) -> dict[str, Any]:
    """What the linear system rests on: the coefficients frozen at X* (counted from the forward's own
    records, over the layers between the input and the output site), and the measured error."""
    layers = range(lin.input_site.layer, lin.output_site.layer + 1)
    records = [lin.records[i] for i in layers]
    scales = ("attn_norm_scale", "post_attn_norm_scale", "mlp_norm_scale", "post_mlp_norm_scale")
    norms = [f.replace("_scale", "") for f in scales if getattr(records[0], f) is not None]
    n_scales = sum(getattr(r, f).numel() for r in records for f in scales if getattr(r, f) is not None)
    if lin.output_site.kind in ("final", "logit") and lin.forward_result.final_norm_scale is not None:
        norms.append("final_norm (last token)")
        n_scales += 1
    elif lin.normed:
        norms.append("final_norm applied to the site (last token)")
        n_scales += 1
    qk = getattr(lin.model.weights.layers[0], "q_norm", None) is not None
    act = getattr(lin.model.config, "activation", "")
    return {
        "layers": [layers.start, layers.stop - 1],
        "frozen": [
            {"what": "RMSNorm scales r = rsqrt(mean(x²)+ε) of " + ", ".join(norms), "count": n_scales},
            {"what": f"activated MLP gates {act}(x W_gᵀ)", "count": sum(r.mlp_gate.numel() for r in records)},
            {
                "what": "attention probabilities softmax(QKᵀ·s + mask)"
                + (" (q/k norms inside)" if qk else ""),
                "count": sum(r.attn_probs.numel() for r in records),
            },
        ],  # fmt: skip
        "linear_in": "products with W_v, W_o, W_up, W_down and the norm weights",
        "rel_error": rel_error,
    }


def analyze(
    model: Any,
    text: str | list[int],
    *,
    k: int = 8,
    tokens: str | int | list[int] = "all",
    layers: str | list[int] = "auto",
    out: str | Path | None = None,
    method: str = "auto",
    top: int = 5,
    nonlinear: str = "auto",
    components: tuple[str, ...] = ("resid", "attn", "mlp"),
    seed: int = 0,
    progress: bool = True,
    keep: dict[str, Any] | None = None,
    layer_token: str | int = "concat",
    draw: bool | None = None,
) -> dict[str, Any]:
    """Run every analysis of one prompt; write report.json, figures and report.html into `out` if given.

    nonlinear: "auto" computes the ordinary Jacobian's reconstruction when its estimated cost is small
    (`nonlinear_skip_reason`; the reason is kept in data["reconstruction"]["nonlinear_skipped"]).
    keep: a dict to receive the objects behind the numbers, "linearization" and "svd" (pylin.batch
    stores U, S, Vh and, if asked, J from them) and "figures" (name → PNG bytes).
    draw: whether to draw the matplotlib figures (default: when writing `out`; a batch row skips them).
    """
    if nonlinear not in ("auto", "on", "off"):
        raise ValueError(f"nonlinear must be 'auto', 'on' or 'off', got {nonlinear!r}")
    layer_list = parse_layers(layers, model.n_layers)
    steps = _Steps(
        ["linearize", "reconstruction", "svd", "decode", "dimensionality", "attribution", "layers"], progress
    )
    lin = model.linearize(text)
    token_arg = parse_tokens(tokens, lin.n_tokens)
    steps.step("linearize")
    rec = lin.reconstruction()
    skipped = nonlinear_skip_reason(lin, nonlinear)
    nl = nonlinear_reconstruction(lin) if skipped is None else None
    steps.step("reconstruction")
    res = svd(lin, k=min(k, lin.d_out), token=token_arg, method=method, seed=seed, progress=progress)
    steps.step("svd")
    if keep is not None:
        keep.update(linearization=lin, svd=res)
    decoded = res.decode(lin, top=top)
    steps.step("decode")
    sr = stable_rank(lin, res.token, svd_result=res, seed=seed)
    steps.step("dimensionality")
    att = attribute(lin)
    steps.step("attribution")
    layer_table = (
        emergence(
            lin,
            layers=layer_list,
            components=components,
            k=min(LAYER_TABLE_K, k),
            token=layer_token,
            seed=seed,
            progress=progress,
        )  # fmt: skip
        if layer_list
        else Table([])
    )
    steps.step("layers")
    steps.close()

    nt = lin.next_token
    probability = float(torch.softmax(lin.logits.double(), dim=-1)[nt[0]])
    data: dict[str, Any] = {
        "pylin_report": 2,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "source": str(getattr(model, "source", "")),
            "arch": str(getattr(model, "arch", "")),
            "n_layers": model.n_layers,
            "d_model": model.d_model,
            "dtype": str(lin.dtype).replace("torch.", ""),
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },  # fmt: skip
        "text": text if isinstance(text, str) else "".join(lin.token_strings),
        "tokens": list(lin.tokens),
        "token_strings": list(lin.token_strings),
        "prediction": {
            "token_id": int(nt[0]),
            "token": nt[1],
            "logit": float(lin.logits[nt[0]]),
            "probability": probability,
        },  # fmt: skip
        "output_site": lin.output_site.name,
        "wrt": lin.wrt,
        "reconstruction": {
            "y": _vector(lin.output),
            "detached": {
                "rel_error": rec.rel_error,
                "r2": rec.r2,
                "max_abs_error": rec.max_abs_error,
                "y_hat": _vector(rec.y_hat),
            },  # fmt: skip
            "nonlinear": None
            if nl is None
            else {
                "rel_error": nl.rel_error,
                "r2": nl.r2,
                "max_abs_error": nl.max_abs_error,
                "y_hat": _vector(nl.y_hat),
            },
            "nonlinear_skipped": skipped,
        },  # fmt: skip
        "svd": {
            "k": res.k,
            "token": res.token,
            "tokens": res.tokens,
            "method": res.method,
            "block_size": res.block_size,
            "iterations": res.iterations,
            "jvp_passes": res.n_jvp,
            "vjp_passes": res.n_vjp,
            "converged": res.converged,
            "singular_values": res.S.tolist(),
        },
        "decoded": decoded.to_dicts(),
        "stable_rank": {"value": sr.value, "frobenius_sq": sr.frobenius_sq, "spectral_sq": sr.spectral_sq},
        "attribution": att.to_dict(),
        "layers": layer_table.to_dicts(),
        "freeze_audit": freeze_audit(lin, rec.rel_error),
        "steering": None,
        "timings_s": steps.timings,
    }
    draw = out is not None if draw is None else draw
    pngs = _figures(data, lin, rec.y_hat, nl, res, decoded, att, layer_table) if draw else {}
    data["figures"] = {name: f"{name}.png" for name in pngs}
    data = _finite(data)
    if keep is not None:
        keep["figures"] = pngs
    if out is not None:
        write_report(out, data, pngs)
    return data


def _figures(data: dict[str, Any], lin: Any, y_hat: torch.Tensor, nl: Reconstruction | None, res: Any,
             decoded: Table, att: Any, layer_table: Table) -> dict[str, bytes]:  # fmt: skip
    """The matplotlib figures as PNG bytes (none when matplotlib is missing)."""
    if not figures.available():
        return {}
    shown = res
    if res.stacked and len(res.tokens) > FIGURE_TOKENS:  # the last FIGURE_TOKENS tokens' blocks
        shown = dataclasses.replace(res, S=res.S[-FIGURE_TOKENS:], tokens=res.tokens[-FIGURE_TOKENS:])
    keep = set(shown.tokens) | {"all"}
    table = Table([r for r in decoded.rows if r["token_index"] in keep], decoded.display, decoded.title)
    made = {
        "reconstruction": figures.reconstruction(lin.output.reshape(-1), y_hat,
                                                 None if nl is None else nl.y_hat.tolist(), data),
        "spectra": figures.spectra(shown, data["token_strings"]),
        "decoded": figures.decoded(table, shown),
        "attribution": figures.attribution(att),
    }  # fmt: skip
    if len(layer_table):
        made["emergence"] = figures.emergence(layer_table)
        made["dimensionality"] = figures.dimensionality(layer_table)
    return {name: _png(fig) for name, fig in made.items()}


def _png(fig: Any) -> bytes:
    """A figure as PNG bytes at FIGURE_DPI (figures.save's 80 dpi draws the 6-pt token labels 7 px tall)."""
    import warnings

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # tokens in scripts DejaVu Sans lacks render as boxes (as figures.save)
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_report(out: str | Path, data: dict[str, Any], pngs: dict[str, bytes]) -> Path:
    """Write report.json, the PNGs and report.html into the folder `out`; return report.html's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        (out / f"{name}.png").write_bytes(png)
    (out / "report.json").write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    path = out / "report.html"
    path.write_text(render_page(data, pngs), encoding="utf-8")
    return path


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


FIGURE_CAPTIONS = {
    "reconstruction": "reconstruction of y: detached vs ordinary Jacobian (the paper's Fig. 2)",
    "spectra": "singular values of the Jacobian blocks J_j",
    "decoded": "decoded singular vectors per token (Fig. 3 style): top token of +u / nearest input of v",
    "attribution": "each token's share ⟨J_j x*_j, y⟩/‖y‖² of the output",
    "emergence": "emergence: top tokens of each layer's left singular vectors (residual stream)",
    "dimensionality": "stable rank of each layer's Jacobian",
}


def _noscript(data: dict[str, Any]) -> str:
    """What a viewer without JavaScript sees (e.g. a code host's preview): the gist as static HTML."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{r['index']}</td><td><code>{esc(str(r['token']))}</code></td><td>{r['share']:.4g}</td></tr>"
        for r in data["attribution"]["rows"]
    )
    det = data["reconstruction"]["detached"]
    return (
        f"<noscript><p>This page draws itself with JavaScript; report.json holds every number. Prompt "
        f"<code>{esc(data['text'])}</code> → <code>{esc(data['prediction']['token'])}</code>; detached "
        f"reconstruction relative error {det['rel_error']:.3e}.</p><table><thead><tr><th>token</th><th>text"
        f"</th><th>attribution share</th></tr></thead><tbody>{rows}</tbody></table></noscript>"
    )


NO_FIGURES = '<p class="muted">(no figures: matplotlib missing)</p>'


def render_page(data: dict[str, Any], pngs: dict[str, bytes] | None = None) -> str:
    """report.html as a string: the skeleton report.js fills from the embedded JSON, plus the PNGs."""
    pngs = pngs or {}
    figs = "".join(page.figure_png(png, name, FIGURE_CAPTIONS.get(name, name)) for name, png in pngs.items())
    body = f"""<main id="pylin-report">
<svg id="svg-namespace" width="0" height="0" aria-hidden="true"></svg>
<h1>pylin report</h1>
{_noscript(data)}
<section id="summary"></section>
<section id="reconstruction"><h2>Reconstruction: detached vs ordinary Jacobian</h2></section>
<section id="tokens"><h2>Input tokens</h2>
<p class="muted">Coloured by attribution share (blue: toward y, red: against). Click a token (or use the arrow
keys) to see its Jacobian block's singular values and decoded singular vectors.</p>
<div id="token-strip" class="strip"></div><div id="token-panel" class="panel"></div></section>
<section id="emergence"><h2>Emergence by layer</h2>
<p class="muted">Layers × singular index: the top token of each left singular vector through the logit lens,
shaded by σ_i/σ_1.</p>
<div id="component-switch" class="switch"></div><div id="emergence-grid" class="scroll"></div>
<div id="stable-rank"></div></section>
<section id="steering" hidden><h2>Steering</h2></section>
<section id="figures"><h2>Figures</h2>{figs or NO_FIGURES}</section>
<section id="tables"><h2>Tables</h2>
{page.details("decoded singular vectors (every token, every triplet)", "", id="table-decoded")}
{page.details("attribution", "", id="table-attribution")}
{page.details("layers (emergence table)", "", id="table-layers")}
</section>
</main>"""
    return page.page(f"pylin report: {data['text']}", body, data=data, scripts=["report.js"])


class ReportView:
    """The interactive report inline in a notebook: an <iframe srcdoc> holding the whole page (its
    script and styles stay inside, so the notebook's own CSS and JS cannot clash with them)."""

    def __init__(self, data: dict[str, Any], pngs: dict[str, bytes] | None = None, height: int = 900) -> None:
        self.data, self.pngs, self.height = data, pngs or {}, height

    def html(self) -> str:
        return render_page(self.data, self.pngs)

    def _repr_html_(self) -> str:
        style = f"width:100%;height:{self.height}px;border:1px solid #ddd"
        srcdoc = html.escape(self.html(), quote=True)
        return f'<iframe srcdoc="{srcdoc}" style="{style}" sandbox="allow-scripts"></iframe>'

    def __repr__(self) -> str:
        d = self.data
        return (f"ReportView({d['text']!r} -> {d['prediction']['token']!r}, {len(d['tokens'])} tokens, "
                f"{len(d['layers'])} layer rows; display it in a notebook or .html())")  # fmt: skip


def show(source: Any, text: str | list[int] | None = None, **analyze_kwargs: Any) -> ReportView:
    """The interactive report for a notebook: `show(model, text)` (runs `analyze`), `show(lin)` (its model
    and tokens), `show(data)` (a dict from `analyze`) or `show("pylin-report/")` (a report folder or its
    report.json; the folder's PNGs are embedded too)."""
    if isinstance(source, dict):
        return ReportView(source)
    if isinstance(source, (str, Path)) and text is None:
        path = Path(source)
        folder = path if path.is_dir() else path.parent
        data = json.loads((folder / "report.json" if path.is_dir() else path).read_text(encoding="utf-8"))
        pngs = {
            n: (folder / f).read_bytes() for n, f in data.get("figures", {}).items() if (folder / f).is_file()
        }
        return ReportView(data, pngs)
    if hasattr(source, "forward_result") and text is None:  # a Linearization
        source, text = source.model, list(source.tokens)
    if text is None:
        raise ValueError("show(model, text): the prompt is missing")
    keep: dict[str, Any] = {}
    analyze_kwargs.setdefault("progress", False)
    data = analyze(source, text, keep=keep, draw=True, **analyze_kwargs)
    return ReportView(data, keep.get("figures"))


def steering_report(
    model: Any,
    concept: str | list[int],
    prompt: str | list[int],
    layer: int | None = None,
    *,
    strength: float = 1.0,
    max_new_tokens: int = 20,
    inject: str = "at",
    skip_bos: bool = False,
    sweep_layers: list[int] | None = None,
    sweep_strengths: list[float] | None = None,
    out: str | Path | None = None,
    **analyze_kwargs: Any,
) -> dict[str, Any]:
    """The report of a steering run (what `pylin steer --out` writes): the analysis of the concept prompt,
    plus data["steering"]: the unsteered and steered continuations and, when sweep_layers and
    sweep_strengths are given, pylin.steer.sweep's grid (layers × λ: each steered text, the concept
    tokens' logit gain relative to the vocabulary mean, distinct-2)."""
    from . import steer

    keep: dict[str, Any] = {}
    analyze_kwargs.setdefault("progress", False)
    data = analyze(model, concept, keep=keep, draw=out is not None, **analyze_kwargs)
    base = steer.generate(model, prompt, max_new_tokens=max_new_tokens)
    op = steer.jacobian_operator(model, concept, layer, inject=inject, skip_bos=skip_bos)
    steered = steer.generate(model, prompt, steer=op, strength=strength, max_new_tokens=max_new_tokens)
    section: dict[str, Any] = {
        "concept": _text(model, concept),
        "prompt": _text(model, prompt),
        "layer": op.layer,
        "inject_layer": op.inject_layer,
        "inject": inject,
        "skip_bos": skip_bos,
        "strength": strength,
        "max_new_tokens": max_new_tokens,
        "unsteered": base.text,
        "steered": steered.text,
        "sweep": None,
    }
    if sweep_layers and sweep_strengths:
        grid = steer.sweep(model, prompt, concept, sweep_layers, sweep_strengths,
                           max_new_tokens=max_new_tokens, inject=inject, skip_bos=skip_bos)  # fmt: skip
        section["sweep"] = _sweep_section(grid)
    data["steering"] = section
    if out is not None:
        write_report(out, data, keep.get("figures", {}))
    return data


def _sweep_section(grid: Any) -> dict[str, Any]:
    """A SweepResult as the page's layers × λ grid (cells come layer-major, as sweep runs them)."""
    strengths = grid.settings["strengths"]
    rows = [grid.cells[i : i + len(strengths)] for i in range(0, len(grid.cells), len(strengths))]
    return {
        "layers": [row[0]["layer"] for row in rows],
        "strengths": strengths,
        "texts": [[c["text"] for c in row] for row in rows],
        "values": [[c["gain_relative"] for c in row] for row in rows],
        "distinct": [[c["distinct"] for c in row] for row in rows],
        "metric": "concept tokens' logit gain minus the vocabulary's mean gain",
    }


def _text(model: Any, text_or_ids: str | list[int]) -> str:
    from .readout import token_text

    return text_or_ids if isinstance(text_or_ids, str) else "".join(token_text(model, t) for t in text_or_ids)
