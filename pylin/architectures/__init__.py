"""The registry of decoder families pylin implements; one small module per family.

    family_for_hf("qwen3") / family_for_gguf("gemma3") -> Family, or UnsupportedArchitectureError
Tests: tests/test_models.py, tests/test_gguf_errors.py::test_unsupported_architecture.
"""

from __future__ import annotations

from ..errors import UnsupportedArchitectureError
from . import gemma3, llama, mistral, olmo2, phi3, qwen3
from .base import ArchConfig, Family, config_from_gguf, config_from_hf

FAMILIES: dict[str, Family] = {m.FAMILY.name: m.FAMILY for m in (llama, mistral, qwen3, gemma3, phi3, olmo2)}

__all__ = [
    "FAMILIES", "ArchConfig", "Family", "config_from_gguf", "config_from_hf", "family_for_gguf",
    "family_for_hf",
]  # fmt: skip


def _unsupported(kind: str, name: str, known: list[str]) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"unsupported {kind} architecture {name!r}; pylin supports {', '.join(sorted(known))} "
        f"(families: {', '.join(FAMILIES)})"
    )


def family_for_hf(model_type: str) -> Family:
    """The family of a config.json `model_type`."""
    for fam in FAMILIES.values():
        if model_type in fam.hf_model_types:
            return fam
    raise _unsupported("Hugging Face", model_type, [t for f in FAMILIES.values() for t in f.hf_model_types])


def family_for_gguf(arch: str) -> Family:
    """The family of a GGUF `general.architecture`."""
    for fam in FAMILIES.values():
        if arch in fam.gguf_archs:
            return fam
    raise _unsupported("GGUF", arch, [a for f in FAMILIES.values() for a in f.gguf_archs])
