"""GGUF files: validated before gguf-py parses them, then read through gguf-py's GGUFReader as
memory-mapped, zero-copy QTensor views (never a dequantized copy of a weight matrix).

`check_header` walks the header (key/value pairs and tensor infos) with every count and length checked
against the file size, so a corrupt or hostile file ends in a GGUFError instead of a huge allocation or
an endless loop inside gguf-py; it also checks that every tensor's data lies inside the file.
Layout: ggml/docs/gguf.md (magic "GGUF", version 2/3, u64 counts, typed values, aligned tensor data).
Tests: tests/test_gguf_errors.py (bad input and fuzz), tests/test_models.py::test_gguf_logits.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError, UnsupportedQuantTypeError
from .qtensor import SUPPORTED_QTYPES, QTensor

# GGUF value types -> fixed size in bytes (8: string, 9: array are variable).
_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_DEPTH = 4  # nested arrays pylin accepts
_SMALL_ARRAY = 4096  # numeric arrays up to this length are returned by read_header (e.g. per-layer sizes)


class _Cursor:
    """Bounds-checked little-endian reads over the file's bytes."""

    def __init__(self, buf: Any, size: int, path: Path) -> None:
        self.buf, self.size, self.pos, self.path = buf, size, 0, path

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"{self.path}: truncated file: {what} needs {n} bytes at offset {self.pos}, "
                f"file has {self.size}"
            )
        start = self.pos
        self.pos += n
        return start

    def u32(self, what: str) -> int:
        return struct.unpack_from("<I", self.buf, self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack_from("<Q", self.buf, self.take(8, what))[0]

    def string(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        start = self.take(n, what)
        return bytes(self.buf[start : start + n])

    def skip_value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALAR_SIZE:
            start = self.take(_SCALAR_SIZE[vtype], what)
            fmt = {
                0: "<B",
                1: "<b",
                2: "<H",
                3: "<h",
                4: "<I",
                5: "<i",
                6: "<f",
                7: "<?",
                10: "<Q",
                11: "<q",
                12: "<d",
            }
            return struct.unpack_from(fmt[vtype], self.buf, start)[0]
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            if depth >= _MAX_DEPTH:
                raise GGUFError(f"{self.path}: {what} nests arrays deeper than {_MAX_DEPTH}")
            item_type = self.u32(f"item type of {what}")
            count = self.u64(f"length of {what}")
            if item_type in _SCALAR_SIZE and count <= _SMALL_ARRAY:  # per-layer settings: keep them
                return [self.skip_value(item_type, what, depth + 1) for _ in range(count)]
            if item_type in _SCALAR_SIZE:
                self.take(count * _SCALAR_SIZE[item_type], what)
                return f"[{count} items]"
            if item_type not in (_STRING, _ARRAY):
                raise GGUFError(f"{self.path}: {what} has an unknown item type {item_type}")
            if count * 8 > self.size - self.pos:  # every string / array item takes at least 8 bytes
                raise GGUFError(f"{self.path}: {what} claims {count} items, more than the file can hold")
            for _ in range(count):
                self.skip_value(item_type, what, depth + 1)
            return f"[{count} items]"
        raise GGUFError(f"{self.path}: {what} has an unknown value type {vtype}")


def check_header(path: Path) -> None:
    """Raise GGUFError unless the header parses within the file and all tensor data lies inside it."""
    read_header(path)


def read_header(path: str | Path) -> dict[str, Any]:
    """The validated header without gguf-py: {"version", "meta", "tensors", "file_size"}.

    meta maps keys to values (strings decoded; numeric arrays of up to 4096 items as lists, longer
    arrays — e.g. a 262k-token vocabulary — skipped by length and summarized as "[N items]"); tensors
    are (name, shape in PyTorch order, GGML type id).  Well under a second where GGUFReader takes tens.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise GGUFError(f"{path}: file of {size} bytes is too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _walk(_Cursor(buf, size, path), size, path)


def _walk(c: _Cursor, size: int, path: Path) -> dict[str, Any]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    magic = bytes(c.buf[0:4])
    if magic != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    c.take(4, "magic")
    version = c.u32("version")
    if version not in (2, 3):
        endian = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
        raise GGUFError(f"{path}: unsupported GGUF version {version}{endian}; pylin reads versions 2 and 3")
    n_tensors, n_kv = c.u64("tensor count"), c.u64("key/value count")
    if n_tensors * 24 > size or n_kv * 12 > size:  # smallest tensor info / key-value entry
        raise GGUFError(
            f"{path}: header claims {n_tensors} tensors and {n_kv} keys, more than the file can hold"
        )
    alignment = 32
    meta: dict[str, Any] = {}
    for i in range(n_kv):
        key = c.string(f"key {i}").decode("utf-8", "replace")
        value = c.skip_value(c.u32(f"type of {key}"), key)
        meta[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if key == "general.alignment":
            if not isinstance(value, int) or value <= 0 or value & (value - 1) or value > 1 << 20:
                raise GGUFError(f"{path}: general.alignment {value!r} is not a power of two")
            alignment = value
    infos = []
    for i in range(n_tensors):
        name = c.string(f"name of tensor {i}").decode("utf-8", "replace")
        n_dims = c.u32(f"rank of {name}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise GGUFError(f"{path}: tensor {name!r} has rank {n_dims}; GGUF allows 1..{_MAX_DIMS}")
        dims = [c.u64(f"shape of {name}") for _ in range(n_dims)]
        type_id, offset = c.u32(f"type of {name}"), c.u64(f"offset of {name}")
        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise UnsupportedQuantTypeError(
                f"{path}: tensor {name!r} has unknown GGML type id {type_id} (newer than this gguf-py?); "
                f"pylin's kernels support {', '.join(SUPPORTED_QTYPES)}"
            ) from None
        infos.append((name, dims, qtype, offset))
    data_start = -(-c.pos // alignment) * alignment
    for name, dims, qtype, offset in infos:
        block, nbytes = GGML_QUANT_SIZES[qtype]
        count = int(np.prod(dims, dtype=object))
        if count <= 0 or dims[0] % block:
            raise GGUFError(
                f"{path}: tensor {name!r} has shape {dims}, not whole {qtype.name} blocks of {block}"
            )
        end = data_start + offset + count // block * nbytes
        if end > size:
            raise GGUFError(
                f"{path}: tensor {name!r} data ends at byte {end}, outside the file ({size} bytes)"
            )
    tensors = [(name, dims[::-1], int(qtype)) for name, dims, qtype, _ in infos]
    return {"version": version, "meta": meta, "tensors": tensors, "file_size": size}


_LAZY_ARRAY_MIN = 256  # arrays at least this long are read lazily (vocabulary, scores, merges)


def _fast_reader_class() -> type:
    """gguf-py's GGUFReader with cheaper metadata: plain ndarray views instead of np.memmap ones, and
    long arrays (Gemma's 262k-token vocabulary, its scores and token types) kept as one lazy field each
    instead of one or two numpy views per item.

    The stock reader takes ~15 s and ~180 MB of Python objects for Gemma's vocabulary; this one
    ~0.2 s and a few MB.  A lazy field answers `contents()` straight from the mapping and builds
    gguf-py's per-item `parts` / `data` only when someone asks for them (tests/test_gguf_errors.py
    compares every field with the stock reader's).  pylin falls back to the stock reader if
    gguf-py's internals change.
    """
    import sys

    from gguf import GGUFReader, GGUFValueType
    from gguf.gguf_reader import ReaderField

    class LazyArrayField(ReaderField):
        """A long array value: item views are made on demand, never stored."""

        def __new__(
            cls,
            offset: int,
            name: str,
            head: list,
            types: list,
            reader: Any,
            start: int,
            count: int,
            string_starts: np.ndarray | None,
        ) -> LazyArrayField:
            self = super().__new__(cls, offset, name, head, [], types)
            self._reader, self._start, self._count, self._string_starts = reader, start, count, string_starts
            return self

        def _values(self) -> np.ndarray:
            r = self._reader
            return r._get(self._start + 12, r.gguf_scalar_to_np[self.types[-1]], self._count)

        def _items(self) -> list[np.ndarray]:
            if self._string_starts is None:
                values = self._values()
                return [values[i : i + 1] for i in range(self._count)]
            plain, items = self._reader.__dict__["_plain"], []
            for s in self._string_starts.tolist():
                (n,) = struct.unpack_from("<Q", plain, s)
                items += [plain[s : s + 8].view(np.uint64), plain[s + 8 : s + 8 + n]]
            return items

        @property
        def parts(self) -> list[np.ndarray]:  # type: ignore[override]
            r = self._reader
            head = [r._get(self._start, np.uint32), r._get(self._start + 4, np.uint64)]
            return [*super().parts, *head, *self._items()]

        @property
        def data(self) -> list[int]:  # type: ignore[override]
            step = 1 if self._string_starts is None else 2
            first = len(super().parts) + 2 + step - 1
            return list(range(first, first + step * self._count, step))

        def contents(self, index_or_slice: int | slice = slice(None)) -> Any:
            if self._string_starts is None:
                return self._values()[index_or_slice].tolist()
            plain = self._reader.__dict__["_plain"]
            starts = self._string_starts[index_or_slice]

            def text(s: int) -> str:
                (n,) = struct.unpack_from("<Q", plain, s)
                return str(plain[s + 8 : s + 8 + n].tobytes(), encoding="utf-8")

            return text(int(starts)) if np.ndim(starts) == 0 else [text(s) for s in starts.tolist()]

    class FastGGUFReader(GGUFReader):
        def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> np.ndarray:
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self.__dict__["_plain"] = self.data.view(np.ndarray)
            dtype, count = np.dtype(dtype), int(count)
            arr = plain[offset : offset + dtype.itemsize * count].view(dtype)[:count]
            order = self.byte_order if override_order is None else override_order
            if order == "I" or (order == "<" and sys.byteorder == "little"):
                return arr
            return arr.view(arr.dtype.newbyteorder(order))

        def _build_fields(self, offs: int, count: int) -> int:
            # gguf-py's loop, with long arrays of strings or scalars made lazy.
            for _ in range(count):
                orig_offs = offs
                kv_klen, kv_kdata = self._get_str(offs)
                offs += int(kv_klen.nbytes + kv_kdata.nbytes)
                raw_kv_type = self._get(offs, np.uint32)
                offs += int(raw_kv_type.nbytes)
                head, name = [kv_klen, kv_kdata, raw_kv_type], str(bytes(kv_kdata), encoding="utf-8")
                lazy = self._lazy_array(orig_offs, name, head, offs, int(raw_kv_type[0]))
                if lazy is not None:
                    field, size = lazy
                else:
                    size, parts, idxs, types = self._get_field_parts(offs, raw_kv_type[0])
                    field = ReaderField(orig_offs, name, head + parts, [i + len(head) for i in idxs], types)
                self._push_field(field, skip_sum=True)
                offs += size
            return offs

        def _lazy_array(self, orig_offs: int, name: str, head: list, offs: int, raw_type: int) -> Any:
            """(field, byte size) for a long flat array in native byte order, else None."""
            if raw_type != GGUFValueType.ARRAY or self.byte_order != "I" or sys.byteorder != "little":
                return None
            item_type, count = int(self._get(offs, np.uint32)[0]), int(self._get(offs + 4, np.uint64)[0])
            if count < _LAZY_ARRAY_MIN:
                return None
            types = [GGUFValueType.ARRAY, GGUFValueType(item_type)]
            if item_type == GGUFValueType.STRING:
                starts, end = self._string_starts(offs + 12, count)
                size = end - offs
            elif item_type in self.gguf_scalar_to_np:
                starts, size = None, 12 + count * np.dtype(self.gguf_scalar_to_np[item_type]).itemsize
            else:
                return None
            return LazyArrayField(orig_offs, name, head, types, self, offs, count, starts), size

        def _string_starts(self, offs: int, count: int) -> tuple[np.ndarray, int]:
            plain, starts = self.__dict__["_plain"], np.empty(count, dtype=np.int64)
            for i in range(count):
                starts[i] = offs
                (n,) = struct.unpack_from("<Q", plain, offs)
                offs += 8 + n
            return starts, offs

    return FastGGUFReader


_READ_ERRORS = (ValueError, KeyError, IndexError, TypeError, struct.error, OverflowError, UnicodeDecodeError)


def _read(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return _fast_reader_class()(str(path), "r")
    except _READ_ERRORS:
        pass
    try:
        return GGUFReader(str(path), "r")
    except _READ_ERRORS as e:
        raise GGUFError(f"{path}: gguf-py cannot parse the file: {e}") from e


class GGUFFile:
    """A validated GGUF file: metadata accessors and zero-copy tensor views."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such GGUF file: {self.path}")
        check_header(self.path)
        self.reader = _read(self.path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.arch = self.get_str("general.architecture", "")
        if not self.arch:
            raise GGUFError(f"{self.path}: no general.architecture key")

    # ---- metadata ----------------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise GGUFError(f"{self.path}: unreadable value of {key!r}: {e}") from e

    def _typed(self, key: str, default: Any, kind: type, names: str) -> Any:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise GGUFError(f"{self.path}: {key} should be {names}, got {value!r}")
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
        """PyTorch-order shape (rows, K) of a tensor, or None if absent."""
        t = self.tensors.get(name)
        return None if t is None else tuple(int(s) for s in reversed(t.shape.tolist()))

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
        shape = self.tensor_shape(name)
        data = t.data if t.data.dtype == np.uint8 else t.data.view(np.uint8)
        try:
            return QTensor(data, qtype, shape, name)
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

        return torch.from_numpy(self.gguf.float_tensor(name))
