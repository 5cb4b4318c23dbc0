"""One row of results.parquet: what `pylin analyze` computes for one (model, prompt), flattened.

    worker = RowWorker(model_spec, settings, out_dir)    # loads the model once (memory-mapped GGUF)
    row = worker(prompt, key)                            # a dict with exactly the columns of SCHEMA

SCHEMA below is the table's contract, one column per line with its meaning.  Rows come from
pylin.report.analyze's report dict, read defensively (a missing field becomes null, never a crash),
so the report can gain fields without breaking batches.  A prompt that cannot be analysed (empty, longer
than the model's context or --max-tokens, any error inside the analysis) gives a row whose `error`
says why and whose result columns are null; the run goes on.  Large arrays (U, S, Vh of the SVD; J if
asked) go to arrays/<key>.safetensors, written atomically, referenced by the `arrays` column.
Tests: tests/test_batch.py.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from .prompts import Prompt
from .settings import ModelSpec, Settings, worker_name

__all__ = ["SCHEMA", "RUN_COLUMNS", "RowWorker", "context_length", "to_table"]

_str_list = pa.list_(pa.string())
_int_list = pa.list_(pa.int64())
_float_list = pa.list_(pa.float64())
_DECODED = pa.struct(
    [
        ("token_index", pa.int64()),  # the input token whose block J_j this triplet belongs to (null: concat)
        ("i", pa.int64()),  # the triplet's rank (0 = largest σ)
        ("sigma", pa.float64()),
        ("output", _str_list),  # top tokens of +u through the LM head (+: the sign aligned with y)
        ("output_ids", _int_list),
        ("output_neg", _str_list),  # top tokens of −u
        ("input", _str_list),  # input-embedding rows nearest to v
        ("input_ids", _int_list),
    ]
)
_LAYER = pa.struct(
    [
        ("layer", pa.int64()),
        ("component", pa.string()),  # resid | attn | mlp
        ("sigma", _float_list),  # top singular values of that site's last-token J (normed, w.r.t. embed)
        ("stable_rank", pa.float64()),
        ("frobenius_sq", pa.float64()),
        ("decoded", pa.list_(_str_list)),  # top tokens of u0, u1, u2 through the logit lens
        ("decoded_ids", pa.list_(_int_list)),
    ]
)

SCHEMA = pa.schema(
    [
        # identity: which model, which prompt, which settings
        ("key", pa.string()),  # sha256 of (row version, model identity, prompt, settings): unique per row
        ("model", pa.string()),  # the model's label (file or folder name)
        ("model_path", pa.string()),
        ("model_identity", pa.string()),  # stat:<path>:<size>:<mtime> or sha256:<hex>
        ("arch", pa.string()),
        ("id", pa.string()),  # the prompt's id (from the file, else its line number)
        ("prompt", pa.string()),
        ("prompt_index", pa.int64()),  # position in the prompt file
        ("metadata", pa.string()),  # the prompt's other fields, as a JSON object
        ("settings", pa.string()),  # Settings.keyed() as JSON
        # the prompt and the prediction
        ("n_tokens", pa.int64()),
        ("token_ids", _int_list),
        ("token_strings", _str_list),
        ("prediction", pa.string()),  # the predicted next token's text
        ("prediction_id", pa.int64()),
        ("prediction_logit", pa.float64()),
        # reconstruction of the output by the detached Jacobian (and by the ordinary one, when computed)
        ("rel_error", pa.float64()),
        ("r2", pa.float64()),
        ("max_abs_error", pa.float64()),
        ("nonlinear_rel_error", pa.float64()),
        ("nonlinear_r2", pa.float64()),
        # the SVD of the chosen Jacobian blocks
        ("svd_tokens", _int_list),  # the token index of each block (concat: every token, one block)
        ("sigma", pa.list_(_float_list)),  # sigma[b]: top-k singular values of block b (in svd_tokens order)
        ("stable_rank", _float_list),  # ‖J_b‖_F² / ‖J_b‖₂² per block
        ("svd_converged", pa.bool_()),
        ("decoded", pa.list_(_DECODED)),  # decoded singular vectors, one entry per (block, triplet)
        ("layers", pa.list_(_LAYER)),  # per (layer, component): σ, stable rank, decoded u's (layer emergence)
        ("attribution_share", _float_list),  # per input token: ⟨J_j x*_j, y⟩ / ‖y‖² (sums to 1)
        ("attribution_logit", _float_list),  # per input token: its term's contribution to the predicted logit
        # steering (when asked): greedy continuations at each strength, and without steering
        ("steer_strengths", _float_list),
        ("steer_texts", _str_list),
        ("steer_unsteered", pa.string()),
        # per-row files and errors
        (
            "arrays",
            pa.string(),
        ),  # arrays/<key>.safetensors (U, S, Vh; J if asked), relative to the out folder
        ("error", pa.string()),  # null, or "<ExceptionType>: <message>": the row could not be analysed
        # where and when (not part of the key: they differ between engines and runs)
        ("threads", pa.int64()),  # kernel threads of the worker (results can depend on it in the last bits)
        ("engine", pa.string()),
        ("worker", pa.string()),  # host:pid
        ("elapsed_s", pa.float64()),
        ("peak_rss_bytes", pa.int64()),  # the worker process's peak resident memory so far
        ("pylin_version", pa.string()),
        ("created", pa.string()),  # UTC, ISO 8601
    ]
)

# Columns that say where and when a row was computed; every other column is a function of the key.
RUN_COLUMNS = ("engine", "worker", "elapsed_s", "peak_rss_bytes", "created")


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with SCHEMA's columns) as a pyarrow Table of exactly SCHEMA."""
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def context_length(model: Any) -> int | None:
    """The model's context length from its GGUF metadata or config.json, or None when unknown."""
    gguf = getattr(model, "gguf_file", None)
    if gguf is not None:
        n = gguf.get_int(f"{gguf.arch}.context_length", 0)
        return n or None
    config = Path(getattr(model, "source", "")) / "config.json"
    if config.is_file():
        n = json.loads(config.read_text()).get("max_position_embeddings")
        return int(n) if isinstance(n, int) and n > 0 else None
    return None


class RowWorker:
    """Computes rows for one model: loads it once, keeps the steering operator, writes per-row arrays."""

    def __init__(
        self,
        model: ModelSpec,
        settings: Settings,
        out: str | Path,
        *,
        threads: int | None = None,
        engine: str = "local",
        loaded: Any = None,
    ) -> None:
        import torch

        import pylin

        if threads is not None:
            torch.set_num_threads(int(threads))  # the kernels follow torch's setting (pylin.kernels)
        self.spec, self.settings, self.out, self.engine = model, settings, Path(out), engine
        self.model = (
            loaded
            if loaded is not None
            else pylin.load(model.path, dtype=settings.dtype, device=settings.device)
        )
        self.context = context_length(self.model)
        self.version = pylin.__version__
        self._steer_op: Any = None

    @property
    def threads(self) -> int:
        from .. import kernels

        return kernels.num_threads()

    def __call__(self, prompt: Prompt, key: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        row: dict[str, Any] = dict.fromkeys(SCHEMA.names)
        row.update(
            key=key,
            model=self.spec.label,
            model_path=self.spec.path,
            model_identity=self.spec.identity,
            arch=self.model.arch,
            id=prompt.id,
            prompt=prompt.text,
            prompt_index=prompt.index,
            metadata=json.dumps(prompt.metadata, sort_keys=True, ensure_ascii=False, default=str),
            settings=json.dumps(self.settings.keyed(), sort_keys=True, ensure_ascii=False),
        )
        try:
            row.update(self._analysis(prompt.text, key))
        except Exception as e:  # any failure of this one prompt is recorded in its row; the run goes on
            first = str(e).splitlines()[0] if str(e) else ""
            row["error"] = f"{type(e).__name__}: {first}" if first else type(e).__name__
        row.update(
            threads=self.threads,
            engine=self.engine,
            worker=worker_name(),
            elapsed_s=time.perf_counter() - t0,
            peak_rss_bytes=_peak_rss(),
            pylin_version=self.version,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        return row

    def _check_length(self, text: str) -> list[int]:
        ids = self.model.token_ids(text)  # refuses an empty prompt (EmptyPromptError)
        limits = [(self.context, "the model's context"), (self.settings.max_tokens, "max_tokens")]
        for limit, what in limits:
            if limit is not None and len(ids) > limit:
                raise ValueError(f"the prompt has {len(ids)} tokens, more than {what} ({limit})")
        return ids

    def _analysis(self, text: str, key: str) -> dict[str, Any]:
        from ..report import analyze

        s = self.settings
        self._check_length(text)
        keep: dict[str, Any] = {}
        data = analyze(
            self.model,
            text,
            k=s.k,
            tokens=s.tokens,
            layers=s.layers,
            method=s.method,
            top=s.top,
            nonlinear=s.nonlinear,
            seed=s.seed,
            progress=False,
            keep=keep,
        )
        row = _flatten(data)
        if s.arrays:
            row["arrays"] = self._write_arrays(key, keep)
        if s.steer is not None:
            row.update(self._steered(text))
        return row

    def _write_arrays(self, key: str, keep: dict[str, Any]) -> str:
        """U, S, Vh (and J) of this row to arrays/<key>.safetensors, atomically (temp file + rename)."""
        from safetensors.torch import save_file

        res, lin = keep["svd"], keep["linearization"]
        tensors = {"U": res.U, "S": res.S, "Vh": res.Vh}
        if self.settings.jacobian:
            tensors["J"] = lin.jacobian(tokens=res.tokens)  # (d_out, blocks, d_in)
        rel = f"arrays/{key}.safetensors"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"svd_tokens": json.dumps(list(res.tokens)), "key": key},
        )
        os.replace(tmp, path)
        return rel

    def _steered(self, text: str) -> dict[str, Any]:
        from .. import steer

        s = self.settings.steer
        if self._steer_op is None:  # one concept Jacobian per worker, reused for every prompt
            self._steer_op = steer.jacobian_operator(self.model, s.concept, s.layer)
        base = steer.generate(self.model, text, max_new_tokens=s.max_new_tokens)
        texts = [
            steer.generate(
                self.model, text, steer=self._steer_op, strength=lam, max_new_tokens=s.max_new_tokens
            ).text
            for lam in s.strengths
        ]
        return {"steer_strengths": list(s.strengths), "steer_texts": texts, "steer_unsteered": base.text}


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


# ---- the report dict -> row columns (defensive: absent fields are null) -----------------------------


def _get(d: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(d, dict):
            return None
        d = d.get(name)
    return d


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    rec = _get(data, "reconstruction", "detached") or {}
    nl = _get(data, "reconstruction", "nonlinear") or {}
    pred = data.get("prediction") or {}
    svd = data.get("svd") or {}
    sigma = svd.get("singular_values")
    blocks = svd.get("tokens")
    if sigma is not None and sigma and not isinstance(sigma[0], list):
        sigma = [sigma]  # one block: S is (k,)
    sr = _get(data, "stable_rank", "value")
    att = _get(data, "attribution", "rows") or []
    tokens = data.get("tokens")
    return {
        "n_tokens": None if tokens is None else len(tokens),
        "token_ids": tokens,
        "token_strings": data.get("token_strings"),
        "prediction": pred.get("token"),
        "prediction_id": pred.get("token_id"),
        "prediction_logit": pred.get("logit"),
        "rel_error": rec.get("rel_error"),
        "r2": rec.get("r2"),
        "max_abs_error": rec.get("max_abs_error"),
        "nonlinear_rel_error": nl.get("rel_error"),
        "nonlinear_r2": nl.get("r2"),
        "svd_tokens": None if blocks is None else [int(t) for t in blocks],
        "sigma": sigma,
        "stable_rank": None if sr is None else (sr if isinstance(sr, list) else [sr]),
        "svd_converged": svd.get("converged"),
        "decoded": [_decoded(r) for r in data.get("decoded") or []],
        "layers": [_layer(r) for r in data.get("layers") or []],
        "attribution_share": [r.get("share") for r in att] if att else None,
        "attribution_logit": [r.get("logit_contribution") for r in att] if att else None,
    }


def _decoded(r: dict[str, Any]) -> dict[str, Any]:
    t = r.get("token_index")
    out = {name: r.get(name) for name in _DECODED.names}
    out["token_index"] = t if isinstance(t, int) else None
    return out


def _layer(r: dict[str, Any]) -> dict[str, Any]:
    shown = sorted(int(k[1:]) for k in r if k.startswith("u") and k[1:].isdigit())
    return {
        "layer": r.get("layer"),
        "component": r.get("component"),
        "sigma": r.get("sigma"),
        "stable_rank": r.get("stable_rank"),
        "frobenius_sq": r.get("frobenius_sq"),
        "decoded": [r.get(f"u{a}") for a in shown],
        "decoded_ids": [r.get(f"u{a}_ids") for a in shown],
    }
