"""Cross-fitting's fold plans, one per task (``Task.plan_folds``): the rows taking part, in file order, cut into
folds; None when the source brings its own dev part (one fit on its training part ranks every training row).
Errors are raised before anything is written. The rule is ``workflows.crossfit``'s module docstring."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from layerinf.config import DataConfig
from layerinf.errors import LayerinfError


def _min_per_class(folds: int) -> int:
    """The fewest rows of a class that every fold's training part keeps 2 of (and every fold gets one of)."""
    c = max(folds, 2)
    while c - math.ceil(c / folds) < 2:
        c += 1
    return c


def _carved(raw) -> bool:
    return str(raw.info.get("dev_origin") or "").startswith("carved")


def _all_rows(raw) -> pd.DataFrame:
    rows = pd.concat([raw.train, raw.dev], ignore_index=True).sort_values("source_idx", kind="stable")
    return rows.reset_index(drop=True)


def classification_folds(data: DataConfig, folds: int) -> dict | None:
    """Labelled rows: a stratified, seeded ``max_train`` subset cut into stratified folds."""
    from sklearn.model_selection import StratifiedKFold

    from layerinf.data import load_source, stratified_subset

    raw = load_source(data.source, task=data.task, text_column=data.text_column,
                      text_pair_column=data.text_pair_column, label_column=data.label_column,
                      label_names=data.label_names, seed=data.seed)
    if not _carved(raw):
        return None
    rows = _all_rows(raw)
    total = len(rows)
    keep = stratified_subset(rows["label"].to_numpy(), data.max_train, np.random.default_rng(data.seed), "train",
                             name="max_train")
    rows = rows.iloc[keep].reset_index(drop=True)
    labels = rows["label"].to_numpy(np.int64)
    counts = np.bincount(labels, minlength=len(raw.label_names))
    need = _min_per_class(folds)
    small = [i for i, c in enumerate(counts) if 0 < c < need]
    if small:
        i = small[0]
        raise LayerinfError(
            f"class '{raw.label_names[i]}' has {int(counts[i])} row(s): too few for folds={folds} (each fold's "
            f"model needs 2 rows of every class to train on; {need} rows per class needed)",
            "use fewer folds (--folds 2), add rows of that class, or --folds 1 (one carved-out validation set)")
    fold_of = np.full(len(rows), -1, dtype=np.int64)
    split = StratifiedKFold(folds, shuffle=True, random_state=int(data.seed)).split(labels, labels)
    for k, (_, held) in enumerate(split):
        fold_of[held] = k
    return dict(rows=rows, fold_of=fold_of, folds=int(folds), total=total, label_names=list(raw.label_names),
                task=raw.task, source=raw.source, info=dict(raw.info))


def instruction_folds(data: DataConfig, folds: int, raw) -> dict | None:
    """Instruction rows (``raw``: the loaded ``SFTRaw``): a seeded random ``max_train`` subset cut into ``KFold``
    folds, stratified by response when the responses are class words with at least K rows each."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from layerinf.data.sft import MIN_ROWS
    from layerinf.data.sft_prepared import class_words

    if not _carved(raw):
        return None
    rows = _all_rows(raw)
    total = len(rows)
    if data.max_train is not None and data.max_train < total:
        keep = np.sort(np.random.default_rng(int(data.seed)).choice(total, size=int(data.max_train), replace=False))
        rows = rows.iloc[keep].reset_index(drop=True)
    n, k = len(rows), int(folds)
    if n < max(2 * k, MIN_ROWS):
        capped = f" (of {total:,}, after --max-train)" if n < total else ""
        raise LayerinfError(f"{n} row(s){capped} are too few for folds={k} (every fold needs 2 rows as a validation "
                            f"set; {max(2 * k, MIN_ROWS)} rows needed)",
                            "use fewer folds (--folds 2), add rows, or --folds 1 (one carved-out validation set)")
    responses = rows["response"].astype(str).tolist()
    words = class_words(responses)
    lookup = {w: i for i, w in enumerate(words or [])}
    ids = np.array([lookup[r] for r in responses], dtype=np.int64) if words else None
    if ids is not None and np.bincount(ids).min() >= k:
        split = StratifiedKFold(k, shuffle=True, random_state=int(data.seed)).split(ids, ids)
    else:
        split = KFold(k, shuffle=True, random_state=int(data.seed)).split(np.arange(n))
    fold_of = np.full(n, -1, dtype=np.int64)
    for i, (_, held) in enumerate(split):
        fold_of[held] = i
    return dict(rows=rows, fold_of=fold_of, folds=k, total=total, label_names=list(words or []), task="sft",
                source=raw.source, info=dict(raw.info))
