"""pylin.report — the analysis of one prompt as report.json, PNG figures and a self-contained report.html.

    data = analyze(model, "The bridge out of Marin is the", out="report/")   # what `pylin analyze` runs

report.json holds every number: tokens, prediction, reconstruction error and R² of the detached Jacobian
(and of the ordinary, nonlinear Jacobian when the model is small enough to differentiate by autograd),
singular values, decoded singular vectors, stable ranks, attributions and the per-layer tables.  Figures
(matplotlib, Agg backend, written only when matplotlib is installed): reconstruction detached vs
nonlinear (the paper's Fig. 2), singular value spectra per token, decoded singular vectors per token
(Fig. 3 style), layer emergence, dimensionality by layer, attribution.  report.html embeds the PNGs as
base64 and the tables as HTML, so the one file can be mailed or committed.  Tests: tests/test_cli.py.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import figures
from .attribution import attribute
from .dimensionality import stable_rank
from .emergence import emergence, parse_layers
from .indices import indices
from .linearization import reconstruction_error
from .svd import svd
from .table import Table

__all__ = ["analyze", "parse_tokens", "write_html"]

# The nonlinear Jacobian costs d_out backward passes of the full model through autograd on dequantized
# float weights: offered automatically only when that stays cheap (d·n·parameters under this many MACs).
NONLINEAR_AUTO_LIMIT = 1e11
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


def _nonlinear(lin: Any, mode: str) -> dict[str, Any] | None:
    """Reconstruction from the ordinary Jacobian (autograd, no detaching), when asked or cheap enough."""
    cfg = lin.model.config
    params = cfg.n_layers * (
        4 * cfg.d_model * cfg.d_model + 3 * cfg.d_model * getattr(cfg, "d_ff", 4 * cfg.d_model)
    )
    if mode == "off" or (mode == "auto" and lin.d_out * lin.n_tokens * params > NONLINEAR_AUTO_LIMIT):
        return None
    J = lin.nonlinear_jacobian()
    y_hat = torch.einsum("onj,nj->o", J.double(), lin.x.double())
    rec = reconstruction_error(y_hat, lin.output, "nonlinear")
    return {"rel_error": rec.rel_error, "r2": rec.r2, "y_hat": y_hat.tolist()}


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
) -> dict[str, Any]:
    """Run every analysis of one prompt; write report.json, figures and report.html into `out` if given.

    keep: a dict to receive the objects behind the numbers, "linearization" and "svd" (pylin.batch
    stores U, S, Vh and, if asked, J from them).
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
    y_hat = rec.y_hat
    nl = _nonlinear(lin, nonlinear)
    steps.step("reconstruction")
    res = svd(lin, k=min(k, lin.d_out), token=token_arg, method=method, seed=seed, progress=progress)
    steps.step("svd")
    if keep is not None:
        keep.update(linearization=lin, svd=res)
    decoded = res.decode(lin, top=top)
    steps.step("decode")
    sr_token = res.token if res.token != "concat" else "concat"
    sr = stable_rank(lin, sr_token, svd_result=res, seed=seed)
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
        )
        if layer_list
        else Table([])
    )
    steps.step("layers")
    steps.close()

    nt = lin.next_token
    data: dict[str, Any] = {
        "pylin_report": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "source": getattr(model, "source", ""),
            "arch": getattr(model, "arch", ""),
            "n_layers": model.n_layers,
            "d_model": model.d_model,
            "dtype": str(lin.dtype).replace("torch.", ""),
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "text": text if isinstance(text, str) else "".join(lin.token_strings),
        "tokens": list(lin.tokens),
        "token_strings": list(lin.token_strings),
        "prediction": {"token_id": int(nt[0]), "token": nt[1], "logit": float(lin.logits[nt[0]])},
        "output_site": lin.output_site.name,
        "wrt": lin.wrt,
        "reconstruction": {
            "detached": {"rel_error": rec.rel_error, "r2": rec.r2, "max_abs_error": rec.max_abs_error},
            "nonlinear": None if nl is None else {"rel_error": nl["rel_error"], "r2": nl["r2"]},
        },
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
        "timings_s": steps.timings,
    }
    if out is not None:
        _write(Path(out), data, lin, y_hat, nl, res, decoded, att, layer_table)
    return data


def _write(out: Path, data: dict[str, Any], lin: Any, y_hat: torch.Tensor, nl: Any, res: Any, decoded: Table,
           att: Any, layer_table: Table) -> None:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, str] = {}
    if figures.available():
        y = lin.output.reshape(-1)
        made = {
            "reconstruction": figures.reconstruction(y, y_hat, None if nl is None else nl["y_hat"], data),
            "spectra": figures.spectra(res, data["token_strings"]),
            "decoded": figures.decoded(decoded, res),
            "attribution": figures.attribution(att),
        }
        if len(layer_table):
            made["emergence"] = figures.emergence(layer_table)
            made["dimensionality"] = figures.dimensionality(layer_table)
        for name, fig in made.items():
            path = out / f"{name}.png"
            figures.save(fig, path)
            pngs[name] = path.name
    data["figures"] = pngs
    (out / "report.json").write_text(json.dumps(_finite(data), indent=1, ensure_ascii=False))
    (out / "report.html").write_text(write_html(data, out, decoded, att.table(), layer_table))


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _table_html(table: Table) -> str:
    if not len(table):
        return "<p><em>(empty)</em></p>"
    cols = table.display
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in table.rows:
        cells = []
        for c in cols:
            v = row.get(c)
            text = (
                ", ".join(str(x) for x in v)
                if isinstance(v, list)
                else (f"{v:.4g}" if isinstance(v, float) else v)
            )
            cells.append(f"<td>{html.escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{html.escape(table.title)}</caption>" if table.title else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html(data: dict[str, Any], folder: Path, decoded: Table, attribution: Table, layers: Table) -> str:
    """report.html: the figures embedded as base64 PNGs, the tables as HTML, no external resources."""
    rec = data["reconstruction"]
    nl = rec["nonlinear"]
    nl_text = "not computed (model too large for autograd)" if nl is None else (
        f"relative error {nl['rel_error']:.3e}, R² = {nl['r2']:.6f}"
    )  # fmt: skip
    imgs = []
    for name, file in data.get("figures", {}).items():
        b64 = base64.b64encode((folder / file).read_bytes()).decode("ascii")
        img = f'<img alt="{name}" src="data:image/png;base64,{b64}">'
        imgs.append(f"<figure>{img}<figcaption>{name}</figcaption></figure>")
    pred = data["prediction"]
    sv = data["svd"]
    sr = data["stable_rank"]["value"]
    sr_text = ", ".join(f"{v:.2f}" for v in sr) if isinstance(sr, list) else f"{sr:.2f}"
    esc = html.escape
    mod = data["model"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pylin report: {esc(data["text"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }}
caption {{ text-align: left; font-weight: bold; padding: 4px 0; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }} code {{ background: #f4f4f4; padding: 0 3px; }}
</style></head><body>
<h1>pylin report</h1>
<p><b>Prompt:</b> <code>{esc(data["text"])}</code> — {len(data["tokens"])} tokens:
{esc(" | ".join(data["token_strings"]))}</p>
<p><b>Model:</b> {esc(str(mod["arch"]))}, {mod["n_layers"]} layers, d = {mod["d_model"]},
{esc(mod["dtype"])} — <code>{esc(str(mod["source"]))}</code></p>
<p><b>Prediction:</b> <code>{esc(pred["token"])}</code> (id {pred["token_id"]}, logit {pred["logit"]:.3f})</p>
<h2>Reconstruction (output {esc(data["output_site"])}, w.r.t. {esc(data["wrt"])})</h2>
<p>Detached Jacobian: Σ_j J_j x*_j reproduces y with relative error {rec["detached"]["rel_error"]:.3e},
R² = {rec["detached"]["r2"]:.9f}.<br>Ordinary (nonlinear) Jacobian: {esc(nl_text)}.</p>
<h2>Singular values and decoded singular vectors</h2>
<p>Top-{sv["k"]} SVD, token = {esc(str(sv["token"]))}, method {esc(sv["method"])} ({sv["jvp_passes"]} JVP and
{sv["vjp_passes"]} VJP passes, block {sv["block_size"]}). Stable rank ‖J‖_F²/‖J‖₂²: {sr_text}.</p>
{_table_html(decoded)}
<h2>Attribution</h2>
{_table_html(attribution)}
<h2>Layers</h2>
{_table_html(layers)}
<h2>Figures</h2>
{"".join(imgs)}
<p><small>Written by pylin on {esc(data["created"])}. Golden 2025, "Large Language Models are Locally Linear
Mappings", arXiv 2505.24293.</small></p>
</body></html>
"""
