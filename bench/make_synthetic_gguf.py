"""Write a random-weight GGUF with the exact shapes of a named model, streamed tensor by tensor.

    python bench/make_synthetic_gguf.py llama-3-8b Q4_0 /tmp/llama-3-8b-q4_0.gguf
    python bench/make_synthetic_gguf.py llama-3.3-70b Q4_K_M /data/l70.gguf --workers 8   # ~42 GB
    python bench/make_synthetic_gguf.py llama-3-8b Q4_K out.gguf --layers 2     # a short stack
    python bench/make_synthetic_gguf.py llama-3.3-70b Q4_K_M x.gguf --size      # bytes it would write
    python bench/make_synthetic_gguf.py llama-3-8b IQ4_XS_MIX out.gguf          # llama.cpp's IQ4_XS mix
    python bench/make_synthetic_gguf.py llama-3.3-70b IQ3_M_MIX l70.gguf --sparse   # header + holes

The format is one block format for every 2-D weight (Q4_0, Q4_K, IQ2_XS, MXFP4, NVFP4, ...: every one pylin
reads) or a llama.cpp mix: Q4_K_M, or any mix of pylin.mixes with the suffix _MIX (Q4_K_M_MIX,
IQ4_XS_MIX, IQ3_M_MIX, IQ2_XS_MIX, ...; the suffix tells the mix IQ4_XS from the format).  A mix gives
each tensor the type llama.cpp's quantizer gives it (src/llama-quant.cpp, llama_tensor_get_type, as
restated in pylin.mixes: for Q4_K_M, Q6_K for output.weight and for attn_v / ffn_down in the layers
`use_more_bits` picks, Q5_K for the other attn_v of a 70B, Q4_K elsewhere), so the file has the types
and the size of a downloaded one (Llama-3.3-70B: Q4_K_M 42.5 GB, IQ4_XS 37.9, IQ3_M 31.9, IQ2_XS 21.1).
Random *blocks* are generated directly (random quant bytes, fp16 scales of random sign chosen so the
weights have mean 0 and a standard deviation of about 0.02; formats beyond the five below through
pylin.synthetic), so writing runs at disk speed and never holds more than one chunk of rows per
worker in memory; each chunk's bytes come from its own seeded generator, so the file is the same
whatever the number of workers.  --sparse writes the header only and leaves the tensor data as holes
(all-zero blocks, valid in every format): a 70B file that takes no disk, for `pylin info` and the
planner.  Norms are ones (F32); llama3 rope scaling is written as llama.cpp's `rope_freqs` tensor.
Used by bench/forward.py, bench/jacobian.py, bench/plan_70b.py and bench/gpu.py (through
bench/gpu_check.sh); covered by tests/test_models.py (loaded with pylin: shapes, formats, weight
statistics) and tests/test_gguf_new_types.py (the mixes, sparse headers).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
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
# Every block format pylin reads; the first five get hand-sized scales below (their files stay as they were).
BLOCK_TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K") + tuple(
    q for q in synthetic.FP16_SCALE_FIELDS if q not in ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
)
MIX_SUFFIX = "_MIX"
MIXES = ("Q4_K_M",) + tuple(m + MIX_SUFFIX for m in mixes.MIXES)
STD = 0.02
CHUNK_BYTES = 64 << 20


def random_blocks(rng: np.random.Generator, n_blocks: int, qtype: str) -> np.ndarray:
    """n_blocks valid blocks of qtype as uint8 (n_blocks, block_bytes); weights ~ STD in scale."""
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    raw = rng.bit_generator.random_raw((n_blocks * nbytes + 7) // 8)  # the fastest bytes numpy makes
    blocks = raw.view(np.uint8)[: n_blocks * nbytes].reshape(n_blocks, nbytes)
    # a random sign per block centres every format's weights on zero (Q4_0's q − 8 has mean −½)
    jitter = ((0.5 + rng.random(n_blocks)) * rng.choice([-1.0, 1.0], n_blocks)).astype(np.float32)

    def half(value: np.ndarray) -> np.ndarray:
        return value.astype(np.float16).view(np.uint8).reshape(-1, 2)

    if qtype == "Q4_0":  # half d; 4-bit q: d·(q − 8), std(q − 8) ≈ 4.6
        blocks[:, 0:2] = half(jitter * STD / 4.6)
    elif qtype == "Q8_0":  # half d; int8 q: std ≈ 74
        blocks[:, 0:2] = half(jitter * STD / 74)
    elif qtype in ("Q4_K", "Q5_K"):  # half d, dmin; d·sc·q − dmin·m with sc, m ~ U(0, 63)
        q_mean, spread = (7.5, 266) if qtype == "Q4_K" else (15.5, 527)  # q ~ U(0, 15) / U(0, 31)
        d = jitter * STD / spread
        blocks[:, 0:2] = half(d)
        blocks[:, 2:4] = half(d * q_mean)  # same sign as d: the mean of d·sc·q cancels dmin·m's
    elif qtype == "Q6_K":  # ..., int8 scales, half d last: d·sc·(q − 32)
        blocks[:, -2:] = half(jitter * STD / (74 * 18))
    else:  # the other formats' scale fields: pylin.synthetic (the i-quants, TQ*, MXFP4, NVFP4, ...)
        return synthetic.random_blocks(qtype, n_blocks, STD, rng)
    return blocks


def tensor_qtype(qtype: str, name: str, shape: Shape, n_layers: int) -> str:
    """The format of one quantized tensor: `qtype` itself, or its place in a llama.cpp mix."""
    if qtype not in MIXES:
        return qtype
    mix = qtype.removesuffix(MIX_SUFFIX)
    return mixes.tensor_type(mix, name, n_layers=n_layers, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads)


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


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # PyTorch order
    qtype: str  # "F32" for the 1-D tensors


def _nbytes(qtype: str, dims: tuple[int, ...]) -> int:
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    rows = dims[0] if len(dims) == 2 else 1
    return rows * dims[-1] // block * nbytes


def plan(model: str, qtype: str, n_layers: int | None = None) -> tuple[Shape, int, list[Tensor]]:
    """(shape, layers, tensors with their formats) of the file `write` would produce."""
    if qtype not in BLOCK_TYPES + MIXES:
        raise ValueError(f"unknown format {qtype!r}; use one of {', '.join(BLOCK_TYPES + MIXES)}")
    shape = MODELS[model]
    n_layers = shape.n_layers if n_layers is None else n_layers
    tensors = [
        Tensor(name, dims, "F32" if len(dims) == 1 else tensor_qtype(qtype, name, shape, n_layers))
        for name, dims in tensor_list(shape, n_layers)
    ]
    return shape, n_layers, tensors


def file_size(model: str, qtype: str, n_layers: int | None = None) -> int:
    """Bytes of tensor data the file will hold (the header adds a few kB)."""
    return sum(_nbytes(t.qtype, t.dims) for t in plan(model, qtype, n_layers)[2])


def write(
    model: str,
    qtype: str,
    path: Path,
    n_layers: int | None = None,
    seed: int = 0,
    workers: int = 1,
    sparse: bool = False,
) -> Path:
    """Write the file (into `path`.partial, renamed when complete: a file at `path` is whole).
    sparse: the header only; the tensor data stay the holes the truncation made (zero blocks)."""
    shape, n_layers, tensors = plan(model, qtype, n_layers)
    final, path = Path(path), Path(str(path) + ".partial")
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
    for t in tensors:
        raw = gguf.GGMLQuantizationType[t.qtype]
        gguf_shape = t.dims if len(t.dims) == 1 else (t.dims[0], _nbytes(t.qtype, (1, t.dims[1])))
        dtype = np.dtype(np.float32 if len(t.dims) == 1 else np.uint8)
        writer.add_tensor_info(t.name, gguf_shape, dtype, _nbytes(t.qtype, t.dims), raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    fout.flush()
    offset, jobs = fout.tell(), []
    for index, t in enumerate(tensors):  # the offsets GGUFWriter wrote into the tensor infos
        jobs += _chunks(index, t, offset, shape, seed)
        offset += gguf.GGUFWriter.ggml_pad(_nbytes(t.qtype, t.dims), writer.data_alignment)
    writer.close()
    os.truncate(path, offset)
    if sparse:
        jobs = []
    if workers <= 1:
        for job in jobs:
            _write_chunk(str(path), job)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(functools.partial(_write_chunk, str(path)), jobs, chunksize=4))
    path.replace(final)
    return final


@dataclass(frozen=True)
class Chunk:
    """Rows [start, start + rows) of tensor number `index`, written at byte `offset` of the file."""

    offset: int
    tensor: Tensor
    index: int
    start: int
    rows: int
    seed: int
    shape: Shape


def _chunks(index: int, t: Tensor, offset: int, shape: Shape, seed: int) -> list[Chunk]:
    """The jobs that write one tensor, at most CHUNK_BYTES each."""
    if len(t.dims) == 1:
        return [Chunk(offset, t, index, 0, 1, seed, shape)]
    row_bytes = _nbytes(t.qtype, (1, t.dims[1]))
    step = max(1, CHUNK_BYTES // row_bytes)
    return [
        Chunk(offset + start * row_bytes, t, index, start, min(step, t.dims[0] - start), seed, shape)
        for start in range(0, t.dims[0], step)
    ]


def _write_chunk(path: str, c: Chunk) -> None:
    t = c.tensor
    if len(t.dims) == 1:
        values = rope_factors(c.shape) if t.name == "rope_freqs.weight" else np.ones(t.dims, np.float32)
        data = values.tobytes()
    else:
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.qtype]][0]
        rng = np.random.default_rng([c.seed, c.index, c.start])
        data = random_blocks(rng, c.rows * t.dims[1] // block, t.qtype).tobytes()
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, memoryview(data)[done:], c.offset + done)
    finally:
        os.close(fd)


def smoke() -> None:
    """The same writer (parallel, Q4_K_M) on a tiny llama shape; the header read back by gguf-py."""
    import tempfile

    MODELS["tiny"] = Shape(256, 2, 4, 2, 512, 300, llama3_rope=_LLAMA31_ROPE)
    with tempfile.TemporaryDirectory() as tmp:
        path = write("tiny", "Q4_K_M", Path(tmp) / "tiny.gguf", workers=2)
        reader = gguf.GGUFReader(path)
        expected = plan("tiny", "Q4_K_M")[2]
        if [t.name for t in reader.tensors] != [t.name for t in expected]:
            raise SystemExit("smoke: the tensors read back differ from the ones written")
        print(f"smoke: wrote and read back {len(expected)} tensors ({path.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", choices=sorted(MODELS))
    parser.add_argument("qtype", nargs="?", choices=BLOCK_TYPES + MIXES)
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--layers", type=int, default=None, help="write only this many layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes generating and writing chunks")
    parser.add_argument("--size", action="store_true", help="print the bytes it would write, write nothing")
    parser.add_argument("--sparse", action="store_true", help="header only, tensor data left as holes")
    parser.add_argument("--smoke", action="store_true", help="a tiny Q4_K_M file, read back, deleted")
    args = parser.parse_args()
    if args.smoke:
        return smoke()
    if args.path is None:
        parser.error("model, qtype and path are needed (or --smoke)")
    if args.size:
        print(file_size(args.model, args.qtype, args.layers))
        return
    t0 = time.perf_counter()
    write(args.model, args.qtype, args.path, args.layers, args.seed, args.workers, args.sparse)
    size = args.path.stat().st_size
    print(f"wrote {args.path} ({size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
