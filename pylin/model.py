"""pylin.Model: a loaded decoder (weights kept in their stored format) with tokenize / embed / logits /
generate, and the weight containers the forward pass reads.

Projection weights are QTensors (GGUF blocks or HF float storage); norm weights are small float tensors
holding the *effective* weight (Gemma's 1 + w applied).  Only the embedding rows a prompt uses are ever
dequantized.  Tests: tests/test_models.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from . import forward as forward_pass
from .architectures.base import ArchConfig
from .errors import EmptyPromptError, PromptTooLongError
from .indices import integer
from .qtensor import QTensor


@dataclass
class LayerWeights:
    """One layer: norms as effective float tensors (or None), projections (out, in) as QTensors."""

    q: Any
    k: Any
    v: Any
    o: Any
    gate: Any
    up: Any
    down: Any
    attn_norm: torch.Tensor | None = None
    post_attn_norm: torch.Tensor | None = None
    mlp_norm: torch.Tensor | None = None
    post_mlp_norm: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None


LINEAR_FIELDS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class ModelWeights:
    layers: list[LayerWeights]
    token_embd: Any  # (vocab, d)
    final_norm: torch.Tensor
    lm_head: Any  # (vocab, d): token_embd itself when tied

    def map_linear(self, fn: Callable[[Any], Any]) -> ModelWeights:
        """A copy with every projection (and the LM head / embedding) replaced by fn(weight)."""
        layers = [replace(lw, **{f: fn(getattr(lw, f)) for f in LINEAR_FIELDS}) for lw in self.layers]
        embd = fn(self.token_embd)
        head = embd if self.lm_head is self.token_embd else fn(self.lm_head)
        return ModelWeights(layers, embd, self.final_norm, head)

    def map_norms(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelWeights:
        """A copy with every norm weight replaced by fn(weight) (e.g. a dtype change)."""
        norm_fields = [f.name for f in fields(LayerWeights) if f.name not in LINEAR_FIELDS]
        layers = [
            replace(lw, **{f: None if getattr(lw, f) is None else fn(getattr(lw, f)) for f in norm_fields})
            for lw in self.layers
        ]
        return ModelWeights(layers, self.token_embd, fn(self.final_norm), self.lm_head)

    def dequantized(self, dtype: torch.dtype = torch.float64) -> ModelWeights:
        """Float copies of every weight (for pylin.reference and tests; small models only)."""

        def deq(w: Any) -> torch.Tensor:
            return torch.from_numpy(w.dequantize()).to(dtype) if isinstance(w, QTensor) else w.to(dtype)

        return self.map_linear(deq).map_norms(lambda t: t.to(dtype))


class Model:
    """A decoder LLM: `arch`, `config`, `weights`, `tokenizer`; forward passes on the stored weights."""

    def __init__(
        self,
        arch: str,
        config: ArchConfig,
        weights: ModelWeights,
        *,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        tokenizer: Any = None,
        tokenizer_factory: Callable[[], Any] | None = None,
        source: str = "",
    ) -> None:
        self.arch = arch
        self.config = config
        self.weights = weights
        self.dtype = dtype
        self.device = device
        self.source = source
        self.gguf_file: Any = None  # the pylin.gguf_file.GGUFFile a GGUF model's weights are views of
        self._tokenizer = tokenizer
        self._tokenizer_factory = tokenizer_factory

    def __repr__(self) -> str:
        c = self.config
        return (
            f"pylin.Model({self.arch}, {c.n_layers} layers, d={c.d_model}, heads={c.n_heads}/{c.n_kv_heads}, "
            f"vocab={c.vocab_size}, {str(self.dtype).replace('torch.', '')}, source={self.source!r})"
        )

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def d_model(self) -> int:
        return self.config.d_model

    # ---- tokens ---------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (built on first use: a GGUF vocabulary takes seconds to convert)."""
        factory = self._tokenizer_factory  # read once: two threads may both build it, neither fails
        if self._tokenizer is None and factory is not None:
            self._tokenizer = factory()
            self._tokenizer_factory = None
        return self._tokenizer

    def _need_tokenizer(self) -> Any:
        tok = self.tokenizer
        if tok is None:
            raise ValueError(
                f"{self.source or 'this model'} has no tokenizer; pass tokenizer=<HF folder> to pylin.load"
            )
        return tok

    def check_length(self, n_tokens: int) -> None:
        """Refuse a prompt longer than the model's context (config.context_length; 0: unknown)."""
        limit = self.config.context_length
        if limit and n_tokens > limit:
            raise PromptTooLongError(
                f"the prompt has {n_tokens} tokens, more than the model's context ({limit}) of "
                f"{self.source or self.arch}; shorten it"
            )

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of text, with the BOS token first when the model uses one and add_bos is set."""
        from .tokenizer import encode

        if not isinstance(text, str):
            raise ValueError(f"the prompt must be text (str), got {type(text).__name__}")
        if not text.strip():  # a blank string would still tokenize to [BOS]: no prompt
            raise EmptyPromptError("the prompt is empty")
        ids = encode(self._need_tokenizer(), text, add_bos=add_bos, bos_token_id=self.config.bos_token_id)
        if not ids:
            raise EmptyPromptError("the prompt has no tokens")
        self.check_length(len(ids))
        return ids

    def decode(self, ids: Sequence[int] | int) -> str:
        if isinstance(ids, (int, np.integer)):
            ids = [int(ids)]
        return self._need_tokenizer().decode(list(ids))

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Use `tokenizer` (an object with encode/decode, e.g. from pylin.tokenizer) from now on."""
        self._tokenizer, self._tokenizer_factory = tokenizer, None

    def token_ids(self, text_or_ids: str | Sequence[int] | torch.Tensor) -> list[int]:
        """Token ids of a prompt: text is tokenized (with BOS); ids are checked to be integers in the
        vocabulary.  A blank text, no ids, floats, bools or bytes are refused with a ValueError."""
        if isinstance(text_or_ids, str):
            if not text_or_ids.strip():  # a blank string would still tokenize to [BOS]: no prompt
                raise EmptyPromptError("the prompt is empty")
            return self.tokenize(text_or_ids)
        if isinstance(text_or_ids, (bytes, bytearray, memoryview)):
            raise ValueError("the prompt is bytes: pass text (str) or a list of token ids")
        raw = text_or_ids.tolist() if hasattr(text_or_ids, "tolist") else text_or_ids
        if not isinstance(raw, (list, tuple)):
            kind = type(text_or_ids).__name__
            raise ValueError(f"the prompt must be text or a list of token ids, got {kind}")
        ids = [integer(i, "token id") for i in raw]
        if not ids:
            raise EmptyPromptError("the prompt has no tokens")
        self.check_length(len(ids))
        vocab = self.weights.token_embd.shape[0]
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise ValueError(f"token ids {bad[:5]} outside the vocabulary 0..{vocab - 1}")
        return ids

    # ---- forward passes -------------------------------------------------------------------------

    def embed(self, ids: str | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """(n, d) residual stream entering layer 0: the used embedding rows only, × embed_scale."""
        ids = self.token_ids(ids)
        table = self.weights.token_embd
        rows = {i: _embedding_row(table, i) for i in set(ids)}
        x = torch.from_numpy(np.stack([rows[i] for i in ids])).to(device=self.device, dtype=self.dtype)
        if self.config.embed_scale != 1.0:
            x = x * self.config.embed_scale
        return x

    def forward(
        self, x: torch.Tensor, *, memory_budget: int | str | None = None, **kw: Any
    ) -> forward_pass.ForwardResult:
        """The decoder forward (pylin.forward.forward) on this model's stored weights.

        Refused before it starts (PromptTooLongError, with the numbers) when its attention would not
        fit in memory_budget, or in the memory available now (pylin.planner.check_forward_memory)."""
        from .kernels import kernel_threads
        from .planner import check_forward_memory

        check_forward_memory(self.config, int(x.shape[0]), x.element_size(), record=bool(kw.get("record")),
                             device=str(x.device), memory_budget=memory_budget)  # fmt: skip
        with kernel_threads():  # the cores go to the kernels; torch's pool would spin against them
            return forward_pass.forward(self, self.weights, x, **kw)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of final-normed hidden states (…, d) -> (…, vocab)."""
        logits = forward_pass.kernel_linear(hidden, self.weights.lm_head)
        cap = self.config.final_logit_softcap
        return torch.tanh(logits / cap) * cap if cap else logits

    def logits(
        self, ids: str | Sequence[int] | torch.Tensor, *, last_only: bool = False, **kw: Any
    ) -> torch.Tensor:
        """(n, vocab) next-token logits at every position, or (1, vocab) with last_only=True."""
        hidden = self.forward(self.embed(ids), **kw).hidden
        return self.lm_head(hidden[-1:] if last_only else hidden)

    def hidden_states(self, ids: str | Sequence[int] | torch.Tensor, **kw: Any) -> list[torch.Tensor]:
        """[embeddings, output of layer 0, …, output of the last layer] (raw residual stream, not normed)."""
        x = self.embed(ids)
        return [x, *self.forward(x, return_resid=True, **kw).resid]

    def generate(
        self,
        text: str | Sequence[int],
        max_new_tokens: int = 20,
        *,
        stop_at_eos: bool = True,
        steer: Any = None,
        strength: float = 1.0,
        use_cache: bool = True,
        **kw: Any,
    ) -> str:
        """Greedy continuation of text (the new text only).  **kw go to forward (e.g. resid_hook).

        steer: a steering operator (pylin.steer.jacobian_operator / singular_vector) applied at
        strength λ; λ = 0 reproduces the unsteered text.  use_cache: each new token runs one row through
        a KV cache (pylin.forward.KVCache); False recomputes the whole sequence per token (the reference,
        and what forward hooks in **kw need: they see every position).
        """
        if steer is not None:
            from .steer import generate

            if kw:
                raise ValueError(f"steer= cannot be combined with forward hooks {sorted(kw)}")
            result = generate(self, text, steer=steer, strength=strength, max_new_tokens=max_new_tokens,
                              stop_at_eos=stop_at_eos, use_cache=use_cache)  # fmt: skip
            return result.text
        from .generation import continuation_text, eos_token_ids, greedy, next_logits_function

        if kw:
            if use_cache:
                raise ValueError(
                    f"forward hooks {sorted(kw)} see the whole sequence: pass use_cache=False with them"
                )

            def next_logits(ids: list[int]) -> torch.Tensor:
                return self.logits(ids, last_only=True, **kw)[0]
        else:
            next_logits = next_logits_function(self, use_cache=use_cache)
        eos = eos_token_ids(self.config) if stop_at_eos else None
        return continuation_text(self, greedy(next_logits, self.token_ids(text), max_new_tokens, eos=eos))

    def linearize(self, text_or_ids: Any, **kw: Any) -> Any:
        from .linearization import linearize

        return linearize(self, text_or_ids, **kw)


def _embedding_row(table: Any, i: int) -> np.ndarray:
    if isinstance(table, QTensor):
        row = table.rows(i, i + 1).dequantize()[0]
        return row.cpu().numpy() if isinstance(row, torch.Tensor) else row  # GPU tables dequantize on device
    return table[i].detach().float().numpy()
