"""Structured GGUF fuzz: one thing changed at a time (tensor offsets, dims, types, counts, string lengths,
alignment, duplicates, metadata values and types, dropped keys / tensors, version), each file judged by
a strict validator written from llama.cpp's rules (tests/gguf_validator.py, tests/gguf_mutations.py).

Every invalid file must end in a pylin.errors exception, every valid one must load and run; nothing may
take over 10 s or 1 GiB.  PYLIN_LAYOUT_FUZZ_N cases (default 500, a few seconds); bench/fuzz_gguf.py runs
≥ 10,000 in child processes (crashes and hangs too) and writes the table in docs/reliability.md.
Run: python -m pytest -q tests/test_gguf_layout.py
"""

from __future__ import annotations

import os
import struct
from collections import Counter

import gguf
import numpy as np
import pytest
from gguf_mutations import judge, mutate
from gguf_validator import GGML_BLOCKS, KV, U32, from_bytes, validate, write
from test_gguf_errors import write_small_gguf

N = int(os.environ.get("PYLIN_LAYOUT_FUZZ_N", "500"))
SEED = 20261202


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = write_small_gguf(tmp_path_factory.mktemp("layout") / "small.gguf")
    return path.read_bytes()


def test_validator_agrees_with_gguf_py(small):
    """The validator's own tables and parse agree with gguf-py on a valid file (so it can judge)."""
    assert {k: v for k, v in GGML_BLOCKS.items() if int(k) in {int(t) for t in gguf.GGML_QUANT_SIZES}} == {
        int(t): tuple(s) for t, s in gguf.GGML_QUANT_SIZES.items() if int(t) in GGML_BLOCKS
    }
    assert validate(small) is None
    assert write(from_bytes(small)) == small  # the structured writer reproduces gguf-py's bytes


def test_validator_rejects_what_llama_cpp_rejects(small):
    g = from_bytes(small)
    g.tensors[1].offset = 0  # overlaps tensor 0
    assert "has offset 0, expected" in validate(write(g))
    g = from_bytes(small)
    g.tensors[2].name = g.tensors[0].name
    assert "duplicate" in validate(write(g))
    data = bytearray(small)
    data[8:16] = struct.pack("<Q", 2**62)
    assert validate(bytes(data)) is not None


def test_structured_fuzz(small, tmp_path):
    g = from_bytes(small)
    judge(tmp_path / "warm.gguf", small)  # first load imports torch and builds caches: not a case
    outcomes: Counter[str] = Counter()
    bad = []
    for i in range(N):
        kind, data = mutate(g, np.random.default_rng([SEED, i]))
        outcome, detail = judge(tmp_path / "case.gguf", data)
        outcomes[outcome] += 1
        if outcome not in ("clean error", "valid accepted"):
            bad.append(f"case {i} ({kind}): {outcome}: {detail}")
    print(f"structured fuzz, {N} cases: {dict(outcomes)}")
    assert not bad, "\n".join(bad[:20])
    assert outcomes["clean error"] > N // 2 and outcomes["valid accepted"] > 0  # both sides exercised


def test_valid_relayouts_load(small, tmp_path):
    """Files llama.cpp accepts that gguf-py never writes: other alignments, trailing dims of 1."""
    for alignment in (1, 8, 64, 4096):
        g = from_bytes(small)
        g.kvs.append(KV("general.alignment", U32, alignment))
        data = write(g)
        assert validate(data) is None
        assert judge(tmp_path / f"a{alignment}.gguf", data)[0] == "valid accepted", alignment
    g = from_bytes(small)
    g.tensors[0].dims = [*g.tensors[0].dims, 1]
    assert judge(tmp_path / "dims.gguf", write(g)) == ("valid accepted", "")
