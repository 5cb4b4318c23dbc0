"""Assembling a model's weights from a checkpoint, whatever its format, with shape checks.

A checkpoint reader (pylin.gguf_file / pylin.hf_checkpoint) offers `linear(name)` -> QTensor,
`norm(name)` -> float tensor and `has(name)`; this module knows which names each slot of a family has,
splits fused weights into zero-copy row views, and checks every shape against the configuration.
Tests: tests/test_models.py, tests/test_gguf_errors.py (missing / misshapen tensors).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from .architectures.base import GGUF_COMMON, HF_COMMON, NORM_SLOTS, ArchConfig, Family
from .errors import MissingTensorError, TensorShapeError
from .model import LayerWeights, ModelWeights


class TensorSource(Protocol):
    fmt: str  # "hf" | "gguf"

    def has(self, name: str) -> bool: ...
    def linear(self, name: str) -> Any: ...
    def norm(self, name: str) -> torch.Tensor: ...


def tensor_name(fmt: str, family: Family, slot: str, layer: int | None) -> str:
    """Full tensor name of a slot ("q", "attn_norm", "token_embd", "final_norm", "lm_head", ...)."""
    if layer is None:
        table = {
            "hf": {"token_embd": "model.embed_tokens.weight", "final_norm": "model.norm.weight",
                   "lm_head": "lm_head.weight"},
            "gguf": {"token_embd": "token_embd.weight", "final_norm": "output_norm.weight",
                     "lm_head": "output.weight"},
        }  # fmt: skip
        return table[fmt][slot]
    if fmt == "hf":
        return f"model.layers.{layer}.{family.hf_norms.get(slot) or HF_COMMON[slot]}.weight"
    return f"blk.{layer}.{family.gguf_norms.get(slot) or GGUF_COMMON[slot]}.weight"


def _check(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise TensorShapeError(
            f"tensor {name!r} has shape {tuple(shape)}, the configuration needs {tuple(expected)}"
        )


class _Reader:
    def __init__(self, src: TensorSource, family: Family, cfg: ArchConfig, dtype: torch.dtype) -> None:
        self.src, self.family, self.cfg, self.dtype = src, family, cfg, dtype

    def name(self, slot: str, layer: int | None = None) -> str:
        return tensor_name(self.src.fmt, self.family, slot, layer)

    def linear(self, slot: str, layer: int | None, shape: tuple[int, int]) -> Any:
        name = self.name(slot, layer)
        if not self.src.has(name):
            raise MissingTensorError(f"the checkpoint has no tensor {name!r} ({self.family.name} needs it)")
        w = self.src.linear(name)
        _check(name, w.shape, shape)
        return w

    def norm(self, slot: str, layer: int | None, size: int) -> torch.Tensor:
        name = self.name(slot, layer)
        if not self.src.has(name):
            raise MissingTensorError(f"the checkpoint has no tensor {name!r} ({self.family.name} needs it)")
        w = self.src.norm(name)
        _check(name, tuple(w.shape), (size,))
        compute = torch.float64 if self.dtype == torch.float64 else torch.float32
        offset = self.family.hf_norm_offset if self.src.fmt == "hf" else 0.0
        eff = w.to(compute) + offset if offset else w.to(compute)
        return eff.to(self.dtype)


def _layer(r: _Reader, i: int) -> LayerWeights:
    c, fam = r.cfg, r.family
    d, q_rows, kv_rows = c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    if fam.fused:
        qkv = r.linear("qkv", i, (q_rows + 2 * kv_rows, d))
        q, k, v = (
            qkv.rows(0, q_rows),
            qkv.rows(q_rows, q_rows + kv_rows),
            qkv.rows(q_rows + kv_rows, q_rows + 2 * kv_rows),
        )
        gate_up = r.linear("gate_up", i, (2 * c.d_ff, d))
        gate, up = gate_up.rows(0, c.d_ff), gate_up.rows(c.d_ff, 2 * c.d_ff)
    else:
        q, k, v = (
            r.linear("q", i, (q_rows, d)),
            r.linear("k", i, (kv_rows, d)),
            r.linear("v", i, (kv_rows, d)),
        )
        gate, up = r.linear("gate", i, (c.d_ff, d)), r.linear("up", i, (c.d_ff, d))
    lw = LayerWeights(
        q=q,
        k=k,
        v=v,
        o=r.linear("o", i, (d, q_rows)),
        gate=gate,
        up=up,
        down=r.linear("down", i, (d, c.d_ff)),
    )
    for slot in NORM_SLOTS:
        if slot in fam.hf_norms:
            setattr(lw, slot, r.norm(slot, i, d))
    if c.qk_norm:
        full = c.qk_norm == "full"
        lw.q_norm = r.norm("q_norm", i, q_rows if full else c.head_dim)
        lw.k_norm = r.norm("k_norm", i, kv_rows if full else c.head_dim)
    return lw


def build_weights(src: TensorSource, family: Family, cfg: ArchConfig, dtype: torch.dtype) -> ModelWeights:
    """Every weight of the model, checked against cfg; the LM head is the embedding when tied."""
    r = _Reader(src, family, cfg, dtype)
    embd = r.linear("token_embd", None, (cfg.vocab_size, cfg.d_model))
    head_name = r.name("lm_head")
    if cfg.tie_word_embeddings or not src.has(head_name):
        head = embd
    else:
        head = r.linear("lm_head", None, (cfg.vocab_size, cfg.d_model))
    layers = [_layer(r, i) for i in range(cfg.n_layers)]
    return ModelWeights(layers, embd, r.norm("final_norm", None, cfg.d_model), head)
