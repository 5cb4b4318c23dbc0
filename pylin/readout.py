"""pylin.readout — vectors read as tokens: the logit lens and nearest input embeddings.

    table = decode_svd(lin.svd(k=8), lin)     # one row per singular triplet (a pylin.table.Table)
    print(table)                               # readable; table.to_dicts(), table.to_pandas()

Left singular vectors u live in the output space; they decode through the LM head like a logit lens
(Golden 2025): the top tokens of W_head·u, with the sign of u chosen so that ⟨u, y⟩ ≥ 0 (the paper's
convention: the direction that pushes toward the actual output), and the opposite sign's top tokens
alongside.  For a raw (un-normed) intermediate site the final norm's weight is applied first, so the
lens reads it as the model's head would.  Right singular vectors v live in the input space and decode to
the input-embedding rows with the largest cosine similarity (cosine ignores Gemma's √d embedding scale).
Products with the (quantized) LM head and embedding table go through pylin.kernels, never dequantizing
the whole table at once.  Tests: tests/test_analysis.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .qtensor import QTensor
from .svd import signs_toward
from .table import Table

__all__ = ["logit_lens", "nearest_embeddings", "decode_svd", "show_token", "token_text"]

_ROWS_PER_CHUNK = 8192  # rows of the embedding table dequantized at a time when computing row norms
_norm_cache: dict[int, tuple[QTensor, torch.Tensor]] = {}


def show_token(text: str) -> str:
    """A token's text made visible: newlines/tabs escaped, leading/trailing spaces kept inside quotes."""
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return f"'{text}'" if text != text.strip() or not text else text


# ---- products with the vocabulary --------------------------------------------------------------


def _as_float_rows(vectors: torch.Tensor, d: int) -> torch.Tensor:
    v = vectors.detach().to("cpu")
    if v.dim() == 1:
        v = v[None]
    if v.shape[-1] != d:
        raise ValueError(f"vectors have size {v.shape[-1]}, the vocabulary table has width {d}")
    return v.reshape(-1, d).to(torch.float32).contiguous()


def _scores(vectors: torch.Tensor, table: QTensor) -> torch.Tensor:
    from . import kernels

    return kernels.matmul_t(_as_float_rows(vectors, table.shape[1]), table)


def embedding_norms(table: QTensor) -> torch.Tensor:
    """‖E_i‖ for every row of an embedding table, computed in chunks and cached per table."""
    hit = _norm_cache.get(id(table))
    if hit is not None and hit[0] is table:
        return hit[1]
    norms = torch.empty(table.shape[0], dtype=torch.float32)
    for r0 in range(0, table.shape[0], _ROWS_PER_CHUNK):
        r1 = min(r0 + _ROWS_PER_CHUNK, table.shape[0])
        rows = table.rows(r0, r1).dequantize()
        norms[r0:r1] = torch.from_numpy(np.linalg.norm(rows, axis=1))
    if len(_norm_cache) > 4:
        _norm_cache.clear()
    _norm_cache[id(table)] = (table, norms)
    return norms


def token_text(model: Any, token: int) -> str:
    """The text of one token, or "<id>" for a model without a tokenizer (tiny test models)."""
    if getattr(model, "tokenizer", True) is None:
        return f"<{int(token)}>"
    return model.decode([int(token)])


def _topk(scores: torch.Tensor, top: int, model: Any) -> list[list[tuple[int, str, float]]]:
    vals, idx = torch.topk(scores, min(top, scores.shape[-1]), dim=-1)
    return [
        [(int(i), token_text(model, i), float(v)) for v, i in zip(vr.tolist(), ir.tolist(), strict=True)]
        for vr, ir in zip(vals, idx, strict=True)
    ]


def logit_lens(
    model: Any, vectors: torch.Tensor, top: int = 5, norm_weight: torch.Tensor | None = None
) -> list[list[tuple[int, str, float]]]:
    """Top tokens of W_head · (w ⊙ v) for each row v of `vectors`: [(id, text, logit), …] per row."""
    v = vectors if norm_weight is None else vectors * norm_weight.to(vectors)
    return _topk(_scores(v, model.weights.lm_head), top, model)


def nearest_embeddings(model: Any, vectors: torch.Tensor, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Input-embedding rows with the largest cosine to each vector: [(id, text, cosine), …] per row."""
    table = model.weights.token_embd
    v = _as_float_rows(vectors, table.shape[1])
    cos = _scores(v, table) / (
        embedding_norms(table).clamp_min(1e-30) * v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    )
    return _topk(cos, top, model)


def _lens_weight(lin: Any) -> torch.Tensor | None:
    """The final norm's weight for raw intermediate sites (normed sites and "final" already include it)."""
    site = getattr(lin, "output_site", None)
    kind = getattr(site, "kind", site)
    if kind in (None, "final", "logit") or getattr(lin, "normed", True):
        return None
    w = getattr(getattr(lin.model, "weights", None), "final_norm", None)
    return w if isinstance(w, torch.Tensor) else None


def decode_svd(res: Any, lin: Any, top: int = 5) -> Table:
    """One row per singular triplet (per token for stacked results): σ, the top tokens of +u and −u through
    the LM head (+ is the sign aligned with y), and the input tokens whose embeddings are nearest to v."""
    if lin is None or not hasattr(lin, "model"):
        raise ValueError("decoding needs the linearization (its model's LM head and embedding table)")
    model = lin.model
    U, S, Vh = res.U, res.S, res.Vh
    if not res.stacked:
        U, S, Vh = U[None], S[None], Vh[None]
    if res.token == "concat":
        Vh = Vh.reshape(1, res.k, len(res.tokens), -1)  # decode each token's piece of v separately
    m, k = S.shape
    y = getattr(lin, "output", None)
    d_model = model.weights.lm_head.shape[1]
    left = U.shape[-2] == d_model
    if left:
        u = U.mT.reshape(m * k, -1)
        y = y if isinstance(y, torch.Tensor) else None
        u = u * signs_toward(u.T, y)[:, None]
        weight = _lens_weight(lin)
        pos, neg = logit_lens(model, u, top, weight), logit_lens(model, -u, top, weight)
    if res.token == "concat":
        near = nearest_embeddings(model, Vh[0].reshape(k * len(res.tokens), -1), 1)
    else:
        near = nearest_embeddings(model, Vh.reshape(m * k, -1), top)
    strings = getattr(lin, "token_strings", None)
    rows = []
    for a in range(m):
        tok = res.tokens[a] if res.token != "concat" else "all"
        for i in range(k):
            r = a * k + i
            row: dict[str, Any] = {
                "token_index": tok,
                "token": show_token(strings[tok])
                if strings is not None and isinstance(tok, int)
                else "(concat)",
                "i": i,
                "sigma": float(S[a, i]),
                "output": [show_token(t) for _, t, _ in pos[r]] if left else None,
                "output_ids": [t for t, _, _ in pos[r]] if left else None,
                "output_neg": [show_token(t) for _, t, _ in neg[r]] if left else None,
                "output_neg_ids": [t for t, _, _ in neg[r]] if left else None,
            }
            if res.token == "concat":  # the v of the whole J: its nearest token per input position
                per = near[i * len(res.tokens) : (i + 1) * len(res.tokens)]
                row["input"] = [show_token(p[0][1]) for p in per]
                row["input_ids"] = [p[0][0] for p in per]
                row["input_cos"] = [round(p[0][2], 4) for p in per]
            else:
                row["input"] = [show_token(t) for _, t, _ in near[r]]
                row["input_ids"] = [t for t, _, _ in near[r]]
                row["input_cos"] = [round(c, 4) for _, _, c in near[r]]
            rows.append(row)
    display = ["token_index", "token", "i", "sigma", "output", "output_neg", "input"]
    site = getattr(getattr(lin, "output_site", None), "name", "output")
    title = f"singular vectors of J ({site}, wrt {getattr(lin, 'wrt', 'embed')}), decoded"
    return Table(rows, display, title)
