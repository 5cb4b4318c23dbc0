"""KV-cached generation (pylin.forward.KVCache, pylin.generation.next_logits_function) against the full
recompute it replaces: the same greedy tokens, token for token, plain and steered, on every tiny family of
tests/tiny_models.py (sliding windows shorter than the sequence, LongRoPE crossing its pretraining length,
GQA, q/k norms) and on the real Gemma 3 270M (48 new tokens); the cached step's logits equal the full
forward's last row to rounding, and transformers' own logits of the generated sequence agree.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TOLERANCES
from tiny_models import FAMILIES, hf_logits, make_tiny_hf

from pylin import steer
from pylin.forward import KVCache

PROMPT = [1, 7, 42, 99, 5]  # 5 tokens; 12 new ones pass mistral's window (5) and phi3's LongRoPE switch (8)
NEW = 12


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    import pylin

    path, hf = make_tiny_hf(request.param, tmp_path_factory.mktemp(request.param))
    return pylin.load(path), hf


def test_cached_step_logits_equal_full_forward(tiny: tuple[object, object]) -> None:
    model, hf = tiny
    ids = PROMPT + [11, 23, 250, 3, 77, 18, 140]  # 12 tokens, fed as 5 + 1 + 1 + … through one cache
    cache = KVCache(model.n_layers)
    rows = [model.forward(model.embed(ids[:5]), cache=cache).hidden]
    for t in range(5, len(ids)):
        if cache.stale_for(model.config, t + 1):  # LongRoPE switched: the reference recomputes too
            cache = KVCache(model.n_layers)
            rows = [model.forward(model.embed(ids[: t + 1]), cache=cache).hidden]
            continue
        rows.append(model.forward(model.embed(ids[t : t + 1]), cache=cache).hidden)
    assert cache.length == len(ids)
    cached_last = model.lm_head(rows[-1][-1:])[0]
    full = model.logits(ids)
    assert torch.allclose(cached_last, full[-1], rtol=0, atol=TOLERANCES["logits_tiny"])
    assert torch.allclose(full[-1], hf_logits(hf, ids)[-1].to(full), rtol=0, atol=TOLERANCES["logits_tiny"])


def test_cached_greedy_equals_recompute(tiny: tuple[object, object]) -> None:
    model, _ = tiny
    cached = model.generate(PROMPT, NEW, stop_at_eos=False)
    full = model.generate(PROMPT, NEW, stop_at_eos=False, use_cache=False)
    assert cached == full
    op = steer.jacobian_operator(model, [1, 30, 60], layer=model.n_layers - 1)
    for strength in (0.5, 3.0):
        a = steer.generate(model, PROMPT, steer=op, strength=strength, max_new_tokens=NEW, stop_at_eos=False)
        b = steer.generate(model, PROMPT, steer=op, strength=strength, max_new_tokens=NEW, stop_at_eos=False,
                           use_cache=False)  # fmt: skip
        assert a.new_tokens == b.new_tokens, (model.arch, strength)


def test_forward_hooks_need_the_full_recompute(tiny: tuple[object, object]) -> None:
    model, _ = tiny
    with pytest.raises(ValueError, match="use_cache=False"):
        model.generate(PROMPT, 2, resid_hook=lambda i, h: h)
    assert model.generate(PROMPT, 2, resid_hook=lambda i, h: h, use_cache=False, stop_at_eos=False)
    with pytest.raises(ValueError, match="every layer"):
        model.forward(model.embed(PROMPT), cache=KVCache(model.n_layers), stop_layer=1)


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gemma_cached_equals_recompute(gemma) -> None:
    prompt = "I went to new york to see the"
    cached = gemma.generate(prompt, 48, stop_at_eos=False)
    full = gemma.generate(prompt, 48, stop_at_eos=False, use_cache=False)
    print(f"plain: {cached!r}")
    assert cached == full
    op = steer.jacobian_operator(gemma, "The bridge out of Marin is the Golden")
    a = steer.generate(gemma, prompt, steer=op, strength=0.3, max_new_tokens=48, stop_at_eos=False)
    b = steer.generate(gemma, prompt, steer=op, strength=0.3, max_new_tokens=48, stop_at_eos=False,
                       use_cache=False)  # fmt: skip
    print(f"steered (layer {op.layer}, λ 0.3): {a.text!r}")
    assert a.new_tokens == b.new_tokens
