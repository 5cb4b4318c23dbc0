"""A fake `Linearization`: an explicit Jacobian tensor J (d_out, n, d_in) behind the engine's interface.

The analysis code (pylin.svd, readout, dimensionality, attribution) only needs `jvp`, `vjp`, `jacobian`,
`n_tokens`, `d_in`, `d_out`, `dtype`, `x`, `output` and a `model` with an LM head and an embedding table;
this class gives all of them from einsums over a known J, so the algorithms are tested against exact
linear algebra without a model.  Each block J_j is low rank plus noise with a geometrically decaying
spectrum (like the detached Jacobians of real LLMs, which are dominated by a few directions).
Used by tests/test_svd.py and tests/test_analysis.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from pylin.qtensor import QTensor


@dataclass
class Reconstruction:
    rel_error: float
    r2: float


class FakeModel:
    """A vocabulary of `vocab` tokens named "t0", "t1", …, with an LM head and an embedding table (F32)."""

    def __init__(self, lm_head: torch.Tensor, token_embd: torch.Tensor) -> None:
        self.weights = SimpleNamespace(
            lm_head=QTensor.from_torch(lm_head.float().contiguous(), "output.weight"),
            token_embd=QTensor.from_torch(token_embd.float().contiguous(), "token_embd.weight"),
        )
        self.d_model = lm_head.shape[1]
        self.vocab_size = lm_head.shape[0]

    def decode(self, ids: list[int] | int) -> str:
        ids = [ids] if isinstance(ids, int) else list(ids)
        return "".join(f"t{i}" for i in ids)


class FakeLinearization:
    """y = Σ_j J_j x_j for an explicit J; counts its JVP/VJP calls so tests can check pass counts."""

    def __init__(
        self,
        n: int = 5,
        d_in: int = 48,
        d_out: int = 40,
        rank: int = 24,
        decay: float = 0.8,
        noise: float = 1e-3,
        vocab: int = 200,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        blocks = []
        for j in range(n):
            U, _ = torch.linalg.qr(torch.randn(d_out, rank, generator=g, dtype=torch.float64))
            V, _ = torch.linalg.qr(torch.randn(d_in, rank, generator=g, dtype=torch.float64))
            s = (1.0 + 0.5 * j) * decay ** torch.arange(rank, dtype=torch.float64)
            blocks.append(
                U @ torch.diag(s) @ V.T + noise * torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
            )
        self.J = torch.stack(blocks, dim=1).to(dtype)  # (d_out, n, d_in)
        self.x = torch.randn(n, d_in, generator=g, dtype=torch.float64).to(dtype)
        self.output = torch.einsum("onk,nk->o", self.J, self.x)
        self.dtype = dtype
        self.n_tokens, self.d_in, self.d_out = n, d_in, d_out
        self.tokens = list(range(10, 10 + n))
        self.token_strings = [f"t{i}" for i in self.tokens]
        self.output_site, self.wrt, self.normed = "final", "embed", True
        lm_head = torch.randn(vocab, d_out, generator=g, dtype=torch.float64)
        token_embd = torch.randn(vocab, d_in, generator=g, dtype=torch.float64)
        self.model = FakeModel(lm_head, token_embd)
        self.logits = (lm_head @ self.output.double()).to(dtype)
        top = int(self.logits.argmax())
        self.next_token = (top, f"t{top}")
        self.calls: list[tuple[str, int, int]] = []  # (kind, batch, number of input tokens touched)

    def _check(self, tokens: list[int] | None) -> list[int]:
        return list(range(self.n_tokens)) if tokens is None else [t % self.n_tokens for t in tokens]

    def jvp(self, V: torch.Tensor, tokens: list[int] | None = None) -> torch.Tensor:
        idx = self._check(tokens)
        if V.shape[1:] != (len(idx), self.d_in):
            raise ValueError(f"tangent shape {tuple(V.shape)} does not match ({len(idx)}, {self.d_in})")
        self.calls.append(("jvp", V.shape[0], len(idx)))
        return torch.einsum("onk,bnk->bo", self.J[:, idx, :], V.to(self.dtype))

    def vjp(self, U: torch.Tensor, tokens: list[int] | None = None) -> torch.Tensor:
        idx = self._check(tokens)
        if U.shape[1:] != (self.d_out,):
            raise ValueError(f"cotangent shape {tuple(U.shape)} does not match (B, {self.d_out})")
        self.calls.append(("vjp", U.shape[0], len(idx)))
        return torch.einsum("onk,bo->bnk", self.J[:, idx, :], U.to(self.dtype))

    def jacobian(self, tokens: list[int] | None = None) -> torch.Tensor:
        return self.J[:, self._check(tokens), :].clone()

    def reconstruction(self) -> Reconstruction:
        rec = self.jvp(self.x.unsqueeze(0))[0]
        err = float(torch.linalg.vector_norm(rec - self.output) / torch.linalg.vector_norm(self.output))
        ss = float(((self.output - self.output.mean()) ** 2).sum())
        return Reconstruction(err, 1.0 - float(((rec - self.output) ** 2).sum()) / ss)
