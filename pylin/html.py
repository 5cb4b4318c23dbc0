"""pylin.html — the small notebook views: what `_repr_html_` of pylin's objects returns in Jupyter.

    lin                  # Linearization: model, sites, the tokens, the predicted next token
    lin.reconstruction() # Reconstruction: relative error and R²
    lin.svd(k=8)         # SVDResult: singular values per token
    svd.decode()         # Table (also every emergence table): an HTML table, long ones cut with a count
    attribute(lin)       # Attribution: each token's share of y as a bar

Plain HTML with inline styles (notebooks strip <style> elements and scripts in untrusted cells), every
text escaped.  The interactive page of a whole analysis is pylin.report.show.  Tests: tests/test_html.py.
"""

from __future__ import annotations

import html
from typing import Any

from .table import cell_text

__all__ = [
    "attribution_html",
    "generation_html",
    "linearization_html",
    "reconstruction_html",
    "svd_html",
    "table_html",
]

MAX_ROWS = 40  # rows of a Table shown inline; the rest is counted (table.to_pandas() shows them all)
_CELL = "border:1px solid #ddd;padding:1px 6px;text-align:left;vertical-align:top"
_esc = html.escape


def _table(head: list[str], rows: list[list[Any]], caption: str = "", note: str = "") -> str:
    cap = f'<caption style="text-align:left;font-weight:bold">{_esc(caption)}</caption>' if caption else ""
    th = "".join(f'<th style="{_CELL};background:#f4f6f8">{_esc(h)}</th>' for h in head)
    body = "".join(
        "<tr>"
        + "".join(f'<td style="{_CELL}">{c if isinstance(c, _Raw) else _esc(cell_text(c))}</td>' for c in r)
        + "</tr>"
        for r in rows
    )
    foot = f'<div style="color:#666;font-size:.85em">{_esc(note)}</div>' if note else ""
    return (
        f'<table style="border-collapse:collapse;font-size:.85em">{cap}<thead><tr>{th}</tr></thead>'
        f"<tbody>{body}</tbody></table>{foot}"
    )


class _Raw(str):
    """A cell that is already HTML (built here from escaped parts)."""


def table_html(table: Any, max_rows: int = MAX_ROWS) -> str:
    """A pylin.table.Table: its display columns, the first `max_rows` rows, and how many were left out."""
    if not len(table):
        return f"<p><em>{_esc(table.title or 'table')}: no rows</em></p>"
    rows = [[r.get(c) for c in table.display] for r in table.rows[:max_rows]]
    left = len(table) - len(rows)
    note = f"… {left} more rows (table.to_dicts() / table.to_pandas() hold them all)" if left > 0 else ""
    return _table(list(table.display), rows, table.title, note)


def reconstruction_html(rec: Any) -> str:
    rows = [["relative error ‖ŷ − y‖/‖y‖", f"{rec.rel_error:.3e}"], ["R²", f"{rec.r2:.9f}"],
            ["max |ŷ − y|", f"{rec.max_abs_error:.3e}"], ["‖y‖", f"{rec.y_norm:.4g}"]]  # fmt: skip
    return _table(["reconstruction", rec.method], rows)


def svd_html(res: Any) -> str:
    """The singular values, one row per token block (or one row), with the passes it took."""
    S = res.S.detach().double().cpu()
    labels = [f"token {t}" for t in res.tokens] if S.dim() == 2 else [f"token {res.token}"]
    values = S.tolist() if S.dim() == 2 else [S.tolist()]
    head = ["block"] + [f"σ{i + 1}" for i in range(res.k)]
    caption = (
        f"top-{res.k} SVD of J ({res.method}, {res.n_jvp} JVP + {res.n_vjp} VJP passes"
        f"{'' if res.converged else ', not converged'})"
    )
    return _table(head, [[lab, *row] for lab, row in zip(labels, values, strict=True)], caption)


def _bar(share: float, scale: float) -> _Raw:
    width = min(100.0, 100.0 * abs(share) / scale) if scale > 0 else 0.0
    colour = "#c83c32" if share < 0 else "#286ec8"
    return _Raw(
        f'<span style="display:inline-block;width:{width:.1f}px;height:.8em;background:{colour}"></span> '
        f"{share:.4g}"
    )


def attribution_html(att: Any) -> str:
    """Each token's term J_j x*_j: its norm, its share of y (as a bar), its logit contribution."""
    table = att.table()
    scale = max((abs(r["share"]) for r in table.rows), default=0.0)
    has_logit = any("logit_contribution" in r for r in table.rows)
    head = ["index", "token", "‖J_j x*_j‖", "share of y"] + (["logit contribution"] if has_logit else [])
    rows = [
        [r["index"], r["token"], r["norm"], _bar(r["share"], scale)]
        + ([r.get("logit_contribution")] if has_logit else [])
        for r in table.rows
    ]
    return _table(head, rows, table.title)


def linearization_html(lin: Any) -> str:
    tokens = "".join(
        f'<code style="border:1px solid #ddd;margin:1px;padding:0 3px;white-space:pre">{_esc(s)}</code>'
        for s in lin.token_strings
    )
    token, text = lin.next_token
    rows = [["model", f"{lin.model.arch}, {lin.model.n_layers} layers, d = {lin.model.d_model}"],
            ["output", lin.output_site.name + (" (normed)" if lin.normed else "")], ["w.r.t.", lin.wrt],
            ["J", f"({lin.d_out}, {lin.n_tokens}, {lin.d_in}), {str(lin.dtype).replace('torch.', '')}"],
            ["next token", f"{text!r} (id {token})"], ["tokens", _Raw(tokens)]]  # fmt: skip
    return _table(["Linearization", ""], rows)


def generation_html(gen: Any) -> str:
    """A (steered) generation: the prompt, then the continuation highlighted."""
    return (
        f'<div><span style="color:#666">{_esc(gen.steer)}, λ = {gen.strength:g}:</span> '
        f"<code>{_esc(str(gen.prompt))}</code>"
        f'<code style="background:#dbe8f7">{_esc(gen.text)}</code></div>'
    )
