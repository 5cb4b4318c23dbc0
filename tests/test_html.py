"""Notebook displays (pylin.html): `_repr_html_` and a readable `__repr__` on the Linearization, its
Reconstruction, SVD results, Tables (decoded vectors, the emergence table), attributions and
generations: the numbers are there, every text is escaped, the tags balance, no tensor is dumped.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

PROMPT = [1, 5, 9, 17, 33]
VOID = {"br", "img", "meta", "input", "hr"}


class _Balance(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check_html(text: str) -> list[str]:
    """Balanced tags, no script; returns the tags seen."""
    parser = _Balance()
    parser.feed(text)
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    assert "script" not in parser.tags
    return parser.tags


@pytest.fixture(scope="module")
def lin(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tiny_models import make_tiny_hf

    import pylin

    path, _ = make_tiny_hf("qwen3", tmp_path_factory.mktemp("html") / "model")
    return pylin.load(path).linearize(PROMPT)


def test_linearization_and_reconstruction(lin: Any) -> None:
    check_html(lin._repr_html_())
    assert "&lt;5&gt;" in lin._repr_html_() and "qwen3" in lin._repr_html_()  # token texts escaped
    rec = lin.reconstruction()
    out = rec._repr_html_()
    check_html(out)
    assert f"{rec.rel_error:.3e}" in out and f"{rec.r2:.9f}" in out
    assert "y_hat" not in repr(rec) and "tensor(" not in repr(rec)


def test_svd_and_decoded_table(lin: Any) -> None:
    res = lin.svd(k=3, token="all")
    out = res._repr_html_()
    assert check_html(out).count("tr") == 1 + lin.n_tokens  # a header and one row per token block
    for value in res.S[:, 0].tolist():
        assert f"{value:.4g}" in out
    text = repr(res)
    assert "tensor(" not in text and "k=3" in text and len(text) < 300
    decoded = res.decode(lin)
    out = decoded._repr_html_()
    check_html(out)
    assert ", ".join(decoded.rows[0]["output"]).replace("<", "&lt;").replace(">", "&gt;") in out
    assert "singular vectors" in repr(decoded)


def test_long_table_is_cut_and_escaped() -> None:
    from pylin.table import Table

    table = Table([{"a": i, "b": "<script>x</script>"} for i in range(100)], title="t <b>")
    out = table._repr_html_()
    check_html(out)
    assert "&lt;script&gt;" in out and "<script>" not in out and "t &lt;b&gt;" in out
    assert out.count("<tr>") == 1 + 40 and "60 more rows" in out


def test_attribution_and_emergence(lin: Any) -> None:
    from pylin.attribution import attribute
    from pylin.emergence import emergence

    att = attribute(lin)
    out = att._repr_html_()
    check_html(out)
    assert out.count("<tr>") == 1 + lin.n_tokens and f"{float(att.shares[0]):.4g}" in out
    assert "tensor(" not in repr(att) and "shares of y" in repr(att)
    table = emergence(lin, layers=[1], components=("resid",), k=2, show=1)
    out = table._repr_html_()
    check_html(out)
    assert str(table.rows[0]["u0"][0]).replace("<", "&lt;").replace(">", "&gt;") in out


def test_generation(lin: Any) -> None:
    from pylin import steer
    from pylin.html import generation_html

    gen = steer.generate(lin.model, PROMPT, max_new_tokens=3)
    out = generation_html(gen)
    check_html(out)
    assert gen.text.replace("<", "&lt;").replace(">", "&gt;") in out


def test_views_render_in_a_browser(lin: Any, tmp_path: Path) -> None:
    """All the small views on one page, in headless chromium: they parse and the console stays silent."""
    from test_report_browser import BROWSER, render

    from pylin.attribution import attribute

    if BROWSER is None:
        pytest.skip("no chromium installed")
    parts = [lin._repr_html_(), lin.reconstruction()._repr_html_(), lin.svd(k=2)._repr_html_(),
             attribute(lin)._repr_html_()]  # fmt: skip
    page = tmp_path / "views.html"
    page.write_text("<!doctype html><html><body>" + "".join(parts) + "</body></html>", encoding="utf-8")
    dom, console = render(page)
    assert console == [] and len(dom.find("table")) == 4
