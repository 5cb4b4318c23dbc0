"""Write a random-weight GGUF with the exact shapes of a named model, streamed tensor by tensor.

    python bench/make_synthetic_gguf.py llama-3-8b Q4_0 /tmp/llama-3-8b-q4_0.gguf
    python bench/make_synthetic_gguf.py llama-3.3-70b Q4_K /data/l70.gguf      # ~40 GB
    python bench/make_synthetic_gguf.py llama-3-8b IQ4_XS_MIX out.gguf          # llama.cpp's IQ4_XS mix
    python bench/make_synthetic_gguf.py llama-3.3-70b IQ3_M_MIX l70.gguf --sparse   # header + holes

The second argument is one format for every 2-D weight (Q4_0, IQ2_XS, MXFP4, ...) or, with the suffix
_MIX, a llama.cpp file type (Q4_K_M_MIX, IQ4_XS_MIX, IQ3_M_MIX, IQ2_XS_MIX, ...): each tensor then gets
the type llama.cpp's quantizer gives it (pylin.mixes, from llama_tensor_get_type), so the file has the
type mix and the size of a downloaded one (Llama-3.3-70B: Q4_K_M 42.5 GB, IQ4_XS 37.9, IQ3_M 31.9,
IQ2_XS 21.1).  Random *blocks* are generated directly (pylin.synthetic: random bit fields, scales of
random sign so the weights have mean 0 and a standard deviation of about 0.02), so writing runs at
disk speed and never holds more than one chunk of rows in memory.  --sparse writes only the header
and leaves the tensor data as holes (all-zero blocks, valid in every format): a 70B file of 40 GB
that takes no disk, for `pylin info` and the planner.  Norms are ones (F32); llama3 rope scaling is
written as llama.cpp's `rope_freqs` tensor.
Used by bench/forward.py, bench/jacobian.py and bench/linearize_8b.py; the shapes are checked by
loading with pylin (tests/test_gguf_new_types.py writes short stacks of every mix).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from pylin import mixes, synthetic


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
    return synthetic.random_blocks(qtype, n_blocks, STD, rng)


FORMATS = [q for q in synthetic.FP16_SCALE_FIELDS]
MIX_SUFFIX = "_MIX"


def tensor_types(shape: Shape, n_layers: int, qtype: str) -> dict[str, str]:
    """GGUF name -> type: one format for every 2-D weight, or a llama.cpp mix ("IQ3_M_MIX")."""
    names = [name for name, _ in tensor_list(shape, n_layers)]
    if qtype.endswith(MIX_SUFFIX):
        counts = {"n_layers": n_layers, "n_heads": shape.n_heads, "n_kv_heads": shape.n_kv_heads}
        return mixes.tensor_types(qtype[: -len(MIX_SUFFIX)], names, **counts)
    return {name: ("F32" if len(dims) == 1 else qtype) for name, dims in tensor_list(shape, n_layers)}


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
    if len(dims) == 1 or qtype == "F32":
        return 4 * int(np.prod(dims))
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    return dims[0] * dims[1] // block * nbytes


def write(
    model: str, qtype: str, path: Path, n_layers: int | None = None, seed: int = 0, sparse: bool = False
) -> Path:
    """Write the file; qtype is a format or a mix name ending in _MIX (see the module docstring)."""
    shape = MODELS[model]
    n_layers = shape.n_layers if n_layers is None else n_layers
    types = tensor_types(shape, n_layers, qtype)
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
        raw = gguf.GGMLQuantizationType[types[name]]
        gguf_shape = (
            dims
            if types[name] == "F32"
            else (dims[0], dims[1] // gguf.GGML_QUANT_SIZES[raw][0] * gguf.GGML_QUANT_SIZES[raw][1])
        )
        writer.add_tensor_info(name, gguf_shape, np.dtype(np.float32 if types[name] == "F32" else np.uint8),
                               _nbytes(types[name], dims), raw_dtype=raw)  # fmt: skip
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    for name, dims in tensors:
        if sparse:  # a hole the size of the tensor: reads as zeros
            fout.seek(_nbytes(types[name], dims), 1)
        else:
            _write_tensor(fout, rng, types[name], name, dims, shape)
        writer.write_padding(fout, _nbytes(types[name], dims))
    if sparse:
        fout.truncate(fout.tell())  # the last hole needs the file's end
    writer.close()
    return path


def _write_tensor(fout, rng, qtype: str, name: str, dims: tuple[int, ...], shape: Shape) -> None:
    if qtype == "F32":
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
    parser.add_argument("qtype", choices=FORMATS + [m + MIX_SUFFIX for m in mixes.MIXES], metavar="QTYPE",
                        help="a format for every weight, or a llama.cpp mix: " + ", ".join(mixes.MIXES)
                        + " (with the suffix _MIX)")  # fmt: skip
    parser.add_argument("path", type=Path)
    parser.add_argument("--layers", type=int, default=None, help="write only this many layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparse", action="store_true", help="header only, tensor data left as holes")
    args = parser.parse_args()
    t0 = time.perf_counter()
    write(args.model, args.qtype, args.path, args.layers, args.seed, args.sparse)
    size = args.path.stat().st_size
    print(f"wrote {args.path} ({size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
