"""pylin.figures — the report's matplotlib figures (Agg backend: files only, no display needed).

Each function takes analysis results and returns a Figure; `save` writes a PNG at a modest DPI so a
report stays a few hundred KB.  matplotlib is optional (`pip install pylin[plots]`): `available()` says
whether it is installed, and pylin.report skips the figures without it.  The seed's figures
(JacobianAnalyzer.plot_path, plot_jacobian_image) are `concept_trajectory` and `jacobian_image`;
`steering_sweep` draws pylin.steer.sweep's grid.  Tests: tests/test_cli.py, tests/test_emergence.py,
tests/test_steer_sweep.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = [
    "available",
    "save",
    "reconstruction",
    "spectra",
    "decoded",
    "attribution",
    "emergence",
    "dimensionality",
    "concept_trajectory",
    "jacobian_image",
    "steering_sweep",
]


def available() -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")  # before pyplot is imported anywhere: never try to open a window
    return True


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # tokens in scripts DejaVu Sans lacks render as boxes: fine, not news
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(path, dpi=80, bbox_inches="tight")
    _plt().close(fig)


def reconstruction(
    y: torch.Tensor, y_hat: torch.Tensor, y_hat_nl: list[float] | None, data: dict[str, Any]
) -> Any:
    """The paper's Fig. 2: y against Σ_j J_j x*_j, detached and (if computed) nonlinear Jacobian."""
    plt = _plt()
    panels = [("detached Jacobian", y_hat.double(), data["reconstruction"]["detached"])]
    if y_hat_nl is not None:
        panels.append(("ordinary Jacobian", torch.tensor(y_hat_nl), data["reconstruction"]["nonlinear"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    yv = y.double().cpu()
    lo, hi = float(yv.min()), float(yv.max())
    for ax, (name, yh, stats) in zip(axes[0], panels, strict=True):
        ax.plot([lo, hi], [lo, hi], color="#999", lw=1)
        ax.scatter(yv.numpy(), yh.cpu().numpy(), s=4, alpha=0.6)
        ax.set_title(f"{name}\nrel. error {stats['rel_error']:.2e}, R² {stats['r2']:.6f}", fontsize=9)
        ax.set_xlabel("y (model output)")
        ax.set_ylabel("Σ_j J_j x*_j")
    fig.suptitle("reconstruction of the output", fontsize=10)
    return fig


def spectra(res: Any, token_strings: list[str]) -> Any:
    """Top-k singular values per token block (log scale)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    S = res.S.detach().double().cpu()
    if S.dim() == 1:
        label = (
            "concatenated J"
            if res.token == "concat"
            else f"token {res.tokens[0]} {token_strings[res.tokens[0]]!r}"
        )
        ax.semilogy(range(1, len(S) + 1), S.numpy(), marker="o", label=label)
    else:
        cmap = plt.get_cmap("viridis")
        for a, (t, row) in enumerate(zip(res.tokens, S, strict=True)):
            c = cmap(a / max(1, len(res.tokens) - 1))
            ax.semilogy(
                range(1, len(row) + 1), row.numpy(), marker=".", color=c, label=f"{t} {token_strings[t]!r}"
            )
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i")
    ax.set_title("singular values of the Jacobian blocks J_j", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    return fig


def decoded(table: Any, res: Any) -> Any:
    """Fig. 3 style: token (rows) × singular index (columns), σ as colour, decoded u (top) / v (bottom)."""
    plt = _plt()
    rows = table.rows
    keys = sorted({r["token_index"] for r in rows}, key=lambda t: (isinstance(t, str), t))
    ks = sorted({r["i"] for r in rows})
    grid = torch.full((len(keys), len(ks)), float("nan"))
    fig, ax = plt.subplots(figsize=(1.3 * len(ks) + 1.5, 0.55 * len(keys) + 1.2))
    for r in rows:
        a, b = keys.index(r["token_index"]), ks.index(r["i"])
        grid[a, b] = r["sigma"]
        out = (r.get("output") or ["—"])[0]
        inp = (r.get("input") or ["—"])[0]
        ax.text(b, a, f"{out}\n{inp}"[:40], ha="center", va="center", fontsize=6)
    ax.imshow(grid.numpy(), aspect="auto", cmap="Blues", alpha=0.7)
    ax.set_xticks(range(len(ks)), [f"σ{i}" for i in ks], fontsize=7)
    ax.set_yticks(
        range(len(keys)), [f"{r['token_index']} {r['token']}" for r in rows if r["i"] == ks[0]], fontsize=7
    )
    ax.set_title("decoded singular vectors: top token of +u (LM head) / nearest input token of v", fontsize=9)
    return fig


def attribution(att: Any) -> Any:
    """Each token's share ⟨J_j x*_j, y⟩/‖y‖² of the output (they sum to 1)."""
    plt = _plt()
    shares = att.shares.cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(shares) + 1), 3.2))
    ax.bar(range(len(shares)), shares, color=["#c44" if s < 0 else "#48c" for s in shares])
    ax.set_xticks(
        range(len(shares)), [repr(s) for s in att.token_strings], rotation=60, fontsize=7, ha="right"
    )
    ax.set_ylabel("share of y")
    ax.set_title(f"attribution: y = Σ_j J_j x*_j (rel. error {att.reconstruction:.1e})", fontsize=9)
    return fig


def emergence(layers: Any) -> Any:
    """Layer × singular index (residual stream): σ as colour, each u's top decoded token as text."""
    plt = _plt()
    rows = [r for r in layers.rows if r["component"] == "resid"] or layers.rows
    n_u = len([c for c in rows[0] if c.startswith("u") and not c.endswith("_ids")])
    fig, ax = plt.subplots(figsize=(1.6 * n_u + 2, 0.32 * len(rows) + 1.2))
    grid = torch.tensor([[r["sigma"][a] for a in range(n_u)] for r in rows])
    ax.imshow((grid / grid.max(dim=1, keepdim=True).values).numpy(), aspect="auto", cmap="Blues", alpha=0.7)
    for a, r in enumerate(rows):
        for b in range(n_u):
            ax.text(b, a, str(r[f"u{b}"][0])[:18], ha="center", va="center", fontsize=6)
    ax.set_xticks(range(n_u), [f"u{b}" for b in range(n_u)], fontsize=7)
    ax.set_yticks(range(len(rows)), [f"L{r['layer']} {r['component']}" for r in rows], fontsize=6)
    ax.set_title("emergence: top tokens of each layer's left singular vectors", fontsize=9)
    return fig


def dimensionality(layers: Any) -> Any:
    """Stable rank ‖J‖_F²/‖J‖₂² per layer, one line per component."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for comp in ("resid", "attn", "mlp"):
        rows = [r for r in layers.rows if r["component"] == comp]
        if rows:
            ax.plot([r["layer"] for r in rows], [r["stable_rank"] for r in rows], marker="o", label=comp)
    ax.set_xlabel("layer")
    ax.set_ylabel("stable rank")
    block = {r.get("token_index") for r in layers.rows}
    which = "concatenated over tokens" if block == {"concat"} else "one token's block"
    ax.set_title(f"dimensionality of each layer's Jacobian ({which})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def trajectory_points(U_layers: list[torch.Tensor]) -> torch.Tensor:
    """The seed's plot_path: for each layer, its a-th left singular vector projected on the last layer's
    a-th (a = 0, 1, 2), each u signed toward the model's output y beforehand; (n_layers, 3)."""
    last = U_layers[-1].double()
    return torch.stack([(u.double()[:, :3] * last[:, :3]).sum(0) for u in U_layers])


def concept_trajectory(layers: list[int], U_layers: list[torch.Tensor], labels: list[str]) -> Any:
    """The seed's concept trajectory: each layer's u₀, u₁ projected on the last layer's (x, y), u₂ as
    colour; a layer's label is its index and top decoded token."""
    plt = _plt()
    p = trajectory_points(U_layers).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.6))
    ax.plot(p[:, 0], p[:, 1], color="#bbb", lw=1, zorder=1)
    sc = ax.scatter(p[:, 0], p[:, 1], c=p[:, 2], cmap="plasma", zorder=2, vmin=-1, vmax=1)
    for (x, y), layer, label in zip(p[:, :2], layers, labels, strict=True):
        ax.annotate(f"{layer}: {label}"[:24], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    fig.colorbar(sc, ax=ax, label="u₂ · u₂(last)")
    ax.set_xlabel("u₀ · u₀(last layer)")
    ax.set_ylabel("u₁ · u₁(last layer)")
    ax.set_title("concept trajectory: each layer's singular vectors on the last layer's", fontsize=9)
    return fig


def jacobian_image(J: torch.Tensor, S: torch.Tensor, title: str = "", limit: float = 0.03) -> Any:
    """The seed's plot_jacobian_image: one token's block J_j (d_out × d_in) as a heatmap (±`limit`, its
    colour scale) with the singular value spectrum inset."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.imshow(J.detach().double().cpu().numpy(), vmin=-limit, vmax=limit, cmap="RdBu", aspect="auto")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("hidden dimension (input)")
    ax.set_ylabel("output dimension")
    inset = fig.add_axes([0.52, 0.62, 0.2, 0.2])
    s = S.detach().double().cpu().numpy()
    inset.plot(range(1, len(s) + 1), s, "-o", markersize=3)
    inset.set_title("singular values", fontsize=7)
    inset.tick_params(labelsize=6)
    inset.grid(True)
    ax.set_title(title or "the detached Jacobian block", fontsize=9)
    return fig


def steering_sweep(result: Any) -> Any:
    """pylin.steer.sweep's grid: relative concept logit gain and distinct-n per (layer, λ)."""
    plt = _plt()
    layers = sorted({c["layer"] for c in result.cells})
    strengths = sorted({c["strength"] for c in result.cells})
    panels = [("gain_relative", "concept logit gain − mean vocabulary gain", "RdBu_r"),
              ("distinct", "distinct-n of the continuation (1 = no repeats)", "viridis")]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(1.1 * len(strengths) * 2 + 3, 0.5 * len(layers) + 1.8))
    for ax, (key, name, cmap) in zip(axes, panels, strict=True):
        grid = torch.full((len(layers), len(strengths)), float("nan"), dtype=torch.float64)
        for c in result.cells:
            v = c[key]
            grid[layers.index(c["layer"]), strengths.index(c["strength"])] = float("nan") if v is None else v
        lim = float(grid.nan_to_num(0).abs().max()) or 1.0
        kw = {"vmin": -lim, "vmax": lim} if key == "gain_relative" else {"vmin": 0, "vmax": 1}
        im = ax.imshow(grid.numpy(), aspect="auto", cmap=cmap, **kw)
        for a in range(len(layers)):
            for b in range(len(strengths)):
                ax.text(b, a, f"{float(grid[a, b]):.2f}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths], fontsize=7)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
        ax.set_xlabel("λ")
        ax.set_ylabel("layer ℓ")
        ax.set_title(name, fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"steering sweep: {result.concept!r}", fontsize=9)
    return fig
