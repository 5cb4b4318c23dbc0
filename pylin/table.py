"""pylin.table — the small `Table` every analysis returns: rows of named values.

    print(table)              # fixed-width rendering of the display columns
    table.to_dicts()          # plain Python, JSON-ready
    table.to_pandas()         # a DataFrame when pandas is installed
Tests: tests/test_analysis.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Table"]


class Table:
    """Rows of named values: what every pylin analysis returns.

    `to_dicts()` gives plain Python (JSON-ready), `to_pandas()` a DataFrame when pandas is installed, and
    `str(table)` a fixed-width rendering of the `display` columns (lists shown comma-separated).
    """

    def __init__(
        self, rows: Sequence[dict[str, Any]], display: Sequence[str] | None = None, title: str = ""
    ) -> None:
        self.rows = [dict(r) for r in rows]
        self.columns = list(self.rows[0]) if self.rows else list(display or [])
        self.display = list(display) if display is not None else self.columns
        self.title = title

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def __iter__(self) -> Iterable[dict[str, Any]]:
        return iter(self.rows)

    def column(self, name: str) -> list[Any]:
        return [r[name] for r in self.rows]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [{k: _plain(v) for k, v in r.items()} for r in self.rows]

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Table.to_pandas() needs pandas (pip install pandas); use to_dicts()") from None
        return pd.DataFrame(self.to_dicts())

    def __str__(self) -> str:
        cells = [[cell_text(r.get(c)) for c in self.display] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.display)]
        widths = [min(w, 48) for w in widths]
        lines = [self.title] if self.title else []
        lines.append("  ".join(c.ljust(w)[:w] for c, w in zip(self.display, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for row in cells:
            lines.append("  ".join(_fit(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        title = f"{self.title!r}, " if self.title else ""
        return f"Table({title}{len(self.rows)} rows: {', '.join(self.columns)})"

    def _repr_html_(self) -> str:  # Jupyter: an HTML table (pylin.html)
        from .html import table_html

        return table_html(self)


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def cell_text(v: Any) -> str:
    """A table cell as text (the console table and the notebook view both print cells this way)."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(cell_text(x) for x in v)
    return str(v)


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"
