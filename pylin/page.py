"""pylin.page — the ONE page shell of every pylin HTML file: one self-contained, offline document.

    html = page("pylin report", body, data=report, scripts=["report.js"])

The shell inlines the stylesheet (pylin/assets/page.css) and the scripts (pylin/assets/*.js, vanilla JS,
no library), and embeds `data` as JSON in a <script type="application/json" id="pylin-data"> element:
the same JSON as report.json, which the page's script renders.  Nothing is fetched: no CDN, no network,
so the file can be mailed, committed or opened in a notebook (pylin.report.show).  The assets are
package data (pyproject's wheel.packages ships the whole pylin/ folder).  Used by pylin.report
(report.html of one prompt) and pylin.batch.corpus_report (a batch's report.html).
Tests: tests/test_report.py, tests/test_report_browser.py.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

__all__ = ["asset", "data_script", "details", "figure_png", "page", "PAPER"]

PAPER = 'Golden 2025, "Large Language Models are Locally Linear Mappings", arXiv 2505.24293'
DATA_ELEMENT_ID = "pylin-data"


def asset(name: str) -> str:
    """The text of a packaged asset (pylin/assets/NAME)."""
    return resources.files("pylin").joinpath("assets", name).read_text(encoding="utf-8")


def data_script(data: Any) -> str:
    """`data` as JSON inside a non-executed script element.  Every "<" is written as \\u003c (valid JSON,
    the same value), so no string in the data can close the element or open a comment."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{DATA_ELEMENT_ID}">{text}</script>'


def figure_png(png: bytes, name: str, caption: str) -> str:
    """A PNG embedded as base64 in a <figure> (alt text and caption escaped)."""
    b64 = base64.b64encode(png).decode("ascii")
    esc = html.escape
    return (
        f'<figure class="png" data-figure="{esc(name)}"><img alt="{esc(name)}" '
        f'src="data:image/png;base64,{b64}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def details(summary: str, content: str, *, open: bool = False, id: str = "") -> str:
    """A collapsible section (<details>): long tables stay out of the way until asked for."""
    ident = f' id="{html.escape(id)}"' if id else ""
    return (
        f"<details{ident}{' open' if open else ''}><summary>{html.escape(summary)}</summary>\n"
        f"{content}</details>"
    )


def page(
    title: str,
    body: str,
    *,
    data: Any = None,
    scripts: Sequence[str] = (),
    footer: str = f"Written by pylin. {PAPER}.",
) -> str:
    """The whole document: head with the inlined stylesheet, `body` (trusted HTML), the data element and
    the inlined scripts (after the body, so they find every element)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{asset('page.css')}</style>",
        "</head><body>",
        body,
        f"<footer><small>{html.escape(footer)}</small></footer>",
    ]
    if data is not None:
        parts.append(data_script(data))
    for name in scripts:
        parts.append(f"<script>\n{asset(name)}</script>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
