"""pylin.planner on the CPU: Llama-3.3-70B Q4_K_M on an 80 GB GPU, a GPU it does not fit, a real header.

The 70B header is synthetic (shapes and types only): 80 layers, d = 8192, 64 / 8 heads of 128,
d_ff = 28672, vocab 128256; Q4_K for most weights, Q6_K for ffn_down / attn_v / output, F32 norms
(llama.cpp's Q4_K_M recipe).  Covers pylin/planner.py.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from pylin import planner

LLAMA_70B = {"n_layers": 80, "d_model": 8192, "n_heads": 64, "n_kv_heads": 8, "head_dim": 128,
             "d_ff": 28672, "vocab_size": 128256}  # fmt: skip


def llama_header(cfg: dict[str, int]) -> dict:
    d, ff, hd = cfg["d_model"], cfg["d_ff"], cfg["head_dim"]
    q_rows, kv_rows = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    tensors = [("token_embd.weight", "Q4_K", (cfg["vocab_size"], d)), ("output_norm.weight", "F32", (d,)),
               ("output.weight", "Q6_K", (cfg["vocab_size"], d))]  # fmt: skip
    for i in range(cfg["n_layers"]):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", "F32", (d,)),
            (b + "attn_q.weight", "Q4_K", (q_rows, d)),
            (b + "attn_k.weight", "Q4_K", (kv_rows, d)),
            (b + "attn_v.weight", "Q6_K", (kv_rows, d)),
            (b + "attn_output.weight", "Q4_K", (d, q_rows)),
            (b + "ffn_norm.weight", "F32", (d,)),
            (b + "ffn_gate.weight", "Q4_K", (ff, d)),
            (b + "ffn_up.weight", "Q4_K", (ff, d)),
            (b + "ffn_down.weight", "Q6_K", (d, ff)),
        ]
    return {"config": dict(cfg), "tensors": tensors}


def test_llama_70b_q4_k_m_fits_80gb_at_16_tokens():
    p = planner.plan(llama_header(LLAMA_70B), "80GB", tokens=16, strict=True)
    # 4.5 bits/weight for Q4_K, 6.5625 for Q6_K: about 42-46 GB of weights
    assert 40e9 < p.weight_bytes < 47e9, p.weight_bytes
    assert set(p.weight_bytes_by_type) == {"Q4_K", "Q6_K", "F32"}
    assert p.weight_bytes_by_type["F32"] == (2 * 80 + 1) * 8192 * 4
    assert p.frozen_bytes < 1e9  # 16 tokens: residuals, gates and 64·16² probabilities per layer
    assert p.fits and p.batch >= 64, planner.format_plan(p)
    text = planner.format_plan(p)
    assert "fits" in text and "Q4_K" in text and str(p.batch) in text


def test_does_not_fit_says_why_with_the_numbers():
    p = planner.plan(llama_header(LLAMA_70B), "24GB", tokens=16)
    assert not p.fits and p.batch == 0
    assert p.shortfall() > 20e9
    assert "does not fit" in p.message() and "GiB" in p.message()
    with pytest.raises(planner.DoesNotFitError, match="does not fit.*short"):
        planner.plan(llama_header(LLAMA_70B), "24GB", tokens=16, strict=True)


def test_batch_shrinks_with_tokens_and_grows_with_memory():
    header = llama_header(LLAMA_70B)
    b16 = planner.plan(header, "80GB", 16).batch
    assert planner.plan(header, "80GB", 64).batch < b16 < planner.plan(header, "141GB", 16).batch
    # attention probabilities grow as tokens²: a long prompt eventually leaves no room
    assert not planner.plan(header, "80GB", 16384).fits


def test_chunk_size_for_the_engine():
    shape = planner.ModelShape(**LLAMA_70B)
    per_vector = planner.per_vector_bytes(shape, 16)
    assert planner.chunk_size(shape, 16, 4, 10 * per_vector + 1) == 10
    assert planner.chunk_size(shape, 16, 4, 1) == 1  # always at least one vector
    assert planner.chunk_size(shape, 16, 4, 10**12, cap=256) == 256


@pytest.mark.parametrize("text,expected", [("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("24G", 24 * 2**30),
                                           ("512MiB", 512 * 2**20), (1234, 1234)])  # fmt: skip
def test_parse_bytes(text, expected):
    assert planner.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "-3GB", 0, "GB"])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ValueError):
        planner.parse_bytes(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tokens"):
        planner.plan(llama_header(LLAMA_70B), "80GB", tokens=0)
    bad = llama_header({**LLAMA_70B, "n_layers": 1})
    bad["tensors"].append(("x", "Q4_K", (4, 100)))  # K not a multiple of 256
    with pytest.raises(ValueError, match="multiple of 256"):
        planner.plan(bad, "80GB", 16)


def test_reads_a_gguf_header(tmp_path):
    """read_header on a small GGUF written by gguf-py: same config and bytes as the tensors hold."""
    cfg = {"n_layers": 2, "d_model": 256, "n_heads": 4, "n_kv_heads": 2, "head_dim": 64, "d_ff": 512,
           "vocab_size": 100}  # fmt: skip
    header = llama_header(cfg)
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg["n_layers"])
    writer.add_embedding_length(cfg["d_model"])
    writer.add_feed_forward_length(cfg["d_ff"])
    writer.add_head_count(cfg["n_heads"])
    writer.add_head_count_kv(cfg["n_kv_heads"])
    stored = 0
    for name, qtype, shape in header["tensors"]:
        block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
        raw = np.zeros((*shape[:-1], shape[-1] // block * nbytes), dtype=np.uint8)
        raw_dtype = gguf.GGMLQuantizationType[qtype]
        if qtype == "F32":
            raw, raw_dtype = np.zeros(shape, dtype=np.float32), None
        writer.add_tensor(name, raw, raw_dtype=raw_dtype)
        stored += raw.nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    read = planner.read_header(path)
    assert read["config"] == cfg
    p = planner.plan(path, "4GiB", tokens=4)
    assert p.weight_bytes == stored == planner.plan(header, "4GiB", tokens=4).weight_bytes
    assert p.fits
