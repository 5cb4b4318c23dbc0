"""The detached Jacobian (or its token blocks) as stacked linear operators, for pylin.svd and
pylin.dimensionality.

Every algorithm on J works on P independent problems at once ("stacked"): `matvec` maps (P, d_in, l) to
(P, d_out, l), `rmatvec` maps (P, d_out, l) to (P, d_in, l), and `rmatvec_shared` maps one (d_out, l)
block to all P problems — the single VJP batch that serves every token.  The operand `op` is anything
with `jvp(V, tokens=None)`, `vjp(U, tokens=None)`, `n_tokens`, `d_in`, `d_out`, `dtype` (a
`pylin.Linearization`, or tests/fake_linearization.py).  Tests: tests/test_svd.py, tests/test_analysis.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .indices import indices, is_integer

Token = int | Sequence[int] | Literal["all", "concat"]

# A column that keeps less than this many ulps (× √m) of its norm after projection is numerically in the
# span already (rounding noise): it is replaced by a fresh random direction.  Gram-Schmidt twice leaves
# ~√m·eps of a dependent column; 64 gives a wide margin without discarding real directions.
WEAK_COLUMN_EPS = 64

__all__ = [
    "Stacked", "Token", "concat_operator", "dense_operator", "device_of", "form_blocks", "orthonormalize",
    "resolve_tokens", "token_operator",
]  # fmt: skip


# Every algorithm below works on P independent problems at once ("stacked"): matvec maps (P, d_in, l)
# to (P, d_out, l), rmatvec maps (P, d_out, l) to (P, d_in, l), and rmatvec_shared maps one (d_out, l)
# block to all P problems — the single VJP batch that serves every token.


@dataclass
class Stacked:
    """P stacked problems: J_p as matvec / rmatvec closures (see the module docstring)."""

    matvec: Callable[[torch.Tensor], torch.Tensor]
    rmatvec: Callable[[torch.Tensor], torch.Tensor]
    rmatvec_shared: Callable[[torch.Tensor], torch.Tensor]
    P: int
    d_in: int
    d_out: int


# Rows (vectors x positions) per engine call below which several tokens share one JVP/VJP call: a
# pass over the quantized weights costs about the same for a few or a few thousand rows (decoding
# dominates), while above it the kernels are compute-bound and sharing would only add positions.
SHARED_PASS_ROWS = 8192


def _token_groups(op: Any, tokens: list[int], width: int) -> list[list[int]]:
    """Consecutive runs of token indices (into `tokens`) that share one engine call."""
    groups: list[list[int]] = []
    for p in sorted(range(len(tokens)), key=lambda p: tokens[p]):
        if groups:
            group = groups[-1]
            first = min(tokens[q] for q in group + [p])
            if (len(group) + 1) * width * (op.n_tokens - first) <= SHARED_PASS_ROWS:
                group.append(p)
                continue
        groups.append([p])
    return groups


def token_operator(op: Any, tokens: list[int], progress: bool) -> Stacked:
    """Blocks J_j for j in `tokens`.  Each pass batches several tokens into one JVP / VJP call (block-
    diagonal tangents: vector i of token j is non-zero only at j), so the weights are decoded once per
    group of tokens; `tokens=` lets causality skip the positions before the group's first token."""
    P = len(tokens)

    def loop(items: list[list[int]]) -> Any:
        if progress and len(items) > 1:
            from tqdm.auto import tqdm

            return tqdm(items, leave=False, desc="per-token passes")
        return items

    def matvec(X: torch.Tensor) -> torch.Tensor:  # X: (P, d_in, l) -> (P, d_out, l)
        l = X.shape[-1]
        out = torch.empty(P, op.d_out, l, dtype=X.dtype, device=X.device)
        for group in loop(_token_groups(op, tokens, l)):
            G = len(group)
            V = torch.zeros(G, l, G, op.d_in, dtype=X.dtype, device=X.device)
            for g, p in enumerate(group):
                V[g, :, g, :] = X[p].T
            Y = op.jvp(V.reshape(G * l, G, op.d_in), tokens=[tokens[p] for p in group])
            out[group] = Y.reshape(G, l, op.d_out).transpose(1, 2)
        return out

    def rmatvec(Y: torch.Tensor) -> torch.Tensor:  # Y: (P, d_out, l) -> (P, d_in, l)
        l = Y.shape[-1]
        out = torch.empty(P, op.d_in, l, dtype=Y.dtype, device=Y.device)
        for group in loop(_token_groups(op, tokens, l)):
            G = len(group)
            U = Y[group].transpose(1, 2).reshape(G * l, op.d_out)
            W = op.vjp(U, tokens=[tokens[p] for p in group]).reshape(G, l, G, op.d_in)
            idx = torch.arange(G, device=Y.device)
            out[group] = W[idx, :, idx, :].transpose(1, 2)  # vector i of token g: its own row g
        return out

    def rmatvec_shared(Om: torch.Tensor) -> torch.Tensor:  # Om: (d_out, l) -> (P, d_in, l)
        W = op.vjp(Om.T, tokens=tokens)  # (l, P, d_in)
        return W.permute(1, 2, 0)

    return Stacked(matvec, rmatvec, rmatvec_shared, P, op.d_in, op.d_out)


def concat_operator(op: Any) -> Stacked:
    """The concatenated J (d_out × n·d_in) as a single problem."""
    n, d = op.n_tokens, op.d_in

    def matvec(X: torch.Tensor) -> torch.Tensor:  # (1, n·d, l)
        return op.jvp(X[0].T.reshape(-1, n, d)).T.unsqueeze(0)

    def rmatvec(Y: torch.Tensor) -> torch.Tensor:  # (1, d_out, l)
        return op.vjp(Y[0].T).reshape(Y.shape[-1], n * d).T.unsqueeze(0)

    return Stacked(matvec, rmatvec, lambda Om: rmatvec(Om.unsqueeze(0)), 1, n * d, op.d_out)


def orthonormalize(Y: torch.Tensor, against: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """Orthonormal basis of the columns of Y (P, m, l), orthogonal to `against` (P, m, r) if given.

    Classical Gram–Schmidt applied twice ("twice is enough", Giraud et al. 2005) then QR.  Columns that
    vanish after projection (the Krylov space is exhausted, or J is rank-deficient) are replaced by fresh
    random directions so the basis stays orthonormal; they add nothing but cost nothing either.
    """
    Y = Y.clone()
    norms0 = torch.linalg.vector_norm(Y, dim=1).clamp_min(torch.finfo(Y.dtype).tiny)
    for _ in range(2):
        if against is not None:
            Y = Y - against @ (against.mT @ Y)
    eps = torch.finfo(Y.dtype).eps
    weak = torch.linalg.vector_norm(Y, dim=1) < WEAK_COLUMN_EPS * eps * norms0 * math.sqrt(Y.shape[1])
    if bool(weak.any()):
        R = torch.randn(Y.shape, generator=gen, dtype=torch.float64).to(Y)
        Y = torch.where(weak.unsqueeze(1), R, Y)
        for _ in range(2):
            if against is not None:
                Y = Y - against @ (against.mT @ Y)
    Q, _ = torch.linalg.qr(Y)
    if against is not None:  # one more pass: QR mixes columns, re-project what rounding let back in
        Q = Q - against @ (against.mT @ Q)
        Q, _ = torch.linalg.qr(Q)
    return Q


def form_blocks(op: Any, tokens: list[int] | None, concat: bool) -> torch.Tensor:
    """The Jacobian blocks as dense matrices (m, d_out, d_in), or (1, d_out, n·d_in) for "concat"."""
    if hasattr(op, "jacobian"):
        J = op.jacobian() if concat or tokens is None else op.jacobian(tokens=tokens)
    else:
        eye = torch.eye(op.d_out, dtype=op.dtype, device=device_of(op))
        J = op.vjp(eye) if concat or tokens is None else op.vjp(eye, tokens=tokens)
    if concat:
        return J.reshape(1, J.shape[0], -1)
    return J.permute(1, 0, 2)


def dense_operator(M: torch.Tensor) -> Stacked:
    """Formed blocks M (P, d_out, d_in) as an operator: every pass is one batched matrix product."""
    return Stacked(
        lambda X: M @ X, lambda Y: M.mT @ Y, lambda Om: M.mT @ Om, M.shape[0], M.shape[2], M.shape[1]
    )


def device_of(op: Any) -> torch.device:
    for name in ("output", "x"):
        t = getattr(op, name, None)
        if isinstance(t, torch.Tensor):
            return t.device
    return torch.device("cpu")


def resolve_tokens(op: Any, token: Token) -> tuple[list[int], int | str | list[int]]:
    n = int(op.n_tokens)
    if isinstance(token, str):
        if token not in ("all", "concat"):
            raise ValueError(f"token must be an index, a list of indices, 'all' or 'concat', got {token!r}")
        return list(range(n)), token
    out = indices(token, n, "token")
    return out, (out[0] if is_integer(token) else out)
