"""The report's "most suspicious training examples": what a run's best configuration would remove first.

For one run (not a sweep), the ``k`` lowest-scored training examples of the report's best configuration (the
one its first screen names; when that has no stored scores, the scored influence configuration with the highest
NDR@30, ties in the score table's order), with their text and label — for instruction data
the prompt, the response as trained on and the original response — and whether the example was corrupted.
The files are read by their layout names (``store.layout``); nothing is recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from layerinf.evaluation.detection import filter_order
from layerinf.store.layout import AGGREGATED_FILE, DATA_META_FILE, SCORES, RunLayout

TOP = 10
TEXT_CHARS = 300


def _cut(value, limit: int = TEXT_CHARS) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def top_suspects(run_dir: str | Path, k: int = TOP, config: tuple | None = None) -> tuple[str, pd.DataFrame] | None:
    """``(configuration, table)`` of the ``k`` most suspicious training examples by ``config`` (method, group,
    aggregator), or None when the run has no score table with an influence configuration (or is not a single run)."""
    layout = RunLayout(run_dir)
    table_path, agg_path = layout.scores(), layout.root / SCORES / AGGREGATED_FILE
    if not table_path.is_file() or not agg_path.is_file() or not layout.split("train").is_file():
        return None
    table = pd.read_parquet(table_path)
    table = table[~table["method"].isin(["loss", "self_influence"]) & (table["group"] != "-")]
    if table.empty or "ndr_30" not in table.columns:
        return None
    best = table.sort_values("ndr_30", ascending=False, kind="stable").iloc[0]
    key = f"{best['method']}/{best['group']}/{best['aggregator']}"
    scores = pd.read_parquet(agg_path)
    if config is not None and "/".join(config) in scores.columns:
        key = "/".join(config)
    if key not in scores.columns:
        return None
    train = pd.read_parquet(layout.split("train"))
    s = scores.set_index("idx")[key].reindex(train["idx"]).to_numpy(np.float64)
    first = filter_order(s)[:k]
    rows = train.iloc[first]
    ranked = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "source_idx": rows["source_idx"].to_numpy()})
    if "response" in rows.columns:  # instruction data
        ranked["prompt"] = [_cut(v) for v in rows["prompt"]]
        ranked["response"] = [_cut(v) for v in rows["response"]]
        ranked["original response"] = [_cut(c) if n else "" for c, n in zip(rows["clean_response"], rows["noisy"])]
    else:
        meta_file = layout.split("train").parent / DATA_META_FILE
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        names = list(meta.get("label_names") or [])

        def name(i):
            return names[int(i)] if 0 <= int(i) < len(names) else str(i)

        ranked["text"] = [_cut(t) + (f" ‖ {_cut(p)}" if isinstance(p, str) and p else "")
                          for t, p in zip(rows["text"], rows.get("text_pair", [None] * len(rows)))]
        ranked["label"] = [name(v) for v in rows["label"]]
        ranked["original label"] = [name(c) if n else "" for c, n in zip(rows["clean_label"], rows["noisy"])]
    ranked["score"] = s[first]
    ranked["noisy"] = rows["noisy"].to_numpy(bool)
    return key, ranked


__all__ = ["TOP", "top_suspects"]
