"""pylin.dimensionality — how low-dimensional a detached Jacobian is: stable rank ‖J‖_F² / ‖J‖₂².

    sr = stable_rank(lin, token=-1)           # matrix-free: ‖J‖₂ by block Krylov, ‖J‖_F² by Hutch++ ± stderr
    sr = stable_rank(lin, token="concat", svd_result=res)   # exact when `res` formed J (the seed's way)
    sr = stable_rank(lin, token=-1, method="exact")
    frobenius_sq(lin, token=-1)               # the Hutch++ estimate of ‖J_n‖_F² alone

The stable rank is a continuous, noise-robust count of the directions that matter (1 for a rank-one J,
d for an isometry).  ‖J‖_F² = tr(JᵀJ) is estimated without forming J by Hutch++ (Meyer, Musco, Musco &
Woodruff 2021): a third of the budget sketches the dominant row space Q = orth(Jᵀ Ω) and contributes
‖J Q‖_F² exactly, the rest estimates the remainder by Hutchinson's estimator on the complement,
E‖J (I − QQᵀ) g‖² with Gaussian g.  Because J's spectrum decays fast, the exact part carries nearly all of
the mass and the estimate is far tighter than plain Hutchinson at the same cost.  The sketch is one VJP
(shared by every token), the rest one JVP batch per token.  Its error bar is the standard error of the
Hutchinson part (the sample standard deviation of ‖J(I − QQᵀ)g‖² over √m); the exact part has none.
The seed (JacobianAnalyzer.plot_dimensionality) divides the exact ‖J‖_F² of the formed J (concatenated over
tokens by default) by σ₁²: with "auto", a `svd_result` that formed J ("formed"/"exact") makes the stable
rank exact too, so Hutch++ is used only where J was never formed.
Tests: tests/test_analysis.py, tests/test_emergence.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from .operators import concat_operator, device_of, orthonormalize, resolve_tokens, token_operator
from .svd import SVDResult, svd

__all__ = ["StableRank", "frobenius_sq", "frobenius_sq_with_error", "stable_rank"]


@dataclass
class StableRank:
    """Stable rank per token (a float for one token or "concat", a list for several)."""

    value: float | list[float]
    frobenius_sq: float | list[float]
    spectral_sq: float | list[float]
    method: str
    token: int | str | list[int]
    samples: int = 0
    stderr: float | list[float] = 0.0  # standard error of `value` (Hutch++); 0 when exact

    def __str__(self) -> str:
        v = self.value if isinstance(self.value, list) else [self.value]
        e = self.stderr if isinstance(self.stderr, list) else [self.stderr]
        shown = [f"{x:.3f}" + (f" ± {s:.3f}" if s else "") for x, s in zip(v, e, strict=True)]
        return f"stable rank ({self.method}, token={self.token!r}): " + ", ".join(shown)


def frobenius_sq(
    op: Any,
    token: int | list[int] | str = -1,
    *,
    method: Literal["hutch++", "hutchinson", "exact"] = "hutch++",
    samples: int = 48,
    seed: int = 0,
) -> torch.Tensor:
    """‖J_j‖_F² of the token block(s) (or of the concatenated J): a scalar tensor, or (m,) for several."""
    return frobenius_sq_with_error(op, token, method=method, samples=samples, seed=seed)[0]


def frobenius_sq_with_error(
    op: Any,
    token: int | list[int] | str = -1,
    *,
    method: Literal["hutch++", "hutchinson", "exact"] = "hutch++",
    samples: int = 48,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖J‖_F² estimate, its standard error) per block, shaped like `frobenius_sq`; the error is 0 for
    "exact"."""
    if method not in ("hutch++", "hutchinson", "exact"):
        raise ValueError(f"method must be 'hutch++', 'hutchinson' or 'exact', got {method!r}")
    if not isinstance(samples, int) or samples < 3:
        raise ValueError(f"samples must be an integer >= 3, got {samples!r}")
    tokens, label = resolve_tokens(op, token)
    concat = label == "concat"
    one = isinstance(label, int) or concat
    if method == "exact":
        out = _exact_frobenius_sq(op, tokens, concat)
        return (out[0], torch.zeros((), dtype=torch.float64)) if one else (out, torch.zeros_like(out))
    A = concat_operator(op) if concat else token_operator(op, tokens, progress=False)
    gen = torch.Generator().manual_seed(seed)
    dev = device_of(op)
    if method == "hutchinson":
        G = torch.randn(A.P, A.d_in, samples, generator=gen, dtype=torch.float64).to(op.dtype).to(dev)
        per = A.matvec(G).double().square().sum(dim=1)  # (P, samples)
        est, err = per.mean(-1), per.std(-1) / samples**0.5
    else:
        # Hutch++ (Meyer et al. 2021, Algorithm 1) on A = JᵀJ, sketching with Jᵀ Ω (the shared VJP).
        s = min(samples // 3, A.d_in, A.d_out)
        Om = torch.randn(A.d_out, s, generator=gen, dtype=torch.float64).to(op.dtype).to(dev)
        Q = orthonormalize(A.rmatvec_shared(Om), None, gen)  # (P, d_in, s)
        m = samples - s
        G = torch.randn(A.P, A.d_in, m, generator=gen, dtype=torch.float64).to(op.dtype).to(dev)
        G = G - Q @ (Q.mT @ G)
        Z = A.matvec(torch.cat([Q, G], dim=-1)).double()  # one JVP batch: exact part and remainder together
        per = Z[..., s:].square().sum(dim=1)  # (P, m): the Hutchinson samples of the remainder
        est = Z[..., :s].square().sum(dim=(1, 2)) + per.mean(-1)
        err = per.std(-1) / m**0.5
    return (est[0], err[0]) if one else (est, err)


def _exact_frobenius_sq(op: Any, tokens: list[int], concat: bool) -> torch.Tensor:
    """‖J‖_F² of the formed J (reusing one the linearization holds), (1,) for concat or (m,) per block."""
    cached = getattr(op, "_jacobian", None)
    J = cached if cached is not None else (op.jacobian() if concat else op.jacobian(tokens=tokens))
    if concat:
        return J.double().square().sum().reshape(1)
    if cached is not None:
        J = J[:, tokens]
    return J.double().square().sum(dim=(0, 2))


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

    "auto": ‖J‖₂ from `svd_result` when given (its S[..., 0]) or a block-Krylov SVD with k = 1; ‖J‖_F²
    exact when `svd_result` formed J (method "formed" or "exact"), else by Hutch++ with `samples` JVP/VJP
    vectors (with its standard error).  "exact": both from the formed J.
    """
    if method not in ("auto", "exact"):
        raise ValueError(f"method must be 'auto' or 'exact', got {method!r}")
    tokens, label = resolve_tokens(op, token)
    concat = label == "concat"
    err = None
    if method == "exact":
        J = op.jacobian() if concat else op.jacobian(tokens=tokens)
        mats = J.reshape(J.shape[0], -1)[None] if concat else J.permute(1, 0, 2)
        s = torch.linalg.svdvals(mats.double())
        fro, spec = s.square().sum(-1), s[..., 0].square()
        name = "exact"
    else:
        if svd_result is not None:
            top = svd_result.S[..., 0]
        else:
            top = svd(op, k=1, token=label if not isinstance(label, list) else tokens, seed=seed).S[..., 0]
        spec = top.double().reshape(-1).square()
        formed = svd_result is not None and svd_result.method in ("formed", "exact")
        if formed:
            fro, name = _exact_frobenius_sq(op, tokens, concat), "exact ‖J‖_F²"
        else:
            est, e = frobenius_sq_with_error(
                op, label if not isinstance(label, list) else tokens, samples=samples, seed=seed
            )
            fro, err, name = est.double().reshape(-1), e.double().reshape(-1), "hutch++"
    value = (fro / spec).tolist()
    stderr = [0.0] * len(value) if err is None else (err / spec).tolist()
    one = isinstance(label, int) or concat
    pick = (lambda x: x[0]) if one else (lambda x: x)
    return StableRank(
        pick(value), pick(fro.tolist()), pick(spec.tolist()), name, label,
        samples if name == "hutch++" else 0, pick(stderr),
    )  # fmt: skip
