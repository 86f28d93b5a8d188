"""Data layer: load a source, split it (train / influence / test), inject label noise, save and reload.

>>> from layerinf.data import prepare
>>> data = prepare("demo", noise_rate=0.2, seed=0)
>>> data.train.columns.tolist()
['idx', 'source_idx', 'text', 'text_pair', 'label', 'clean_label', 'noisy']
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from layerinf.errors import LayerinfError
from layerinf.data.demo import DEMO_LABELS, load_demo
from layerinf.data.loaders import (
    GLUE_TASKS,
    RawData,
    carve_dev,
    encode_labels,
    from_hf_dataset,
    glue_task_key,
    load_glue,
    load_hf,
    load_source,
    load_table,
    parse_hf,
    read_glue_tsv,
    read_table,
)
from layerinf.data.noise import inject_noise, noise_count
from layerinf.data.splits import SplitIndices, make_splits, split_infl_test, stratified_subset

SPLIT_COLUMNS = ["idx", "source_idx", "text", "text_pair", "label", "clean_label", "noisy"]
SPLITS = ("train", "infl", "test")
FORMAT = "layerinf.data/1"


@dataclass
class PreparedData:
    """The three split tables (columns ``SPLIT_COLUMNS``), label names, task name and a ``meta`` dict."""

    train: pd.DataFrame
    infl: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]
    task: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def _truncate(s: pd.Series, max_words: int | None) -> pd.Series:
    if max_words is None:
        return s
    return s.map(lambda t: t if t is None else " ".join(str(t).split()[:max_words]))


def _table(raw: pd.DataFrame, rows: np.ndarray, labels: np.ndarray | None = None, noisy: np.ndarray | None = None,
           max_words: int | None = None) -> pd.DataFrame:
    part = raw.iloc[rows].reset_index(drop=True)
    clean = part["label"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "idx": np.arange(len(part), dtype=np.int64),
            "source_idx": part["source_idx"].to_numpy(dtype=np.int64),
            "text": _truncate(part["text"], max_words).astype(object),
            "text_pair": _truncate(part["text_pair"], max_words).astype(object),
            "label": clean if labels is None else np.asarray(labels, dtype=np.int64),
            "clean_label": clean,
            "noisy": np.zeros(len(part), bool) if noisy is None else np.asarray(noisy, dtype=bool),
        }
    )


def _counts(df: pd.DataFrame, col: str, k: int) -> list[int]:
    return np.bincount(df[col].to_numpy(dtype=np.int64), minlength=k).tolist()


def prepare(
    source: str | RawData = "demo",
    *,
    task: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    dev_source: str | None = None,
    label_names: Sequence[str] | None = None,
    max_train: int | None = 4500,
    max_dev: int | None = 1000,
    noise_rate: float = 0.2,
    seed: int = 0,
    max_length: int | None = None,
    infl_equals_test: bool = False,
    dev_fraction: float = 0.2,
) -> PreparedData:
    """Load ``source`` (see ``load_source``; a ``RawData`` is used as is), split it and flip training labels.

    Train: stratified, at most ``max_train``; exactly ⌊noise_rate·n⌋ labels flipped (``noisy`` marks them,
    ``clean_label`` keeps the truth). Dev: stratified, at most ``max_dev``, halved into ``infl`` and ``test``
    (both the whole dev set with ``infl_equals_test``, the paper's RTE quirk). ``max_length``, if given,
    truncates texts to that many whitespace-separated words (tokenisation truncates again later).
    """
    if not 0.0 <= float(noise_rate) < 1.0:  # fail before loading a large source
        inject_noise(np.zeros(1, np.int64), noise_rate)
    if max_length is not None and int(max_length) < 1:
        raise LayerinfError(f"max_length={max_length} must be positive", "give a word count such as 128, or None")
    raw = source if isinstance(source, RawData) else load_source(
        source, task=task, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
        dev_source=dev_source, label_names=label_names, seed=seed, dev_fraction=dev_fraction,
    )
    k = len(raw.label_names)
    idx = make_splits(raw.train["label"].to_numpy(), raw.dev["label"].to_numpy(), max_train=max_train,
                      max_dev=max_dev, seed=seed, infl_equals_test=infl_equals_test)
    clean = raw.train["label"].to_numpy(dtype=np.int64)[idx.train]
    noisy_labels, mask = inject_noise(clean, noise_rate, num_classes=k, seed=seed)
    train = _table(raw.train, idx.train, noisy_labels, mask, max_length)
    infl = _table(raw.dev, idx.infl, max_words=max_length)
    test = _table(raw.dev, idx.test, max_words=max_length)
    meta = {
        "format": FORMAT,
        "source": raw.source,
        "task": raw.task,
        "label_names": list(raw.label_names),
        "seed": int(seed),
        "noise_rate": float(noise_rate),
        "max_train": max_train,
        "max_dev": max_dev,
        "max_length": max_length,
        "infl_equals_test": bool(infl_equals_test),
        "dev_origin": raw.info.get("dev_origin"),
        "columns": raw.info.get("columns"),
        "pair_task": bool(raw.train["text_pair"].notna().any()),
        "counts": {
            "source_train": len(raw.train),
            "source_dev": len(raw.dev),
            "train": len(train),
            "infl": len(infl),
            "test": len(test),
            "noisy": int(mask.sum()),
            "train_classes": _counts(train, "clean_label", k),
            "train_noisy_classes": _counts(train, "label", k),
            "infl_classes": _counts(infl, "label", k),
            "test_classes": _counts(test, "label", k),
        },
    }
    return PreparedData(train=train, infl=infl, test=test, label_names=list(raw.label_names), task=raw.task, meta=meta)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_prepared(data: PreparedData, folder: str | os.PathLike) -> Path:
    """Write ``{train,infl,test}.parquet`` and ``meta.json`` into ``folder`` (each file written atomically)."""
    from layerinf.store.rundir import atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        df = getattr(data, name)
        missing = [c for c in SPLIT_COLUMNS if c not in df.columns]
        if missing:
            raise LayerinfError(f"the {name} split lacks column(s) {missing}",
                                "build splits with layerinf.data.prepare")
        _write_parquet(df[SPLIT_COLUMNS], folder / f"{name}.parquet")
    meta = {**data.meta, "label_names": list(data.label_names), "task": data.task, "format": FORMAT}
    atomic_write_json(folder / "meta.json", meta)
    return folder


def load_prepared(folder: str | os.PathLike) -> PreparedData:
    """Read what ``save_prepared`` wrote (checks files and columns; restores dtypes)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise LayerinfError(f"no meta.json in {folder}", "run `layerinf prepare` (or data.save_prepared) first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LayerinfError(f"{meta_path} is not valid JSON ({exc.msg})", "rerun prepare with --force") from None
    tables = {}
    for name in SPLITS:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise LayerinfError(f"missing {path}", "rerun prepare with --force")
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - corrupt parquet
            raise LayerinfError(f"cannot read {path}: {type(exc).__name__}", "rerun prepare with --force") from None
        missing = [c for c in SPLIT_COLUMNS if c not in df.columns]
        if missing:
            raise LayerinfError(f"{path} lacks column(s) {missing}", "rerun prepare with --force")
        df = df[SPLIT_COLUMNS].copy()
        for col in ("idx", "source_idx", "label", "clean_label"):
            df[col] = df[col].astype(np.int64)
        df["noisy"] = df["noisy"].astype(bool)
        df["text"] = df["text"].astype(object)
        df["text_pair"] = df["text_pair"].astype(object).where(df["text_pair"].notna(), None)
        tables[name] = df
    return PreparedData(**tables, label_names=list(meta.get("label_names") or []), task=meta.get("task"), meta=meta)


__all__ = [
    "DEMO_LABELS",
    "GLUE_TASKS",
    "PreparedData",
    "RawData",
    "SPLIT_COLUMNS",
    "SplitIndices",
    "carve_dev",
    "encode_labels",
    "from_hf_dataset",
    "glue_task_key",
    "inject_noise",
    "load_demo",
    "load_glue",
    "load_hf",
    "load_prepared",
    "load_source",
    "load_table",
    "make_splits",
    "noise_count",
    "parse_hf",
    "prepare",
    "read_glue_tsv",
    "read_table",
    "save_prepared",
    "split_infl_test",
    "stratified_subset",
]
