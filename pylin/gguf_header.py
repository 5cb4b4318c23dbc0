"""A fast read of a GGUF file's header: metadata and tensor infos, no tensor data, no vocabulary decode.

A direct walk of the header (ggml/docs/gguf.md): string arrays such as a 262k-token vocabulary are
skipped by their lengths instead of being decoded, so this takes well under a second where gguf-py's
GGUFReader takes tens of seconds.  Used by `pylin info` and the memory planner (pylin.planner).
Tests: tests/test_cli.py, tests/test_planner.py.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any


class GGUFHeaderError(ValueError):
    """The file is not a readable GGUF header (bad magic, truncated, unknown value type)."""


_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Key/values (arrays summarized by length) and tensor infos of a GGUF file, read from its header.

    Tensor shapes are in PyTorch order (rows first); qtype is the GGML type id.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise GGUFHeaderError(f"{path} is not a GGUF file (bad magic)")
        pos = 4

        def take(fmt: str) -> Any:
            nonlocal pos
            try:
                v = struct.unpack_from("<" + fmt, buf, pos)[0]
            except struct.error:
                raise GGUFHeaderError(f"{path}: truncated GGUF header") from None
            pos += struct.calcsize(fmt)
            return v

        def string() -> str:
            nonlocal pos
            n = take("Q")
            if pos + n > len(buf):
                raise GGUFHeaderError(f"{path}: truncated GGUF header")
            s = bytes(buf[pos : pos + n]).decode("utf-8", "replace")
            pos += n
            return s

        def value(vtype: int) -> Any:
            nonlocal pos
            if vtype in _SCALAR:
                return take(_SCALAR[vtype])
            if vtype == 8:
                return string()
            if vtype == 9:
                etype, count = take("I"), take("Q")
                if etype in _SCALAR and count <= 4096:  # small numeric arrays (per-layer settings): read
                    return [take(_SCALAR[etype]) for _ in range(count)]
                if etype in _SCALAR:
                    pos += count * struct.calcsize(_SCALAR[etype])
                    if pos > len(buf):
                        raise GGUFHeaderError(f"{path}: truncated GGUF header")
                else:
                    for _ in range(count):
                        value(etype)
                return f"[{count} items]"
            raise GGUFHeaderError(f"{path}: unknown GGUF value type {vtype}")

        version = take("I")
        n_tensors, n_kv = take("Q"), take("Q")
        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(take("I"))
        tensors = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("Q") for _ in range(take("I"))]
            qtype, _offset = take("I"), take("Q")
            tensors.append((name, dims[::-1], qtype))
    return {"version": version, "meta": meta, "tensors": tensors, "file_size": os.path.getsize(path)}
