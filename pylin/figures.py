"""pylin.figures — the report's matplotlib figures (Agg backend: files only, no display needed).

Each function takes analysis results and returns a Figure; `save` writes a PNG at a modest DPI so a
report stays a few hundred KB.  matplotlib is optional (`pip install pylin[plots]`): `available()` says
whether it is installed, and pylin.report skips the figures without it.  Tests: tests/test_cli.py.
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
    ax.set_title("dimensionality of each layer's Jacobian (last token)", fontsize=10)
    ax.legend(fontsize=8)
    return fig
