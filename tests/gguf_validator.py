"""A strict GGUF validator written from llama.cpp's rules, independent of pylin's reader; and a
structured GGUF writer with the mutations the layout fuzz applies (tests/test_gguf_layout.py,
bench/fuzz_gguf.py).

validate(data) -> None for a file llama.cpp would load as a llama model of the tiny test shape, else
the first rule it breaks.  Rules, in llama.cpp's order (ggml/src/gguf.cpp gguf_init_from_file_impl,
then src/llama-model-loader.cpp / llama-model.cpp for the hyperparameters and tensor shapes):
  magic, version 2..3, n_tensors / n_kv, each key: string, type 0..12, arrays of non-array items,
  no duplicate key; general.alignment UINT32 power of two; each tensor info: name < 64 bytes, unique,
  n_dims ≤ 4, ne ≥ 0 (pylin: ≥ 1) with the product < 2^63, a known type, ne0 a multiple of the block;
  offsets: tensor i at the sum of the padded sizes before it; data inside the file; then the llama
  hyperparameters (types as llama.cpp's GKV demands them loosely: any integer / any number) and the
  tensor shapes llm_build_llama creates.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ggml type id -> (block size, bytes per block), ggml-common.h (ids 4, 5 were removed; 31..33 too).
GGML_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
               9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
               14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
               19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
               24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56),
               30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17)}  # fmt: skip
SCALAR_FORMAT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
                 11: "<q", 12: "<d"}  # fmt: skip
U32, I32, F32, BOOL, STRING, ARRAY, U64, F64 = 4, 5, 6, 7, 8, 9, 10, 12
INTEGER_TYPES = {0, 1, 2, 3, 4, 5, 10, 11}
NUMBER_TYPES = INTEGER_TYPES | {6, 12}


class Invalid(Exception):
    """The rule a file breaks."""


@dataclass
class KV:
    key: str
    vtype: int
    value: Any  # scalar, str, or (item_type, list)


@dataclass
class Tensor:
    name: str
    dims: list[int]  # ggml order (ne0 first)
    type_id: int
    data: bytes
    offset: int | None = None  # None: the running aligned offset


@dataclass
class Gguf:
    version: int
    kvs: list[KV]
    tensors: list[Tensor]
    n_kv: int | None = None  # None: the real counts
    n_tensors: int | None = None
    string_patches: dict[int, int] = field(default_factory=dict)  # index of a written string -> length

    @property
    def alignment(self) -> int:
        for kv in self.kvs:
            if (
                kv.key == "general.alignment"
                and kv.vtype == U32
                and kv.value
                and not kv.value & (kv.value - 1)
            ):
                return kv.value
        return 32


# ---- writing -------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, patches: dict[int, int]) -> None:
        self.out, self.patches, self.n_strings = bytearray(), patches, 0

    def string(self, s: str | bytes) -> None:
        raw = s.encode() if isinstance(s, str) else s
        n = self.patches.get(self.n_strings, len(raw))
        self.n_strings += 1
        self.out += struct.pack("<Q", n) + raw

    def value(self, vtype: int, value: Any) -> None:
        if vtype in SCALAR_FORMAT:
            fmt = SCALAR_FORMAT[vtype]
            if fmt[1] in "bhiq" and not -(2 ** (8 * struct.calcsize(fmt) - 1)) <= value < 0:
                fmt = fmt.upper()  # a signed field written from an unsigned value: its two's complement bits
            self.out += struct.pack(fmt, value)
        elif vtype == STRING:
            self.string(value)
        else:
            item_type, items = value
            self.out += struct.pack("<IQ", item_type, len(items))
            for item in items:
                self.value(item_type, item)


def write(g: Gguf) -> bytes:
    w = _Writer(g.string_patches)
    n_tensors = len(g.tensors) if g.n_tensors is None else g.n_tensors
    n_kv = len(g.kvs) if g.n_kv is None else g.n_kv
    w.out += b"GGUF" + struct.pack("<IQQ", g.version, n_tensors, n_kv)
    for kv in g.kvs:
        w.string(kv.key)
        w.out += struct.pack("<I", kv.vtype)
        w.value(kv.vtype, kv.value)
    align, running = g.alignment, 0
    for t in g.tensors:
        w.string(t.name)
        w.out += struct.pack("<I", len(t.dims)) + b"".join(struct.pack("<Q", d) for d in t.dims)
        w.out += struct.pack("<IQ", t.type_id, running if t.offset is None else t.offset)
        running += -(-len(t.data) // align) * align
    # Padding is written only up to 4 MiB alignments: a claimed 2^31 leaves the data short of its start.
    pad = align if align <= 1 << 22 else 1
    w.out += bytes(-len(w.out) % pad)
    for t in g.tensors:
        w.out += t.data + bytes(-len(t.data) % pad)
    return bytes(w.out)


# ---- reading (llama.cpp's rules) ----------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Invalid("truncated")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def scalar(self, vtype: int) -> Any:
        fmt = SCALAR_FORMAT[vtype]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        return self.take(self.scalar(U64))

    def value(self, vtype: int) -> Any:
        if vtype in SCALAR_FORMAT:
            return self.scalar(vtype)
        if vtype == STRING:
            return self.string()
        if vtype != ARRAY:
            raise Invalid(f"invalid value type {vtype}")
        item_type, n = self.scalar(U32), self.scalar(U64)
        if item_type not in SCALAR_FORMAT and item_type != STRING:
            raise Invalid(f"invalid array item type {item_type}")
        if n * (8 if item_type == STRING else struct.calcsize(SCALAR_FORMAT[item_type])) > len(self.data):
            raise Invalid("array longer than the file")
        return (item_type, [self.value(item_type) for _ in range(n)])


def parse(data: bytes) -> tuple[dict[str, tuple[int, Any]], list[tuple[str, list[int], int, int]], int]:
    """(metadata key -> (type, value), tensor infos (name, ne, type, absolute offset)) or Invalid."""
    r = _Reader(data)
    if r.take(4) != b"GGUF":
        raise Invalid("bad magic")
    if r.scalar(U32) not in (2, 3):
        raise Invalid("version")
    n_tensors, n_kv = r.scalar(U64), r.scalar(U64)
    if n_kv > len(data) or n_tensors > len(data):
        raise Invalid("counts larger than the file")
    meta: dict[str, tuple[int, Any]] = {}
    for _ in range(n_kv):
        key = r.string().decode("utf-8", "replace")
        vtype = r.scalar(U32)
        value = r.value(vtype)
        if key in meta:
            raise Invalid(f"duplicate key {key}")
        meta[key] = (vtype, value)
    alignment = 32
    if "general.alignment" in meta:
        vtype, alignment = meta["general.alignment"]
        if vtype != U32 or alignment == 0 or alignment & (alignment - 1):
            raise Invalid("alignment")
    infos, names = [], set()
    for _ in range(n_tensors):
        name = r.string()
        if len(name) >= 64 or name in names:
            raise Invalid("tensor name too long or duplicate")
        names.add(name)
        n_dims = r.scalar(U32)
        if n_dims > 4:
            raise Invalid("too many dims")
        ne = [r.scalar(U64) for _ in range(n_dims)]
        if any(d < 1 or d > 2**63 - 1 for d in ne) or math.prod(ne) > 2**63 - 1:
            raise Invalid("dims")  # llama.cpp takes ne = 0; no tensor pylin reads may be empty
        type_id = r.scalar(U32)
        if not ne or type_id not in GGML_BLOCKS or ne[0] % GGML_BLOCKS[type_id][0]:
            raise Invalid("rank 0, unknown type or a partial block")
        infos.append((name.decode("utf-8", "replace"), ne, type_id, r.scalar(U64)))
    data_start = -(-r.pos // alignment) * alignment
    running, out = 0, []
    for name, ne, type_id, offset in infos:
        block, nbytes = GGML_BLOCKS[type_id]
        size = math.prod(ne) // block * nbytes
        if offset != running:
            raise Invalid(f"tensor {name} has offset {offset}, expected {running}")
        if data_start + offset + size > len(data):
            raise Invalid("tensor data outside the file")
        out.append((name, ne, type_id, data_start + offset))
        running += -(-size // alignment) * alignment
    return meta, out, data_start


# ---- llama hyperparameters and tensor shapes (llama-model.cpp, LLM_ARCH_LLAMA) ---------------------

# GGML types pylin's kernels read (F32 … MXFP4 less the removed / unimplemented ones).
PYLIN_TYPES = {0, 1, 30, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 29, 34, 35, 39}


def _number(meta: dict, key: str, default: Any, integer: bool) -> Any:
    if key not in meta:
        if default is None:
            raise Invalid(f"missing {key}")
        return default
    vtype, value = meta[key]
    if vtype not in (INTEGER_TYPES if integer else NUMBER_TYPES):
        raise Invalid(f"{key} has type {vtype}")
    if not integer and not math.isfinite(value):
        raise Invalid(f"{key} not finite")
    return value


def validate(data: bytes) -> str | None:
    """None when llama.cpp would load the file as the tiny llama; else the rule it breaks."""
    try:
        meta, infos, _ = parse(data)
        _check_llama(meta, {name: (ne, t) for name, ne, t, _ in infos})
    except Invalid as e:
        return str(e)
    return None


def _check_llama(meta: dict, tensors: dict[str, tuple[list[int], int]]) -> None:
    arch = meta.get("general.architecture")
    if arch is None or arch[0] != STRING or arch[1] != b"llama":
        raise Invalid("architecture")
    a = "llama."
    d = _number(meta, a + "embedding_length", None, True)
    n_layers = _number(meta, a + "block_count", None, True)
    heads = _number(meta, a + "attention.head_count", None, True)
    d_ff = _number(meta, a + "feed_forward_length", None, True)
    if min(d, n_layers, heads, d_ff) < 1:
        raise Invalid("a size < 1")
    kv = _number(meta, a + "attention.head_count_kv", heads, True)
    if kv < 1 or heads % kv:
        raise Invalid("head_count_kv")
    if _number(meta, a + "context_length", 1, True) < 1:
        raise Invalid("context_length")
    if not _number(meta, a + "rope.freq_base", 10000.0, False) > 0:
        raise Invalid("freq_base")
    if not _number(meta, a + "attention.layer_norm_rms_epsilon", 1e-5, False) > 0:
        raise Invalid("eps")
    has_key_length = a + "attention.key_length" in meta  # n_embd_head_k, default n_embd / n_head
    if not has_key_length and (d % heads or d // heads < 2):
        raise Invalid("head size")
    hd = _number(meta, a + "attention.key_length", None, True) if has_key_length else d // heads
    if hd < 2 or _number(meta, a + "rope.dimension_count", hd, True) != hd:  # llama: n_rot == n_embd_head_k
        raise Invalid("rope dims")
    embd = [*tensors.get("token_embd.weight", ([0, 0], 0))[0], 1]
    vocab = embd[1]
    layers = {n.split(".")[1] for n in tensors if n.startswith("blk.")}
    if n_layers != len(layers):  # llama.cpp: "done_getting_tensors: wrong number of tensors"
        raise Invalid("block_count is not the number of layers in the file")
    want = {"token_embd.weight": [d, vocab], "output_norm.weight": [d]}
    for i in range(n_layers):
        p = f"blk.{i}."
        want |= {p + "attn_norm.weight": [d], p + "ffn_norm.weight": [d],
                 p + "attn_q.weight": [d, heads * hd], p + "attn_k.weight": [d, kv * hd],
                 p + "attn_v.weight": [d, kv * hd],
                 p + "attn_output.weight": [heads * hd, d], p + "ffn_gate.weight": [d, d_ff],
                 p + "ffn_up.weight": [d, d_ff], p + "ffn_down.weight": [d_ff, d]}  # fmt: skip
    for name, shape in want.items():
        ne = list(tensors.get(name, ([], 0))[0])
        while len(ne) > len(shape) and ne[-1] == 1:  # check_tensor_dims: missing dims count as 1
            ne.pop()
        if ne != shape or tensors[name][1] not in PYLIN_TYPES:
            raise Invalid(f"tensor {name} missing, misshapen or of a type pylin does not read")
    extra = set(tensors) - set(want) - {"output.weight"}
    if any(n.startswith(f"blk.{n_layers}.") for n in extra):
        raise Invalid("more layers in the file than block_count")  # llama.cpp: "wrong number of tensors"
    if vocab < 1:
        raise Invalid("vocab")


def from_bytes(data: bytes) -> Gguf:
    """The structure of a valid file, for mutating."""
    meta, infos, _ = parse(data)
    kvs = [KV(k, t, v.decode() if t == STRING else v) for k, (t, v) in meta.items()]
    for kv in kvs:
        if kv.vtype == ARRAY and kv.value[0] == STRING:
            kv.value = (STRING, [s.decode() for s in kv.value[1]])
    tensors = []
    for name, ne, type_id, start in infos:
        block, nbytes = GGML_BLOCKS[type_id]
        tensors.append(Tensor(name, ne, type_id, data[start : start + math.prod(ne) // block * nbytes]))
    return Gguf(struct.unpack_from("<I", data, 4)[0], kvs, tensors)


def finite_logits(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())
