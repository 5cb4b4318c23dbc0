"""GGUF files: one validating parse of the header, then memory-mapped, zero-copy QTensor views of the
tensor data (never a dequantized copy of a weight matrix).  gguf-py is not used to read files.

The walk follows llama.cpp's `gguf_init_from_file_impl` (ggml/src/gguf.cpp) and refuses what it refuses:
  - magic "GGUF", version 2 or 3; every count and length checked against the bytes left in the file
    before anything is read or allocated (strings, arrays, n_kv, n_tensors), so a hostile count costs
    nothing;
  - value types 0..12, arrays of scalars or strings (no arrays of arrays), no duplicate key;
  - general.alignment a UINT32 power of two (default 32);
  - tensor names unique and shorter than GGML_MAX_NAME (64), 1..4 dims, every dim ≥ 1 (llama.cpp also
    takes 0; no weight pylin reads is empty) and the element count below 2^63, a known GGML type, rows
    of whole blocks;
  - tensor i at the running aligned offset (the first at 0, each next one at the previous one's end
    rounded up to the alignment) — llama.cpp: "tensor '…' has offset X, expected Y" — and every byte
    of it inside the file.
Error messages quote at most _QUOTE_CHARS characters of any string from the file.
Layout: ggml/docs/gguf.md.  Tests: tests/test_gguf_errors.py, tests/test_gguf_layout.py (structured
fuzz against tests/gguf_validator.py), tests/test_models.py::test_gguf_logits.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError, TensorShapeError, UnsupportedQuantTypeError
from .qtensor import SUPPORTED_QTYPES, QTensor

# GGUF value types (gguf.h: enum gguf_type) -> struct format; 8: string, 9: array are variable.
_SCALAR_FORMAT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
                  11: "<q", 12: "<d"}  # fmt: skip
_NUMPY_DTYPE = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8",
                11: "<i8", 12: "<f8"}  # fmt: skip
_UINT32, _STRING, _ARRAY = 4, 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NAME = 64  # GGML_MAX_NAME: llama.cpp refuses tensor names of 64 bytes or more
_DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
_INT64_MAX = (1 << 63) - 1
_NO_DATA = np.empty(0, np.uint8)
_QUOTE_CHARS = 64  # at most this much of a string from the file goes into a message
_MAX_KEY = 65535  # gguf.md: a key "must be at most 2^16-1 bytes long"
_LONG_STRING = 1 << 20  # string values longer than this are decoded when asked for, not at parse
_SMALL_ARRAY = 4096  # read_header returns numeric arrays up to this length (per-layer settings)
# Smallest encodings, for checking counts against the bytes left: a key/value is a key length (8),
# a type (4) and at least a 1-byte value; a tensor info a name length (8), n_dims (4), one dim (8),
# a type (4) and an offset (8).
_MIN_KV_BYTES, _MIN_TENSOR_INFO_BYTES = 13, 32


def quote(raw: bytes | str) -> str:
    """A string from a file as it may appear in a message: repr of at most _QUOTE_CHARS characters."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    return repr(text) if len(text) <= _QUOTE_CHARS else repr(text[:_QUOTE_CHARS]) + f"… ({len(text)} chars)"


class StringArray:
    """A long array of strings, kept as offsets into the mapping; decoded when asked for."""

    def __init__(self, buf: Any, starts: np.ndarray, lengths: np.ndarray) -> None:
        self._buf, self._starts, self._lengths = buf, starts, lengths

    def __len__(self) -> int:
        return len(self._starts)

    def tolist(self) -> list[str]:
        buf = self._buf
        pairs = zip(self._starts.tolist(), self._lengths.tolist(), strict=True)
        return [str(buf[s : s + n], "utf-8", "replace") for s, n in pairs]


class _LongString(StringArray):
    """One string value over _LONG_STRING bytes, decoded when asked for."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: gguf order shape (ne0 first), GGML type, data byte range, zero-copy bytes."""

    name: str
    shape: tuple[int, ...]
    tensor_type: Any  # gguf.GGMLQuantizationType
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int
    data: np.ndarray  # uint8 view of the mapped bytes (empty for read_header)


class _Cursor:
    """Bounds-checked little-endian reads over the file's bytes."""

    def __init__(self, buf: Any, size: int, path: Path) -> None:
        self.buf, self.size, self.pos, self.path = buf, size, 0, path

    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> int:
        if n < 0 or n > self.size - self.pos:
            raise GGUFError(
                f"{self.path}: truncated file: {what} needs {n} bytes at offset {self.pos}, "
                f"{self.size - self.pos} left"
            )
        start = self.pos
        self.pos += n
        return start

    def scalar(self, vtype: int, what: str) -> Any:
        fmt = _SCALAR_FORMAT[vtype]
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        return self.scalar(_UINT32, what)

    def u64(self, what: str) -> int:
        return self.scalar(10, what)

    def string_span(self, what: str, limit: int | None = None) -> tuple[int, int]:
        """(start, length) of a string, checked against the file (and `limit`) before it is read."""
        n = self.u64(f"length of {what}")
        if n > self.left():
            raise GGUFError(
                f"{self.path}: {what} claims {n} bytes at offset {self.pos}, more than the "
                f"{self.left()} left in the file"
            )
        if limit is not None and n > limit:
            raise GGUFError(f"{self.path}: {what} is {n} bytes long; GGUF allows at most {limit}")
        return self.take(n, what), n

    def raw_string(self, what: str, limit: int | None = None) -> bytes:
        start, n = self.string_span(what, limit)
        return bytes(self.buf[start : start + n])

    def value(self, vtype: int, what: str, keep: bool) -> Any:
        """One metadata value; long arrays are summarized ("[N items]") unless keep is set."""
        if vtype in _SCALAR_FORMAT:
            return self.scalar(vtype, what)
        if vtype == _STRING:
            start, n = self.string_span(what)
            if n > _LONG_STRING:  # read on demand: a length mangled to the rest of the file costs nothing
                return (
                    _LongString(self.buf, np.array([start]), np.array([n])) if keep else f"[{n}-byte string]"
                )
            return str(self.buf[start : start + n], "utf-8", "replace")
        if vtype != _ARRAY:
            raise GGUFError(f"{self.path}: {what} has an invalid GGUF value type {vtype}")
        item_type, count = self.u32(f"item type of {what}"), self.u64(f"length of {what}")
        if item_type == _ARRAY:
            raise GGUFError(f"{self.path}: {what} is an array of arrays, which GGUF readers do not take")
        if item_type in _SCALAR_FORMAT:
            return self._scalar_array(item_type, count, what, keep)
        if item_type == _STRING:
            return self._string_array(count, what, keep)
        raise GGUFError(f"{self.path}: {what} has an invalid array item type {item_type}")

    def _scalar_array(self, item_type: int, count: int, what: str, keep: bool) -> Any:
        dtype = np.dtype(_NUMPY_DTYPE[item_type])
        if count > self.left() // dtype.itemsize:
            raise GGUFError(f"{self.path}: {what} claims {count} items, more than the file can hold")
        start = self.take(count * dtype.itemsize, what)
        if count <= _SMALL_ARRAY or keep:
            return np.frombuffer(self.buf, dtype, count, start).tolist()
        return f"[{count} items]"

    def _string_array(self, count: int, what: str, keep: bool) -> Any:
        if count > self.left() // 8:  # every string takes at least its 8-byte length
            raise GGUFError(f"{self.path}: {what} claims {count} strings, more than the file can hold")
        starts, lengths = np.empty(count, np.int64), np.empty(count, np.int64)
        buf, pos, size, unpack = self.buf, self.pos, self.size, struct.Struct("<Q").unpack_from
        for i in range(count):  # the hot loop of a 262k-token vocabulary: kept free of method calls
            if pos + 8 > size:
                self.pos = pos
                self.take(8, f"length of item {i} of {what}")
            (n,) = unpack(buf, pos)
            if n > size - pos - 8:
                raise GGUFError(
                    f"{self.path}: item {i} of {what} claims {n} bytes, more than the file can hold"
                )
            starts[i], lengths[i] = pos + 8, n
            pos += 8 + n
        self.pos = pos
        if not keep:
            return f"[{count} items]"
        strings = StringArray(buf, starts, lengths)
        return strings if count > _SMALL_ARRAY else strings.tolist()


def _walk(c: _Cursor, keep: bool) -> dict[str, Any]:
    path, size = c.path, c.size
    magic = bytes(c.buf[0:4])
    if magic != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    c.take(4, "magic")
    version = c.u32("version")
    if version not in (2, 3):
        endian = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
        raise GGUFError(f"{path}: unsupported GGUF version {version}{endian}; pylin reads versions 2 and 3")
    n_tensors, n_kv = c.u64("tensor count"), c.u64("key/value count")
    if n_kv > c.left() // _MIN_KV_BYTES or n_tensors > c.left() // _MIN_TENSOR_INFO_BYTES:
        raise GGUFError(
            f"{path}: header claims {n_tensors} tensors and {n_kv} keys, more than the file can hold"
        )
    meta, alignment = _read_metadata(c, n_kv, keep)
    infos = _read_tensor_infos(c, n_tensors)
    data_start = -(-c.pos // alignment) * alignment
    tensors = _place_tensors(c, infos, data_start, alignment, keep)
    return {"version": version, "meta": meta, "tensors": tensors, "file_size": size, "alignment": alignment,
            "data_start": data_start}  # fmt: skip


def _read_metadata(c: _Cursor, n_kv: int, keep: bool) -> tuple[dict[str, Any], int]:
    meta: dict[str, Any] = {}
    alignment = _DEFAULT_ALIGNMENT
    for i in range(n_kv):
        raw_key = c.raw_string(f"key {i}", limit=_MAX_KEY)
        key = raw_key.decode("utf-8", "replace")
        vtype = c.u32(f"type of key {quote(key)}")
        value = c.value(vtype, f"key {quote(key)}", keep)
        if key in meta:
            raise GGUFError(f"{c.path}: duplicate key {quote(key)} (key {i})")
        meta[key] = value
        if key == "general.alignment":
            alignment = _alignment(c.path, vtype, value)
    return meta, alignment


def _alignment(path: Path, vtype: int, value: Any) -> int:
    # llama.cpp reads it with gguf_get_val_u32 (a UINT32 or an assertion) and takes any power of two.
    if vtype != _UINT32:
        raise GGUFError(f"{path}: general.alignment must be a UINT32, got value type {vtype}")
    if value == 0 or value & (value - 1):
        raise GGUFError(f"{path}: general.alignment {value} is not a power of two")
    return value


def _read_tensor_infos(c: _Cursor, n_tensors: int) -> list[tuple[str, list[int], int, int]]:
    infos, seen = [], set()
    for i in range(n_tensors):
        raw = c.raw_string(f"name of tensor {i}")
        name = raw.decode("utf-8", "replace")
        if len(raw) >= _MAX_NAME:
            raise GGUFError(
                f"{c.path}: tensor {i} name {quote(name)} is {len(raw)} bytes; GGUF allows < {_MAX_NAME}"
            )
        if raw in seen:
            raise GGUFError(f"{c.path}: duplicate tensor name {quote(name)} (tensor {i})")
        seen.add(raw)
        n_dims = c.u32(f"rank of tensor {quote(name)}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise GGUFError(f"{c.path}: tensor {quote(name)} has rank {n_dims}; GGUF allows 1..{_MAX_DIMS}")
        dims = [c.u64(f"shape of tensor {quote(name)}") for _ in range(n_dims)]
        type_id, offset = c.u32(f"type of tensor {quote(name)}"), c.u64(f"offset of tensor {quote(name)}")
        infos.append((name, dims, type_id, offset))
    return infos


def _place_tensors(c: _Cursor, infos: list, data_start: int, alignment: int, keep: bool) -> list[TensorInfo]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path, expected, tensors = c.path, 0, []
    for name, dims, type_id, offset in infos:
        shown = quote(name)
        try:
            qtype = GGMLQuantizationType(type_id)
            block, block_bytes = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise UnsupportedQuantTypeError(
                f"{path}: tensor {shown} has unknown GGML type id {type_id}; "
                f"pylin's kernels support {', '.join(SUPPORTED_QTYPES)}"
            ) from None
        if min(dims) < 1 or int(np.prod(dims, dtype=object)) > _INT64_MAX:
            raise GGUFError(
                f"{path}: tensor {shown} has shape {dims}: every dim must be ≥ 1, the count < 2^63"
            )
        if dims[0] % block:
            raise GGUFError(
                f"{path}: tensor {shown} has rows of {dims[0]} values, "
                f"not whole {qtype.name} blocks of {block}"
            )
        n_bytes = int(np.prod(dims, dtype=object)) // block * block_bytes
        if offset != expected:
            raise GGUFError(f"{path}: tensor {shown} has offset {offset}, expected {expected}")
        start = data_start + offset
        if start + n_bytes > c.size:
            raise GGUFError(
                f"{path}: tensor {shown} data ends at byte {start + n_bytes}, "
                f"outside the file ({c.size} bytes)"
            )
        tensors.append(TensorInfo(name, tuple(dims), qtype, start, n_bytes, _NO_DATA))
        expected = offset + -(-n_bytes // alignment) * alignment
    if keep:  # views only once the whole layout is valid: a live view would pin the mapping open
        tensors = [replace(t, data=c.buf[t.offset : t.offset + t.n_bytes]) for t in tensors]
    return tensors


def _parse(path: Path, keep: bool) -> tuple[dict[str, Any], Any]:
    """(walk result, the open mmap or None)."""
    _require_regular(path)  # before open(): opening a FIFO would wait for a writer
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise GGUFError(f"{path}: file of {size} bytes is too short for a GGUF header")
        # GGUFFile keeps an np.memmap (tensor views are its slices); read_header a plain mapping it closes.
        buf = np.memmap(f, np.uint8, "r") if keep else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        result = _walk(_Cursor(buf, size, path), keep)
    finally:
        if not keep:
            with contextlib.suppress(BufferError):  # a frame still holding a view keeps it open
                buf.close()
    return result, buf if keep else None


def _require_regular(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"no such GGUF file: {path}") from None
    if not stat.S_ISREG(mode):
        is_device = stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        kind = (
            "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if is_device else "a special file"
        )  # fmt: skip
        raise GGUFError(f"{path}: not a regular file ({kind}); a GGUF model is a file pylin memory-maps")


def check_header(path: str | Path) -> None:
    """Raise GGUFError unless the header parses within the file and the tensor layout is valid."""
    read_header(path)


def read_header(path: str | Path) -> dict[str, Any]:
    """The validated header, data unread: {"version", "meta", "tensors", "file_size", "alignment",
    "data_start"}.

    meta maps keys to values (strings decoded; numeric arrays of up to 4096 items as lists, longer
    arrays — e.g. a 262k-token vocabulary — checked and summarized as "[N items]"); tensors are
    (name, shape in PyTorch order, GGML type id).  The same walk as GGUFFile's, so `pylin info` and
    `pylin.load` refuse the same files with the same message.
    """
    head, _ = _parse(Path(path), keep=False)
    head["tensors"] = [(t.name, list(t.shape[::-1]), int(t.tensor_type)) for t in head["tensors"]]
    return head


class GGUFFile:
    """A validated GGUF file: metadata accessors and zero-copy tensor views of its mapping.

    The mapping stays open while any tensor view lives: truncating the file meanwhile makes the next
    read of a lost page kill the process with SIGBUS (docs/reliability.md)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such GGUF file: {self.path}")
        head, self._mmap = _parse(self.path, keep=True)
        self.version: int = head["version"]
        self.meta: dict[str, Any] = head["meta"]
        self.tensors: dict[str, TensorInfo] = {t.name: t for t in head["tensors"]}
        self.arch = self.get_str("general.architecture", "")
        if not self.arch:
            raise GGUFError(f"{self.path}: no general.architecture key")

    # ---- metadata ----------------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        return key in self.meta

    def get(self, key: str, default: Any = None) -> Any:
        value = self.meta.get(key, default)
        if isinstance(value, _LongString):
            return value.tolist()[0]
        return value.tolist() if isinstance(value, StringArray) else value

    def _typed(self, key: str, default: Any, kind: type | tuple[type, ...], names: str) -> Any:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, kind):
            shown = quote(value) if isinstance(value, str) else repr(value)[:_QUOTE_CHARS]
            raise GGUFError(f"{self.path}: {key} should be {names}, got {shown}")
        return value

    def get_int(self, key: str, default: int) -> int:
        value = self._typed(key, default, (int, np.integer), "an integer")
        if value < 0 or value > 1 << 40:
            raise GGUFError(f"{self.path}: {key} = {value} is out of range")
        return int(value)

    def require_int(self, key: str) -> int:
        if not self.has(key):
            raise GGUFError(f"{self.path}: missing metadata key {key!r}")
        value = self.get_int(key, 0)
        if value <= 0:
            raise GGUFError(f"{self.path}: {key} must be positive, got {value}")
        return value

    def get_float(self, key: str, default: float) -> float:
        value = float(self._typed(key, default, (int, float, np.integer, np.floating), "a number"))
        if not np.isfinite(value):
            raise GGUFError(f"{self.path}: {key} = {value} is not finite")
        return value

    def get_str(self, key: str, default: str) -> str:
        return self._typed(key, default, str, "a string")

    # ---- tensors -----------------------------------------------------------------------------------

    def has_tensor(self, name: str) -> bool:
        return name in self.tensors

    def tensor_shape(self, name: str) -> tuple[int, ...] | None:
        """PyTorch-order shape (rows, K) of a tensor, or None if absent.  Trailing GGUF dims of 1 are
        dropped, as llama.cpp's shape check (llama_model_loader::check_tensor_dims) ignores them."""
        t = self.tensors.get(name)
        if t is None:
            return None
        shape = list(t.shape)
        while len(shape) > 1 and shape[-1] == 1:
            shape.pop()
        return tuple(reversed(shape))

    def qtensor(self, name: str) -> QTensor:
        """A zero-copy view of a stored tensor in its format."""
        t = self.tensors[name]
        qtype = t.tensor_type.name
        if qtype not in SUPPORTED_QTYPES:
            raise UnsupportedQuantTypeError(
                f"{self.path}: tensor {name!r} is {qtype}; "
                f"pylin's kernels support {', '.join(SUPPORTED_QTYPES)}"
            )
        if qtype == "NVFP4":
            self._refuse_nvfp4_tensor_scales(name)
        try:
            return QTensor(t.data, qtype, self.tensor_shape(name), name)
        except ValueError as e:
            raise GGUFError(f"{self.path}: tensor {name!r}: {e}") from e

    def _refuse_nvfp4_tensor_scales(self, name: str) -> None:
        """NVFP4 checkpoints carry a float scale per tensor on top of the block scales; llama.cpp's
        converter stores it as a separate tensor (`blk.N.ffn_up.scale`, or `.weight.scale`, with an
        `.input_scale`) and multiplies the product by it.  pylin does not apply those yet, and
        ignoring one would give silently wrong outputs, so such a file is refused."""
        base = name.removesuffix(".weight")
        extra = [n for n in (f"{base}.scale", f"{name}.scale", f"{base}.input_scale") if n in self.tensors]
        if extra:
            raise UnsupportedQuantTypeError(
                f"{self.path}: NVFP4 tensor {name!r} comes with the per-tensor scale tensor(s) "
                f"{', '.join(map(repr, extra))}, which pylin does not apply yet; it reads NVFP4 weights "
                "that need no such scale"
            )

    def float_tensor(self, name: str) -> np.ndarray:
        """A small tensor (norm weight, rope factors) as float32 values."""
        q = self.qtensor(name)
        return q.dequantize().reshape(-1) if q.qtype != "F32" else q.data.view(np.float32).copy()


class GGUFSource:
    """TensorSource over a GGUFFile for pylin.weights.build_weights."""

    fmt = "gguf"

    def __init__(self, gguf: GGUFFile) -> None:
        self.gguf = gguf

    def has(self, name: str) -> bool:
        return self.gguf.has_tensor(name)

    def linear(self, name: str) -> QTensor:
        q = self.gguf.qtensor(name)
        if len(q.shape) != 2:
            raise GGUFError(f"{self.gguf.path}: tensor {name!r} has shape {q.shape}; expected a 2-D weight")
        return q

    def norm(self, name: str) -> Any:
        import torch  # lazily: `pylin info` reads headers through this module without torch

        shape = self.gguf.tensor_shape(name)
        if shape is not None and len(shape) != 1:
            raise TensorShapeError(
                f"{self.gguf.path}: tensor {name!r} has shape {shape}; a norm weight is 1-D"
            )
        return torch.from_numpy(self.gguf.float_tensor(name))
