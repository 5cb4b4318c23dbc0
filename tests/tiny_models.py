"""Tiny random models of every family, for tests: HF safetensors folders and GGUF files written with
llama.cpp's converter conventions.  Imported by the test suites of models, linearization and steering.

    path, hf = make_tiny_hf("gemma3", tmp_path, dtype=torch.float32)   # folder for pylin.load, HF model
    ref = write_tiny_gguf(hf, "gemma3", tmp_path / "g.gguf", qtypes="Q4_K")
    # ref: the HF model whose weights are exactly what the GGUF holds (dequantized with gguf-py)

Each family has its special settings switched on: llama3 rope scaling + tied embeddings (llama), a
sliding window shorter than the test prompts (mistral), per-head q/k norms + a sliding layer (qwen3),
local/global layers, linear rope scaling on global layers, query_pre_attn_scalar ≠ head_dim (gemma3),
partial rotary + LongRoPE with a short pretraining length (phi3), full-width q/k norms (olmo2).
All shapes allow K-quants (every K is a multiple of 256).  Covered by tests/test_models.py.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

FAMILIES = ("llama", "mistral", "qwen3", "gemma3", "phi3", "olmo2")
D_MODEL, D_FF, N_HEADS, N_KV, HEAD_DIM, VOCAB = 256, 512, 4, 2, 64, 300
GGUF_ARCH = {
    "llama": "llama",
    "mistral": "llama",
    "qwen3": "qwen3",
    "gemma3": "gemma3",
    "phi3": "phi3",
    "olmo2": "olmo2",
}
MISTRAL_WINDOW = 5
PHI3_ORIGINAL_CONTEXT = 8  # prompts longer than this switch LongRoPE to its long factors


def _common() -> dict[str, Any]:
    return dict(
        hidden_size=D_MODEL, intermediate_size=D_FF, num_attention_heads=N_HEADS, num_key_value_heads=N_KV,
        head_dim=HEAD_DIM, vocab_size=VOCAB, max_position_embeddings=64, rms_norm_eps=1e-6,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip


def hf_config(family: str, **overrides: Any) -> Any:
    """A transformers config of a tiny model of the family, with its special settings on."""
    import transformers as tf

    c = _common()
    if family == "llama":
        rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}  # fmt: skip
        cfg = tf.LlamaConfig(**c, num_hidden_layers=2, tie_word_embeddings=True, rope_parameters=rope)
    elif family == "mistral":
        cfg = tf.MistralConfig(**c, num_hidden_layers=2, sliding_window=MISTRAL_WINDOW, rope_theta=10000.0)
    elif family == "qwen3":
        cfg = tf.Qwen3Config(**c, num_hidden_layers=2, use_sliding_window=True, sliding_window=4,
                             max_window_layers=1, tie_word_embeddings=False)  # fmt: skip
    elif family == "gemma3":
        rope = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}  # fmt: skip
        cfg = tf.Gemma3TextConfig(**c, num_hidden_layers=6, sliding_window=4, query_pre_attn_scalar=48,
                                  rope_parameters=rope)  # fmt: skip
    elif family == "phi3":
        half = int(HEAD_DIM * 0.5) // 2
        rng = np.random.default_rng(1)
        rope = {"rope_type": "longrope", "rope_theta": 10000.0,
                "short_factor": (1 + rng.random(half)).tolist(),
                "long_factor": (2 + 4 * rng.random(half)).tolist()}  # fmt: skip
        cfg = tf.Phi3Config(**c, num_hidden_layers=2, partial_rotary_factor=0.5, rope_parameters=rope,
                            original_max_position_embeddings=PHI3_ORIGINAL_CONTEXT,
                            sliding_window=None)  # fmt: skip
    elif family == "olmo2":
        cfg = tf.Olmo2Config(**c, num_hidden_layers=2)
    else:
        raise ValueError(f"unknown family {family!r}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _randomize_norms(model: torch.nn.Module, family: str, rng: torch.Generator) -> None:
    """Norm weights away from their init (ones, or zeros for Gemma's 1 + w) so the tests see them."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                noise = 0.2 * torch.randn(p.shape, generator=rng)
                p.copy_(noise if family == "gemma3" else 1.0 + noise)


def make_tiny_hf(family: str, tmp_path: Path, dtype: torch.dtype = torch.float32, seed: int = 0,
                 **overrides: Any) -> tuple[Path, torch.nn.Module]:  # fmt: skip
    """Save a tiny random model of the family as safetensors in tmp_path/<family>; return (folder, model).

    The returned model is float32 with exactly the saved values (bf16/fp16 rounding applied), eager
    attention, in eval mode: transformers' logits are the reference.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(family, **overrides), attn_implementation="eager")
    _randomize_norms(model, family, torch.Generator().manual_seed(seed + 1))
    folder = Path(tmp_path) / f"{family}-{str(dtype).replace('torch.', '')}"
    # Round the parameters only: model.to(bfloat16) would also round the rope buffers of the reference.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    copy.deepcopy(model).to(dtype).save_pretrained(folder)
    return folder, model.eval()


def hf_logits(model: torch.nn.Module, ids: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, vocab) logits of transformers' model at ids, computed in dtype."""
    m = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0]


# ---- GGUF with llama.cpp's conventions ------------------------------------------------------------


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: Q/K rows reordered for NORM-style RoPE."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _native_quantize_available() -> bool:
    from pylin import _core

    return hasattr(_core, "quantize")


def random_kquant_blocks(n_rows: int, k: int, qtype: str, std: float, rng: np.random.Generator) -> np.ndarray:
    """Valid Q4_K / Q6_K blocks of random bytes with fp16 scales giving weights of about `std`.

    Every byte pattern is a valid block except the fp16 scales, which are set to small finite values.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    blocks = rng.integers(0, 256, size=(n_rows * (k // block), nbytes), dtype=np.uint8)
    if qtype == "Q4_K":  # half d, dmin; 6-bit scales/mins up to 63; 4-bit q: value d*sc*q - dmin*m
        d = np.float16(2 * std / (32 * 15))
        blocks[:, 0:2] = np.frombuffer(d.tobytes(), np.uint8)
        blocks[:, 2:4] = np.frombuffer(np.float16(std / 32).tobytes(), np.uint8)
    elif qtype == "Q6_K":  # ..., int8 scales[16], half d (last): value d*sc*(q-32)
        blocks[:, -2:] = np.frombuffer(np.float16(std / (64 * 18)).tobytes(), np.uint8)
    else:
        raise ValueError(f"random_kquant_blocks handles Q4_K and Q6_K, not {qtype}")
    return blocks.reshape(n_rows, -1)


def quantize_rows(w: np.ndarray, qtype: str, rng: np.random.Generator) -> np.ndarray:
    """Bytes (rows, row_bytes) of w in qtype: gguf-py, else pylin's kernels, else random blocks.

    The i-quants nobody here can write (gguf-py and pylin only read them) become random valid blocks
    with w's scale (pylin.synthetic): the reference model then holds exactly those weights."""
    import gguf

    from pylin.qtensor import WRITABLE_QTYPES

    w = np.ascontiguousarray(w, dtype=np.float32)
    if qtype == "F32":
        return w
    if qtype == "F16":
        return w.astype(np.float16)
    try:
        return gguf.quants.quantize(w, gguf.GGMLQuantizationType[qtype])
    except NotImplementedError:
        pass
    if qtype not in WRITABLE_QTYPES:
        from pylin import synthetic

        n_blocks = w.size // gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
        return synthetic.random_blocks(qtype, n_blocks, float(w.std()) or 0.02, rng).reshape(w.shape[0], -1)
    if _native_quantize_available():
        from pylin import kernels

        return kernels.quantize(w, qtype).data.reshape(w.shape[0], -1)
    return random_kquant_blocks(w.shape[0], w.shape[1], qtype, float(w.std()) or 0.02, rng)


def _dequantize(data: np.ndarray, qtype: str, shape: tuple[int, ...]) -> np.ndarray:
    import gguf

    if qtype in ("F32", "F16"):
        return data.astype(np.float32).reshape(shape)
    return gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype]).reshape(shape)


def _gguf_tensors(hf: torch.nn.Module, family: str) -> list[tuple[str, str, np.ndarray]]:
    """(HF name, GGUF name, float32 values in GGUF convention) for every tensor, as the converter does."""
    import gguf

    cfg = hf.config
    arch = gguf.MODEL_ARCH[GGUF_ARCH[family].upper()]
    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    out = []
    for name, p in hf.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if name.endswith("inv_freq") or "embed_scale" in name:
            continue
        w = p.detach().float().numpy().copy()
        if family in ("llama", "mistral") and name.endswith("q_proj.weight"):
            w = _permute(w, cfg.num_attention_heads)
        if family in ("llama", "mistral") and name.endswith("k_proj.weight"):
            w = _permute(w, cfg.num_key_value_heads)
        if family == "gemma3" and name.endswith("norm.weight"):
            w = w + 1  # convert_hf_to_gguf.py Gemma3Model: every norm stored as 1 + w
        gname = names.get_name(name, try_suffixes=(".weight",))
        if gname is None:
            raise KeyError(f"no GGUF name for {name}")
        out.append((name, gname, w))
    return out


def _undo(family: str, name: str, w: np.ndarray, cfg: Any) -> np.ndarray:
    if family in ("llama", "mistral") and name.endswith("q_proj.weight"):
        return _unpermute(w, cfg.num_attention_heads)
    if family in ("llama", "mistral") and name.endswith("k_proj.weight"):
        return _unpermute(w, cfg.num_key_value_heads)
    if family == "gemma3" and name.endswith("norm.weight"):
        return w - 1
    return w


def _metadata(writer: Any, hf: torch.nn.Module, family: str) -> None:
    cfg = hf.config
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    rope = cfg.rope_parameters
    if family == "gemma3":
        glob = rope["full_attention"]
        writer.add_rope_freq_base(glob["rope_theta"])
        writer.add_sliding_window(cfg.sliding_window)
        if glob.get("rope_type") == "linear":
            import gguf

            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(glob["factor"])
        if cfg.query_pre_attn_scalar != cfg.head_dim:
            writer.add_attention_scale(cfg.query_pre_attn_scalar**-0.5)
        return
    writer.add_rope_freq_base(rope["rope_theta"])
    if family == "mistral" and cfg.sliding_window:
        writer.add_sliding_window(cfg.sliding_window)
    if family == "qwen3" and "sliding_attention" in cfg.layer_types:
        raise ValueError(
            "llama.cpp's qwen3 has no sliding-window layers; build the model with use_sliding_window=False"
        )
    if family == "phi3":
        writer.add_rope_dimension_count(int(cfg.head_dim * cfg.partial_rotary_factor))
        orig, scale = (
            cfg.original_max_position_embeddings,
            cfg.max_position_embeddings / cfg.original_max_position_embeddings,
        )
        writer.add_rope_scaling_attn_factors(
            math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0
        )
        writer.add_rope_scaling_orig_ctx_len(orig)


def _extra_tensors(hf: torch.nn.Module, family: str) -> list[tuple[str, np.ndarray]]:
    """rope_freqs (llama3) and LongRoPE factor tensors, float32, as the converter writes them."""
    cfg, rope = hf.config, hf.config.rope_parameters
    if family == "llama" and rope.get("rope_type") == "llama3":
        dim = cfg.head_dim
        freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        factors = []
        for f in freqs.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < old / high:
                factors.append(1.0)
            elif wavelen > old / low:
                factors.append(factor)
            else:
                smooth = (old / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        return [("rope_freqs.weight", np.array(factors, dtype=np.float32))]
    if family == "phi3" and rope.get("rope_type") == "longrope":
        return [
            ("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32)),
            ("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32)),
        ]
    return []


def write_tiny_gguf(hf: torch.nn.Module, family: str, path: Path, qtypes: str | dict[str, str] = "Q8_0",
                    seed: int = 0, vocab: bool = False) -> torch.nn.Module:  # fmt: skip
    """Write hf as GGUF (llama.cpp's conventions) and return the HF model holding exactly its weights.

    qtypes: one format for every 2-D weight, or {GGUF name or a substring of it: format} with "*" as
    default (e.g. pylin.mixes.tensor_types(...) for a llama.cpp mix).
    Norms, rope factors stay F32.  vocab=True adds a toy byte-level "gpt2" vocabulary.
    """
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), GGUF_ARCH[family])
    _metadata(writer, hf, family)
    if vocab:
        _add_toy_vocab(writer, hf.config.vocab_size)
    ref = copy.deepcopy(hf)
    params = dict(ref.named_parameters())
    for hf_name, gname, w in _gguf_tensors(hf, family):
        qtype = _pick(qtypes, gname) if w.ndim == 2 else "F32"
        data = quantize_rows(w, qtype, rng)
        raw = None if qtype in ("F32", "F16") else gguf.GGMLQuantizationType[qtype]
        writer.add_tensor(gname, data, raw_dtype=raw)
        back = _undo(family, hf_name, _dequantize(data, qtype, w.shape), hf.config)
        if hf_name in params:
            with torch.no_grad():
                params[hf_name].copy_(torch.from_numpy(back))
    for name, values in _extra_tensors(hf, family):
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return ref.eval()


def _pick(qtypes: str | dict[str, str], name: str) -> str:
    if isinstance(qtypes, str):
        return qtypes
    if name in qtypes:
        return qtypes[name]
    for key, qtype in qtypes.items():
        if key != "*" and key in name:
            return qtype
    return qtypes.get("*", "Q8_0")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (openai/gpt-2 encoder.py)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _add_toy_vocab(writer: Any, vocab_size: int) -> None:
    """A byte-level BPE vocabulary: 256 byte tokens, then merges of frequent English pairs."""
    byte_chars = list(_bytes_to_unicode().values())
    tokens, merges = list(byte_chars), []
    words = ["Ġt", "he", "Ġthe", "in", "Ġa", "er", "on", "Ġo", "re", "at", "en", "Ġs", "ed", "Ġw", "is", "Ġb"]
    for word in words:
        if len(tokens) >= vocab_size:
            break
        for split in range(1, len(word)):
            left, right = word[:split], word[split:]
            if left in tokens and right in tokens and word not in tokens:
                merges.append(f"{left} {right}")
                tokens.append(word)
                break
    tokens += [f"<extra_{i}>" for i in range(vocab_size - len(tokens))]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
