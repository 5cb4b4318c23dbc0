"""Exception classes of pylin's loading and model code: every bad input ends in one of these.

All derive from ValueError (or FileNotFoundError) so callers may catch broadly; the message names
the file, tensor or setting at fault.  Tests: tests/test_gguf_errors.py.
"""

from __future__ import annotations


class GGUFError(ValueError):
    """A GGUF file that is malformed, truncated, or inconsistent with itself."""


class MetadataError(GGUFError):
    """A GGUF hyperparameter of the wrong type, out of its range, or inconsistent with the tensors."""


class UnsupportedQuantTypeError(GGUFError):
    """A tensor stored in a format the kernels do not implement."""


class UnsupportedArchitectureError(ValueError):
    """A model family pylin does not implement; the message lists the supported ones."""


class MissingTensorError(ValueError):
    """A weight the architecture needs is absent from the checkpoint."""


class TensorShapeError(ValueError):
    """A weight whose shape disagrees with the model's configuration."""


class CheckpointError(ValueError):
    """A Hugging Face checkpoint folder that cannot be read (no config.json, no safetensors, ...)."""


class EmptyPromptError(ValueError):
    """A prompt with no tokens."""


class PromptTooLongError(ValueError):
    """A prompt longer than the model's context, or whose attention would not fit in memory."""
