"""Reliability (issue 10): each finding of the independent probe, reproduced, now refused or fixed.

  1. broken tensor layouts (overlap, misalignment, a type change that breaks the offset chain)
  2. costs bounded by the file (a string length set to the rest of the file, huge counts, one parse)
  3. metadata ranges (freq_base, epsilon, block_count, rope_freqs, head counts, sliding-window pattern)
  4. prompt length and attention memory, checked before the forward
  5. thread safety: two threads on one model agree bit for bit with sequential runs
  6. no silent coercion (token ids, strength, memory sizes, svd arguments, blank prompts, load(''))
  7. the CLI: one line, status 2, --out checked first, --debug, FIFOs / devices, info == load
Run: python -m pytest -q tests/test_reliability.py   (about a minute; the real-model cases need the
demo package)
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OUTSIDE_SOURCE_TREE
from gguf_validator import F32, KV, STRING, U32, from_bytes, write
from test_gguf_errors import VOCAB, write_small_gguf

import pylin
from pylin import kernels
from pylin.architectures.metadata import sliding_window_pattern
from pylin.errors import GGUFError, MetadataError, PromptTooLongError, TensorShapeError


@pytest.fixture(scope="module")
def small_bytes(tmp_path_factory) -> bytes:
    return write_small_gguf(tmp_path_factory.mktemp("rel") / "small.gguf").read_bytes()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return pylin.load(write_small_gguf(tmp_path_factory.mktemp("rel_model") / "small.gguf"))


def _write(tmp_path: Path, data: bytes, name: str = "case.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _with_key(data: bytes, key: str, vtype: int, value) -> bytes:
    g = from_bytes(data)
    g.kvs = [kv for kv in g.kvs if kv.key != key] + [KV(key, vtype, value)]
    return write(g)


# ---- 1. layouts ----------------------------------------------------------------------------------


def test_overlapping_tensor_refused_with_its_name(small_bytes, tmp_path):
    g = from_bytes(small_bytes)
    g.tensors[3].offset = 0  # tensor 3's data read from tensor 0's bytes: NaN or wrong logits before
    with pytest.raises(GGUFError, match=rf"tensor '{g.tensors[3].name}' has offset 0, expected \d+"):
        pylin.load(_write(tmp_path, write(g)))


def test_misaligned_and_type_changed_tensors_refused(small_bytes, tmp_path):
    g = from_bytes(small_bytes)
    g.tensors[1].offset = 32 + 1  # inside the chain's padding, not at an aligned start
    with pytest.raises(GGUFError, match="has offset 33, expected"):
        pylin.load(_write(tmp_path, write(g)))
    g = from_bytes(small_bytes)
    q8 = next(i for i, t in enumerate(g.tensors[:-1]) if t.type_id == 8)
    g.tensors[q8].type_id = 2  # Q8_0 -> Q4_0: smaller, the next tensor no longer starts where it says
    with pytest.raises(GGUFError, match=rf"tensor '{g.tensors[q8 + 1].name}' has offset \d+, expected \d+"):
        pylin.load(_write(tmp_path, write(g)))


def test_duplicate_tensor_name_refused(small_bytes, tmp_path):
    g = from_bytes(small_bytes)
    g.tensors[2].name = g.tensors[1].name
    with pytest.raises(GGUFError, match="duplicate tensor name"):
        pylin.load(_write(tmp_path, write(g)))


def test_alignment_any_power_of_two(small_bytes, tmp_path):
    """llama.cpp takes any UINT32 power of two: 2^21 is not 'not a power of two' (2^31 lies beyond the
    file's data, so the tensors are outside it), 24 is not a power of two, a UINT64 is the wrong type."""
    with pytest.raises(GGUFError, match="outside the file"):
        pylin.load(_write(tmp_path, _with_key(small_bytes, "general.alignment", U32, 2**31)))
    g = from_bytes(_with_key(small_bytes, "general.alignment", U32, 2**21))
    assert pylin.load(_write(tmp_path, write(g))).logits([1, 2]).shape == (2, VOCAB)
    with pytest.raises(GGUFError, match="general.alignment 24 is not a power of two"):
        pylin.load(_write(tmp_path, _with_key(small_bytes, "general.alignment", U32, 24)))
    with pytest.raises(GGUFError, match="must be a UINT32"):
        pylin.load(_write(tmp_path, _with_key(small_bytes, "general.alignment", 10, 64)))


# ---- 2. costs --------------------------------------------------------------------------------------


def test_duplicate_key_refused_by_load_and_info_alike(small_bytes, tmp_path):
    g = from_bytes(small_bytes)
    g.kvs.append(KV("llama.block_count", U32, 1))
    path = _write(tmp_path, write(g))
    with pytest.raises(GGUFError, match="duplicate key 'llama.block_count'") as loaded:
        pylin.load(path)
    from pylin.gguf_file import read_header

    with pytest.raises(GGUFError) as header:
        read_header(path)
    assert str(header.value) == str(loaded.value)  # `pylin info` reads with the same walk


@pytest.mark.parametrize("length", [2**20, 2**40, 2**64 - 1])
def test_huge_string_length_costs_nothing(small_bytes, tmp_path, length):
    g = from_bytes(small_bytes)
    g.string_patches[1] = length  # the first key's string value (general.architecture)
    start = time.perf_counter()
    with pytest.raises(GGUFError, match="more than the") as e:
        pylin.load(_write(tmp_path, write(g)))
    assert time.perf_counter() - start < 2 and len(str(e.value)) < 400


@pytest.mark.realmodel
def test_real_file_string_to_end_of_file(gemma_path, tmp_path):
    """The probe's worst case: a string on the real file whose length is the rest of the file (238M
    characters were decoded into the message).  Now one short line, fast."""
    data = bytearray(Path(gemma_path).read_bytes())
    (key_len,) = struct.unpack_from("<Q", data, 24)
    value_len_at = 24 + 8 + key_len + 4  # general.architecture's value
    data[value_len_at : value_len_at + 8] = struct.pack("<Q", len(data) - value_len_at - 8)
    path = _write(tmp_path, bytes(data))
    start = time.perf_counter()
    with pytest.raises(GGUFError) as e:
        pylin.load(path)
    assert time.perf_counter() - start < 5 and len(str(e.value)) < 400, str(e.value)[:400]


def test_block_count_1e8_refused_at_once(small_bytes, tmp_path):
    start = time.perf_counter()
    with pytest.raises(
        MetadataError, match="block_count = 100000000, but the file holds tensors of 1 layers"
    ):
        pylin.load(_write(tmp_path, _with_key(small_bytes, "llama.block_count", U32, 10**8)))
    assert time.perf_counter() - start < 2


# ---- 3. metadata ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "vtype", "value", "match"),
    [
        ("llama.rope.freq_base", F32, 0.0, "freq_base = 0.0 must be a finite number > 0"),
        ("llama.rope.freq_base", F32, -1.0, "freq_base"),
        ("llama.attention.layer_norm_rms_epsilon", F32, -1e-5, "epsilon"),
        ("llama.attention.layer_norm_rms_epsilon", F32, float("inf"), "epsilon"),
        ("llama.attention.head_count", U32, 0, "head_count = 0 must be an integer ≥ 1"),
        ("llama.attention.head_count_kv", U32, 0, "head_count_kv = 0"),
        ("llama.attention.head_count_kv", U32, 3, "does not divide"),
        ("llama.block_count", U32, 0, "block_count = 0"),
        ("llama.rope.dimension_count", U32, 8, "dimension_count = 8 must be the head size 16"),
        ("llama.embedding_length", STRING, "32", "embedding_length = '32' must be an integer"),
        ("llama.context_length", F32, 64.0, "context_length = 64.0 must be an integer"),
    ],
)
def test_metadata_out_of_range(small_bytes, tmp_path, key, vtype, value, match):
    with pytest.raises(MetadataError, match=match):
        pylin.load(_write(tmp_path, _with_key(small_bytes, key, vtype, value)))


def test_block_count_smaller_than_the_file(small_bytes, tmp_path):
    """A file with two layers claiming one used to run one layer silently."""
    g = from_bytes(small_bytes)
    extra = [t for t in g.tensors if t.name.startswith("blk.0.")]
    for t in extra:
        g.tensors.append(type(t)(t.name.replace("blk.0.", "blk.1."), list(t.dims), t.type_id, t.data))
    with pytest.raises(MetadataError, match="block_count = 1, but the file holds tensors of 2 layers"):
        pylin.load(_write(tmp_path, write(g)))


@pytest.mark.parametrize("n", [1, 7])
def test_rope_freqs_of_the_wrong_length(small_bytes, tmp_path, n):
    g = from_bytes(small_bytes)
    g.tensors.append(type(g.tensors[0])("rope_freqs.weight", [n], 0, np.ones(n, np.float32).tobytes()))
    with pytest.raises(MetadataError, match=rf"rope_freqs.weight' has shape \({n},\); the rope needs \(8,\)"):
        pylin.load(_write(tmp_path, write(g)))


def test_norm_weight_of_the_wrong_shape(small_bytes, tmp_path):
    g = from_bytes(small_bytes)
    norm = next(t for t in g.tensors if t.name == "output_norm.weight")
    norm.dims = [16, 2]  # 32 values, but not a vector of d
    with pytest.raises(TensorShapeError, match="a norm weight is 1-D"):
        pylin.load(_write(tmp_path, write(g)))


class _Meta:
    arch, path = "gemma3", "x.gguf"

    def __init__(self, value):
        self.value = value

    def get(self, key):
        return self.value


@pytest.mark.parametrize("value", [[], ["x"], [1, 0], float("inf"), 0, -6, True, "6"])
def test_bad_sliding_window_pattern(value):
    with pytest.raises(MetadataError, match="sliding_window_pattern"):
        sliding_window_pattern(_Meta(value), 3, default_period=6)


def test_good_sliding_window_pattern():
    assert sliding_window_pattern(_Meta(None), 6, 6) == [True] * 5 + [False]
    assert sliding_window_pattern(_Meta(2), 4, 6) == [True, False, True, False]
    assert sliding_window_pattern(_Meta([True, False, True]), 3, 6) == [True, False, True]


# ---- 4. prompt length and memory ------------------------------------------------------------------


def test_prompt_beyond_the_context(small_model):
    assert small_model.config.context_length == 64
    with pytest.raises(PromptTooLongError, match=r"65 tokens, more than the model's context \(64\)"):
        small_model.logits([1] * 65)
    with pytest.raises(PromptTooLongError):
        small_model.linearize([1] * 65)


def test_attention_memory_planned_before_the_forward(small_model):
    with pytest.raises(
        PromptTooLongError, match=r"a prompt of 64 tokens needs .* GiB .* memory_budget='1GiB'"
    ):
        small_model.logits([1] * 64, memory_budget=1000)
    assert small_model.logits([1] * 64, memory_budget="1GiB").shape == (64, VOCAB)


@pytest.mark.realmodel
def test_real_model_long_prompt_refused_fast(gemma):
    """The probe's 100k-character prompt (22,582 tokens) tried to allocate 8 GB per layer; now refused
    with the numbers before anything is allocated (unless this machine has the memory)."""
    start = time.perf_counter()
    ids = [2] + [651] * 22_581
    need_one_layer = 2 * gemma.config.n_heads * len(ids) ** 2 * 4
    try:
        gemma.forward(gemma.embed(ids), record=True, memory_budget="4GiB")
    except PromptTooLongError as e:
        assert "22582 tokens" in str(e) and "shorten the prompt" in str(e)
    else:
        pytest.fail(f"a {need_one_layer / 2**30:.0f} GiB forward was allowed in 4 GiB")
    assert time.perf_counter() - start < 10


# ---- 5. threads -----------------------------------------------------------------------------------


def test_two_threads_agree_with_sequential_runs(small_model):
    """logits and vjp from two Python threads on one model equal the sequential results bit for bit,
    and afterwards the kernels' and torch's thread counts are what they were."""
    torch_setting = torch.get_num_threads()
    torch.set_num_threads(2)  # so that kernel_threads has a setting to change and restore
    try:
        _two_threads(small_model)
    finally:
        torch.set_num_threads(torch_setting)


def _two_threads(small_model) -> None:
    torch_before, kernels_before = torch.get_num_threads(), kernels.num_threads()
    ids = [[1, 2, 3, 4, 5], [7, 3, 9, 2]]
    lins = [small_model.linearize(x) for x in ids]
    cotangent = torch.randn(3, lins[0].d_out, generator=torch.Generator().manual_seed(0))

    def work(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return small_model.logits(ids[i]), lins[i].vjp(cotangent)

    sequential = [work(0), work(1)]
    for _ in range(5):
        results: dict[int, tuple] = {}
        barrier = threading.Barrier(2)

        def run(i: int, barrier: threading.Barrier = barrier, results: dict = results) -> None:
            barrier.wait()
            results[i] = work(i)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(2):
            assert torch.equal(results[i][0], sequential[i][0]) and torch.equal(
                results[i][1], sequential[i][1]
            )
    assert torch.get_num_threads() == torch_before and kernels.num_threads() == kernels_before
    torch.set_num_threads(1)  # the kernels follow torch's setting again: no count left pinned
    assert kernels.num_threads() == 1


def test_kernel_threads_pin_per_thread():
    """Inside a block the count is pinned for that thread only; another thread keeps the process's."""
    before = kernels.num_threads()
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def holder():
        with kernels.kernel_threads():
            seen["holder"] = kernels.num_threads()
            inside.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    inside.wait(10)
    seen["other"] = kernels.num_threads()  # torch may be at 1 now, the kernels' count is not
    release.set()
    t.join()
    assert seen == {"holder": before, "other": before} and kernels.num_threads() == before


def test_kernel_threads_overlapping_blocks_leave_nothing_pinned():
    """A enters, B enters, A leaves, B leaves (the order that left the old global override stuck):
    afterwards torch has its setting back and the kernels follow torch again."""
    setting = torch.get_num_threads()
    torch.set_num_threads(2)
    steps = [threading.Event() for _ in range(3)]

    def a():
        with kernels.kernel_threads():
            steps[0].set()
            steps[1].wait(10)

    def b():
        steps[0].wait(10)
        with kernels.kernel_threads():
            steps[1].set()
            thread_a.join(10)

    try:
        thread_a, thread_b = threading.Thread(target=a), threading.Thread(target=b)
        thread_a.start()
        thread_b.start()
        thread_b.join(20)
        assert torch.get_num_threads() == 2 and kernels.num_threads() == 2
        torch.set_num_threads(1)
        assert kernels.num_threads() == 1
    finally:
        torch.set_num_threads(setting)


# ---- 6. coercion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [[2.9, 3.7], [1.7], [True, 2], b"\x01\x02", [np.float32(1)]])
def test_non_integer_token_ids_refused(small_model, ids):
    with pytest.raises(ValueError, match="token id|bytes"):
        small_model.logits(ids)


def test_integer_scalars_accepted(small_model):
    ref = small_model.logits([1, 2, 3])
    assert torch.equal(small_model.logits([np.int64(1), np.int32(2), torch.tensor(3)]), ref)
    assert torch.equal(small_model.logits(np.array([1, 2, 3])), ref)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_prompt_refused_alike(small_model, text):
    for call in (small_model.logits, small_model.generate, small_model.linearize, small_model.tokenize):
        with pytest.raises(ValueError, match="empty"):
            call(text)


@pytest.mark.parametrize("budget", ["infGB", "0.5B", "nanGiB", 0, -1, True, "lots"])
def test_bad_memory_budget_refused(small_model, budget):
    with pytest.raises(ValueError, match="memory size"):
        small_model.linearize([1, 2], memory_budget=budget)


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), 1e30, -1e4, "1"])
def test_bad_strength_refused(small_model, strength):
    from pylin import steer

    with pytest.raises(ValueError, match="strength"):  # checked first, whatever the operator
        steer.generate(small_model, [1, 2], strength=strength, max_new_tokens=1)
    with pytest.raises(ValueError, match="strength"):
        steer.steered_logits(small_model, [1, 2], None, strength)


def test_svd_arguments(small_model):
    lin = small_model.linearize([1, 2, 3])
    for bad in ({"max_iters": 0}, {"max_iters": -1}, {"k": 2.0}, {"k": True}, {"tol": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            lin.svd(**{"k": 2, **bad})
    assert lin.svd(k=np.int64(2), token=np.int64(-1)).S.shape[-1] == 2


@pytest.mark.parametrize("source", ["", "  ", None, 3])
def test_load_of_nothing_refused(source):
    with pytest.raises(ValueError, match="path of a GGUF file"):
        pylin.load(source)


# ---- 7. the CLI -----------------------------------------------------------------------------------


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylin", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=OUTSIDE_SOURCE_TREE)  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_cli_out_checked_before_the_analysis(tmp_path):
    model = write_small_gguf(tmp_path / "m.gguf")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, why in ((blocker, "exists and is not a folder"), (blocker / "sub", "a parent of it is a file")):
        start = time.perf_counter()
        line = _one_error_line(_cli("analyze", str(model), "--text", "a b", "--out", str(out)))
        assert why in line and time.perf_counter() - start < 60
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "cannot write" in _one_error_line(
            _cli("analyze", str(model), "--text", "a", "--out", str(locked))
        )


def test_cli_special_files(tmp_path):
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    for args in (("info", "/dev/zero"), ("info", str(fifo)), ("analyze", str(fifo), "--text", "a")):
        line = _one_error_line(_cli(*args, timeout=60))
        assert "not a regular file" in line, line


def test_cli_metadata_error_and_debug(small_bytes, tmp_path):
    path = _write(tmp_path, _with_key(small_bytes, "llama.rope.freq_base", F32, -1.0))
    assert "freq_base" in _one_error_line(
        _cli("steer", str(path), "--concept", "a", "--prompt", "b", "--layer", "0")
    )
    shown = _cli("--debug", "info", str(_write(tmp_path, b"GGUF" + bytes(40), "short.gguf")))
    assert shown.returncode != 0 and "Traceback" in shown.stderr


def test_cli_internal_error_is_one_line(tmp_path):
    """A bug (here a forced one) prints one line and the way to see the traceback."""
    script = (
        "import sys, pylin.cli as c\n"
        "def boom(args): raise KeyError('forced')\n"
        "c._info = boom\n"
        "sys.exit(c.main(sys.argv[1:]))\n"
    )
    path = write_small_gguf(tmp_path / "m.gguf")
    result = subprocess.run([sys.executable, "-c", script, "info", str(path)], capture_output=True, text=True,
                            timeout=120, cwd=OUTSIDE_SOURCE_TREE)  # fmt: skip
    line = _one_error_line(result, code=1)
    assert "internal error: KeyError" in line and "rerun with --debug" in line


# ---- 8. what memory-mapping implies ----------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="SIGBUS on a truncated mapping is Linux behaviour")
def test_truncating_a_loaded_file_is_sigbus(tmp_path):
    """Documented, not fixed (docs/reliability.md): the weights are views of the file's mapping, so
    truncating the file under a loaded model kills the process at the next read of a lost page."""
    path = write_small_gguf(tmp_path / "m.gguf")
    script = (
        "import os, sys, pylin\n"
        "m = pylin.load(sys.argv[1])\n"
        "os.truncate(sys.argv[1], 64)\n"
        "m.logits([1, 2, 3])\n"
        "print('survived')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=120, cwd=OUTSIDE_SOURCE_TREE)  # fmt: skip
    assert result.returncode == -signal.SIGBUS and "survived" not in result.stdout, (
        result.returncode,
        result.stderr[-500:],
    )


def test_float_token_indices_refused(small_model):
    lin = small_model.linearize([1, 2, 3])
    U = torch.ones(1, lin.d_out)
    for tokens in ([1.7], 1.0, [True], np.array([0.5])):
        with pytest.raises(ValueError, match="token ind"):
            lin.vjp(U, tokens=tokens)
    assert lin.vjp(U, tokens=[np.int64(1)]).shape == (1, 1, lin.d_in)
