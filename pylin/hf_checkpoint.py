"""Hugging Face checkpoints: a folder with config.json and *.safetensors, read tensor by tensor.

Weights stay in their stored dtype (bf16 / fp16 / fp32, wrapped zero-copy as QTensors), or, with
`quantize="Q4_K"` (any GGUF format), are quantized one tensor at a time so the float copy of only one
tensor exists at once.  Multimodal Gemma 3 folders contribute their language model (`text_config`,
`language_model.*` tensors).  Tests: tests/test_models.py::test_hf_logits, test_multimodal_gemma3,
test_quantize_at_load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .architectures import Family, family_for_hf
from .errors import CheckpointError, TensorShapeError
from .qtensor import QTensor, block_layout, writable_qtype

# Prefixes under which checkpoints hold the decoder; stripped so names read "model.layers.…".
_PREFIXES = (
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("language_model.", ""),
)


def read_config(folder: Path) -> tuple[Family, dict[str, Any]]:
    """(family, text-config dict with transformers' defaults filled in) of a checkpoint folder."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json (a Hugging Face checkpoint folder needs one)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    model_type = raw.get("model_type", "")
    family = family_for_hf(model_type)
    cfg = _with_defaults(folder, raw)
    if "text_config" in cfg and "hidden_size" not in cfg:
        text = dict(cfg["text_config"])
        text.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings"))
        cfg = text
    return family, cfg


def _with_defaults(folder: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The config class fills in defaults and normalizes rope parameters when it knows the type."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(folder)).to_dict()
    except (ImportError, ValueError, KeyError, TypeError):
        return raw


class SafetensorsSource:
    """The tensors of a folder's *.safetensors files, by canonical name, read one at a time."""

    fmt = "hf"

    def __init__(self, folder: Path, quantize: str | None = None) -> None:
        from safetensors import safe_open

        files = _weight_files(folder)
        if not files:
            raise CheckpointError(f"{folder} has no *.safetensors files")
        self._handles = [safe_open(str(f), framework="pt") for f in files]
        self._where: dict[str, tuple[int, str]] = {}
        for idx, handle in enumerate(self._handles):
            for key in handle.keys():
                self._where[_canonical(key)] = (idx, key)
        self.quantize = writable_qtype(quantize) if quantize else None

    def has(self, name: str) -> bool:
        return name in self._where

    def _tensor(self, name: str) -> torch.Tensor:
        idx, key = self._where[name]
        return self._handles[idx].get_tensor(key)

    def linear(self, name: str) -> QTensor:
        t = self._tensor(name)
        if t.ndim != 2:
            raise TensorShapeError(f"tensor {name!r} has shape {tuple(t.shape)}; expected a 2-D weight")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            t = t.float()
        if self.quantize is None:
            return QTensor.from_torch(t, name)
        return _quantize(t, self.quantize, name)

    def norm(self, name: str) -> torch.Tensor:
        return self._tensor(name).float()


def _weight_files(folder: Path) -> list[Path]:
    """The files model.safetensors.index.json names, else every *.safetensors (e.g. one model.safetensors).

    The index matters where a folder also holds another layout's weights (Mistral's consolidated.safetensors).
    """
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"cannot read {index}: {e}") from e
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder} lacks {', '.join(missing)} named in model.safetensors.index.json"
            )
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    return [f for f in files if f.name != "consolidated.safetensors"] or files


def _canonical(key: str) -> str:
    for prefix, replacement in _PREFIXES:
        if key.startswith(prefix):
            return replacement + key[len(prefix) :]
    return key


def _quantize(t: torch.Tensor, qtype: str, name: str) -> QTensor:
    """Quantize one weight; rows whose length is not a whole number of blocks fall back like llama.cpp."""
    from . import kernels

    k = t.shape[1]
    for candidate in (qtype, "Q8_0", "F32"):
        if k % block_layout(candidate)[0] == 0:
            qtype = candidate
            break
    x = t.float().contiguous().numpy()
    if qtype == "F32":
        return QTensor.from_torch(torch.from_numpy(x), name)
    q = kernels.quantize(x, qtype)
    q.name = name
    return q
