"""A model frozen at one input: the detached Jacobian as a batched linear operator.

    lin = model.linearize("The bridge out of Marin is the")
    lin.jvp(V)            # (B, n, d) -> (B, d_out)      tangents through the frozen network
    lin.vjp(U)            # (B, d_out) -> (B, n, d)      cotangents back to every input token
    lin.jacobian()        # (d_out, n, d), assembled from chunked VJPs
    lin.reconstruction()  # sum_j J_j x*_j against y: the exactness the product promises

The forward pass runs once at X* and records every frozen coefficient (docs/linearization.md);
after that the map is exactly linear and costs only products with Wv, Wo, Wu and Wd.
Tests: tests/test_linearization.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import kernels, planner
from .frozen_layers import FrozenLayer, layer_jvp, layer_vjp
from .indices import indices
from .readout import token_text
from .sites import BLOCK_STOPS, InputSite, OutputSite, parse_input, parse_output

# Bytes of tangent/cotangent activations alive per chunk on the CPU when no budget is given.  Small
# chunks stay cache-resident and cost little extra (the kernels are compute-bound from ~500 rows on):
# measured on Gemma 3 270M, full Jacobian at 128 tokens, 64 MiB: 64.6 s, 1.25 GiB peak; 512 MiB:
# 76.0 s, 1.72 GiB.  On a GPU the default is 80% of its free memory instead (big batches pay there).
DEFAULT_MEMORY_BUDGET = 64 << 20
# Share of a GPU's free memory the chunks may fill: the rest is left to torch's caching allocator and
# the kernels' split-K workspace (the planner, pylin/planner.py, reserves the same margin).
GPU_MEMORY_FRACTION = 0.8
# Rows (positions × tangents) × d_ff above which the engine's own torch work runs multi-threaded: below,
# its OpenMP workers spin against the kernels' threads between short kernel calls (kernels.kernel_threads).
# 2^23: the J_n of Gemma 3 270M (d_ff 2048, ~4k rows per pass) stays single-threaded (7.4 s → 0.6 s
# measured when it was), a full Jacobian at 128 tokens (~32k rows) threads (~25% of its time is torch's).
TORCH_THREADS_MIN_WORK = 1 << 23
# Output rows per VJP chunk when assembling J: enough rows to keep the kernels compute-bound (they are from
# ~500 rows of positions × vectors on), few enough that one chunk's cotangents stay cache-sized.
JACOBIAN_MAX_ROWS = 256


@dataclass(frozen=True)
class Reconstruction:
    """How well the linear system reproduces the model's output y."""

    rel_error: float  # ||ŷ - y|| / ||y||
    r2: float  # 1 - ||ŷ - y||² / ||y - mean(y)||²
    max_abs_error: float
    y_norm: float
    method: str  # "jvp" (one JVP with X* as tangent), "jacobian" (sum_j J_j x*_j), or who computed ŷ
    y_hat: torch.Tensor | None = field(default=None, repr=False, compare=False)  # the reconstruction ŷ

    def __str__(self) -> str:
        return f"reconstruction ({self.method}): relative error {self.rel_error:.3e}, R² = {self.r2:.9f}"

    def _repr_html_(self) -> str:  # Jupyter (pylin.html)
        from .html import reconstruction_html

        return reconstruction_html(self)


def reconstruction_error(y_hat: torch.Tensor, y: torch.Tensor, method: str) -> Reconstruction:
    """How well ŷ reproduces y: relative error, R², max |ŷ − y| (in float64; ŷ is kept)."""
    y64, diff = y.double().reshape(-1), (y_hat.double() - y.double()).reshape(-1)
    sse = float(diff.square().sum())
    sst = float((y64 - y64.mean()).square().sum())
    y_norm = float(y64.norm())
    return Reconstruction(
        rel_error=math.sqrt(sse) / y_norm if y_norm > 0 else math.sqrt(sse),
        r2=1.0 - sse / sst if sst > 0 else float("nan"),
        max_abs_error=float(diff.abs().max()),
        y_norm=y_norm,
        method=method,
        y_hat=y_hat,
    )


def parse_memory(budget: int | str | None) -> int | None:
    """Bytes from an int or a string like '512MiB' / '2GiB' / '1.5GB'; None stays None (the default)."""
    return None if budget is None else planner.parse_bytes(budget)


class Linearization:
    """The detached Jacobian of `model` at one input, as a batched linear operator."""

    def __init__(
        self,
        model: Any,
        text_or_ids: Any,
        *,
        output: str = "final",
        wrt: str = "embed",
        normed: bool = False,
        memory_budget: int | str | None = None,
        _frozen: tuple[torch.Tensor, Any, torch.Tensor] | None = None,
    ) -> None:
        cfg = model.config
        self.model = model
        self.tokens = model.token_ids(text_or_ids)
        self.output_site: OutputSite = parse_output(output, model.n_layers, model.weights.lm_head.shape[0])
        self.input_site: InputSite = parse_input(wrt, model.n_layers)
        if self.input_site.layer > self.output_site.layer:
            raise ValueError(
                f"wrt={wrt!r} starts after output={output!r}: the output must be at or after the input layer"
            )
        self.normed = bool(normed) and self.output_site.kind not in ("final", "logit")
        self.memory_budget = parse_memory(memory_budget)
        self.dtype: torch.dtype = model.dtype

        if _frozen is None:
            embedded = model.embed(self.tokens)
            forward_result = model.forward(embedded, record=True)
            logits = model.lm_head(forward_result.hidden[-1:].contiguous())[0]
        else:
            embedded, forward_result, logits = _frozen
        self._embedded = embedded
        self.forward_result = forward_result
        self.records = self.forward_result.layers
        self.x: torch.Tensor = (
            embedded if self.input_site.layer == 0 else self.records[self.input_site.layer].resid_pre
        )
        self.layers = [
            FrozenLayer(model.weights.layers[i], self.records[i], cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
            for i in range(model.n_layers)
        ]
        self.logits: torch.Tensor = logits
        self._head_row = self._logit_row()
        self._out_scale, self._out_weight = self._output_norm()
        self.output: torch.Tensor = self._site_value()
        self._jacobian: torch.Tensor | None = None

    def at(
        self, output: str | None = None, wrt: str | None = None, *, normed: bool | None = None
    ) -> Linearization:
        """The same frozen state (no new forward pass) with another output and/or input site."""
        return Linearization(
            self.model,
            self.tokens,
            output=self.output_site.name if output is None else output,
            wrt=self.wrt if wrt is None else wrt,
            normed=self.normed if normed is None else normed,
            memory_budget=self.memory_budget,
            _frozen=(self._embedded, self.forward_result, self.logits),
        )

    def decode(self, result: Any, top: int = 5) -> Any:
        """Decode an SVD result of this linearization to tokens (see pylin.readout.decode_svd)."""
        from .readout import decode_svd

        return decode_svd(result, self, top=top)

    # ---- descriptive attributes -----------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def d_in(self) -> int:
        return int(self.x.shape[-1])

    @property
    def d_out(self) -> int:
        return 1 if self.output_site.kind == "logit" else self.model.d_model

    @property
    def wrt(self) -> str:
        return self.input_site.name

    @property
    def token_strings(self) -> list[str]:
        return [token_text(self.model, t) for t in self.tokens]

    @property
    def next_token(self) -> tuple[int, str]:
        token = int(torch.argmax(self.logits))
        return token, token_text(self.model, token)

    def __repr__(self) -> str:
        return (
            f"Linearization({self.model.arch}, {self.n_tokens} tokens, output={self.output_site.name!r}"
            f"{' (normed)' if self.normed else ''}, wrt={self.wrt!r}, d_out={self.d_out}, d_in={self.d_in})"
        )

    def _repr_html_(self) -> str:  # Jupyter (pylin.html)
        from .html import linearization_html

        return linearization_html(self)

    # ---- the output site --------------------------------------------------------------------------

    def _logit_row(self) -> torch.Tensor | None:
        if self.output_site.kind != "logit":
            return None
        tid = self.output_site.token_id
        row = torch.as_tensor(self.model.weights.lm_head.rows(tid, tid + 1).dequantize())
        return row.to(device=self._embedded.device, dtype=self.dtype)[0]

    def _output_norm(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The frozen final-norm scale and weight applied after the site (None for raw sites)."""
        final_weight = self.model.weights.final_norm
        if self.output_site.kind in ("final", "logit"):
            return self.forward_result.final_norm_scale[-1], final_weight
        if not self.normed:
            return None, None
        v = self._raw_site_value()
        scale = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + self.model.config.norm_eps)
        return scale, final_weight

    def _raw_site_value(self) -> torch.Tensor:
        record = self.records[self.output_site.layer]
        return getattr(record, self.output_site.kind)[-1]

    def _site_value(self) -> torch.Tensor:
        kind = self.output_site.kind
        if kind == "final":
            return self.forward_result.hidden[-1]
        if kind == "logit":
            return self.logits[self.output_site.token_id : self.output_site.token_id + 1]
        v = self._raw_site_value()
        return (v * self._out_scale) * self._out_weight if self.normed else v

    def _head(self, t: torch.Tensor) -> torch.Tensor:
        """Site vector tangent (B, d) -> output tangent (B, d_out)."""
        if self._out_scale is not None:
            t = (t * self._out_scale) * self._out_weight
        return t @ self._head_row[:, None] if self._head_row is not None else t

    def _head_transposed(self, u: torch.Tensor) -> torch.Tensor:
        if self._head_row is not None:
            u = u * self._head_row
        if self._out_scale is not None:
            u = (u * self._out_scale) * self._out_weight
        return u

    # ---- argument checks ----------------------------------------------------------------------------

    def _check_tokens(self, tokens: Sequence[int] | int | None) -> list[int] | None:
        return None if tokens is None else indices(tokens, self.n_tokens, "token")

    def _check_array(self, a: Any, name: str, trailing: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(a, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor, got {type(a).__name__}")
        if a.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {a.dtype}; this linearization runs in {self.dtype}")
        if a.device != self.x.device:
            raise ValueError(f"{name} is on {a.device}; this linearization lives on {self.x.device}")
        if a.dim() != len(trailing) + 1 or tuple(a.shape[1:]) != trailing:
            raise ValueError(
                f"{name} has shape {tuple(a.shape)}, expected (B, {', '.join(map(str, trailing))})"
            )
        if a.shape[0] == 0:
            raise ValueError(f"{name} has an empty batch")
        return a

    def _chunk(self, n_positions: int) -> int:
        """Tangents per chunk so that the live activations stay under the memory budget (on a GPU: also
        under its free memory)."""
        budget = self.memory_budget
        if self.x.is_cuda:
            free, _ = torch.cuda.mem_get_info(self.x.device)
            usable = max(1, int(free * GPU_MEMORY_FRACTION))
            budget = usable if budget is None else min(budget, usable)
        elif budget is None:
            budget = DEFAULT_MEMORY_BUDGET
        itemsize = torch.finfo(self.dtype).bits // 8
        return planner.chunk_size(self.model.config, n_positions, itemsize, budget)

    def _torch_threads(self, rows: int) -> int:
        """Threads for the engine's own torch work (attention mixing, scalings) on `rows` positions.

        Small passes run torch single-threaded: its OpenMP workers would spin against the kernels'
        threads between every short kernel call.  Large passes have enough torch work (measured:
        ~25% of a Gemma 3 270M full Jacobian) for threads to pay off."""
        return kernels.num_threads() if rows * self.model.config.d_ff >= TORCH_THREADS_MIN_WORK else 1

    # ---- the linear map ----------------------------------------------------------------------------

    def _layer_range(self) -> range:
        return range(self.input_site.layer, self.output_site.layer + 1)

    def _stop_at(self) -> str:
        kind = self.output_site.kind
        return kind if kind in BLOCK_STOPS else "resid_post"

    def _jvp_chunk(self, t: torch.Tensor, start: int) -> torch.Tensor:
        last = self.output_site.layer
        for i in self._layer_range():
            t = layer_jvp(self.layers[i], t, start, self._stop_at() if i == last else "resid_post", i == last)
        return self._head(t[:, -1])

    def _vjp_chunk(self, u: torch.Tensor, start: int) -> torch.Tensor:
        last = self.output_site.layer
        g = self._head_transposed(u)[:, None, :]
        for i in reversed(self._layer_range()):
            g = layer_vjp(self.layers[i], g, start, self._stop_at() if i == last else "resid_post", i == last)
        return g

    @torch.no_grad()
    def jvp(self, V: torch.Tensor, tokens: Sequence[int] | int | None = None) -> torch.Tensor:
        """J·V for tangents V of shape (B, n, d_in), or (B, len(tokens), d_in) on just those tokens."""
        sel = self._check_tokens(tokens)
        V = self._check_array(V, "V", (self.n_tokens if sel is None else len(sel), self.d_in))
        start = 0 if sel is None else min(sel)
        p = self.n_tokens - start
        out = torch.empty(V.shape[0], self.d_out, dtype=self.dtype, device=self.x.device)
        step = self._chunk(p)
        with kernels.kernel_threads(self._torch_threads(min(step, V.shape[0]) * p)):
            self._jvp_loop(V, sel, start, p, step, out)
        return out

    def _jvp_loop(
        self, V: torch.Tensor, sel: list[int] | None, start: int, p: int, step: int, out: torch.Tensor
    ) -> None:
        for b0 in range(0, V.shape[0], step):
            chunk = V[b0 : b0 + step]
            if sel is None:
                t = chunk.contiguous()
            else:
                t = torch.zeros(chunk.shape[0], p, self.d_in, dtype=self.dtype, device=self.x.device)
                t[:, [j - start for j in sel]] = chunk
            out[b0 : b0 + step] = self._jvp_chunk(t, start)

    @torch.no_grad()
    def vjp(self, U: torch.Tensor, tokens: Sequence[int] | int | None = None) -> torch.Tensor:
        """Jᵀ·U for cotangents U of shape (B, d_out): (B, n, d_in), or (B, len(tokens), d_in)."""
        sel = self._check_tokens(tokens)
        U = self._check_array(U, "U", (self.d_out,))
        start = 0 if sel is None else min(sel)
        p = self.n_tokens - start
        rows = list(range(self.n_tokens)) if sel is None else sel
        out = torch.empty(U.shape[0], len(rows), self.d_in, dtype=self.dtype, device=self.x.device)
        step = self._chunk(p)
        keep = [j - start for j in rows]
        with kernels.kernel_threads(self._torch_threads(min(step, U.shape[0]) * p)):
            for b0 in range(0, U.shape[0], step):
                out[b0 : b0 + step] = self._vjp_chunk(U[b0 : b0 + step], start)[:, keep]
        return out

    def jacobian(
        self, tokens: Sequence[int] | int | None = None, *, progress: bool | None = None
    ) -> torch.Tensor:
        """The detached Jacobian (d_out, n, d_in), or (d_out, len(tokens), d_in), from chunked VJPs."""
        sel = self._check_tokens(tokens)
        start = 0 if sel is None else min(sel)
        n_rows = self.n_tokens if sel is None else len(sel)
        J = torch.empty(self.d_out, n_rows, self.d_in, dtype=self.dtype, device=self.x.device)
        step = max(1, min(self._chunk(self.n_tokens - start), JACOBIAN_MAX_ROWS))
        chunks = range(0, self.d_out, step)
        if progress is None:
            progress = len(chunks) > 8  # a bar only when J takes more than a few seconds
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="jacobian", unit="chunk", leave=False)
        eye = torch.eye(self.d_out, dtype=self.dtype, device=self.x.device)
        for r0 in chunks:
            J[r0 : r0 + step] = self.vjp(eye[r0 : r0 + step], tokens=sel)
        if sel is None:
            self._jacobian = J
        return J

    def report(self, **analyze_kwargs: Any) -> Any:
        """The interactive report of this prompt, inline in a notebook (pylin.report.show)."""
        from .report import show

        return show(self, **analyze_kwargs)

    # ---- exactness -----------------------------------------------------------------------------------

    def reconstruction(self, method: str = "auto") -> Reconstruction:
        """Σ_j J_j x*_j against y: one JVP with X* as tangent, or from J when it has been assembled."""
        if method not in ("auto", "jvp", "jacobian"):
            raise ValueError(f"method must be 'auto', 'jvp' or 'jacobian', got {method!r}")
        if method == "jacobian" or (method == "auto" and self._jacobian is not None):
            J = self._jacobian if self._jacobian is not None else self.jacobian()
            y_hat = torch.einsum("onj,nj->o", J, self.x)
            return reconstruction_error(y_hat, self.output, "jacobian")
        y_hat = self.jvp(self.x[None].contiguous())[0]
        return reconstruction_error(y_hat, self.output, "jvp")

    def nonlinear_jacobian(self) -> torch.Tensor:
        """The ordinary Jacobian (no detaching) by autograd on dequantized weights: small models only."""
        from . import reference

        return reference.jacobian(
            self.model,
            self.tokens,
            output=self.output_site.name,
            wrt=self.wrt,
            normed=self.normed,
            detach=False,
        )

    def svd(self, k: int = 8, token: int | str = -1, **kwargs: Any) -> Any:
        """Top-k SVD of a Jacobian block, matrix-free by default (see pylin.svd.svd)."""
        from .svd import svd

        return svd(self, k=k, token=token, **kwargs)


def linearize(model: Any, text_or_ids: Any, **kwargs: Any) -> Linearization:
    """Freeze `model` at this input and return its detached Jacobian as a linear operator."""
    return Linearization(model, text_or_ids, **kwargs)
