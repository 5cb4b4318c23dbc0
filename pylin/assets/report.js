/* pylin/assets/report.js: the interactive report.html of one prompt (vanilla JS, no library, offline).
 *
 * Reads the report from <script type="application/json" id="pylin-data"> (the same JSON as report.json,
 * schema pylin/assets/report.schema.json) and renders: the summary and freeze audit, the reconstruction
 * scatter (the paper's Fig. 2, SVG), the token strip (coloured by attribution share; a click, the arrow
 * keys, window.pylinSelect(i) or the URL hash #token=i select a token and show its singular values and
 * decoded vectors), the emergence grid (layers x singular index, switchable resid/attn/mlp), the steering
 * section and the full tables (collapsed, built when opened).  Every text goes in through textContent.
 * State for tests and tools: body[data-ready], body[data-selected-token], body[data-component],
 * body[data-errors].  Tests: tests/test_report_browser.py.
 */
(function () {
  "use strict";
  var body = document.body;
  window.addEventListener("error", function (e) {
    body.dataset.errors = (body.dataset.errors ? body.dataset.errors + " | " : "") + (e.message || "error");
  });
  var data = JSON.parse(document.getElementById("pylin-data").textContent);
  // The SVG namespace, read off an <svg> of the page: the HTML parser put it there, no URL literal needed.
  var SVG = document.getElementById("svg-namespace").namespaceURI;

  // ---- small DOM helpers ---------------------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c !== null && c !== undefined) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function svgEl(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { if (k === "text") node.textContent = attrs[k]; else node.setAttribute(k, attrs[k]); });
    return node;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "—";
    if (typeof v !== "number") return String(v);
    if (v === 0) return "0";
    var a = Math.abs(v);
    return a < 1e-3 || a >= 1e5 ? v.toExponential(digits === undefined ? 2 : digits) : v.toPrecision(digits === undefined ? 4 : digits + 1);
  }
  function list(v) { return Array.isArray(v) ? v.join(", ") : fmt(v); }
  function byId(id) { return document.getElementById(id); }

  // ---- a scatter / line plot in SVG ------------------------------------------------------------------
  function plot(opts) {
    var W = opts.width || 360, H = opts.height || 300, L = 56, R = 12, T = 24, B = 40;
    var xs = [], ys = [];
    opts.series.forEach(function (s) { s.x.forEach(function (v) { xs.push(v); }); s.y.forEach(function (v) { if (v !== null) ys.push(opts.logy ? Math.log10(Math.max(v, 1e-300)) : v); }); });
    if (opts.diagonal) { xs.forEach(function (v) { ys.push(v); }); }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x1 += 1; x0 -= 1; } if (y1 === y0) { y1 += 1; y0 -= 1; }
    function sx(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
    function sy(v) { return H - B - ((opts.logy ? Math.log10(Math.max(v, 1e-300)) : v) - y0) / (y1 - y0) * (H - T - B); }
    var svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": opts.title });
    svg.appendChild(svgEl("text", { x: L, y: 14, text: opts.title }));
    svg.appendChild(svgEl("path", { class: "axis", d: "M" + L + " " + T + "V" + (H - B) + "H" + (W - R) }));
    [[x0, "start"], [x1, "end"]].forEach(function (p) { svg.appendChild(svgEl("text", { x: sx(p[0]), y: H - B + 14, "text-anchor": p[1], text: fmt(p[0], 2) })); });
    [y0, y1].forEach(function (v) { svg.appendChild(svgEl("text", { x: L - 4, y: H - B - (v - y0) / (y1 - y0) * (H - T - B) + 4, "text-anchor": "end", text: fmt(opts.logy ? Math.pow(10, v) : v, 2) })); });
    svg.appendChild(svgEl("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", text: opts.xlabel || "" }));
    svg.appendChild(svgEl("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: "rotate(-90 12 " + (T + H - B) / 2 + ")", text: opts.ylabel || "" }));
    if (opts.diagonal) svg.appendChild(svgEl("path", { d: "M" + sx(x0) + " " + sy(x0) + "L" + sx(x1) + " " + sy(x1), stroke: "#aaa", fill: "none" }));
    opts.series.forEach(function (s) {
      if (s.line) {
        var d = ""; s.x.forEach(function (v, i) { if (s.y[i] !== null) d += (d ? "L" : "M") + sx(v).toFixed(1) + " " + sy(s.y[i]).toFixed(1); });
        svg.appendChild(svgEl("path", { d: d, stroke: s.color, "stroke-width": s.width || 1.5, fill: "none", opacity: s.opacity || 1 }));
      } else {
        var g = svgEl("g", { fill: s.color, opacity: s.opacity || 0.6 });
        s.x.forEach(function (v, i) { if (s.y[i] !== null) g.appendChild(svgEl("circle", { cx: sx(v).toFixed(1), cy: sy(s.y[i]).toFixed(1), r: 1.8 })); });
        svg.appendChild(g);
      }
    });
    return svg;
  }

  // ---- summary, freeze audit, reconstruction ----------------------------------------------------------
  function summary() {
    var m = data.model, p = data.prediction, rec = data.reconstruction;
    var facts = el("dl", { class: "facts" });
    function fact(k, v) { facts.appendChild(el("dt", { text: k })); facts.appendChild(el("dd", {}, [v])); }
    fact("prompt", el("code", { text: data.text }));
    fact("model", m.arch + ", " + m.n_layers + " layers, d = " + m.d_model + ", " + m.dtype + " — " + m.source);
    fact("prediction", el("span", {}, [el("code", { text: p.token }), " (id " + p.token_id + ", p = " + fmt(p.probability, 3) + ", logit " + fmt(p.logit) + ")"]));
    fact("output / input", data.output_site + " w.r.t. " + data.wrt + ", " + data.tokens.length + " tokens");
    fact("detached J", "Σ_j J_j x*_j reproduces y: relative error " + fmt(rec.detached.rel_error) + ", R² " + rec.detached.r2.toFixed(9));
    fact("ordinary J", rec.nonlinear ? "relative error " + fmt(rec.nonlinear.rel_error, 3) + ", R² " + fmt(rec.nonlinear.r2, 4) + " (does not reconstruct y)" : "not computed: " + rec.nonlinear_skipped);
    byId("summary").appendChild(facts);
    var a = data.freeze_audit;
    var audit = el("p", { class: "audit", id: "freeze-audit" }, [el("b", { text: "Freeze audit. " }),
      "Frozen at X*: " + a.frozen.map(function (f) { return f.what + " (" + f.count + " values)"; }).join("; ") +
      ". Linear in X: " + a.linear_in + ". Measured reconstruction error of the frozen system: " + fmt(a.rel_error) + " (relative)."]);
    byId("summary").appendChild(audit);
    var y = rec.y, panels = el("div", { class: "row", id: "reconstruction-plots" });
    panels.appendChild(plot({ title: "detached Jacobian: rel. error " + fmt(rec.detached.rel_error), series: [{ x: y, y: rec.detached.y_hat, color: "rgb(40,110,200)" }], diagonal: true, xlabel: "y (model output)", ylabel: "Σ_j J_j x*_j" }));
    if (rec.nonlinear) panels.appendChild(plot({ title: "ordinary Jacobian: rel. error " + fmt(rec.nonlinear.rel_error, 3), series: [{ x: y, y: rec.nonlinear.y_hat, color: "rgb(200,60,50)" }], diagonal: true, xlabel: "y (model output)", ylabel: "Σ_j J_j x*_j" }));
    byId("reconstruction").appendChild(panels);
  }

  // ---- the token strip and the selected token ---------------------------------------------------------
  var shares = {}, attribution = {};
  data.attribution.rows.forEach(function (r) { shares[r.index] = r.share; attribution[r.index] = r; });
  var maxShare = Math.max.apply(null, data.attribution.rows.map(function (r) { return Math.abs(r.share); }).concat([1e-12]));
  var concat = data.svd.token === "concat";
  function rowsOf(i) { return data.decoded.filter(function (r) { return concat ? true : r.token_index === i; }); }

  function strip() {
    var box = byId("token-strip");
    data.token_strings.forEach(function (s, i) {
      var share = shares[i] || 0, alpha = Math.min(1, Math.abs(share) / maxShare) * 0.75;
      var tok = el("span", { class: "tok", "data-index": i, tabindex: 0, title: "token " + i + " (id " + data.tokens[i] + "): attribution share " + fmt(share) },
        [el("span", { class: "idx", text: String(i) }), el("span", { class: "text", text: s })]);
      tok.style.background = "rgba(" + (share < 0 ? "200,60,50" : "40,110,200") + "," + alpha.toFixed(3) + ")";
      tok.addEventListener("click", function () { select(i); });
      tok.addEventListener("mouseenter", function () { if (!pinned) select(i, true); });
      box.appendChild(tok);
    });
    document.addEventListener("keydown", function (e) {
      var cur = Number(body.dataset.selectedToken || 0);
      if (e.key === "ArrowRight") select(Math.min(cur + 1, data.tokens.length - 1));
      if (e.key === "ArrowLeft") select(Math.max(cur - 1, 0));
    });
  }

  var pinned = false;
  function select(i, hover) {
    i = Number(i);
    if (!(i >= 0 && i < data.tokens.length)) return;
    if (!hover) pinned = true;
    body.dataset.selectedToken = String(i);
    Array.prototype.forEach.call(document.querySelectorAll(".tok"), function (t) { t.classList.toggle("selected", Number(t.dataset.index) === i); });
    var panel = byId("token-panel");
    panel.textContent = "";
    panel.dataset.token = String(i);
    var att = attribution[i] || {};
    panel.appendChild(el("h3", {}, ["token " + i + " ", el("code", { text: data.token_strings[i] }), " (id " + data.tokens[i] + ")"]));
    panel.appendChild(el("p", { class: "num", text: "attribution: share of y " + fmt(att.share) + ", ‖J_j x*_j‖ " + fmt(att.norm) +
      (att.logit_contribution !== undefined ? ", logit contribution " + fmt(att.logit_contribution) : "") }));
    var rows = rowsOf(i);
    if (!rows.length) {
      panel.appendChild(el("p", { class: "muted", text: "This token's Jacobian block was not decomposed (analyze --tokens " + data.svd.token + ")." }));
      return;
    }
    var head = concat ? "singular triplets of the concatenated J; v read at this token's position" : "singular triplets of J_" + i;
    var table = el("table", { class: "triplets" }, [el("caption", { text: head }),
      el("thead", {}, [el("tr", {}, ["i", "σ", "+u (toward y), LM head", "−u, LM head", "v, nearest input embeddings"].map(function (h) { return el("th", { text: h }); }))])]);
    var tb = el("tbody");
    rows.forEach(function (r) {
      var v = concat ? [r.input[i] + " (cos " + fmt(r.input_cos[i], 2) + ")"] : r.input;
      tb.appendChild(el("tr", {}, [String(r.i), fmt(r.sigma), list(r.output), list(r.output_neg), list(v)].map(function (c) { return el("td", { text: c }); })));
    });
    table.appendChild(tb);
    var sig = rows.map(function (r) { return r.sigma; }), idx = rows.map(function (r) { return r.i + 1; });
    var series = [];
    if (!concat) data.token_strings.forEach(function (_, j) { if (j !== i) { var o = rowsOf(j); if (o.length) series.push({ x: o.map(function (r) { return r.i + 1; }), y: o.map(function (r) { return r.sigma; }), color: "#bbb", line: true, width: 1, opacity: 0.6 }); } });
    series.push({ x: idx, y: sig, color: "rgb(40,110,200)", line: true, width: 2.5 });
    var wrap = el("div", { class: "row" }, [table, plot({ title: "σ_i of this block (grey: the other tokens)", series: series, logy: true, xlabel: "index i", ylabel: "σ_i", width: 320, height: 240 })]);
    panel.appendChild(wrap);
  }
  window.pylinSelect = function (i) { select(i); return body.dataset.selectedToken; };

  // ---- the emergence grid -------------------------------------------------------------------------------
  function uKeys(r) { return Object.keys(r).filter(function (k) { return /^u\d+$/.test(k); }).sort(function (a, b) { return Number(a.slice(1)) - Number(b.slice(1)); }); }
  function grid(component) {
    body.dataset.component = component;
    Array.prototype.forEach.call(document.querySelectorAll("#component-switch button"), function (b) { b.classList.toggle("active", b.dataset.component === component); });
    var rows = data.layers.filter(function (r) { return r.component === component; });
    var box = byId("emergence-grid");
    box.textContent = "";
    if (!rows.length) return;
    var keys = uKeys(rows[0]);
    var table = el("table", { class: "grid", "data-component": component }, [el("thead", {}, [el("tr", {},
      ["layer", "stable rank"].concat(keys.map(function (k, a) { return "σ" + (a + 1) + " · u" + a; })).map(function (h) { return el("th", { text: h }); }))])]);
    var tb = el("tbody");
    rows.forEach(function (r) {
      var tr = el("tr", { "data-layer": r.layer }, [el("td", { text: "L" + r.layer }), el("td", { class: "num", text: fmt(r.stable_rank, 2) })]);
      keys.forEach(function (k, a) {
        var s = r.sigma[a] / r.sigma[0], toks = r[k] || [];
        var td = el("td", { class: "cell", title: "σ" + (a + 1) + " = " + fmt(r.sigma[a]) + ": " + toks.join(", ") }, [el("span", { class: "mono", text: toks[0] === undefined ? "—" : toks[0] }), el("span", { class: "muted", text: " " + fmt(r.sigma[a], 2) })]);
        td.style.background = "rgba(40,110,200," + (0.08 + 0.5 * s).toFixed(3) + ")";
        tr.appendChild(td);
      });
      tb.appendChild(tr);
    });
    table.appendChild(tb);
    box.appendChild(table);
  }
  function emergence() {
    if (!data.layers.length) { byId("emergence").hidden = true; return; }
    var comps = [];
    data.layers.forEach(function (r) { if (comps.indexOf(r.component) < 0) comps.push(r.component); });
    var sw = byId("component-switch");
    comps.forEach(function (c) { var b = el("button", { type: "button", "data-component": c, text: c }); b.addEventListener("click", function () { grid(c); }); sw.appendChild(b); });
    grid(comps[0]);
    var colours = { resid: "rgb(40,110,200)", attn: "rgb(220,140,30)", mlp: "rgb(60,150,80)" };
    var series = comps.map(function (c) {
      var rows = data.layers.filter(function (r) { return r.component === c; });
      return { x: rows.map(function (r) { return r.layer; }), y: rows.map(function (r) { return r.stable_rank; }), color: colours[c] || "#555", line: true };
    });
    var legend = el("p", { class: "legend muted" }, comps.map(function (c) { var s = el("span", { class: "swatch" }); s.style.background = colours[c] || "#555"; return el("span", {}, [s, c]); }));
    byId("stable-rank").appendChild(plot({ title: "stable rank ‖J‖_F²/‖J‖₂² per layer", series: series, xlabel: "layer", ylabel: "stable rank", width: 420, height: 260 }));
    byId("stable-rank").appendChild(legend);
  }

  // ---- steering ---------------------------------------------------------------------------------------
  function steering() {
    var s = data.steering, box = byId("steering");
    if (!s) return;
    box.hidden = false;
    var into = s.inject_layer === undefined ? s.layer + 1 : s.inject_layer;
    box.appendChild(el("p", { text: "concept " + JSON.stringify(s.concept) + ": J of block " + s.layer + "'s output added into block " + into + "'s input, λ = " + s.strength + (s.skip_bos ? " (BOS term dropped)" : "") }));
    box.appendChild(el("table", {}, [el("tbody", {}, [
      el("tr", {}, [el("th", { text: "unsteered" }), el("td", { id: "unsteered" }, [el("code", { text: s.prompt }), s.unsteered])]),
      el("tr", {}, [el("th", { text: "steered" }), el("td", { id: "steered" }, [el("code", { text: s.prompt }), s.steered])])])]));
    var sw = s.sweep;
    if (!sw) return;
    var t = el("table", { class: "grid", id: "sweep" }, [el("caption", { text: sw.metric + " (rows: layer, columns: λ; hover for the text)" }),
      el("thead", {}, [el("tr", {}, [el("th", { text: "layer \\ λ" })].concat(sw.strengths.map(function (x) { return el("th", { text: String(x) }); })))])]);
    var tb = el("tbody"), vmax = Math.max.apply(null, [].concat.apply([1e-12], sw.values));
    sw.layers.forEach(function (layer, a) {
      var tr = el("tr", {}, [el("th", { text: "L" + layer })]);
      sw.strengths.forEach(function (_, b) {
        var td = el("td", { class: "cell num", title: sw.texts[a][b], text: fmt(sw.values[a][b], 2) });
        td.style.background = "rgba(40,110,200," + (0.05 + 0.7 * Math.max(0, sw.values[a][b]) / vmax).toFixed(3) + ")";
        tr.appendChild(td);
      });
      tb.appendChild(tr);
    });
    t.appendChild(tb);
    box.appendChild(t);
  }

  // ---- the full tables, built when their section is opened ---------------------------------------------
  function fullTable(id, rows, columns) {
    var d = byId(id);
    if (!d) return;
    d.addEventListener("toggle", function () {
      if (!d.open || d.dataset.built) return;
      d.dataset.built = "1";
      var t = el("table", {}, [el("thead", {}, [el("tr", {}, columns.map(function (c) { return el("th", { text: c }); }))])]);
      var tb = el("tbody");
      rows.forEach(function (r) { tb.appendChild(el("tr", {}, columns.map(function (c) { return el("td", { text: list(r[c]) }); }))); });
      t.appendChild(tb);
      d.appendChild(el("div", { class: "scroll" }, [t]));
    });
  }

  summary();
  strip();
  emergence();
  steering();
  fullTable("table-decoded", data.decoded, ["token_index", "token", "i", "sigma", "output", "output_neg", "input"]);
  fullTable("table-attribution", data.attribution.rows, Object.keys(data.attribution.rows[0] || {}));
  fullTable("table-layers", data.layers, ["layer", "component", "site", "wrt", "sigma", "stable_rank"].concat(data.layers.length ? uKeys(data.layers[0]) : []));
  function fromHash() { var m = /token=(-?\d+)/.exec(location.hash); if (m) { var i = Number(m[1]); select(i < 0 ? data.tokens.length + i : i); return true; } return false; }
  window.addEventListener("hashchange", fromHash);
  if (!fromHash()) { select(data.tokens.length - 1, true); pinned = false; }
  body.dataset.ready = "1";
})();
