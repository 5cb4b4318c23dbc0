"""report.html in a real browser: headless chromium loads the generated page, lets its script run
(--virtual-time-budget) and dumps the rendered DOM, which these tests read: every token is in the strip,
selecting a token (a dispatched click, or the #token=i hash) shows that token's decoded vectors, the
component switch re-draws the emergence grid, the figures render, the console stays silent, and a
128-token × 80-layer page works too.  Console messages come from chromium's log (--enable-logging=stderr),
whose capture is itself checked on a page that does log.  Skipped only when no chromium is installed
(CI installs Debian's, .ci/run).  The browser runs with cwd outside the source tree (conftest).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import OUTSIDE_SOURCE_TREE
from test_report import build_tiny_report, large_report

BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no chromium installed (CI installs Debian's: .ci/run)"
)


def render(page: Path, hash_part: str = "", script: str = "") -> tuple[Dom, list[str]]:
    """Load `page` (plus an extra `script` run after the page's own) in headless chromium: the DOM after
    the scripts ran, and the console lines of chromium's log."""
    if script:
        variant = page.with_name(f"{page.stem}-probe.html")
        variant.write_text(
            page.read_text(encoding="utf-8").replace(
                "</body></html>", f"<script>{script}</script></body></html>"
            ),
            encoding="utf-8",
        )
        page = variant
    argv = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={page.parent / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.resolve().as_uri() + hash_part,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=OUTSIDE_SOURCE_TREE)
    assert out.returncode == 0, out.stderr[-2000:]
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return Dom(out.stdout), console


class Dom(HTMLParser):
    """The few things the tests read from a dumped DOM: elements by id / class with their attributes
    and text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {
            "tag": tag,
            "attrs": dict(attrs),
            "text": [],
            "parents": [e["attrs"].get("id") for e in self._open],
        }
        self.elements.append(node)
        if tag not in ("img", "br", "meta", "input", "circle", "path", "hr"):
            self._open.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for node in self._open:
            node["text"].append(data)

    def find(
        self, tag: str | None = None, cls: str | None = None, id: str | None = None, inside: str | None = None
    ):
        def matches(e: dict[str, Any]) -> bool:
            classes = (e["attrs"].get("class") or "").split()
            return ((tag is None or e["tag"] == tag) and (cls is None or cls in classes)
                    and (id is None or e["attrs"].get("id") == id)
                    and (inside is None or inside in e["parents"]))  # fmt: skip

        return [e for e in self.elements if matches(e)]

    def text(self, id: str) -> str:
        (node,) = self.find(id=id)
        return "".join(node["text"])

    @property
    def body(self) -> dict[str, str | None]:
        return self.find("body")[0]["attrs"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Any]:
    """(report.html of the tiny model, its report.json data, the model)."""
    folder = tmp_path_factory.mktemp("browser")
    model, data = build_tiny_report(folder)
    return folder / "rep" / "report.html", data, model


@pytest.fixture(scope="module")
def report(tiny: tuple[Path, dict[str, Any], Any]) -> tuple[Path, dict[str, Any]]:
    return tiny[0], tiny[1]


def _strip_tokens(dom: Dom) -> list[str]:
    return ["".join(e["text"]) for e in dom.find("span", cls="text", inside="token-strip")]


def _panel_shows(dom: Dom, data: dict[str, Any], i: int) -> None:
    """The token panel holds token i's triplets: σ and the decoded +u, −u and v of each, from report.json."""
    (panel,) = dom.find(id="token-panel")
    assert panel["attrs"]["data-token"] == str(i)
    text = dom.text("token-panel")
    rows = [r for r in data["decoded"] if r["token_index"] == i]
    assert rows
    for r in rows:
        for key in ("output", "output_neg", "input"):
            assert ", ".join(r[key]) in text, (key, r[key])
    mine = {", ".join(r[key]) for r in rows for key in ("output", "output_neg", "input")}
    foreign = [", ".join(r["input"]) for r in data["decoded"] if r["token_index"] != i]
    foreign = [f for f in foreign if f not in mine]
    assert foreign and not any(f in text for f in foreign)  # not the other tokens' vectors


def test_page_renders(report: tuple[Path, dict[str, Any]]) -> None:
    page, data = report
    dom, console = render(page)
    assert dom.body.get("data-ready") == "1" and "data-errors" not in dom.body
    assert console == [], console
    assert _strip_tokens(dom) == data["token_strings"]  # every token, in order
    assert dom.body["data-selected-token"] == str(len(data["tokens"]) - 1)  # the last token to begin with
    _panel_shows(dom, data, len(data["tokens"]) - 1)
    imgs = dom.find("img", inside="figures")
    assert len(imgs) == len(data["figures"]) and all(len(i["attrs"]["src"]) > 2000 for i in imgs)
    circles = dom.find("circle", inside="reconstruction-plots")  # both Fig. 2 panels, one dot per y value
    assert len(circles) == 2 * len(data["reconstruction"]["y"])
    audit = dom.text("freeze-audit")
    assert "attention probabilities" in audit and "MLP gates" in audit and "RMSNorm scales" in audit
    rows = dom.find("tr", inside="emergence-grid")
    assert [r["attrs"].get("data-layer") for r in rows if "data-layer" in r["attrs"]] == ["0", "1"]


def test_click_and_hash_select_a_token(report: tuple[Path, dict[str, Any]]) -> None:
    page, data = report
    dom, console = render(page, script="document.querySelector('.tok[data-index=\"1\"]').click();")
    assert console == [] and dom.body["data-selected-token"] == "1"
    _panel_shows(dom, data, 1)
    selected = dom.find("span", cls="selected", inside="token-strip")
    assert [s["attrs"]["data-index"] for s in selected] == ["1"]
    dom, console = render(page, hash_part="#token=2")
    assert console == [] and dom.body["data-selected-token"] == "2"
    _panel_shows(dom, data, 2)


def test_component_switch(report: tuple[Path, dict[str, Any]]) -> None:
    page, data = report
    dom, _ = render(
        page, script="document.querySelector('#component-switch button[data-component=\"mlp\"]').click();"
    )
    assert dom.body["data-component"] == "mlp"
    text = dom.text("emergence-grid")
    for r in (r for r in data["layers"] if r["component"] == "mlp"):
        assert r["u0"][0] in text and f"{r['stable_rank']:.3g}" in text


def test_console_capture_works(report: tuple[Path, dict[str, Any]]) -> None:
    """The console check above can fail: an error in a script shows up in chromium's log and in
    body[data-errors]."""
    page, _ = report
    dom, console = render(page, script="window.setTimeout(function () { undefinedFunction(); }, 0);")
    assert (
        any("undefinedFunction" in line for line in console)
        and "undefinedFunction" in dom.body["data-errors"]
    )


@pytest.mark.parametrize("tokens", ["-1", "concat"])
def test_other_token_choices(tiny: tuple[Path, dict[str, Any], Any], tmp_path: Path, tokens: str) -> None:
    """--tokens -1: the other tokens say their block was not decomposed; concat: every token shows the
    whole J's triplets with v read at its own position."""
    from pylin.report import analyze

    data = analyze(
        tiny[2], [1, 5, 9, 17, 33], k=2, tokens=tokens, layers="none", out=tmp_path, progress=False
    )
    dom, console = render(tmp_path / "report.html", hash_part="#token=1")
    assert console == [] and dom.body["data-selected-token"] == "1"
    text = dom.text("token-panel")
    if tokens == "-1":
        assert "was not decomposed" in text
        return
    for r in data["decoded"]:
        assert f"{r['input'][1]} (cos" in text and ", ".join(r["output"]) in text


def test_steering_section(tiny: tuple[Path, dict[str, Any], Any], tmp_path: Path) -> None:
    """A steering report shows both continuations and the sweep grid, one cell per (layer, λ)."""
    from pylin.report import steering_report

    model = tiny[2]
    data = steering_report(model, [3, 4, 5], [7, 8], 0, strength=4.0, max_new_tokens=3, k=2, layers="none",
                           sweep_layers=[0], sweep_strengths=[0.0, 2.0, 4.0], out=tmp_path)  # fmt: skip
    dom, console = render(tmp_path / "report.html")
    assert console == [] and "hidden" not in dom.find(id="steering")[0]["attrs"]
    s = data["steering"]
    assert (
        dom.text("unsteered") == s["prompt"] + s["unsteered"]
        and dom.text("steered") == s["prompt"] + s["steered"]
    )
    cells = dom.find("td", cls="cell", inside="sweep")
    assert [c["attrs"]["title"] for c in cells] == s["sweep"]["texts"][0]


def test_large_page(report: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """128 tokens and 80 layers: every token in the strip, a far token selectable, the grid complete."""
    from pylin.report import render_page

    _, data = report
    big = large_report(data)
    page = tmp_path / "large.html"
    page.write_text(render_page(big), encoding="utf-8")
    dom, console = render(page, hash_part="#token=100")
    assert console == [] and dom.body.get("data-ready") == "1"
    assert _strip_tokens(dom) == big["token_strings"]
    assert (
        dom.body["data-selected-token"] == "100"
        and dom.find(id="token-panel")[0]["attrs"]["data-token"] == "100"
    )
    assert len([r for r in dom.find("tr", inside="emergence-grid") if "data-layer" in r["attrs"]]) == 80
    json.dumps(big)  # the blown-up report is still plain JSON
