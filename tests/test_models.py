"""Models: loading HF folders and GGUF files of every family, and the forward pass against transformers.

Tiny random models (tests/tiny_models.py) with each family's special settings switched on: pylin's
logits must equal transformers' (max relative error ≤ 1e-5, same argmax) in float32 and float64, from
safetensors and from GGUF files written with llama.cpp's conventions.  The real Gemma 3 270M Q4_K_M
file (marker realmodel) is checked against a float64 transformers Gemma 3 on its dequantized weights.
Run: python -m pytest -q tests/test_models.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import tiny_models as tm
import torch
from conftest import TOLERANCES

import pylin
from pylin import forward
from pylin.errors import UnsupportedArchitectureError
from pylin.qtensor import QTensor

IDS = [1, 5, 77, 3, 200, 9, 42, 250, 17, 8, 99, 123]  # 12 tokens: longer than every tiny sliding window
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).abs().max() / ref.double().abs().max())


def check_logits(got: torch.Tensor, ref: torch.Tensor, tol: float, label: str) -> float:
    err = rel_error(got, ref)
    print(f"{label}: max rel. error {err:.2e}")
    assert err <= tol, f"{label}: relative error {err:.3e} > {tol}"
    assert torch.equal(got.argmax(-1), ref.argmax(-1)), f"{label}: argmax differs"
    return err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, HF model) per family, built once per module."""
    cache: dict[tuple, tuple] = {}
    root = tmp_path_factory.mktemp("tiny")

    def get(family: str, dtype: torch.dtype = torch.float32):
        key = (family, dtype)
        if key not in cache:
            cache[key] = tm.make_tiny_hf(family, root, dtype=dtype)
        return cache[key]

    return get


# ---- Hugging Face safetensors -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", tm.FAMILIES)
def test_hf_logits(tiny, family, dtype):
    folder, hf = tiny(family)
    model = pylin.load(folder, dtype=dtype)
    assert model.arch == family and model.dtype == DTYPES[dtype]
    assert isinstance(model.weights.layers[0].q, QTensor)
    got = model.logits(IDS)
    assert got.dtype == DTYPES[dtype] and got.shape == (len(IDS), tm.VOCAB)
    check_logits(got, tm.hf_logits(hf, IDS, DTYPES[dtype]), TOLERANCES["logits_tiny"], f"{family} HF {dtype}")


@pytest.mark.parametrize("n", [3, 8, 9, 12])
def test_phi3_longrope_short_and_long(tiny, n):
    """LongRoPE uses the short factors up to the pretraining length, the long ones past it."""
    folder, hf = tiny("phi3")
    model = pylin.load(folder)
    assert model.config.rope[0].rotary_dim == tm.HEAD_DIM // 2
    check_logits(model.logits(IDS[:n]), tm.hf_logits(hf, IDS[:n]), TOLERANCES["logits_tiny"], f"phi3 n={n}")


def test_qwen3_yarn_like_deepseek_r1(tmp_path):
    """DeepSeek-R1-0528-Qwen3-8B is a qwen3 checkpoint with YaRN rope scaling."""
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 8}
    folder, hf = tm.make_tiny_hf("qwen3", tmp_path, rope_parameters=yarn, max_position_embeddings=32)
    model = pylin.load(folder)
    assert model.arch == "qwen3" and model.config.rope[0].attention_scaling > 1
    check_logits(model.logits(IDS), tm.hf_logits(hf, IDS), TOLERANCES["logits_tiny"], "qwen3 yarn")


def test_sharded_checkpoint_with_index(tiny, tmp_path):
    """Weights split over shards named by model.safetensors.index.json; stray files are ignored."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    folder, hf = tiny("olmo2")
    tensors = load_file(folder / "model.safetensors")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(folder / "config.json", sharded / "config.json")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, sharded / file)
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    save_file({"layers.0.attention.wq.weight": torch.zeros(2, 2)}, sharded / "consolidated.safetensors")
    check_logits(
        pylin.load(sharded).logits(IDS), tm.hf_logits(hf, IDS), TOLERANCES["logits_tiny"], "olmo2 sharded"
    )


def test_sliding_window_matters(tiny):
    """Negative control: without its window the Mistral model no longer matches (window < prompt)."""
    folder, hf = tiny("mistral")
    model = pylin.load(folder)
    assert model.config.sliding_window == [tm.MISTRAL_WINDOW] * 2
    model.config.sliding_window = [None, None]
    assert rel_error(model.logits(IDS), tm.hf_logits(hf, IDS)) > 1e-2


@pytest.mark.parametrize("store", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint(tiny, store):
    folder, hf = tiny("llama", store)
    model = pylin.load(folder)
    assert model.weights.layers[0].q.qtype == {torch.bfloat16: "BF16", torch.float16: "F16"}[store]
    check_logits(model.logits(IDS), tm.hf_logits(hf, IDS), TOLERANCES["logits_tiny"], f"llama {store}")


def test_multimodal_gemma3_language_part(tiny, tmp_path):
    """A gemma3 (multimodal) folder: text_config + language_model.* tensor names."""
    import json

    from safetensors.torch import load_file, save_file

    folder, hf = tiny("gemma3")
    tensors = load_file(folder / "model.safetensors")
    renamed = {k.replace("model.", "model.language_model.", 1): v for k, v in tensors.items()}
    renamed["model.vision_tower.dummy.weight"] = torch.zeros(3, 3)
    mm = tmp_path / "gemma3-mm"
    mm.mkdir()
    save_file(renamed, mm / "model.safetensors")
    text = json.loads((folder / "config.json").read_text())
    (mm / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": text}))
    model = pylin.load(mm)
    assert model.arch == "gemma3"
    check_logits(model.logits(IDS), tm.hf_logits(hf, IDS), TOLERANCES["logits_tiny"], "gemma3 multimodal")


def test_quantize_at_load(tiny):
    from pylin import _core

    if not hasattr(_core, "quantize"):
        pytest.xfail("pylin.kernels.quantize is not in this build of the native module yet")
    folder, _ = tiny("llama")
    model = pylin.load(folder, quantize="Q4_K")
    assert {model.weights.layers[0].q.qtype, model.weights.layers[0].down.qtype} == {"Q4_K"}
    # Reference: the same forward on the dequantized quantized weights.
    weights = model.weights.dequantized(torch.float64)
    x = model.embed(IDS).double()
    ref = forward.forward(model, weights, x, linear=forward.torch_linear).hidden @ weights.lm_head.T
    check_logits(model.logits(IDS), ref, TOLERANCES["logits_tiny"], "llama quantize=Q4_K")


# ---- GGUF with llama.cpp's conventions ---------------------------------------------------------------

GGUF_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"]
MIX = {"attn_v": "Q8_0", "ffn_down": "Q6_K", "attn_output": "Q4_K", "token_embd": "Q8_0", "*": "Q4_0"}
GGUF_CASES = [("llama", q) for q in GGUF_TYPES] + [
    (f, q) for f in ("mistral", "qwen3", "gemma3", "phi3", "olmo2") for q in ("Q8_0", "mix")
]


def _gguf_model(tiny, tmp_path, family, qtype):
    folder, hf = tiny(family)
    if family == "qwen3":  # llama.cpp's qwen3 has no sliding-window layers
        full = ["full_attention"] * 2
        _, hf = tm.make_tiny_hf("qwen3", tmp_path, use_sliding_window=False, layer_types=full)
    path = tmp_path / f"{family}-{qtype}.gguf"
    ref = tm.write_tiny_gguf(hf, family, path, qtypes=MIX if qtype == "mix" else qtype)
    return path, ref


@pytest.mark.parametrize("family,qtype", GGUF_CASES)
def test_gguf_logits(tiny, tmp_path, family, qtype):
    path, ref = _gguf_model(tiny, tmp_path, family, qtype)
    model = pylin.load(path)
    assert model.arch == ("llama" if family == "mistral" else family)
    if qtype != "mix":
        assert model.weights.layers[0].o.qtype == qtype
    check_logits(
        model.logits(IDS), tm.hf_logits(ref, IDS), TOLERANCES["logits_tiny"], f"{family} GGUF {qtype}"
    )


def test_gguf_float64(tiny, tmp_path):
    path, ref = _gguf_model(tiny, tmp_path, "gemma3", "Q4_K")
    model = pylin.load(path, dtype="float64")
    ref_logits = tm.hf_logits(ref, IDS, torch.float64)
    check_logits(model.logits(IDS), ref_logits, TOLERANCES["logits_tiny"], "gemma3 GGUF Q4_K float64")


def test_gguf_weights_are_views(tiny, tmp_path):
    """GGUF weights are zero-copy views of the memory-mapped file, never dequantized copies."""
    path, _ = _gguf_model(tiny, tmp_path, "phi3", "Q8_0")
    model = pylin.load(path)
    layer = model.weights.layers[0]
    for w in (layer.q, layer.k, layer.v, layer.gate, layer.up, layer.down, model.weights.token_embd):
        assert isinstance(w, QTensor) and w.qtype == "Q8_0"
        base = w.data
        while getattr(base, "base", None) is not None and not isinstance(base, np.memmap):
            base = base.base
        assert isinstance(base, np.memmap), "weight is not a view of the mapped file"


def test_gguf_tokenizer_cache(tiny, tmp_path, monkeypatch):
    """transformers' GGUF tokenizer is cached as a folder; a second load reads it and agrees."""
    monkeypatch.setenv("PYLIN_CACHE_DIR", str(tmp_path / "cache"))
    _, hf = tiny("llama")
    path = tmp_path / "llama-vocab.gguf"
    tm.write_tiny_gguf(hf, "llama", path, vocab=True)
    first = pylin.load(path).tokenize("the cat sat")
    entries = list((tmp_path / "cache" / "tokenizers").iterdir())
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()
    again = pylin.load(path)
    assert again.tokenize("the cat sat") == first and again.decode(first) == "the cat sat"
    _check_lean_tokenizer(again.tokenizer, entries[0])


TOKENIZER_TEXTS = [
    "the cat sat",
    "",
    " leading and trailing  ",
    "Numbers 12345 and 3.14159!",
    "naïve café — “quotes”",
    "日本語のテキスト",
    "tabs\tand\nnewlines\n\n",
    "<bos> looks special",
    "emoji 🙂🚀",
    "a" * 300,
]


def _check_lean_tokenizer(lean, folder):
    """pylin's JsonTokenizer over a cached folder gives transformers' ids and text for every text."""
    from transformers import AutoTokenizer

    from pylin.tokenizer import JsonTokenizer

    assert isinstance(lean, JsonTokenizer)
    ref = AutoTokenizer.from_pretrained(str(folder))
    for text in TOKENIZER_TEXTS:
        for special in (True, False):
            ids = ref.encode(text, add_special_tokens=special)
            assert lean.encode(text, add_special_tokens=special) == ids, (text, special)
            for skip in (True, False):
                assert lean.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


def test_gguf_vocab_tokenizer(tiny, tmp_path):
    """A GGUF toy byte-level vocabulary becomes a working tokenizer; generate() runs end to end."""
    _, hf = tiny("olmo2")
    path = tmp_path / "olmo2-vocab.gguf"
    tm.write_tiny_gguf(hf, "olmo2", path, vocab=True)
    model = pylin.load(path)
    ids = model.tokenize("the cat")
    assert ids and model.decode(ids) == "the cat"
    text = model.generate("the", max_new_tokens=3, stop_at_eos=False)
    assert isinstance(text, str)


# ---- the forward pass contract ------------------------------------------------------------------------


def test_records_and_layer_ranges(tiny):
    folder, _ = tiny("gemma3")
    model = pylin.load(folder)
    cfg, n = model.config, len(IDS)
    x = model.embed(IDS)
    full = model.forward(x, record=True)
    assert len(full.layers) == cfg.n_layers and full.final_norm_scale.shape == (n, 1)
    rec = full.layers[0]
    assert rec.attn_probs.shape == (cfg.n_heads, n, n) and rec.mlp_gate.shape == (n, cfg.d_ff)
    for scale in (rec.attn_norm_scale, rec.post_attn_norm_scale, rec.mlp_norm_scale, rec.post_mlp_norm_scale):
        assert scale.shape == (n, 1)
    torch.testing.assert_close(rec.resid_post, rec.resid_pre + rec.attn_out + rec.mlp_out, rtol=0, atol=1e-6)
    # sliding-window layer: a query never sees keys window or more tokens back
    assert cfg.sliding_window[0] == 4 and float(rec.attn_probs[:, 11, :8].abs().max()) == 0.0
    # running layers [0, 3) then [3, L) is the same as all at once
    first = model.forward(x, stop_layer=3)
    assert first.hidden is None
    second = model.forward(first.output, start_layer=3)
    torch.testing.assert_close(second.hidden, full.hidden, rtol=0, atol=0)
    assert len(model.hidden_states(IDS)) == cfg.n_layers + 1


def test_olmo2_has_no_pre_norms(tiny):
    model = pylin.load(tiny("olmo2")[0])
    rec = model.forward(model.embed(IDS), record=True).layers[0]
    assert rec.attn_norm_scale is None and rec.mlp_norm_scale is None and rec.post_attn_norm_scale is not None


def test_resid_hook_and_last_only(tiny):
    model = pylin.load(tiny("llama")[0])
    base = model.logits(IDS)
    torch.testing.assert_close(model.logits(IDS, last_only=True), base[-1:], rtol=1e-6, atol=1e-6)
    same = model.logits(IDS, resid_hook=lambda i, h: h)
    torch.testing.assert_close(same, base, rtol=0, atol=0)
    pushed = model.logits(IDS, resid_hook=lambda i, h: h + 0.5 if i == 1 else h)
    assert rel_error(pushed, base) > 1e-3


@pytest.mark.parametrize("family", ["gemma3", "olmo2", "phi3"])
def test_detached_forward_is_linear(tiny, family):
    """detach=True + torch_linear: the frozen map F is linear with F(X*) = y, so jvp(X*) = y (float64)."""
    model = pylin.load(tiny(family)[0], dtype="float64")
    weights = model.weights.dequantized(torch.float64)
    x = model.embed(IDS[:6])

    def f(inp: torch.Tensor) -> torch.Tensor:
        return forward.forward(model, weights, inp, linear=forward.torch_linear, detach=True).hidden

    y = f(x)
    torch.testing.assert_close(y, model.forward(x).hidden, rtol=1e-10, atol=1e-10)
    _, tangent_out = torch.func.jvp(f, (x,), (x,))
    err = rel_error(tangent_out, y)
    print(f"{family}: detached reconstruction error {err:.1e}")
    assert err < 1e-12

    # without detaching, the same identity fails: the network is not linear
    def g(inp):
        return forward.forward(model, weights, inp, linear=forward.torch_linear).hidden

    assert rel_error(torch.func.jvp(g, (x,), (x,))[1], y) > 1e-3


def test_embed_scale_and_rows_only(tiny):
    model = pylin.load(tiny("gemma3")[0])
    table = model.weights.token_embd.dequantize()
    expected = torch.from_numpy(table[[5, 7]]) * np.float32(np.sqrt(tm.D_MODEL))
    torch.testing.assert_close(model.embed([5, 7]), expected, rtol=0, atol=0)


def test_bad_prompts(tiny):
    model = pylin.load(tiny("llama")[0])
    with pytest.raises(ValueError, match="no tokens"):
        model.logits([])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([tm.VOCAB + 3])
    with pytest.raises(ValueError):
        model.forward(torch.zeros(3, tm.D_MODEL + 1))


def test_load_options(tiny):
    folder, _ = tiny("llama")
    with pytest.raises(ValueError, match="dtype"):
        pylin.load(folder, dtype="float16")
    from pylin import cuda

    if not cuda.available():  # without a usable GPU the error says why (module, torch build, driver, device)
        with pytest.raises(cuda.CudaUnavailableError, match=re.escape(cuda.why_unavailable())):
            pylin.load(folder, device="cuda")
    cfg = (folder / "config.json").read_text()
    bad = folder.parent / "bad-arch"
    bad.mkdir(exist_ok=True)
    (bad / "config.json").write_text(cfg.replace('"model_type": "llama"', '"model_type": "gpt_neox"'))
    with pytest.raises(UnsupportedArchitectureError, match="supports"):
        pylin.load(bad)


# ---- the real Gemma 3 270M Q4_K_M ---------------------------------------------------------------------

PROMPT = "The bridge out of Marin is the"
GEMMA_IDS = [2, 818, 11825, 855, 529, 69480, 563, 506]  # transformers' GGUF tokenizer of the file


def _gemma_reference(model) -> torch.nn.Module:
    """transformers' Gemma3ForCausalLM (float64) on the GGUF's dequantized weights."""
    import gguf
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    c = model.config
    config = Gemma3TextConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim,
        rms_norm_eps=c.norm_eps, sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=32768,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        tie_word_embeddings=True,
    )  # fmt: skip
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # built in float64 directly; every weight is overwritten below
    try:
        with no_init_weights():
            ref = Gemma3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, c.n_layers)
    g = model.gguf_file
    params = dict(ref.named_parameters(remove_duplicate=False))
    for hf_name, p in params.items():
        tied = hf_name == "lm_head.weight"  # the LM head is the embedding
        t = g.tensors["token_embd.weight" if tied else names.get_name(hf_name, (".weight",))]
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(p.shape)
        if hf_name.endswith("norm.weight"):
            values = values - 1.0  # the file stores 1 + w
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.ascontiguousarray(values)))
    return ref


@pytest.mark.realmodel
def test_real_gemma_tokenizer(gemma):
    assert gemma.tokenize(PROMPT) == GEMMA_IDS
    assert gemma.decode(GEMMA_IDS[1:]) == PROMPT
    from pylin.tokenizer import _cache_path

    folder = _cache_path(Path(gemma.source))
    if folder is not None and folder.is_dir():  # the lean cached tokenizer agrees with transformers'
        _check_lean_tokenizer(gemma.tokenizer, folder)


@pytest.mark.realmodel
def test_real_gemma_logits(gemma):
    assert gemma.arch == "gemma3" and gemma.weights.token_embd.qtype == "Q8_0"
    got = gemma.logits(GEMMA_IDS)
    ref_model = _gemma_reference(gemma)
    with torch.no_grad():
        ref = ref_model(torch.tensor([GEMMA_IDS])).logits[0]
    err = check_logits(got, ref, TOLERANCES["logits_real"], "Gemma 3 270M Q4_K_M vs transformers float64")
    assert torch.equal(got[-1].topk(5).indices, ref[-1].topk(5).indices)
    del ref_model
    top5 = [gemma.decode([int(i)]) for i in got[-1].topk(5).indices]
    print(f"top-5 after the prompt: {top5} (err {err:.1e})")
    print(f"greedy: {PROMPT!r} -> {gemma.generate(PROMPT, max_new_tokens=12)!r}")


def test_copy_of_config_is_independent(tiny):
    """Changing one loaded model's config does not leak into another load (no shared mutable state)."""
    folder, _ = tiny("mistral")
    a, b = pylin.load(folder), pylin.load(folder)
    a.config = dataclasses.replace(a.config, sliding_window=[None, None])
    assert b.config.sliding_window == [tm.MISTRAL_WINDOW] * 2
    assert copy.copy(b.config.rope) == b.config.rope


# ---- bench/make_synthetic_gguf.py ---------------------------------------------------------------------


def synthetic_writer():
    """bench/make_synthetic_gguf.py as a module, with a tiny llama shape added."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "make_synthetic_gguf.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_gguf", script)
    synthetic = sys.modules.setdefault("make_synthetic_gguf", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(synthetic)
    rope = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original": 16}
    synthetic.MODELS["tiny"] = synthetic.Shape(256, 2, 4, 2, 512, 300, llama3_rope=rope)
    synthetic.MODELS["tiny-16"] = synthetic.Shape(256, 16, 4, 2, 512, 300)
    return synthetic


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "Q5_K"])
def test_synthetic_gguf_writer(tmp_path, qtype):
    """The benchmark's random-block writer: a loadable llama GGUF with sane weights (small shape here)."""
    path = synthetic_writer().write("tiny", qtype, tmp_path / "synthetic.gguf")
    model = pylin.load(path)
    assert (model.n_layers, model.d_model, model.config.n_kv_heads) == (2, 256, 2)
    w = model.weights.layers[0].down
    assert w.qtype == qtype
    values = w.dequantize()
    assert abs(values.mean()) < 2e-3 and 0.01 < values.std() < 0.04
    assert torch.isfinite(model.logits([1, 2, 3])).all()


def test_synthetic_q4_k_m_mix_and_parallel_writing(tmp_path):
    """Q4_K_M follows llama.cpp's use_more_bits layers; the bytes do not depend on the worker count."""
    synthetic = synthetic_writer()
    one = synthetic.write("tiny-16", "Q4_K_M", tmp_path / "one.gguf")
    two = synthetic.write("tiny-16", "Q4_K_M", tmp_path / "two.gguf", workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert one.stat().st_size >= synthetic.file_size("tiny-16", "Q4_K_M")
    model = pylin.load(one)
    more_bits = [i for i in range(16) if model.weights.layers[i].down.qtype == "Q6_K"]
    assert more_bits == [0, 1, 4, 7, 10, 13, 14, 15]  # i < 2, i >= 14, (i - 2) % 3 == 2
    assert {model.weights.layers[i].gate.qtype for i in range(16)} == {"Q4_K"}
    assert torch.isfinite(model.logits([1, 2, 3])).all()
