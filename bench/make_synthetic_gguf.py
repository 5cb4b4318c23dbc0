"""Write a random-weight GGUF with the exact shapes of a named model, streamed tensor by tensor.

    python bench/make_synthetic_gguf.py llama-3-8b Q4_0 /tmp/llama-3-8b-q4_0.gguf
    python bench/make_synthetic_gguf.py llama-3.3-70b Q4_K /data/l70.gguf      # ~40 GB
    python bench/make_synthetic_gguf.py llama-3-8b Q4_K out.gguf --layers 2     # a short stack

Random *blocks* are generated directly (random quant bytes, fp16 scales of random sign chosen so the
weights have mean 0 and a standard deviation of about 0.02), so writing runs at disk speed and never
holds more than one chunk of rows in memory.  Norms are ones (F32); llama3 rope scaling is written
as llama.cpp's `rope_freqs` tensor.
Used by bench/forward.py and bench/jacobian.py; the shapes are checked by loading with pylin.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab: int
    rope_theta: float = 500000.0
    llama3_rope: dict | None = None  # factor, low_freq_factor, high_freq_factor, original context
    context: int = 8192


_LLAMA31_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original": 8192}
MODELS = {
    "llama-3-8b": Shape(4096, 32, 32, 8, 14336, 128256),
    "llama-3.1-8b": Shape(4096, 32, 32, 8, 14336, 128256, llama3_rope=_LLAMA31_ROPE, context=131072),
    "llama-3.2-3b": Shape(3072, 28, 24, 8, 8192, 128256, llama3_rope={**_LLAMA31_ROPE, "factor": 32.0}),
    "llama-3.3-70b": Shape(8192, 80, 64, 8, 28672, 128256, llama3_rope=_LLAMA31_ROPE, context=131072),
}
STD = 0.02
CHUNK_BYTES = 64 << 20


def random_blocks(rng: np.random.Generator, n_blocks: int, qtype: str) -> np.ndarray:
    """n_blocks valid blocks of qtype as uint8 (n_blocks, block_bytes); weights ~ STD in scale."""
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    blocks = np.frombuffer(rng.bytes(n_blocks * nbytes), dtype=np.uint8).reshape(n_blocks, nbytes).copy()
    # a random sign per block centres every format's weights on zero (Q4_0's q − 8 has mean −½)
    jitter = ((0.5 + rng.random(n_blocks)) * rng.choice([-1.0, 1.0], n_blocks)).astype(np.float32)
    if qtype == "Q4_0":  # half d; 4-bit q: d·(q − 8), std(q − 8) ≈ 4.6
        blocks[:, 0:2] = (jitter * STD / 4.6).astype(np.float16).view(np.uint8).reshape(-1, 2)
    elif qtype == "Q8_0":  # half d; int8 q: std ≈ 74
        blocks[:, 0:2] = (jitter * STD / 74).astype(np.float16).view(np.uint8).reshape(-1, 2)
    elif qtype == "Q4_K":  # half d, dmin; d·sc·q − dmin·m with sc, m ~ U(0, 63), q ~ U(0, 15)
        d = jitter * STD / 266
        blocks[:, 0:2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
        blocks[:, 2:4] = (d * 7.5).astype(np.float16).view(np.uint8).reshape(-1, 2)  # same sign as d
    elif qtype == "Q6_K":  # ..., int8 scales, half d last: d·sc·(q − 32)
        blocks[:, -2:] = (jitter * STD / (74 * 18)).astype(np.float16).view(np.uint8).reshape(-1, 2)
    else:
        raise ValueError(f"random blocks for {qtype} are not implemented (use Q4_0, Q8_0, Q4_K, Q6_K)")
    return blocks


def tensor_list(shape: Shape, n_layers: int) -> list[tuple[str, tuple[int, int] | tuple[int]]]:
    """(GGUF name, PyTorch-order shape) of every tensor, in llama.cpp's order."""
    d, hd = shape.d_model, shape.d_model // shape.n_heads
    out: list[tuple[str, tuple]] = [("token_embd.weight", (shape.vocab, d))]
    if shape.llama3_rope:
        out.append(("rope_freqs.weight", (hd // 2,)))
    for i in range(n_layers):
        out += [
            (f"blk.{i}.attn_norm.weight", (d,)),
            (f"blk.{i}.attn_q.weight", (shape.n_heads * hd, d)),
            (f"blk.{i}.attn_k.weight", (shape.n_kv_heads * hd, d)),
            (f"blk.{i}.attn_v.weight", (shape.n_kv_heads * hd, d)),
            (f"blk.{i}.attn_output.weight", (d, shape.n_heads * hd)),
            (f"blk.{i}.ffn_norm.weight", (d,)),
            (f"blk.{i}.ffn_gate.weight", (shape.d_ff, d)),
            (f"blk.{i}.ffn_up.weight", (shape.d_ff, d)),
            (f"blk.{i}.ffn_down.weight", (d, shape.d_ff)),
        ]
    out += [("output_norm.weight", (d,)), ("output.weight", (shape.vocab, d))]
    return out


def rope_factors(shape: Shape) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: llama3 frequency divisors."""
    r, hd = shape.llama3_rope, shape.d_model // shape.n_heads
    freqs = 1.0 / (shape.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    factors = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < r["original"] / r["high_freq_factor"]:
            factors.append(1.0)
        elif wavelen > r["original"] / r["low_freq_factor"]:
            factors.append(r["factor"])
        else:
            smooth = (r["original"] / wavelen - r["low_freq_factor"]) / (
                r["high_freq_factor"] - r["low_freq_factor"]
            )
            factors.append(1 / ((1 - smooth) / r["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


def _nbytes(qtype: str, dims: tuple[int, ...]) -> int:
    if len(dims) == 1:
        return 4 * dims[0]
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    return dims[0] * dims[1] // block * nbytes


def write(model: str, qtype: str, path: Path, n_layers: int | None = None, seed: int = 0) -> Path:
    shape = MODELS[model]
    n_layers = shape.n_layers if n_layers is None else n_layers
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"synthetic {model} {qtype}")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.d_model)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(shape.d_ff)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.d_model // shape.n_heads)
    tensors = tensor_list(shape, n_layers)
    for name, dims in tensors:
        raw = gguf.GGMLQuantizationType.F32 if len(dims) == 1 else gguf.GGMLQuantizationType[qtype]
        gguf_shape = (
            dims
            if len(dims) == 1
            else (dims[0], dims[1] // gguf.GGML_QUANT_SIZES[raw][0] * gguf.GGML_QUANT_SIZES[raw][1])
        )
        writer.add_tensor_info(name, gguf_shape, np.dtype(np.float32 if len(dims) == 1 else np.uint8),
                               _nbytes(qtype, dims), raw_dtype=raw)  # fmt: skip
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    for name, dims in tensors:
        _write_tensor(fout, rng, qtype, name, dims, shape)
        writer.write_padding(fout, _nbytes(qtype, dims))
    writer.close()
    return path


def _write_tensor(fout, rng, qtype: str, name: str, dims: tuple[int, ...], shape: Shape) -> None:
    if len(dims) == 1:
        values = rope_factors(shape) if name == "rope_freqs.weight" else np.ones(dims, np.float32)
        values.tofile(fout)
        return
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    blocks_per_row = dims[1] // block
    rows_per_chunk = max(1, CHUNK_BYTES // (blocks_per_row * nbytes))
    for start in range(0, dims[0], rows_per_chunk):
        rows = min(rows_per_chunk, dims[0] - start)
        random_blocks(rng, rows * blocks_per_row, qtype).tofile(fout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("qtype", choices=["Q4_0", "Q4_K", "Q8_0", "Q6_K"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--layers", type=int, default=None, help="write only this many layers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    write(args.model, args.qtype, args.path, args.layers, args.seed)
    size = args.path.stat().st_size
    print(f"wrote {args.path} ({size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
