"""The raw table every loader returns (``RawData``), how it is built, and the empty-text rule.

Every raw table has columns ``source_idx`` (row in the source file/split), ``text``, ``text_pair`` (None for
single-text tasks) and ``label`` (int id into ``label_names``).

Empty texts: a row whose text (or, for pair sources, text pair) is missing, empty or only whitespace carries
nothing to classify. Loaders drop such rows before labels are encoded, with one ``UserWarning`` per file that
counts them; ``source_idx`` keeps the original row numbers. A file whose rows are all empty is an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from layerinf.errors import LayerinfError

COLUMNS = ["source_idx", "text", "text_pair", "label"]


@dataclass
class RawData:
    """A loaded source before splitting: ``train`` and ``dev`` tables (columns ``COLUMNS``) and label names.

    Unpacks as ``train, dev, label_names = raw``.
    """

    train: pd.DataFrame
    dev: pd.DataFrame
    label_names: list[str]
    task: str | None = None
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.train, self.dev, self.label_names))

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def raw_frame(source_idx, text, text_pair, label) -> pd.DataFrame:
    """A raw table (``COLUMNS``): missing texts become "", ``text_pair=None`` gives a column of None."""
    text = pd.Series(text, dtype=object).reset_index(drop=True).fillna("").astype(str)
    n = len(text)
    if text_pair is None:
        pair = pd.Series([None] * n, dtype=object)
    else:
        pair = pd.Series(text_pair, dtype=object).reset_index(drop=True).fillna("").astype(str)
    return pd.DataFrame(
        {
            "source_idx": np.asarray(source_idx, dtype=np.int64),
            "text": text,
            "text_pair": pair,
            "label": np.asarray(label, dtype=np.int64),
        }
    )


_frame = raw_frame  # the old private name (layerinf.data.loaders._frame)


def preview(values, k: int = 5) -> str:
    """Up to ``k`` distinct values, sorted, as reprs (``'a', 'b' … (9 distinct)``)."""
    vals = sorted({repr(v) for v in values})
    return ", ".join(vals[:k]) + (f" … ({len(vals)} distinct)" if len(vals) > k else "")


def row_list(rows, k: int = 5) -> str:
    rows = [int(r) for r in rows]
    return ", ".join(map(str, rows[:k])) + (f" … ({len(rows)} in all)" if len(rows) > k else "")


def _empty(values) -> np.ndarray:
    s = pd.Series(values, dtype=object).reset_index(drop=True)
    return np.array(s.isna() | s.astype(str).str.strip().eq(""), dtype=bool)


def nonempty_rows(text, text_pair, where: str, rows=None, column: str = "text") -> np.ndarray:
    """Mask of the rows with a non-empty text (and text pair, when given); warns once if any are dropped.

    ``rows`` (default 0..n-1) are the row numbers named in the warning. All rows empty → ``LayerinfError``.
    """
    empty = _empty(text)
    if text_pair is not None:
        empty |= _empty(text_pair)
    if not empty.any():
        return ~empty
    rows = np.arange(len(empty)) if rows is None else np.asarray(rows)
    what = "an empty text" + (" or text pair" if text_pair is not None else "")
    if empty.all():
        raise LayerinfError(f"every one of the {len(empty)} row(s) of {where} has {what} (column {column!r})",
                            "point text_column (CLI --text-column) at the column that holds the texts, or fill them in")
    warnings.warn(f"{where}: dropped {int(empty.sum())} of {len(empty)} row(s) with {what} "
                  f"(row {row_list(rows[empty])}; rows count from 0, a header line not counted)",
                  UserWarning, stacklevel=3)
    return ~empty
