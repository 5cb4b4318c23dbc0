"""Greedy generation: the one decoding loop behind `Model.generate` and steered generation.

    new = greedy(next_logits, prompt_ids, max_new_tokens=20, eos=eos_token_ids(model.config))

`next_logits(ids)` returns the next-token logits (vocab,) after the sequence `ids`; the loop appends the
argmax until `max_new_tokens` or an end-of-sequence token (which is not appended).
Tests: tests/test_models.py (generate), tests/test_steer.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .indices import integer

__all__ = ["continuation_text", "eos_token_ids", "greedy"]

NextLogits = Callable[[list[int]], torch.Tensor]


def eos_token_ids(config: Any) -> set[int]:
    """The end-of-sequence ids of a model config (one id, a list of ids, or none)."""
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


def greedy(
    next_logits: NextLogits,
    prompt: list[int],
    max_new_tokens: int,
    *,
    eos: set[int] | None = None,
    progress: bool = False,
) -> list[int]:
    """The greedily generated tokens after `prompt` (the prompt itself is not returned)."""
    steps: Any = range(integer(max_new_tokens, "max_new_tokens", low=1))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="generate", unit="tok", leave=False)
    tokens = list(prompt)
    for _ in steps:
        token = int(torch.argmax(next_logits(tokens)))
        if eos and token in eos:
            break
        tokens.append(token)
    return tokens[len(prompt) :]


def continuation_text(model: Any, new: list[int]) -> str:
    """The text of generated tokens; "<id>" per token for a model without a tokenizer."""
    from .readout import token_text

    if not new:
        return ""
    if model.tokenizer is None:
        return "".join(token_text(model, t) for t in new)
    return model.decode(new)
