"""Greedy generation: the one decoding loop behind `Model.generate` and steered generation.

    new = greedy(next_logits, prompt_ids, max_new_tokens=20, eos=eos_token_ids(model.config))

`next_logits(ids)` returns the next-token logits (vocab,) after the sequence `ids`; the loop appends the
argmax until `max_new_tokens` or an end-of-sequence token (which is not appended).
`next_logits_function(model, hook_for, use_cache)` builds it: with use_cache the forward runs only the
positions the KV cache (pylin.forward.KVCache) does not hold yet — one row per generated token — else the
whole sequence again (the reference).
Tests: tests/test_generate.py, tests/test_models.py, tests/test_steer.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .indices import integer

__all__ = ["continuation_text", "eos_token_ids", "greedy", "next_logits_function"]

NextLogits = Callable[[list[int]], torch.Tensor]
# hook_for(ids, offset): the resid_hook for a forward over the rows ids[offset:] of the sequence ids
HookFor = Callable[[list[int], int], Any]


def next_logits_function(model: Any, hook_for: HookFor | None = None, use_cache: bool = True) -> NextLogits:
    """The last position's logits after `ids`, KV-cached (use_cache) or recomputed over the whole sequence.

    The cache is kept while each call's ids extend the previous ones, and rebuilt when they do not or when
    the model's rope would change frequencies (KVCache.stale_for)."""
    from .forward import KVCache

    state: dict[str, Any] = {"cache": None, "ids": []}

    def full(ids: list[int]) -> torch.Tensor:
        res = model.forward(model.embed(ids), resid_hook=None if hook_for is None else hook_for(ids, 0))
        return model.lm_head(res.hidden[-1:])[0]

    def cached(ids: list[int]) -> torch.Tensor:
        cache, seen = state["cache"], state["ids"]
        fresh = (
            cache is None
            or ids[: len(seen)] != seen
            or len(ids) <= len(seen)
            or cache.stale_for(model.config, len(ids))
        )
        if fresh:
            cache, seen = KVCache(model.n_layers), []
        offset = len(seen)
        hook = None if hook_for is None else hook_for(ids, offset)
        res = model.forward(model.embed(ids[offset:]), resid_hook=hook, cache=cache)
        state["cache"], state["ids"] = cache, list(ids)
        return model.lm_head(res.hidden[-1:])[0]

    return cached if use_cache else full


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
