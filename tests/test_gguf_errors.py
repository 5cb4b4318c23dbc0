"""Bad input to pylin.load and the model: clear exceptions, never a crash or a hang; and a GGUF fuzz test.

Every case builds a small GGUF with gguf-py (one llama layer, d = 32) and breaks one thing.  The fuzz
test mutates / truncates it ≥ 500 times (PYLIN_FUZZ_N for more) and accepts only a clean load (then a
forward pass) or a Python exception; a sample also runs in a subprocess to catch native crashes.
Run: python -m pytest -q tests/test_gguf_errors.py   (well under a minute)
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import OUTSIDE_SOURCE_TREE

import pylin
from pylin.errors import (
    CheckpointError,
    EmptyPromptError,
    GGUFError,
    MissingTensorError,
    TensorShapeError,
    UnsupportedArchitectureError,
    UnsupportedQuantTypeError,
)

D, FF, HEADS, KV, HD, VOCAB = 32, 64, 2, 1, 16, 40
FUZZ_N = int(os.environ.get("PYLIN_FUZZ_N", "500"))


def _tensors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (float32 values in PyTorch order, GGUF type) of a one-layer llama."""

    def w(rows: int, k: int) -> np.ndarray:
        return (0.1 * rng.standard_normal((rows, k))).astype(np.float32)

    return {
        "token_embd.weight": (w(VOCAB, D), "Q8_0"),
        "output_norm.weight": (np.ones(D, np.float32), "F32"),
        "blk.0.attn_norm.weight": (np.ones(D, np.float32), "F32"),
        "blk.0.ffn_norm.weight": (np.ones(D, np.float32), "F32"),
        "blk.0.attn_q.weight": (w(HEADS * HD, D), "Q8_0"),
        "blk.0.attn_k.weight": (w(KV * HD, D), "Q4_0"),
        "blk.0.attn_v.weight": (w(KV * HD, D), "F16"),
        "blk.0.attn_output.weight": (w(D, HEADS * HD), "Q8_0"),
        "blk.0.ffn_gate.weight": (w(FF, D), "Q8_0"),
        "blk.0.ffn_up.weight": (w(FF, D), "Q4_0"),
        "blk.0.ffn_down.weight": (w(D, FF), "Q8_0"),
    }


def write_small_gguf(path: Path, *, arch: str = "llama", drop: str = "", reshape: str = "",
                     raw_type: dict[str, str] | None = None, vocab: bool = True) -> Path:  # fmt: skip
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(64)
    writer.add_embedding_length(D)
    writer.add_block_count(1)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    if vocab:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([chr(ord("a") + i % 26) * (1 + i // 26) for i in range(VOCAB)])
        writer.add_token_merges([])
        writer.add_token_scores([-float(i) for i in range(VOCAB)])
        writer.add_token_types([1] * VOCAB)
        writer.add_add_bos_token(False)
    for name, (values, qtype) in _tensors(rng).items():
        if name == drop:
            continue
        if name == reshape:
            values = values[: values.shape[0] // 2]
        qtype = (raw_type or {}).get(name, qtype)
        if qtype == "F32":
            writer.add_tensor(name, values)
        elif qtype == "F16":
            writer.add_tensor(name, values.astype(np.float16))
        elif qtype in ("Q8_0", "Q4_0"):
            writer.add_tensor(name, gguf.quants.quantize(values, gguf.GGMLQuantizationType[qtype]),
                              raw_dtype=gguf.GGMLQuantizationType[qtype])  # fmt: skip
        else:  # a format pylin does not implement: random bytes of the right size
            t = gguf.GGMLQuantizationType[qtype]
            block, nbytes = gguf.GGML_QUANT_SIZES[t]
            data = rng.integers(0, 256, (values.shape[0], values.shape[1] // block * nbytes), dtype=np.uint8)
            writer.add_tensor(name, data, raw_dtype=t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_small_gguf(tmp_path_factory.mktemp("gguf") / "small.gguf")


def _tensor_info_offset_field(data: bytes, name: str) -> int:
    """Byte position of a tensor's data-offset field in the header."""
    pos = data.index(name.encode()) + len(name)
    (n_dims,) = struct.unpack_from("<I", data, pos)
    return pos + 4 + 8 * n_dims + 4


@pytest.mark.parametrize("long_array", [4096, 1])
def test_reader_matches_gguf_py(good, long_array, monkeypatch):
    """pylin's one-pass reader yields exactly gguf-py's metadata values and tensor bytes
    (long_array=1: every array takes the long-array path, the vocabulary kept as offsets)."""
    from pylin import gguf_file

    monkeypatch.setattr(gguf_file, "_SMALL_ARRAY", long_array)
    ours, stock = gguf_file.GGUFFile(good), gguf.GGUFReader(str(good))
    fields = {k: f for k, f in stock.fields.items() if not k.startswith("GGUF.")}  # gguf-py's own
    assert list(ours.meta) == list(fields)
    for key, field in fields.items():
        assert ours.get(key) == field.contents(), key
    for t in stock.tensors:
        mine = ours.tensors[t.name]
        assert mine.tensor_type == t.tensor_type and mine.shape == tuple(int(s) for s in t.shape), t.name
        assert mine.offset == t.data_offset and np.array_equal(mine.data, t.data.reshape(-1).view(np.uint8))


# ---- one broken thing at a time ------------------------------------------------------------------


def test_good_file_loads(good):
    model = pylin.load(good)
    assert model.logits([1, 2, 3]).shape == (3, VOCAB)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model"):
        pylin.load(tmp_path / "nope.gguf")


def test_wrong_magic(good, tmp_path):
    bad = tmp_path / "magic.gguf"
    bad.write_bytes(b"GGML" + good.read_bytes()[4:])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        pylin.load(bad)


def test_not_a_gguf_at_all(tmp_path):
    bad = tmp_path / "text.gguf"
    bad.write_text("hello")
    with pytest.raises(GGUFError, match="too short"):
        pylin.load(bad)


def test_unsupported_version(good, tmp_path):
    data = bytearray(good.read_bytes())
    data[4:8] = struct.pack("<I", 7)
    bad = tmp_path / "v7.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="version 7"):
        pylin.load(bad)


@pytest.mark.parametrize("keep", [30, 200, 0.5, -40])
def test_truncated(good, tmp_path, keep):
    data = good.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(data) + keep)
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[:n])
    with pytest.raises(GGUFError, match="truncated|outside the file"):
        pylin.load(bad)


def test_tensor_offset_off_the_chain(good, tmp_path):
    """llama.cpp's rule: each tensor at the previous one's aligned end; the message names the tensor."""
    data = bytearray(good.read_bytes())
    pos = _tensor_info_offset_field(bytes(data), "blk.0.ffn_up.weight")
    data[pos : pos + 8] = struct.pack("<Q", 10**9)
    bad = tmp_path / "offset.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=r"tensor 'blk.0.ffn_up.weight' has offset 1000000000, expected \d+"):
        pylin.load(bad)


def test_huge_counts_do_not_allocate(good, tmp_path):
    data = bytearray(good.read_bytes())
    data[8:16] = struct.pack("<Q", 2**62)  # tensor count
    bad = tmp_path / "count.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="more than the file can hold"):
        pylin.load(bad)


def test_unknown_type_id(good, tmp_path):
    data = bytearray(good.read_bytes())
    pos = _tensor_info_offset_field(bytes(data), "blk.0.ffn_up.weight") - 4
    data[pos : pos + 4] = struct.pack("<I", 99)
    bad = tmp_path / "type.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(UnsupportedQuantTypeError, match="unknown GGML type id 99"):
        pylin.load(bad)


def test_unsupported_quant_type(tmp_path):
    path = write_small_gguf(tmp_path / "iq.gguf", raw_type={"blk.0.ffn_gate.weight": "Q8_1"})
    with pytest.raises(UnsupportedQuantTypeError, match="Q8_1.*support"):
        pylin.load(path)


def test_missing_tensor(tmp_path):
    path = write_small_gguf(tmp_path / "missing.gguf", drop="blk.0.ffn_down.weight")
    with pytest.raises(MissingTensorError, match="blk.0.ffn_down.weight"):
        pylin.load(path)


def test_misshapen_tensor(tmp_path):
    path = write_small_gguf(tmp_path / "shape.gguf", reshape="blk.0.attn_q.weight")
    with pytest.raises(TensorShapeError, match="blk.0.attn_q.weight"):
        pylin.load(path)


def test_unsupported_architecture(tmp_path):
    path = write_small_gguf(tmp_path / "arch.gguf", arch="mamba")
    with pytest.raises(UnsupportedArchitectureError, match="'mamba'.*supports.*gemma3.*llama"):
        pylin.load(path)


def test_empty_prompt(good):
    model = pylin.load(good)
    with pytest.raises(EmptyPromptError):
        model.tokenize("")
    with pytest.raises(EmptyPromptError):
        model.logits([])
    with pytest.raises(ValueError):
        model.embed([VOCAB])


def test_bad_hf_folders(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        pylin.load(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 32}')
    with pytest.raises(CheckpointError, match="safetensors"):
        pylin.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        pylin.load(tmp_path)


# ---- fuzz ----------------------------------------------------------------------------------------


def mutate(data: bytes, rng: np.random.Generator, header_end: int) -> bytes:
    """One random corruption: truncation, byte flips (mostly in the header), a wild u64, an insertion."""
    b = bytearray(data)
    kind = int(rng.integers(5))
    if kind == 0:
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == 1:
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(0, header_end if rng.random() < 0.8 else len(b)))
            b[pos] = int(rng.integers(256))
        return bytes(b)
    if kind == 2:
        pos = int(rng.integers(0, header_end - 8))
        wild = [0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, int(rng.integers(2**40))]
        value = wild[int(rng.integers(len(wild)))]
        b[pos : pos + 8] = struct.pack("<Q", value)
        return bytes(b)
    if kind == 3:
        pos = int(rng.integers(0, header_end))
        return bytes(
            b[:pos] + rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes() + b[pos:]
        )
    pos = int(rng.integers(0, header_end))
    return bytes(b[:pos] + b[pos + int(rng.integers(1, 16)) :])


def _header_end(path: Path) -> int:
    reader = gguf.GGUFReader(str(path))
    return int(reader.data_offset)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def _load_and_run(path: Path) -> str:
    """'ok' or the exception's class name; _Timeout propagates."""
    try:
        model = pylin.load(path)
        model.logits([1, 2, 3])
        return "ok"
    except _Timeout:
        raise
    except Exception as e:  # noqa: BLE001 - the point: any Python exception is acceptable
        assert not isinstance(e, MemoryError), (
            f"{path}: MemoryError (an unchecked size reached an allocation)"
        )
        return type(e).__name__


def test_fuzz(good, tmp_path):
    rng = np.random.default_rng(12345)
    data, header_end = good.read_bytes(), _header_end(good)
    outcomes: Counter[str] = Counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    try:
        for i in range(FUZZ_N):
            path = tmp_path / "fuzz.gguf"
            path.write_bytes(mutate(data, rng, header_end))
            signal.alarm(10)
            try:
                outcomes[_load_and_run(path)] += 1
            except _Timeout:
                keep = tmp_path / f"hang-{i}.gguf"
                path.rename(keep)
                pytest.fail(f"load hung for 10 s on mutation {i} (kept as {keep})")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    elapsed = time.perf_counter() - start
    print(f"fuzz: {FUZZ_N} files in {elapsed:.1f} s: {dict(outcomes.most_common())}")
    assert sum(outcomes.values()) == FUZZ_N


def test_fuzz_subprocess_no_native_crash(good, tmp_path):
    """A sample of mutations loaded in a child process: it must exit normally (no segfault / abort)."""
    rng = np.random.default_rng(777)
    data, header_end = good.read_bytes(), _header_end(good)
    files = []
    for i in range(60):
        path = tmp_path / f"sample-{i}.gguf"
        path.write_bytes(mutate(data, rng, header_end))
        files.append(str(path))
    script = textwrap.dedent(
        """
        import sys, pylin
        for path in sys.argv[1:]:
            try:
                pylin.load(path).logits([1, 2, 3])
            except Exception:
                pass
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *files],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=OUTSIDE_SOURCE_TREE,
    )
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]
