"""The cross-model table of a batch: each prompt once, every model's numbers side by side.

    wide = cross_model_table(results)   # None for one model; else columns id, prompt, <model>:<field>…, agree

One row per (prompt, settings) that at least two models ran; for each model label m the columns
m:prediction, m:rel_error, m:r2, m:sigma1 (largest singular value of the last analysed token's block),
m:stable_rank (of that block) and m:error; `agree` is true when every model that succeeded predicts the
same next-token text.  Written to cross_model.parquet and summarized in report.html.
Tests: tests/test_batch.py.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["cross_model_table", "last_block", "FIELDS"]

FIELDS = ("prediction", "rel_error", "r2", "sigma1", "stable_rank", "error")
_TYPES = {"prediction": pa.string(), "error": pa.string()}


def last_block(values: list[Any] | None) -> Any:
    """The entry of the last analysed block (the last token's, for tokens="all"), or None."""
    return values[-1] if values else None


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    sigma = last_block(row.get("sigma"))
    return {
        "prediction": row.get("prediction"),
        "rel_error": row.get("rel_error"),
        "r2": row.get("r2"),
        "sigma1": sigma[0] if sigma else None,
        "stable_rank": last_block(row.get("stable_rank")),
        "error": row.get("error"),
    }


def cross_model_table(table: pa.Table) -> pa.Table | None:
    """The wide table (see the module docstring), or None when fewer than two models are in `table`."""
    if table.num_rows == 0:
        return None
    models = list(dict.fromkeys(table["model"].to_pylist()))
    if len(models) < 2:
        return None
    columns = [
        "model",
        "id",
        "prompt",
        "prompt_index",
        "settings",
        "prediction",
        "rel_error",
        "r2",
        "sigma",
        "stable_rank",
        "error",
    ]
    by_prompt: dict[tuple[str, str], dict[str, Any]] = {}
    for row in table.select(columns).to_pylist():
        entry = by_prompt.setdefault(
            (row["prompt"], row["settings"]),
            {"id": row["id"], "prompt": row["prompt"], "prompt_index": row["prompt_index"], "models": {}},
        )
        entry["models"][row["model"]] = _fields(row)
    out: dict[str, list[Any]] = {"id": [], "prompt": [], "prompt_index": []}
    for m in models:
        for f in FIELDS:
            out[f"{m}:{f}"] = []
    out["agree"] = []
    for entry in sorted(by_prompt.values(), key=lambda e: (e["prompt_index"], e["id"])):
        if len(entry["models"]) < 2:
            continue
        for name in ("id", "prompt", "prompt_index"):
            out[name].append(entry[name])
        for m in models:
            got = entry["models"].get(m, {})
            for f in FIELDS:
                out[f"{m}:{f}"].append(got.get(f))
        preds = {v["prediction"] for v in entry["models"].values() if v["error"] is None}
        out["agree"].append(len(preds) == 1 if preds else None)
    if not out["id"]:
        return None
    arrays = {name: pa.array(values, type=_type(name)) for name, values in out.items()}
    return pa.table(arrays)


def _type(name: str) -> pa.DataType:
    if name in ("id", "prompt"):
        return pa.string()
    if name == "prompt_index":
        return pa.int64()
    if name == "agree":
        return pa.bool_()
    return _TYPES.get(name.rsplit(":", 1)[-1], pa.float64())
