"""pylin.svd — top-k SVD of a detached Jacobian without forming it (matrix-free, batched JVP/VJP).

    res = pylin.svd.svd(lin, k=8, token=-1)        # J_n, the last input token's block (d_out × d_in)
    res = pylin.svd.svd(lin, k=8, token="all")     # every J_j: U (n, d_out, k), S (n, k), Vh (n, k, d_in)
    res = pylin.svd.svd(lin, k=8, token="concat")  # the concatenated J = [J_1 … J_n]: Vh (k, n·d_in)
    res.decode()                                    # singular vectors as tokens (pylin.readout)

`op` is anything with `jvp(V, tokens=None)`, `vjp(U, tokens=None)`, `n_tokens`, `d_in`, `d_out`, `dtype`
(a `pylin.Linearization`, or `tests/fake_linearization.py`), and optionally `jacobian(tokens=...)`
(used by `method="exact"`) and `output` (y: singular pairs are signed so that ⟨u, y⟩ ≥ 0).

Methods (each pass over J is ONE batched JVP or VJP of l = k + oversample vectors):
- "krylov" (default, "auto"): block Lanczos bidiagonalization with full re-orthogonalization, i.e. the
  block Krylov method of Halko, Martinsson & Tropp 2011 §4.4–4.5 / Musco & Musco 2015: the Rayleigh–Ritz
  space is every block seen so far, so q iterations give a (q+1)·l-dimensional space for the cost of
  q+1 JVP batches and q+1 VJP batches.  With `power_iters=None` it iterates until the top-k Ritz values
  stop moving (relative change < `tol`), at most `max_iters` times.
- "randomized": the HMT range finder with oversampling and q power (subspace) iterations, orthonormalized
  after every product (HMT 2011, Algorithm 4.4), Rayleigh–Ritz on the last block only.
- "exact": forms J (`op.jacobian`, else one VJP batch with the identity) and calls torch.linalg.svd.

All three start on the output side (Ω is d_out × l, the first product is Jᵀ Ω) because one VJP batch
yields Jᵀ Ω for every input token at once: with `token="all"`, the first pass costs one VJP for all n
blocks; later passes use per-token JVPs/VJPs (`tokens=[j]`), which by causality only touch positions ≥ j.
Deterministic for a seed (Ω comes from a seeded CPU generator).  Tests: tests/test_svd.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .indices import integer, is_integer
from .operators import (
    Stacked,
    Token,
    concat_operator,
    dense_operator,
    device_of,
    form_blocks,
    orthonormalize,
    resolve_tokens,
    token_operator,
)

Method = Literal["auto", "krylov", "randomized", "exact"]

__all__ = ["SVDResult", "principal_angles", "signs_toward", "subspace_angles", "svd"]


@dataclass
class SVDResult:
    """Top-k singular triplets of one Jacobian block (or of several, stacked on a leading token axis).

    For one token: U (d_out, k), S (k,), Vh (k, d_in).  For `token="all"` or a list of tokens:
    U (m, d_out, k), S (m, k), Vh (m, k, d_in), one row per token in `tokens`.  For `"concat"`:
    Vh (k, n·d_in); `vh_blocks()` reshapes it to (k, n, d_in).  n_jvp / n_vjp count passes over J
    (each a batch of `block_size` vectors per token).
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    token: int | str | list[int]
    tokens: list[int]
    method: str
    k: int
    block_size: int = 0
    iterations: int = 0
    n_jvp: int = 0
    n_vjp: int = 0
    seed: int = 0
    converged: bool = True
    op: Any = field(default=None, repr=False, compare=False)

    @property
    def stacked(self) -> bool:
        """True when U/S/Vh carry a leading token axis (token="all" or a list of tokens)."""
        return self.S.dim() == 2

    def vh_blocks(self) -> torch.Tensor:
        """For "concat": Vh as (k, n, d_in), each right singular vector split per input token."""
        if self.token != "concat":
            raise ValueError("vh_blocks() is for token='concat' results")
        return self.Vh.reshape(self.k, len(self.tokens), -1)

    def decode(self, lin: Any = None, top: int = 5) -> Any:
        """Singular vectors as tokens (pylin.readout.decode_svd); `lin` defaults to the operator."""
        from .readout import decode_svd

        return decode_svd(self, lin if lin is not None else self.op, top=top)

    def __repr__(self) -> str:  # not the dataclass's: that one prints U and Vh whole
        s = self.S.detach().cpu().double()
        what, values = ("σ1 per token", s[:, 0].tolist()) if s.dim() == 2 else ("S", s.tolist())
        shown = ", ".join(f"{v:.4g}" for v in values[:6]) + (", …" if len(values) > 6 else "")
        return (
            f"SVDResult(token={self.token!r}, k={self.k}, method={self.method!r}, {what} [{shown}], "
            f"U {tuple(self.U.shape)}, Vh {tuple(self.Vh.shape)})"
        )

    def _repr_html_(self) -> str:  # Jupyter (pylin.html)
        from .html import svd_html

        return svd_html(self)

    def __str__(self) -> str:
        s = self.S.detach().cpu().double()
        what = f"token {self.token}" if isinstance(self.token, int) else f"token={self.token!r}"
        rows = [
            f"SVD of J ({what}, k={self.k}, method={self.method}, {self.n_jvp} JVP + {self.n_vjp} VJP passes)"
        ]
        if s.dim() == 1:
            rows.append("  S = " + "  ".join(f"{v:.4g}" for v in s.tolist()))
        else:
            for t, row in zip(self.tokens, s.tolist(), strict=True):
                rows.append(f"  token {t:>3}: S = " + "  ".join(f"{v:.4g}" for v in row))
        return "\n".join(rows)


# ---- linear algebra helpers --------------------------------------------------------------------


def _rayleigh_ritz(
    B: torch.Tensor, Q: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """J ≈ B Qᵀ with B = J Q (P, d_out, r), Q (P, d_in, r) orthonormal: SVD of the small B (in float64)."""
    Ub, S, Wh = torch.linalg.svd(B.double(), full_matrices=False)
    U = Ub[..., :k].to(B.dtype)
    Vh = (Wh[..., :k, :].to(B.dtype)) @ Q.mT
    return U, S[..., :k].to(B.dtype), Vh


def signs_toward(U: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """±1 per column u of U (..., d, k) so that ⟨±u, y⟩ > 0: the paper's convention, decoding each left
    singular vector with the sign that pushes toward the actual output y.

    Where ⟨u, y⟩ = 0 exactly, or y is None / zero / of another size, the largest-magnitude entry of u
    decides (positive), and an all-zero u keeps +1: deterministic, so results compare across methods.
    """
    idx = U.abs().argmax(dim=-2, keepdim=True)
    s = torch.sign(torch.gather(U, -2, idx)).squeeze(-2)
    if y is not None and y.numel() == U.shape[-2]:
        along = torch.sign(torch.einsum("...dk,d->...k", U, y.reshape(-1).to(U)))
        s = torch.where(along != 0, along, s)
    return torch.where(s == 0, torch.ones_like(s), s)


def _sign_fix(U: torch.Tensor, Vh: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each singular pair (u, v) → (±u, ±v) with the sign of `signs_toward` (J = U S Vh is unchanged)."""
    s = signs_toward(U, y)
    return U * s.unsqueeze(-2), Vh * s.unsqueeze(-1)


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spaces of A (m, p) and B (m, q)."""
    qa, _ = torch.linalg.qr(A.double())
    qb, _ = torch.linalg.qr(B.double())
    cos = torch.linalg.svdvals(qa.mT @ qb).clamp(-1.0, 1.0)
    return torch.arccos(cos)  # svdvals are descending, so the angles ascend


def subspace_angles(a: SVDResult, b: SVDResult, side: Literal["left", "right"] = "left") -> torch.Tensor:
    """Largest principal angle (radians) between the top-k singular subspaces of two results, per token."""
    if side == "left":
        A, B = a.U, b.U
    else:
        A, B = a.Vh.mT, b.Vh.mT
    if A.dim() == 2:
        return principal_angles(A, B).max()
    return torch.stack([principal_angles(x, y).max() for x, y in zip(A, B, strict=True)])


# ---- the algorithms ----------------------------------------------------------------------------


def _krylov(
    A: Stacked,
    k: int,
    l: int,
    iters: int | None,
    max_iters: int,
    tol: float,
    Om: torch.Tensor,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, int, bool]:
    """Block Lanczos bidiagonalization with full re-orthogonalization (HMT 2011 §4.5; Musco & Musco 2015).

    Blocks Q_0 = orth(Jᵀ Ω), Q_{i+1} = orth(Jᵀ orth(J Q_i)) ⊥ Q_0..Q_i; J Q_i is kept, so the Rayleigh–Ritz
    matrix B = J [Q_0 … Q_i] costs nothing extra.  The space is capped at min(d_in, d_out) (then exact).
    """
    cap = min(A.d_in, A.d_out)
    Q = orthonormalize(A.rmatvec_shared(Om), None, gen)  # (P, d_in, l)
    n_vjp, n_jvp = 1, 0
    Qs: list[torch.Tensor] = [Q]
    Zs: list[torch.Tensor] = []
    prev: torch.Tensor | None = None
    it = 0
    while True:
        Zs.append(A.matvec(Qs[-1]))
        n_jvp += 1
        Qall, B = torch.cat(Qs, dim=-1), torch.cat(Zs, dim=-1)
        U, S, Vh = _rayleigh_ritz(B, Qall, k)
        dim = Qall.shape[-1]
        exhausted = dim >= cap  # the space is all of R^{d_in} (or rank-capped): Rayleigh–Ritz is exact
        change = math.inf if prev is None else float(((S - prev).abs() / S.abs().clamp_min(1e-300)).max())
        converged = exhausted or change < tol
        if exhausted or (it >= iters if iters is not None else (converged or it >= max_iters)):
            return U, S, Vh, it, n_jvp, n_vjp, converged
        prev = S
        P_, _ = torch.linalg.qr(Zs[-1])
        Y = A.rmatvec(P_)
        n_vjp += 1
        Qs.append(orthonormalize(Y[..., : min(l, cap - dim)], Qall, gen))
        it += 1


def _randomized(
    A: Stacked, k: int, q: int, Om: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, int, bool]:
    """HMT 2011 Algorithm 4.4 (randomized subspace iteration) on Jᵀ, orthonormalizing after every product."""
    Q = orthonormalize(A.rmatvec_shared(Om), None, gen)
    n_vjp, n_jvp = 1, 0
    for _ in range(q):
        P_ = orthonormalize(A.matvec(Q), None, gen)
        Q = orthonormalize(A.rmatvec(P_), None, gen)
        n_jvp, n_vjp = n_jvp + 1, n_vjp + 1
    B = A.matvec(Q)
    U, S, Vh = _rayleigh_ritz(B, Q, k)
    return U, S, Vh, q, n_jvp + 1, n_vjp, True


def _exact(
    op: Any, tokens: list[int] | None, concat: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Form J (or its blocks) and take its full SVD — the ground truth for tests."""
    M = form_blocks(op, tokens, concat)
    return torch.linalg.svd(M[0] if concat else M, full_matrices=False)


# Passes (JVP + VJP pairs) block Krylov needs on real models before the top-8 settle to TOL: 6-10 on
# Gemma 3 270M (docs/notes-analysis.md); the cost model of method="auto" assumes this many.
TYPICAL_PASSES = 8
# Formed blocks beyond this size are never chosen by method="auto" (they would dominate memory).
FORMED_MAX_BYTES = 1 << 30
# Block Krylov stops once the top-k Ritz values move by less than this (relative) in a pass: on Gemma 3
# 270M the top-8 are then within ~1e-6 of exact (the float32 floor); 1e-3 saved no passes at 32/128
# tokens, and a residual-based stop saved none either (both measured, reverted).
TOL = 1e-4
# At most this many passes after the first: the slowest case measured (Gemma's flat spectra at 128
# tokens, σ1/σ8 ≈ 1.5) converged in 10.
MAX_ITERS = 12
# Power iterations of method="randomized" (HMT 2011 recommend q = 1-2 for fast-decaying spectra; 4 gets
# it to ~5e-3 on Gemma's flat ones, and it is kept only as a comparison).
RANDOMIZED_POWER_ITERS = 4


def default_oversample(k: int) -> int:
    """Extra columns per block: at least 16 (a pass over quantized weights costs about the same for 8 or 32
    vectors, decoding dominates, and a wider block converges in fewer passes), and at least k."""
    return max(16, k)


def _exact_is_cheaper(op: Any, tokens: list[int], concat: bool, width: int) -> bool:
    """method="auto": forming the blocks (d_out VJP vectors over the positions they need) against the
    iterative passes (`width` vectors per token over the positions from that token on, twice per pass).
    For every token's block of a short prompt, forming J wins: the iterative cost grows like n², J's
    like n.  Never when the blocks would not fit in memory."""
    n = op.n_tokens
    first = 0 if concat else min(tokens)
    exact_rows = op.d_out * (n - first)
    spans = n if concat else sum(n - j for j in tokens)
    iterative_rows = 2 * TYPICAL_PASSES * width * spans
    itemsize = torch.finfo(op.dtype).bits // 8
    blocks = n if concat else len(tokens)
    fits = op.d_out * blocks * op.d_in * itemsize <= FORMED_MAX_BYTES
    return fits and exact_rows <= iterative_rows


def svd(
    op: Any,
    k: int = 8,
    token: Token = -1,
    *,
    method: Method = "auto",
    oversample: int | None = None,
    power_iters: int | None = None,
    seed: int = 0,
    tol: float = TOL,
    max_iters: int = MAX_ITERS,
    progress: bool = False,
) -> SVDResult:
    """Top-k singular triplets of the Jacobian block(s) of `op` (see the module docstring).

    k: how many triplets.  token: an input index (negative counts from the end), a list of indices,
    "all" (every token's block) or "concat" (the whole J = [J_1 … J_n]).  method: "auto" ("exact" when
    forming the blocks costs fewer VJP rows than the iterative passes would — every token's block of a
    short prompt — and they fit in 1 GiB: then block Krylov runs on the formed blocks, reported as
    method "formed"; else "krylov"), "krylov", "randomized" or "exact" (full SVD of the formed blocks).
    tol: "krylov" stops once the top-k Ritz values change by less than tol (relative) in a pass.
    oversample: extra columns per block (default `default_oversample(k)`).
    power_iters: passes after the first (default: "krylov" iterates to `tol`, "randomized" uses 4).
    seed: the Gaussian start block's seed.  progress: a tqdm bar over per-token passes.
    """
    if not is_integer(k) or int(k) < 1:  # numpy / torch integer scalars too; floats and bools refused
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    max_iters = integer(max_iters, "max_iters", low=1)
    seed = integer(seed, "seed")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if method not in ("auto", "krylov", "randomized", "exact"):
        raise ValueError(f"method must be 'auto', 'krylov', 'randomized' or 'exact', got {method!r}")
    oversample = None if oversample is None else integer(oversample, "oversample", low=0)
    power_iters = None if power_iters is None else integer(power_iters, "power_iters", low=0)
    tokens, label = resolve_tokens(op, token)
    concat = label == "concat"
    d_in = op.d_in * (op.n_tokens if concat else 1)
    rank_cap = min(d_in, op.d_out)
    if k > rank_cap:
        raise ValueError(f"k = {k} exceeds the block's smaller dimension {rank_cap}")
    single = isinstance(label, int) or concat
    y = getattr(op, "output", None)
    y = y.reshape(-1) if isinstance(y, torch.Tensor) else None

    l = min(k + (default_oversample(k) if oversample is None else oversample), rank_cap)
    formed = method == "auto" and _exact_is_cheaper(op, tokens, concat, l)
    method = "krylov" if method == "auto" else method
    if method == "exact":
        U, S, Vh = _exact(op, None if concat else tokens, concat)
        U, S, Vh = U[..., :k], S[..., :k], Vh[..., :k, :]
        U, Vh = _sign_fix(U, Vh, y)
        if isinstance(label, int):
            U, S, Vh = U[0], S[0], Vh[0]
        return SVDResult(U, S, Vh, label, tokens, "exact", k, seed=seed, op=op)

    if formed:  # the blocks are cheaper to form than to probe; their top-k then costs next to nothing
        A = dense_operator(form_blocks(op, None if concat else tokens, concat))
    else:
        A = concat_operator(op) if concat else token_operator(op, tokens, progress)
    # Wide blocks are nearly free: a pass over quantized weights costs about the same for 8 or 32 vectors
    # (decoding the weights dominates), and a wider block converges in fewer passes (l, above).
    gen = torch.Generator().manual_seed(seed)
    Om = torch.randn(op.d_out, l, generator=gen, dtype=torch.float64).to(dtype=op.dtype, device=device_of(op))
    if method == "randomized":
        out = _randomized(A, k, RANDOMIZED_POWER_ITERS if power_iters is None else power_iters, Om, gen)
    else:
        out = _krylov(A, k, l, power_iters, max_iters, tol, Om, gen)
    U, S, Vh, iters, n_jvp, n_vjp, converged = out
    U, Vh = _sign_fix(U, Vh, y)
    if single:
        U, S, Vh = U[0], S[0], Vh[0]
    name = "formed" if formed else method
    return SVDResult(U, S, Vh, label, tokens, name, k, l, iters, n_jvp, n_vjp, seed, converged, op)
