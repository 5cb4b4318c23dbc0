"""Tests of pylin.report and pylin.page without a browser: report.json validates against its schema
(pylin/assets/report.schema.json) and is the page's data, the page loads nothing from outside, the
ordinary Jacobian's one-JVP reconstruction equals J·X* from autograd's full Jacobian, the cost rule says why
it skips, the steering report, a 128-token × 80-layer page stays small, the assets ship with the
installed package, and the notebook view.  The browser half is tests/test_report_browser.py.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch

TINY_PROMPT = [1, 5, 9, 17, 33]


def build_tiny_report(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A tiny Qwen3 (2 layers) and its full report written to folder/rep: (model, report.json's data)."""
    from tiny_models import make_tiny_hf

    import pylin
    from pylin.report import analyze

    path, _ = make_tiny_hf("qwen3", folder / "model")
    model = pylin.load(path)
    analyze(model, TINY_PROMPT, k=4, layers="all", out=folder / "rep", progress=False)
    return model, json.loads((folder / "rep" / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    folder = tmp_path_factory.mktemp("tiny-report")
    model, data = build_tiny_report(folder)
    return model, data, folder / "rep"


# ---- the schema: jsonschema when installed, else this walker of the keywords the schema uses ---------

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def schema_errors(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Violations of `schema` by `value` (type, const, enum, required, properties, additionalProperties,
    items, minItems, maxItems, minimum, maximum, oneOf)."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None and not any(
        _type_ok(value, t) for t in ([types] if isinstance(types, str) else types)
    ):
        return [f"{where}: {type(value).__name__} is not {types}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "oneOf" in schema:
        matches = sum(not schema_errors(value, s, where) for s in schema["oneOf"])
        if matches != 1:
            errors.append(f"{where}: matches {matches} of oneOf")
    if isinstance(value, dict):
        errors += [f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], f"{where}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(v, schema["additionalProperties"], f"{where}.{k}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{where}: {len(value)} items")
        if "items" in schema:
            for i, v in enumerate(value):
                errors += schema_errors(v, schema["items"], f"{where}[{i}]")
    if _type_ok(value, "number"):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            errors.append(f"{where}: {value} out of range")
    return errors


def report_schema() -> dict[str, Any]:
    return json.loads(resources.files("pylin").joinpath("assets", "report.schema.json").read_text("utf-8"))


def check_schema(data: dict[str, Any]) -> None:
    schema = report_schema()
    assert schema_errors(data, schema) == []
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema)


def test_schema_walker_rejects() -> None:
    """The walker can fail: a report with a wrong type, a missing key and a bad probability."""
    schema = report_schema()
    assert schema_errors({"pylin_report": 2}, schema)  # almost everything missing
    bad = {"token_id": "7", "token": "x", "logit": 1.0, "probability": 1.5}
    errors = schema_errors(bad, schema["properties"]["prediction"], "$.prediction")
    assert any("token_id" in e for e in errors) and any("out of range" in e for e in errors)


def embedded_data(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="pylin-data">(.*?)</script>', page, re.S)
    assert m, "no embedded report data"
    return json.loads(m.group(1))


def external_references(page: str) -> list[str]:
    """Anything in the page that would make the browser fetch: src/href/url()/@import with a scheme or
    a protocol-relative address, fetch() or XMLHttpRequest."""
    quote = "[\"']?"
    patterns = [rf"(?:src|href)\s*=\s*{quote}\s*(?:https?:)?//", rf"url\(\s*{quote}\s*(?:https?:)?//",
                r"@import", r"\bfetch\(", r"XMLHttpRequest", r"https?://"]  # fmt: skip
    return [p for p in patterns if re.search(p, page, re.I)]


def test_report_json_is_the_page_data(tiny_report: tuple[Any, dict[str, Any], Path]) -> None:
    model, data, folder = tiny_report
    check_schema(data)
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert embedded_data(page) == data  # the page shows report.json, nothing else
    assert external_references(page) == []
    assert page.count("data:image/png;base64,") == len(data["figures"]) == 6
    rec = data["reconstruction"]
    assert len(rec["y"]) == len(rec["detached"]["y_hat"]) == len(rec["nonlinear"]["y_hat"]) == 256
    assert rec["detached"]["rel_error"] < 1e-5 and rec["nonlinear"]["rel_error"] > 0.1
    assert 0 < data["prediction"]["probability"] <= 1
    audit = data["freeze_audit"]
    assert audit["rel_error"] == rec["detached"]["rel_error"] and audit["layers"] == [0, 1]
    cfg, n = model.config, len(TINY_PROMPT)
    norms, gates, probs = (f["count"] for f in audit["frozen"])  # counted from the forward's records
    assert probs == cfg.n_layers * cfg.n_heads * n * n and gates == cfg.n_layers * n * cfg.d_ff
    assert norms == cfg.n_layers * 2 * n + 1  # input and pre-MLP norms per layer, the final norm's scale


def test_page_escapes_the_data() -> None:
    """A token text that closes the script element stays data: the embedded JSON parses back equal."""
    from pylin import page

    data = {"text": "</script><script>alert(1)</script><!--"}
    html = page.page("t", "<p></p>", data=data)
    assert "</script><script>alert" not in html and embedded_data(html) == data


def test_assets_are_package_data() -> None:
    """The installed pylin carries its assets (CI installs it non-editable: pyproject's wheel.packages)."""
    folder = resources.files("pylin").joinpath("assets")
    for name in ("report.js", "page.css", "report.schema.json"):
        assert len(folder.joinpath(name).read_text(encoding="utf-8")) > 500, name


def test_nonlinear_jvp_equals_the_full_jacobian() -> None:
    """One JVP with X* as tangent through the ordinary (undetached) model = Σ_j J_j x*_j from autograd's
    full ordinary Jacobian, on a Gemma-style and a Qwen-style tiny model, at the final and a normed site."""
    from tiny_models import make_tiny_hf

    import pylin
    from pylin.report import nonlinear_reconstruction

    for arch in ("gemma3", "qwen3"):
        path, _ = make_tiny_hf(arch, Path(pytest.importorskip("tempfile").mkdtemp()) / arch)
        lin = pylin.load(path, dtype="float64").linearize(TINY_PROMPT)
        for site in (lin, lin.at(output="blocks.1.mlp_out", normed=True)):
            rec = nonlinear_reconstruction(site)
            y_hat = torch.einsum("onj,nj->o", site.nonlinear_jacobian(), site.x)
            assert float((rec.y_hat - y_hat).norm() / y_hat.norm()) < 1e-10
            assert rec.rel_error > 1e3 * site.reconstruction().rel_error  # it does not reconstruct y


def test_nonlinear_skip_reasons(tiny_report: tuple[Any, dict[str, Any], Path], monkeypatch: Any) -> None:
    from pylin import report

    model, _, _ = tiny_report
    lin = model.linearize(TINY_PROMPT)
    assert report.nonlinear_skip_reason(lin, "auto") is None  # a tiny model costs milliseconds
    assert report.nonlinear_skip_reason(lin, "on") is None
    assert "off" in report.nonlinear_skip_reason(lin, "off")
    monkeypatch.setattr(report, "NONLINEAR_AUTO_SECONDS", 0.0)
    assert "estimated" in report.nonlinear_skip_reason(lin, "auto")
    monkeypatch.setattr(report, "NONLINEAR_MAX_BYTES", 1)
    assert "GiB" in report.nonlinear_skip_reason(lin, "auto")
    data = report.analyze(model, TINY_PROMPT, k=2, layers="none", progress=False)
    assert (
        data["reconstruction"]["nonlinear"] is None and "GiB" in data["reconstruction"]["nonlinear_skipped"]
    )
    check_schema(data)


def test_steering_report(tiny_report: tuple[Any, dict[str, Any], Path], tmp_path: Path) -> None:
    from pylin.report import steering_report

    model, _, _ = tiny_report
    data = steering_report(model, [3, 4, 5], [7, 8], 0, strength=4.0, max_new_tokens=4, k=2, layers="none",
                           sweep_layers=[0], sweep_strengths=[0.0, 4.0], out=tmp_path)  # fmt: skip
    check_schema(data)
    s = data["steering"]
    assert s["sweep"]["texts"][0][0] == s["unsteered"]  # λ = 0 adds exactly zero
    assert s["sweep"]["values"][0][0] == 0.0 and s["sweep"]["texts"][0][1] == s["steered"]
    assert s["layer"] == s["inject_layer"] == 0 and all(0 <= x <= 1 for x in s["sweep"]["distinct"][0])
    assert embedded_data((tmp_path / "report.html").read_text(encoding="utf-8"))["steering"] == s


def large_report(data: dict[str, Any], n_tokens: int = 128, n_layers: int = 80) -> dict[str, Any]:
    """The tiny report blown up to n_tokens × n_layers (rows copied, d_model 8192 vectors): the page of a
    128-token prompt on an 80-layer model, for the size and the browser."""
    big = json.loads(json.dumps(data))
    big["tokens"] = [data["tokens"][i % len(data["tokens"])] for i in range(n_tokens)]
    big["token_strings"] = [f"{data['token_strings'][i % len(data['tokens'])]}{i}" for i in range(n_tokens)]
    per_token = [r for r in data["decoded"] if r["token_index"] == 0]
    big["decoded"] = [
        dict(r, token_index=t, i=a) for t in range(n_tokens) for a, r in enumerate(per_token * 2)
    ]
    row0 = data["attribution"]["rows"][0]
    big["attribution"]["rows"] = [dict(row0, index=t, share=1 / n_tokens) for t in range(n_tokens)]
    big["layers"] = [dict(r, layer=i) for i in range(n_layers) for r in data["layers"][:3]]
    rec = big["reconstruction"]
    for key in ("detached", "nonlinear"):
        rec[key]["y_hat"] = (rec[key]["y_hat"] * 32)[:8192]
    rec["y"] = (rec["y"] * 32)[:8192]
    big["model"].update(n_layers=n_layers, d_model=8192)
    big["svd"].update(tokens=list(range(n_tokens)), k=2 * len(per_token))
    return big


def test_large_page_stays_small(tiny_report: tuple[Any, dict[str, Any], Path]) -> None:
    """128 tokens × 8 triplets, 80 layers × 3 components, d_model 8192, no figures: under 3 MB
    (measured: 0.97 MB; the full tables are built only when opened)."""
    from pylin.report import render_page

    _, data, _ = tiny_report
    big = large_report(data)
    check_schema(big)
    size = len(render_page(big).encode("utf-8"))
    print(f"page of 128 tokens x 80 layers: {size / 1e6:.2f} MB")
    assert size < 3e6


def test_show_in_a_notebook(tiny_report: tuple[Any, dict[str, Any], Path]) -> None:
    """pylin.report.show renders the whole page inside an iframe's srcdoc, from a folder or a dict."""
    import html

    from pylin.report import show

    _, data, folder = tiny_report
    view = show(folder)
    out = view._repr_html_()
    assert out.startswith("<iframe srcdoc=") and "<script" not in out  # all of it escaped into srcdoc
    inner = html.unescape(out.split('srcdoc="', 1)[1].split('" style=', 1)[0])
    assert embedded_data(inner) == data and inner.count("data:image/png;base64,") == 6
    assert "tokens" in repr(view) and show(data).html().count("data:image/png") == 0


@pytest.mark.realmodel
def test_real_model_report_has_the_contrast(
    gemma_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first command on Gemma 3 270M: the ordinary-Jacobian contrast is computed by default
    (8 tokens cost seconds) and every figure is there; --nonlinear off prints why it is missing."""
    from pylin.cli import main

    argv = ["analyze", gemma_path, "--text", "The bridge out of Marin is the", "--k", "2", "--tokens", "-1",
            "--layers", "none", "--no-progress"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "a" / "report.json").read_text(encoding="utf-8"))
    check_schema(data)
    nl = data["reconstruction"]["nonlinear"]
    assert nl is not None and nl["rel_error"] > 0.1 and "nonlinear Jacobian:      rel. error" in out
    assert set(data["figures"]) == {"reconstruction", "spectra", "decoded", "attribution"}
    assert main([*argv, "--nonlinear", "off", "--out", str(tmp_path / "b")]) == 0
    assert "nonlinear Jacobian:      not computed (--nonlinear off)" in capsys.readouterr().out
