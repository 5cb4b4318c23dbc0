"""pylin.attribution — each input token's exact share of the output: the terms J_j x*_j, which sum to y.

    att = attribute(lin)
    print(att)              # per token: ‖J_j x*_j‖, its projection on y, its share, its logit contribution
    att.terms               # (n, d_out)
    att.reconstruction      # ‖Σ_j J_j x*_j − y‖ / ‖y‖: the linearization's own error, shown with the table

Because the detached Jacobian is exactly linear in X (Golden 2025), y = Σ_j J_j x*_j holds to rounding,
so the decomposition is an identity, not an approximation (unlike gradient × input on the ordinary
Jacobian).  All n terms come from ONE JVP batch whose b-th tangent is x*_b on token b and zero elsewhere.
The logit contribution is the predicted token's LM-head row dotted with each term (for output sites in the
LM head's input space: "final", or a normed intermediate site).  Tests: tests/test_analysis.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .linearization import reconstruction_error
from .readout import show_token, token_text
from .table import Table

__all__ = ["Attribution", "attribute"]


@dataclass
class Attribution:
    terms: torch.Tensor  # (n, d_out): J_j x*_j
    y: torch.Tensor  # (d_out,)
    tokens: list[int]
    token_strings: list[str]
    reconstruction: float  # ‖Σ terms − y‖ / ‖y‖
    logit_token: tuple[int, str] | None = None
    logit_contributions: torch.Tensor | None = None  # (n,)
    logit: float | None = None  # the model's logit for logit_token (compare with the contributions' sum)

    @property
    def norms(self) -> torch.Tensor:
        return self.terms.double().norm(dim=1)

    @property
    def projections(self) -> torch.Tensor:
        """⟨J_j x*_j, ŷ⟩ with ŷ = y/‖y‖: the length each term adds along the output."""
        y = self.y.double()
        return self.terms.double() @ (y / y.norm())

    @property
    def shares(self) -> torch.Tensor:
        """⟨J_j x*_j, y⟩ / ‖y‖²: the fraction of y each token carries; they sum to 1 (to rounding)."""
        y = self.y.double()
        return self.terms.double() @ y / y.dot(y)

    def table(self) -> Table:
        rows = []
        for j, (t, s) in enumerate(zip(self.tokens, self.token_strings, strict=True)):
            row: dict[str, Any] = {
                "index": j,
                "token_id": t,
                "token": show_token(s),
                "norm": float(self.norms[j]),
                "projection": float(self.projections[j]),
                "share": float(self.shares[j]),
            }
            if self.logit_contributions is not None:
                row["logit_contribution"] = float(self.logit_contributions[j])
            rows.append(row)
        head = f"attribution: y = Σ_j J_j x*_j, relative error {self.reconstruction:.2e}"
        if self.logit_token is not None and self.logit is not None and self.logit_contributions is not None:
            total = float(self.logit_contributions.double().sum())
            head += (
                f"; logit of {show_token(self.logit_token[1])}: {self.logit:.4f} (terms sum to {total:.4f})"
            )
        return Table(rows, title=head)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reconstruction_rel_error": self.reconstruction,
            "logit_token": list(self.logit_token) if self.logit_token else None,
            "logit": self.logit,
            "rows": self.table().to_dicts(),
        }

    def __str__(self) -> str:
        return str(self.table())

    def __repr__(self) -> str:  # not the dataclass's: that one prints the terms whole
        shares = ", ".join(f"{v:.3g}" for v in self.shares.tolist()[:8]) + (
            ", …" if len(self.tokens) > 8 else ""
        )
        return (
            f"Attribution({len(self.tokens)} tokens, shares of y = [{shares}], "
            f"reconstruction rel. error {self.reconstruction:.2e})"
        )

    def _repr_html_(self) -> str:  # Jupyter (pylin.html)
        from .html import attribution_html

        return attribution_html(self)


def attribute(lin: Any, logit_token: int | None = None) -> Attribution:
    """Per-token terms J_j x*_j of `lin` and what they contribute (see the module docstring).

    logit_token: the token whose logit the terms are projected on (default: the predicted next token).
    """
    n, d = lin.n_tokens, lin.d_in
    V = torch.zeros(n, n, d, dtype=lin.dtype, device=lin.x.device)
    idx = torch.arange(n)
    V[idx, idx] = lin.x.to(lin.dtype)
    terms = lin.jvp(V)  # (n, d_out): row j is J_j x*_j
    y = lin.output.reshape(-1)
    err = reconstruction_error(terms.sum(0), y, "attribution").rel_error
    strings = list(getattr(lin, "token_strings", [str(t) for t in lin.tokens]))
    att = Attribution(terms, y, list(lin.tokens), strings, err)
    site = getattr(lin, "output_site", None)
    kind = getattr(site, "kind", site)
    head = lin.model.weights.lm_head
    in_head_space = kind == "final" or (
        getattr(lin, "normed", False) and kind in ("resid_post", "attn_out", "mlp_out")
    )
    if kind == "logit":  # the output IS a logit: the terms are the contributions
        tid = site.token_id
        att.logit_token = (tid, token_text(lin.model, tid))
        att.logit_contributions = terms[:, 0]
        att.logit = float(y[0])
    elif in_head_space and lin.d_out == head.shape[1]:
        tid = int(lin.next_token[0]) if logit_token is None else int(logit_token)
        row = torch.from_numpy(head.rows(tid, tid + 1).dequantize()[0]).double()
        att.logit_token = (tid, token_text(lin.model, tid))
        att.logit_contributions = terms.double() @ row
        att.logit = float(row @ y.double())
    return att
