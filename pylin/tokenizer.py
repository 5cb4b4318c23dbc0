"""Tokenizers for loaded models: a Hugging Face tokenizer folder, transformers' GGUF tokenizer support, or
one built here from the GGUF vocabulary (tokenizer.ggml.*) with the `tokenizers` library.

The built one is the fallback for files transformers' GGUF support rejects (e.g. arch olmo2): "gpt2"
vocabularies (byte-level BPE with merges) are rebuilt exactly up to the pre-tokenizer regex; "llama"
(SentencePiece) vocabularies become a Unigram model over the stored scores, which agrees with
SentencePiece on ordinary text but is not guaranteed identical.
Converting a large GGUF vocabulary takes transformers ~15 s (Gemma 3: merges rebuilt from 262k
tokens), so the result is cached as a tokenizer folder under $PYLIN_CACHE_DIR (default
~/.cache/pylin; empty disables), keyed by the file's path, size, mtime and the transformers version.
Tests: tests/test_models.py::test_real_gemma_tokenizer, test_gguf_vocab_tokenizer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def encode(tokenizer: Any, text: str, *, add_bos: bool, bos_token_id: int | None) -> list[int]:
    """Token ids of text; with add_bos the tokenizer's special tokens (its BOS) are added."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    ids = list(tokenizer.encode(text, add_special_tokens=add_bos))
    if (
        not add_bos
        and ids
        and bos_token_id is not None
        and ids[0] == bos_token_id
        and not text.startswith("<")
    ):
        ids = ids[1:]
    return ids


def from_hf_folder(folder: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def maybe_from_hf_folder(folder: Path) -> Any:
    """The folder's tokenizer, or None when it has none."""
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
    if not any((folder / n).exists() for n in names):
        return None
    try:
        return from_hf_folder(folder)
    except (OSError, ValueError, ImportError):
        return None


def from_gguf(gguf: Any) -> Any:
    """transformers' GGUF tokenizer for the file, else one built from its vocabulary, else None."""
    if not gguf.has("tokenizer.ggml.tokens"):
        return None
    cached = _cache_path(Path(gguf.path))
    if cached is not None and cached.is_dir():
        try:
            return _from_cached(cached)
        except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt
            shutil.rmtree(cached, ignore_errors=True)
    try:
        from transformers import AutoTokenizer

        path = Path(gguf.path)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception:  # noqa: BLE001 - transformers raises many kinds for archs it does not know
        return VocabTokenizer.from_gguf(gguf)
    if cached is not None and _store(tok, cached):
        try:
            return JsonTokenizer.from_folder(cached)  # the lean form of the same tokenizer
        except Exception:  # noqa: BLE001 - it needs transformers' wrapper, or is unreadable: keep ours
            pass
    return tok


def _from_cached(folder: Path) -> Any:
    """The lean JsonTokenizer of a cached folder, or transformers' when the folder needs its decoding."""
    try:
        return JsonTokenizer.from_folder(folder)
    except ValueError:
        return from_hf_folder(folder)


def _cache_path(path: Path) -> Path | None:
    root = os.environ.get("PYLIN_CACHE_DIR", str(Path.home() / ".cache" / "pylin"))
    if not root:
        return None
    try:
        import transformers

        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"
    except (OSError, ImportError):
        return None
    return Path(root) / "tokenizers" / hashlib.sha256(key.encode()).hexdigest()[:24]


def _store(tok: Any, cached: Path) -> bool:
    """Save atomically (a temporary folder renamed into place); a failure only costs the cache."""
    tmp: Path | None = None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent))
        tok.save_pretrained(str(tmp))
        os.replace(tmp, cached)  # fails if another process got there first: theirs is as good
    except OSError:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return cached.is_dir()


class JsonTokenizer:
    """A cached fast tokenizer (tokenizer.json) run by the `tokenizers` library directly.

    Same ids and text as transformers' wrapper of the same file (its post-processor adds the BOS,
    tests/test_models.py compares both), at ~300 MB less memory for Gemma's 262k vocabulary:
    transformers keeps a second, Python-side copy of the vocabulary.
    """

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    @classmethod
    def from_folder(cls, folder: Path) -> JsonTokenizer:
        import json

        from tokenizers import Tokenizer

        config = json.loads((folder / "tokenizer_config.json").read_text())
        if config.get("clean_up_tokenization_spaces") or config.get("backend", "tokenizers") != "tokenizers":
            raise ValueError(f"{folder}: needs transformers' own decoding")
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)


class VocabTokenizer:
    """A `tokenizers.Tokenizer` built from tokenizer.ggml.* with HF-like encode/decode."""

    def __init__(self, tok: Any, bos_id: int | None, add_bos: bool) -> None:
        self.tok, self.bos_token_id, self.add_bos = tok, bos_id, add_bos

    @classmethod
    def from_gguf(cls, gguf: Any) -> VocabTokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        kind = gguf.get_str("tokenizer.ggml.model", "llama")
        tokens = gguf.get("tokenizer.ggml.tokens")
        bos = (
            gguf.get_int("tokenizer.ggml.bos_token_id", -1)
            if gguf.has("tokenizer.ggml.bos_token_id")
            else None
        )
        add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", kind == "llama"))
        if kind == "gpt2":
            merges = [tuple(m.split(" ", 1)) for m in gguf.get("tokenizer.ggml.merges", [])]
            vocab = {t: i for i, t in enumerate(tokens)}
            tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
        elif kind == "llama":
            scores = gguf.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
            unk = gguf.get_int("tokenizer.ggml.unknown_token_id", 0)
            pieces = list(zip(tokens, map(float, scores), strict=True))
            tok = Tokenizer(models.Unigram(pieces, unk_id=unk, byte_fallback=True))
            prepend = "first" if gguf.get("tokenizer.ggml.add_space_prefix", True) else "never"
            tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=False)
            tok.decoder = decoders.Sequence(
                [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                + ([decoders.Strip(" ", 1, 0)] if prepend == "first" else [])
            )
        else:
            raise ValueError(f"{gguf.path}: cannot build a tokenizer for vocabulary type {kind!r}")
        return cls(tok, bos, add_bos)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
