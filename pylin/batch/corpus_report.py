"""report.html of a batch: the corpus at a glance, one self-contained offline file.

    write_report("runs/a", table)   # -> runs/a/report.html (+ runs/a/figures/*.png, embedded as base64)

Sections: the run (models, prompts, settings, errors); the distribution of the detached Jacobian's
reconstruction error per model; the stable rank by layer and component across prompts (median and
interquartile range); the most frequent decoded concepts per layer (the tokens of u₀ through the logit
lens, counted over prompts); the cross-model comparison when several models ran (summary, pairwise
agreement of the predictions, stable rank against relative depth); the rows that failed; the prompts.
Figures: matplotlib (a core dependency); without it the page has the tables only.
The page shell is pylin.page's, shared with the single-prompt report.html.
Tests: tests/test_batch.py.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .compare import cross_model_table, last_block

__all__ = ["write_report"]

CONCEPTS_SHOWN = 8  # most frequent tokens listed per (layer, component)
PROMPTS_SHOWN = 200  # rows of the prompt table (the parquet file has them all)
_esc = html.escape


def write_report(out: str | Path, table: pa.Table) -> Path:
    """Write out/report.html for `table` (results.parquet's rows) and return its path."""
    out = Path(out)
    rows = table.to_pylist()
    figs = _Figures(out / "figures")
    models = list(dict.fromkeys(r["model"] for r in rows))
    sections = [
        ("Run", _run_section(rows, models)),
        ("Reconstruction error", _reconstruction_section(rows, models, figs)),
        ("Stable rank by layer", _stable_rank_section(rows, models, figs)),
        ("Decoded concepts per layer", _concepts_section(rows, models)),
    ]
    if len(models) > 1:
        sections.append(("Cross-model comparison", _cross_section(table, rows, models, figs)))
    sections.append(("Errors", _errors_section(rows)))
    sections.append(("Prompts", _prompts_section(rows)))
    path = out / "report.html"
    tmp = out / ".tmp-report.html"
    tmp.write_text(
        _page(f"pylin batch: {len(rows)} rows, {len(models)} model(s)", sections), encoding="utf-8"
    )
    tmp.replace(path)
    return path


def _page(title: str, sections: list[tuple[str, str]]) -> str:
    """The sections in the shared page shell (pylin.page, the single-prompt report's too): a title, a
    table of contents and the sections (html strings)."""
    from ..page import PAPER, page

    toc = " · ".join(f'<a href="#s{i}">{_esc(name)}</a>' for i, (name, _) in enumerate(sections))
    body = "\n".join(
        f'<section id="s{i}"><h2>{_esc(name)}</h2>\n{content}</section>'
        for i, (name, content) in enumerate(sections)
    )
    return page(
        title, f"<h1>{_esc(title)}</h1>\n<nav>{toc}</nav>\n{body}", footer=f"Written by pylin batch. {PAPER}."
    )


# ---- small helpers --------------------------------------------------------------------------------------


def _table(head: list[str], body: list[list[Any]], caption: str = "") -> str:
    if not body:
        return "<p><em>(none)</em></p>"
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table>{cap}<thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    return str(v)


def _ok(rows: list[dict[str, Any]], model: str | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if r["error"] is None and (model is None or r["model"] == model)]


def _quantiles(values: list[float]) -> list[float | None]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return [None] * 5
    return [float(x) for x in np.quantile(v, [0.0, 0.25, 0.5, 0.9, 1.0])]


class _Figures:
    """PNG figures written to figures/ and embedded in the page as base64 (matplotlib, if installed)."""

    def __init__(self, folder: Path) -> None:
        from .. import figures

        self.enabled = figures.available()
        self.folder = folder

    def new(self, width: float = 7.0, height: float = 3.6) -> Any:
        import matplotlib.pyplot as plt

        return plt.subplots(figsize=(width, height))

    def embed(self, fig: Any, name: str, caption: str) -> str:
        import matplotlib.pyplot as plt

        from .. import figures

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        figures.save(fig, path)
        plt.close(fig)
        from ..page import figure_png

        return figure_png(path.read_bytes(), name, caption)


# ---- sections --------------------------------------------------------------------------------------------


def _run_section(rows: list[dict[str, Any]], models: list[str]) -> str:
    body = []
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        errors = sum(r["error"] is not None for r in mine)
        arch = next((r["arch"] for r in mine if r["arch"]), "")
        elapsed = [r["elapsed_s"] for r in mine if r["error"] is None and r["elapsed_s"] is not None]
        per_row = float(np.median(elapsed)) if elapsed else None
        body.append([m, arch, len(mine), errors, per_row, mine[0]["model_path"] if mine else ""])
    settings = sorted({r["settings"] for r in rows})
    shown = "".join(f"<li><code>{_esc(s)}</code></li>" for s in settings)
    return (
        _table(["model", "arch", "rows", "errors", "median s/row", "path"], body)
        + f"<p>Settings ({len(settings)}):</p><ul>{shown}</ul>"
    )


def _reconstruction_section(rows: list[dict[str, Any]], models: list[str], figs: _Figures) -> str:
    body, fig_html = [], ""
    for m in models:
        q = _quantiles([r["rel_error"] for r in _ok(rows, m)])
        r2 = _quantiles([r["r2"] for r in _ok(rows, m)])
        body.append([m, len(_ok(rows, m)), *q, r2[0]])
    if figs.enabled and _ok(rows):
        fig, ax = figs.new()
        for m in models:
            v = np.asarray([r["rel_error"] for r in _ok(rows, m) if r["rel_error"]], dtype=np.float64)
            v = v[np.isfinite(v) & (v > 0)]
            if len(v):
                ax.hist(np.log10(v), bins=min(40, max(5, len(v) // 2)), alpha=0.6, label=m)
        ax.set_xlabel("log10 relative error of Σ_j J_j x*_j against y")
        ax.set_ylabel("prompts")
        ax.legend(fontsize=7)
        fig_html = figs.embed(fig, "reconstruction_error", "reconstruction error over the prompts")
    head = ["model", "prompts", "min", "25%", "median", "90%", "max", "min R²"]
    return (
        "<p>Relative error of the detached Jacobian's reconstruction of the output.</p>"
        + _table(head, body)
        + fig_html
    )


def _layer_stats(rows: list[dict[str, Any]]) -> dict[tuple[int, str], list[float]]:
    stats: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in rows:
        for entry in r["layers"] or []:
            if entry["stable_rank"] is not None:
                stats[(entry["layer"], entry["component"])].append(entry["stable_rank"])
    return stats


def _stable_rank_section(rows: list[dict[str, Any]], models: list[str], figs: _Figures) -> str:
    parts = []
    for m in models:
        stats = _layer_stats(_ok(rows, m))
        if not stats:
            parts.append(f"<p>{_esc(m)}: no layer table (run with --layers).</p>")
            continue
        body = []
        for (layer, comp), v in sorted(stats.items()):
            q = _quantiles(v)
            body.append([layer, comp, len(v), q[2], q[1], q[3]])
        parts.append(_table(["layer", "component", "prompts", "median", "25%", "90%"], body, caption=m))
        if figs.enabled:
            fig, ax = figs.new()
            for comp in sorted({c for _, c in stats}):
                layers = sorted(l for l, c in stats if c == comp)
                qs = np.array([np.quantile(stats[(l, comp)], [0.25, 0.5, 0.75]) for l in layers])
                ax.plot(layers, qs[:, 1], marker="o", label=comp)
                ax.fill_between(layers, qs[:, 0], qs[:, 2], alpha=0.2)
            ax.set_xlabel("layer")
            ax.set_ylabel("stable rank ‖J‖_F²/‖J‖₂²")
            ax.set_title(m, fontsize=9)
            ax.legend(fontsize=7)
            name = f"stable_rank_{models.index(m)}"
            parts.append(figs.embed(fig, name, f"{m}: stable rank by layer (median, 25–75% band)"))
    return "".join(parts)


def _concepts_section(rows: list[dict[str, Any]], models: list[str]) -> str:
    parts = [
        "<p>Tokens of the top left singular vector u₀ of each layer's Jacobian through the logit lens, "
        "counted over prompts (a token counts once per prompt).</p>"
    ]
    for m in models:
        counts: dict[tuple[Any, str], Counter[str]] = defaultdict(Counter)
        for r in _ok(rows, m):
            for entry in r["layers"] or []:
                if entry["decoded"]:
                    counts[(entry["layer"], entry["component"])].update(set(entry["decoded"][0] or []))
            last = [d for d in r["decoded"] or [] if d["i"] == 0]
            if last and last[-1]["output"]:
                counts[("output", "final")].update(set(last[-1]["output"]))
        body = [
            [layer, comp, ", ".join(f"{t} ({n})" for t, n in c.most_common(CONCEPTS_SHOWN))]
            for (layer, comp), c in sorted(counts.items(), key=lambda kv: (str(kv[0][0]).zfill(6), kv[0][1]))
        ]
        parts.append(_table(["layer", "component", "most frequent tokens (prompts)"], body, caption=m))
    return "".join(parts)


def _cross_section(table: pa.Table, rows: list[dict[str, Any]], models: list[str], figs: _Figures) -> str:
    body = []
    for m in models:
        ok = _ok(rows, m)
        sig = [last_block(r["sigma"])[0] for r in ok if last_block(r["sigma"])]
        sr = [last_block(r["stable_rank"]) for r in ok if r["stable_rank"]]
        rel = _quantiles([r["rel_error"] for r in ok])[2]
        body.append(
            [m, len(ok), rel, float(np.median(sig)) if sig else None, float(np.median(sr)) if sr else None]
        )
    parts = [
        _table(
            ["model", "prompts", "median rel. error", "median σ₁ (last token)", "median stable rank"], body
        )
    ]
    wide = cross_model_table(table)
    if wide is not None:
        cols = {m: wide[f"{m}:prediction"].to_pylist() for m in models}
        errs = {m: wide[f"{m}:error"].to_pylist() for m in models}
        matrix = []
        for a in models:
            line: list[Any] = [a]
            for b in models:
                pairs = [
                    (x, y)
                    for x, y, ea, eb in zip(cols[a], cols[b], errs[a], errs[b], strict=True)
                    if ea is None and eb is None and x is not None and y is not None
                ]
                line.append(sum(x == y for x, y in pairs) / len(pairs) if pairs else None)
            matrix.append(line)
        parts.append(
            _table(
                ["same prediction", *models],
                matrix,
                caption="fraction of prompts where the models predict the same next token",
            )
        )
    curves = {}
    for m in models:
        stats = _layer_stats(_ok(rows, m))
        layers = sorted(l for l, c in stats if c == "resid")
        if len(layers) > 1:
            curves[m] = ([l / max(layers) for l in layers], [np.median(stats[(l, "resid")]) for l in layers])
    if figs.enabled and curves:
        fig, ax = figs.new()
        for m, (depth, median) in curves.items():
            ax.plot(depth, median, marker="o", label=m)
        ax.set_xlabel("relative depth (layer / last layer analysed)")
        ax.set_ylabel("median stable rank (resid)")
        ax.legend(fontsize=7)
        parts.append(
            figs.embed(fig, "cross_model_stable_rank", "stable rank of the residual stream by depth")
        )
    return "".join(parts)


def _errors_section(rows: list[dict[str, Any]]) -> str:
    bad = [[r["model"], r["id"], r["prompt"][:80], r["error"]] for r in rows if r["error"] is not None]
    return _table(["model", "id", "prompt", "error"], bad)


def _prompts_section(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows[:PROMPTS_SHOWN]:
        sig = last_block(r["sigma"])
        meta = json.loads(r["metadata"]) if r["metadata"] else {}
        body.append(
            [
                r["model"],
                r["id"],
                r["prompt"][:120],
                r["n_tokens"],
                r["prediction"],
                r["rel_error"],
                sig[0] if sig else None,
                last_block(r["stable_rank"]),
                ", ".join(f"{k}={v}" for k, v in meta.items()),
                r["error"] or "",
            ]
        )
    more = (
        f"<p>First {PROMPTS_SHOWN} of {len(rows)} rows; all are in results.parquet.</p>"
        if len(rows) > PROMPTS_SHOWN
        else ""
    )
    head = [
        "model",
        "id",
        "prompt",
        "tokens",
        "prediction",
        "rel. error",
        "σ₁",
        "stable rank",
        "metadata",
        "error",
    ]
    return _table(head, body) + more
