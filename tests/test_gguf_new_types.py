"""GGUF files with the i-quants, TQ1_0 / TQ2_0, MXFP4 and NVFP4: llama.cpp's mixes, the planner, bad input,
fuzz.

- pylin.mixes restates llama.cpp's per-tensor choices: the Llama-3.1/3.3-70B files it describes have
  the sizes of the published ones; a tiny llama written in each mix (the i-quants as random valid
  blocks: nobody here can write them) loads, matches transformers on the file's exact weights and
  reconstructs y to float rounding; so does one whose every matrix is NVFP4 (random valid blocks too).
- The planner on 70B headers for the four mixes on 24 / 40 / 48 / 80 GiB cards; the same from a GGUF
  file's header (a sparse synthetic file: header only, data left as holes), through `pylin info` too.
- Bad input: a type pylin does not read names the tensor, the type and the supported list; a wrong
  byte length for every new type is a ValueError (Python and native layer); a fuzz test over a file
  holding every new type accepts only a clean load + forward or a Python exception.
- pylin.synthetic: random blocks of every format are valid and have the requested scale.
Covers pylin/mixes.py, pylin/synthetic.py, bench/make_synthetic_gguf.py and the loaders on new types.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest
import tiny_models as tm
import torch
from conftest import OUTSIDE_SOURCE_TREE
from reference import READ_ONLY_QTYPES, block_layout, dequantize_ref

import pylin
from pylin import kernels, mixes, planner, synthetic
from pylin.errors import UnsupportedQuantTypeError
from pylin.qtensor import SUPPORTED_QTYPES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import make_synthetic_gguf  # noqa: E402

MIXES = ("Q4_K_M", "IQ4_XS", "IQ3_M", "IQ2_XS")
IDS = [1, 5, 77, 3, 200, 9, 42, 250, 17, 8]

# ---- llama.cpp's mixes ---------------------------------------------------------------------------

# Llama-3.1-70B GGUF file sizes as published (bartowski's quantizations, as listed at
# ozeki.chat/p_8590-understanding-ai-model-files.html): the same architecture as 3.3-70B.  The files
# also hold ~10 MB of tokenizer metadata, which the tensors alone lack.
PUBLISHED_70B_GB = {"Q4_K_M": 42.52, "IQ4_XS": 37.90, "IQ3_M": 31.94}


def llama_70b_header(mix: str) -> dict:
    shape, _, planned = make_synthetic_gguf.plan("llama-3.3-70b", mix + "_MIX")
    tensors = [(t.name, t.qtype, t.dims) for t in planned]
    config = {"n_layers": shape.n_layers, "d_model": shape.d_model, "n_heads": shape.n_heads,
              "n_kv_heads": shape.n_kv_heads, "head_dim": shape.d_model // shape.n_heads, "d_ff": shape.d_ff,
              "vocab_size": shape.vocab}  # fmt: skip
    return {"config": config, "tensors": tensors}


@pytest.mark.parametrize("mix", sorted(PUBLISHED_70B_GB))
def test_70b_mix_sizes_match_the_published_files(mix: str) -> None:
    weights = sum(planner.weight_bytes(llama_70b_header(mix)["tensors"]).values())
    assert abs(weights / 1e9 - PUBLISHED_70B_GB[mix]) < 0.03, weights / 1e9


def test_mix_rules() -> None:
    """Spot checks of llama_tensor_get_type's rules (src/llama-quant.cpp) on the 70B and 8B shapes."""
    big = {"n_layers": 80, "n_heads": 64, "n_kv_heads": 8}
    small = {"n_layers": 32, "n_heads": 32, "n_kv_heads": 8}
    t = mixes.tensor_type
    assert t("IQ3_M", "blk.0.attn_v.weight", **big) == "Q5_K"  # Q4_K, then the 70B bump
    assert t("IQ3_M", "blk.0.ffn_down.weight", **big) == "Q4_K"  # first n/8 layers
    assert t("IQ3_M", "blk.10.ffn_down.weight", **big) == "IQ3_S"
    assert t("IQ4_XS", "blk.3.attn_v.weight", **small) == "Q5_K"  # n_gqa >= 4
    assert t("IQ2_XS", "token_embd.weight", **small) == "Q2_K"
    assert t("IQ2_XS", "output.weight", **small) == "Q5_K"
    assert t("Q4_K_M", "blk.2.ffn_down.weight", **small) == "Q6_K"  # use_more_bits: i < n/8
    assert t("Q4_K_M", "blk.4.ffn_down.weight", **small) == "Q4_K"
    assert t("Q4_K_M", "blk.6.ffn_down.weight", **small) == "Q6_K"  # (6 - 4) % 3 == 2
    assert t("Q4_K_M", "blk.0.attn_norm.weight", **small) == "F32"
    tied = mixes.tensor_types("IQ4_XS", ["token_embd.weight"], **small)
    assert tied == {"token_embd.weight": "Q6_K"}  # no output.weight: the embedding is typed as the output
    with pytest.raises(ValueError, match="unknown mix"):
        t("Q9_Z", "output.weight", **small)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return tm.make_tiny_hf("llama", tmp_path_factory.mktemp("tiny"))[1]


@pytest.mark.parametrize("mix", MIXES)
def test_tiny_model_in_each_mix_loads_and_reconstructs(mix: str, tiny_llama, tmp_path) -> None:
    cfg = tiny_llama.config
    names = [g for _, g, _ in tm._gguf_tensors(tiny_llama, "llama")]
    types = mixes.tensor_types(mix, names, n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads,
                               n_kv_heads=cfg.num_key_value_heads)  # fmt: skip
    path = tmp_path / f"llama-{mix}.gguf"
    ref = tm.write_tiny_gguf(tiny_llama, "llama", path, qtypes=types)
    model = pylin.load(path)
    stored = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert {n: q for n, q in stored.items() if n in types and q != "F32"} == {
        n: q for n, q in types.items() if q != "F32"
    }
    got, want = model.logits(IDS), tm.hf_logits(ref, IDS)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    rec = model.linearize(IDS).reconstruction()
    assert rec.rel_error <= 1e-5, rec


def test_tiny_model_in_nvfp4_loads_and_reconstructs(tiny_llama, tmp_path, tolerances) -> None:
    """Every matrix NVFP4 (random valid blocks at the weights' scale: nobody here writes NVFP4)."""
    path = tmp_path / "llama-NVFP4.gguf"
    ref = tm.write_tiny_gguf(tiny_llama, "llama", path, qtypes="NVFP4")
    model = pylin.load(path)
    matrices = [t for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) == 2]
    assert len(matrices) >= 1 + 7 * tiny_llama.config.num_hidden_layers  # the embedding, 7 per layer
    assert {t.tensor_type.name for t in matrices} == {"NVFP4"}
    got, want = model.logits(IDS), tm.hf_logits(ref, IDS)
    assert float((got - want).abs().max() / want.abs().max()) <= tolerances["logits_tiny"]
    rec = model.linearize(IDS).reconstruction()
    assert rec.rel_error <= tolerances["engine_float32"], rec


# ---- the planner on 70B headers --------------------------------------------------------------------

# Verdict at 16 tokens, float32, for GPUs of 24 / 40 / 48 / 80 GiB (pylin.planner's model of memory).
FITS = {"Q4_K_M": (False, False, True, True), "IQ4_XS": (False, True, True, True),
        "IQ3_M": (False, True, True, True), "IQ2_XS": (True, True, True, True)}  # fmt: skip
GPUS = ("24GiB", "40GiB", "48GiB", "80GiB")


@pytest.fixture(scope="module")
def sparse_70b_iq2_xs(tmp_path_factory) -> Path:
    """The 70B in IQ2_XS as a GGUF header whose tensor data are holes (21 GB that take no disk)."""
    path = tmp_path_factory.mktemp("l70") / "l70-IQ2_XS.gguf"
    return make_synthetic_gguf.write("llama-3.3-70b", "IQ2_XS_MIX", path, sparse=True)


@pytest.mark.parametrize("mix", MIXES)
def test_planner_on_70b_headers(mix: str) -> None:
    header = llama_70b_header(mix)
    plans = [planner.plan(header, gpu, tokens=16) for gpu in GPUS]
    assert tuple(p.fits for p in plans) == FITS[mix], [planner.format_plan(p) for p in plans]
    batches = [p.batch for p in plans]
    assert batches == sorted(batches) and batches[-1] > 1000  # 80 GiB: thousands of 16-token vectors
    assert plans[0].per_vector_bytes == 16 * (4 * 8192 + 3 * 28672 + 3 * 64 * 128) * 4
    assert all(not p.fits or p.batch * p.per_vector_bytes <= p.device_memory - p.fixed_bytes for p in plans)


def test_planner_reads_the_same_from_a_70b_file_header(sparse_70b_iq2_xs) -> None:
    path, header = sparse_70b_iq2_xs, llama_70b_header("IQ2_XS")
    assert planner.read_header(path)["config"] == header["config"]
    stored = sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors)
    assert (
        planner.plan(path, "24GiB", 16).weight_bytes
        == stored
        == planner.plan(header, "24GiB", 16).weight_bytes
    )


def test_pylin_info_on_a_70b_header(sparse_70b_iq2_xs) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pylin", "info", str(sparse_70b_iq2_xs), "--device", "cuda",
         "--gpu-memory", "24GiB", "--tokens", "16"],
        capture_output=True, text=True, timeout=120, cwd=OUTSIDE_SOURCE_TREE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "IQ2_XS" in out and "fits: batches of up to" in out and "per vector" in out, out


# ---- bad input ------------------------------------------------------------------------------------

D, FF, HEADS, KV, HD, VOCAB = 256, 512, 2, 1, 128, 40
# Every new type, twice over two layers, plus the K-quants of the low mixes.
LAYER_TYPES = [
    {"attn_q": "IQ4_XS", "attn_k": "IQ2_XXS", "attn_v": "IQ3_S", "attn_output": "IQ1_M", "ffn_gate": "IQ2_S",
     "ffn_up": "TQ1_0", "ffn_down": "MXFP4"},
    {"attn_q": "IQ3_XXS", "attn_k": "IQ2_XS", "attn_v": "IQ4_NL", "attn_output": "TQ2_0", "ffn_gate": "IQ1_S",
     "ffn_up": "IQ4_XS", "ffn_down": "NVFP4"},
]  # fmt: skip


def write_new_types_gguf(
    path: Path, override: dict[str, str] | None = None, extra: dict[str, np.ndarray] | None = None
) -> Path:
    """A two-layer llama (d = 256) whose weights use every new type; override: {tensor name: type},
    extra: more float32 tensors by name."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(D)
    writer.add_block_count(2)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    shapes = {"attn_q": (HEADS * HD, D), "attn_k": (KV * HD, D), "attn_v": (KV * HD, D),
              "attn_output": (D, HEADS * HD), "ffn_gate": (FF, D), "ffn_up": (FF, D),
              "ffn_down": (D, FF)}  # fmt: skip
    tensors = [("token_embd.weight", "Q2_K", (VOCAB, D)), ("output.weight", "Q5_K", (VOCAB, D))]
    for i, types in enumerate(LAYER_TYPES):
        tensors += [(f"blk.{i}.{role}.weight", qtype, shapes[role]) for role, qtype in types.items()]
    for name, qtype, shape in tensors:
        qtype = (override or {}).get(name, qtype)
        t = gguf.GGMLQuantizationType[qtype]
        block, block_bytes = gguf.GGML_QUANT_SIZES[t]
        if qtype in SUPPORTED_QTYPES:
            data = synthetic.random_blocks(qtype, shape[0] * shape[1] // block, 0.05, rng)
        else:  # a type pylin does not read: random bytes of the right size
            data = rng.integers(0, 256, (shape[0], shape[1] // block * block_bytes), np.uint8)
        writer.add_tensor(name, data.reshape(shape[0], -1), raw_dtype=t)
    for name in ["output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight",
                 "blk.1.attn_norm.weight", "blk.1.ffn_norm.weight"]:  # fmt: skip
        writer.add_tensor(name, np.ones(D, np.float32))
    for name, values in (extra or {}).items():
        writer.add_tensor(name, values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def new_types_file(tmp_path_factory) -> Path:
    return write_new_types_gguf(tmp_path_factory.mktemp("new") / "new-types.gguf")


def test_file_with_every_new_type_loads_and_runs(new_types_file) -> None:
    model = pylin.load(new_types_file)
    layers = model.weights.layers
    assert [layers[0].q.qtype, layers[1].gate.qtype, layers[0].down.qtype, layers[1].down.qtype] == [
        "IQ4_XS", "IQ1_S", "MXFP4", "NVFP4"
    ]  # fmt: skip
    # the forward pass equals one on the dequantized weights (gguf-py's values)
    reader = {t.name: t for t in gguf.GGUFReader(str(new_types_file)).tensors}
    for layer, qtype in ((0, "MXFP4"), (1, "NVFP4")):
        ref = dequantize_ref(np.asarray(reader[f"blk.{layer}.ffn_down.weight"].data), qtype, D, FF)
        np.testing.assert_array_equal(layers[layer].down.dequantize(), ref)
    rec = model.linearize([1, 2, 3, 4]).reconstruction()
    assert rec.rel_error <= 1e-5, rec


@pytest.mark.parametrize("qtype", ["Q8_1", "Q8_K", "Q1_0"])
def test_a_type_pylin_does_not_read_names_tensor_type_and_the_supported_list(qtype: str, tmp_path) -> None:
    path = write_new_types_gguf(tmp_path / "other.gguf", {"blk.1.ffn_up.weight": qtype})
    with pytest.raises(UnsupportedQuantTypeError) as e:
        pylin.load(path)
    message = str(e.value)
    assert "blk.1.ffn_up.weight" in message and qtype in message
    assert all(q in message for q in SUPPORTED_QTYPES), message


@pytest.mark.parametrize("scale_name", ["blk.1.ffn_down.scale", "blk.1.ffn_down.weight.scale"])
def test_nvfp4_with_a_per_tensor_scale_tensor_is_refused(scale_name: str, tmp_path) -> None:
    """llama.cpp's NVFP4 conversions keep the per-tensor float scale as a tensor of its own and multiply
    the product by it; pylin does not apply it, so it refuses the file instead of dropping the scale."""
    path = write_new_types_gguf(tmp_path / "scaled.gguf", extra={scale_name: np.full(1, 0.25)})
    with pytest.raises(UnsupportedQuantTypeError) as e:
        pylin.load(path)
    message = str(e.value)
    assert "blk.1.ffn_down.weight" in message and scale_name in message and "NVFP4" in message, message


def test_an_unknown_type_id_names_tensor_id_and_the_supported_list(new_types_file, tmp_path) -> None:
    data = bytearray(new_types_file.read_bytes())
    name = b"blk.0.attn_k.weight"
    pos = data.index(name) + len(name)
    n_dims = int.from_bytes(data[pos : pos + 4], "little")
    type_at = pos + 4 + 8 * n_dims
    data[type_at : type_at + 4] = (97).to_bytes(4, "little")
    bad = tmp_path / "future.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(UnsupportedQuantTypeError) as e:
        pylin.load(bad)
    message = str(e.value)
    assert "blk.0.attn_k.weight" in message and "97" in message and "IQ4_XS" in message, message


@pytest.mark.parametrize("qtype", READ_ONLY_QTYPES)
def test_wrong_byte_length_is_a_value_error(qtype: str) -> None:
    block_size, block_bytes = block_layout(qtype)
    k = 2 * block_size
    for n_bytes in (2 * block_bytes - 1, 2 * block_bytes + 1, block_bytes):
        with pytest.raises(ValueError, match="bytes"):
            pylin.QTensor(np.zeros(n_bytes, np.uint8), qtype, (1, k))
    from pylin import _core

    qid = kernels._QTYPE_IDS[qtype]
    short = np.zeros(2 * block_bytes - 1, np.uint8)
    with pytest.raises(ValueError, match="bytes"):
        _core.matmul_t(np.zeros((1, k), np.float32), short, qid, 1, k, np.zeros((1, 1), np.float32), 1)
    with pytest.raises(ValueError, match="bytes"):
        _core.matmul(np.zeros((1, 1), np.float32), short, qid, 1, k, np.zeros((1, k), np.float32), 1)
    with pytest.raises(ValueError, match="bytes"):
        _core.dequantize(short, qid, 1, k, np.zeros((1, k), np.float32), 1)
    with pytest.raises(ValueError, match="multiple"):
        pylin.QTensor(np.zeros(block_bytes, np.uint8), qtype, (1, block_size + 8))


FUZZ_N = 300


def mutate(data: bytes, rng: np.random.Generator, header_end: int) -> bytes:
    """A truncation, byte flips (mostly in the header, some in the blocks: scales, grid indices), or a
    wild u64 in the header (counts, shapes, offsets, type ids)."""
    b = bytearray(data)
    kind = int(rng.integers(3))
    if kind == 0:
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == 1:
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(0, header_end if rng.random() < 0.7 else len(b)))] = int(rng.integers(256))
        return bytes(b)
    pos = int(rng.integers(0, header_end - 8))
    value = [0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, int(rng.integers(2**40))][int(rng.integers(7))]
    b[pos : pos + 8] = value.to_bytes(8, "little")
    return bytes(b)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def test_fuzz_files_with_the_new_types(new_types_file, tmp_path) -> None:
    """Mutated / truncated copies of the every-new-type file: a clean load + forward, or a Python
    exception; never a hang, a MemoryError or (checked in a child process) a native crash."""
    rng = np.random.default_rng(2026)
    data = new_types_file.read_bytes()
    header_end = int(gguf.GGUFReader(str(new_types_file)).data_offset)
    outcomes: Counter[str] = Counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    paths = []
    try:
        for i in range(FUZZ_N):
            path = tmp_path / f"fuzz-{i}.gguf"
            path.write_bytes(mutate(data, rng, header_end))
            paths.append(path)
            signal.alarm(10)
            try:
                pylin.load(path).logits([1, 2, 3])
                outcomes["ok"] += 1
            except _Timeout:
                pytest.fail(f"load hung for 10 s on mutation {i} ({path})")
            except MemoryError:
                pytest.fail(f"{path}: MemoryError (an unchecked size reached an allocation)")
            except Exception as e:  # noqa: BLE001 - the point: any Python exception is acceptable
                outcomes[type(e).__name__] += 1
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert sum(outcomes.values()) == FUZZ_N and outcomes["ok"] < FUZZ_N, outcomes
    script = "import sys, pylin\nfor p in sys.argv[1:]:\n    try: pylin.load(p).logits([1, 2, 3])\n" \
             "    except Exception: pass\nprint('done')"  # fmt: skip
    child = subprocess.run([sys.executable, "-c", script, *map(str, paths[::5])], capture_output=True,
                           text=True, timeout=300, cwd=OUTSIDE_SOURCE_TREE)  # fmt: skip
    assert child.returncode == 0 and "done" in child.stdout, child.stderr[-2000:]


# ---- pylin.synthetic ------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", sorted(synthetic.FP16_SCALE_FIELDS))
def test_synthetic_blocks_have_the_requested_scale(qtype: str) -> None:
    rng = np.random.default_rng(7)
    w = synthetic.random_qtensor(qtype, (64, 2 * 256 if block_layout(qtype)[0] == 256 else 512), 0.02, seed=3)
    values = kernels.dequantize(w)
    assert np.isfinite(values).all()
    assert 0.012 < values.std() < 0.03, values.std()
    assert abs(values.mean()) < 0.1 * values.std()
    blocks = synthetic.random_blocks(qtype, 8, 0.02, rng)
    assert blocks.shape == (8, block_layout(qtype)[1]) and blocks.dtype == np.uint8
    assert torch.from_numpy(values).abs().max() < 1.0
