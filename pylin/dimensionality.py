"""pylin.dimensionality — how low-dimensional a detached Jacobian is: stable rank ‖J‖_F² / ‖J‖₂².

    sr = stable_rank(lin, token=-1)           # matrix-free: ‖J‖₂ by block Krylov, ‖J‖_F² by Hutch++
    sr = stable_rank(lin, token=-1, method="exact")
    frobenius_sq(lin, token=-1)               # the Hutch++ estimate of ‖J_n‖_F² alone

The stable rank is a continuous, noise-robust count of the directions that matter (1 for a rank-one J,
d for an isometry).  ‖J‖_F² = tr(JᵀJ) is estimated without forming J by Hutch++ (Meyer, Musco, Musco &
Woodruff 2021): a third of the budget sketches the dominant row space Q = orth(Jᵀ Ω) and contributes
‖J Q‖_F² exactly, the rest estimates the remainder by Hutchinson's estimator on the complement,
E‖J (I − QQᵀ) g‖² with Gaussian g.  Because J's spectrum decays fast, the exact part carries nearly all of
the mass and the estimate is far tighter than plain Hutchinson at the same cost.  The sketch is one VJP
(shared by every token), the rest one JVP batch per token.  Tests: tests/test_analysis.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from .operators import concat_operator, device_of, orthonormalize, resolve_tokens, token_operator
from .svd import SVDResult, svd

__all__ = ["StableRank", "frobenius_sq", "stable_rank"]


@dataclass
class StableRank:
    """Stable rank per token (a float for one token or "concat", a list for several)."""

    value: float | list[float]
    frobenius_sq: float | list[float]
    spectral_sq: float | list[float]
    method: str
    token: int | str | list[int]
    samples: int = 0

    def __str__(self) -> str:
        v = self.value if isinstance(self.value, list) else [self.value]
        return f"stable rank ({self.method}, token={self.token!r}): " + ", ".join(f"{x:.3f}" for x in v)


def frobenius_sq(
    op: Any,
    token: int | list[int] | str = -1,
    *,
    method: Literal["hutch++", "hutchinson", "exact"] = "hutch++",
    samples: int = 48,
    seed: int = 0,
) -> torch.Tensor:
    """‖J_j‖_F² of the token block(s) (or of the concatenated J): a scalar tensor, or (m,) for several."""
    if method not in ("hutch++", "hutchinson", "exact"):
        raise ValueError(f"method must be 'hutch++', 'hutchinson' or 'exact', got {method!r}")
    if not isinstance(samples, int) or samples < 3:
        raise ValueError(f"samples must be an integer >= 3, got {samples!r}")
    tokens, label = resolve_tokens(op, token)
    concat = label == "concat"
    if method == "exact":
        J = op.jacobian() if concat else op.jacobian(tokens=tokens)
        out = J.double().square().sum() if concat else J.double().square().sum(dim=(0, 2))
        return out if concat or not isinstance(label, int) else out[0]
    A = concat_operator(op) if concat else token_operator(op, tokens, progress=False)
    gen = torch.Generator().manual_seed(seed)
    dev = device_of(op)
    if method == "hutchinson":
        G = torch.randn(A.P, A.d_in, samples, generator=gen, dtype=torch.float64).to(op.dtype).to(dev)
        est = A.matvec(G).double().square().sum(dim=(1, 2)) / samples
    else:
        # Hutch++ (Meyer et al. 2021, Algorithm 1) on A = JᵀJ, sketching with Jᵀ Ω (the shared VJP).
        s = min(samples // 3, A.d_in, A.d_out)
        Om = torch.randn(A.d_out, s, generator=gen, dtype=torch.float64).to(op.dtype).to(dev)
        Q = orthonormalize(A.rmatvec_shared(Om), None, gen)  # (P, d_in, s)
        m = samples - s
        G = torch.randn(A.P, A.d_in, m, generator=gen, dtype=torch.float64).to(op.dtype).to(dev)
        G = G - Q @ (Q.mT @ G)
        Z = A.matvec(torch.cat([Q, G], dim=-1)).double()  # one JVP batch: exact part and remainder together
        est = Z[..., :s].square().sum(dim=(1, 2)) + Z[..., s:].square().sum(dim=(1, 2)) / m
    return est[0] if isinstance(label, int) or concat else est


def stable_rank(
    op: Any,
    token: int | list[int] | str = -1,
    *,
    method: Literal["auto", "exact"] = "auto",
    samples: int = 48,
    seed: int = 0,
    svd_result: SVDResult | None = None,
) -> StableRank:
    """‖J‖_F² / ‖J‖₂² of the token block(s) or of the concatenated J ("concat").

    "auto": ‖J‖₂ from `svd_result` when given (its S[..., 0]) or a block-Krylov SVD with k = 1, and
    ‖J‖_F² by Hutch++ with `samples` JVP/VJP vectors.  "exact": both from the formed J.
    """
    if method not in ("auto", "exact"):
        raise ValueError(f"method must be 'auto' or 'exact', got {method!r}")
    tokens, label = resolve_tokens(op, token)
    if method == "exact":
        J = op.jacobian() if label == "concat" else op.jacobian(tokens=tokens)
        mats = J.reshape(J.shape[0], -1)[None] if label == "concat" else J.permute(1, 0, 2)
        s = torch.linalg.svdvals(mats.double())
        fro, spec = s.square().sum(-1), s[..., 0].square()
    else:
        if svd_result is not None:
            top = svd_result.S[..., 0]
        else:
            top = svd(op, k=1, token=label if not isinstance(label, list) else tokens, seed=seed).S[..., 0]
        spec = top.double().reshape(-1).square()
        fro = frobenius_sq(op, label if not isinstance(label, list) else tokens, samples=samples, seed=seed)
        fro = fro.double().reshape(-1)
    value = (fro / spec).tolist()
    one = isinstance(label, int) or label == "concat"
    pick = (lambda x: x[0]) if one else (lambda x: x)
    return StableRank(
        pick(value), pick(fro.tolist()), pick(spec.tolist()),
        "exact" if method == "exact" else "hutch++", label, 0 if method == "exact" else samples,
    )  # fmt: skip
