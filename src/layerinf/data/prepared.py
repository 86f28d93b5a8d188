"""Prepared data: the train / influence / test tables of a run, made by ``prepare`` and stored by
``save_prepared`` as ``data/<split>.parquet`` and ``data/meta.json`` (names from ``layerinf.store.layout``)."""

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

from layerinf.data.checks import bool_arg, count_arg, fraction_arg, names_arg
from layerinf.data.labels import check_raw
from layerinf.data.loaders import load_source
from layerinf.data.noise import (AMBIGUOUS_FOLDS, ambiguous_noise, class_conditional_noise,
                                  classification_noise_kind, inject_noise, rate_entries)
from layerinf.data.raw import RawData
from layerinf.data.splits import make_splits
from layerinf.errors import LayerinfError
from layerinf.store.layout import DATA_META_FILE, SPLITS, split_file

SPLIT_COLUMNS = ["idx", "source_idx", "text", "text_pair", "label", "clean_label", "noisy"]
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
    noise_kind: str = "uniform",
    noise_rates: Any = None,
    infl_equals_test: bool = False,
    dev_fraction: float = 0.2,
) -> PreparedData:
    """Load ``source`` (see ``load_source``; a ``RawData`` is used as is), split it and flip training labels.

    Train: stratified, at most ``max_train``; exactly ⌊noise_rate·n⌋ labels flipped (``noisy`` marks them,
    ``clean_label`` keeps the truth). Dev: stratified, at most ``max_dev``, halved into ``infl`` and ``test``
    (both the whole dev set with ``infl_equals_test``, the paper's RTE quirk). ``max_length``, if given,
    truncates texts to that many whitespace-separated words (tokenisation truncates again later).

    ``noise_kind`` (``layerinf.data.noise``): ``uniform`` (``auto``; the above), ``class_conditional`` (exactly
    ⌊r_c·n_c⌋ rows of each class ``c`` by ``noise_rates``, which replaces ``noise_rate``) or ``ambiguous`` (the
    ⌊noise_rate·n⌋ rows a cross-fitted TF-IDF classifier trained on the clean labels finds least certain).
    """
    # every option is checked before a large source is loaded
    if isinstance(noise_rate, (bool, np.bool_)) or not isinstance(noise_rate, (int, float, np.number)):
        raise LayerinfError(f"noise_rate={noise_rate!r} is not a number", "use a fraction in [0, 1), e.g. 0.2")
    inject_noise(np.zeros(1, np.int64), noise_rate)  # the range check (noise rate … outside [0, 1))
    noise_kind = classification_noise_kind(noise_kind)
    if noise_kind == "class_conditional" and noise_rates is None:
        raise LayerinfError("noise_kind class_conditional needs noise_rates", "e.g. noise_rates: {0: 0.35, 1: 0.05}")
    if noise_kind != "class_conditional" and noise_rates is not None:
        raise LayerinfError(f"noise_rates is given but noise_kind is {noise_kind}",
                            "set noise_kind: class_conditional, or drop noise_rates")
    rate_entries(noise_rates)  # syntax and ranges, before the source is loaded
    max_train = count_arg("max_train", max_train, example="4500")
    max_dev = count_arg("max_dev", max_dev, example="1000")
    max_length = count_arg("max_length", max_length, example="128")
    seed = count_arg("seed", seed, minimum=0, allow_none=False, example="0")
    infl_equals_test = bool_arg("infl_equals_test", infl_equals_test)
    dev_fraction = fraction_arg("dev_fraction", dev_fraction, lo_open=True, hi_open=True, example="0.2")
    label_names = names_arg(label_names)
    if isinstance(source, RawData):
        raw = check_raw(source)
    else:
        raw = check_raw(load_source(
            source, task=task, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
            dev_source=dev_source, label_names=label_names, seed=seed, dev_fraction=dev_fraction,
        ))
    k = len(raw.label_names)
    idx = make_splits(raw.train["label"].to_numpy(), raw.dev["label"].to_numpy(), max_train=max_train,
                      max_dev=max_dev, seed=seed, infl_equals_test=infl_equals_test)
    clean = raw.train["label"].to_numpy(dtype=np.int64)[idx.train]
    extra_meta: dict = {}
    if noise_kind == "uniform":
        noisy_labels, mask = inject_noise(clean, noise_rate, num_classes=k, seed=seed)
    elif noise_kind == "class_conditional":
        noisy_labels, mask = class_conditional_noise(clean, noise_rates, list(raw.label_names), seed=seed)
        extra_meta = {"noise_kind": noise_kind, "noise_rates": [f"{k_}:{r:g}" for k_, r in rate_entries(noise_rates)]}
    else:
        part = raw.train.iloc[idx.train]
        texts = [t if not isinstance(pair, str) else f"{t} || {pair}"
                 for t, pair in zip(part["text"].astype(str), part["text_pair"])]
        noisy_labels, mask, _ = ambiguous_noise(clean, texts, noise_rate, k, seed=seed)
        extra_meta = {"noise_kind": noise_kind, "noise_model": f"TF-IDF 1-2-grams + logistic regression, "
                      f"{AMBIGUOUS_FOLDS}-fold out of sample on the clean labels"}
    train = _table(raw.train, idx.train, noisy_labels, mask, max_length)
    infl = _table(raw.dev, idx.infl, max_words=max_length)
    test = _table(raw.dev, idx.test, max_words=max_length)
    meta = {
        "format": FORMAT,
        "source": raw.source,
        "task": raw.task,
        "label_names": list(raw.label_names),
        "seed": int(seed),
        # class_conditional: the realised overall rate (noise_rates replaces noise_rate)
        "noise_rate": (float(mask.mean() if mask.size else 0) if noise_kind == "class_conditional"
                       else float(noise_rate)),
        **extra_meta,
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


def write_split_tables(data, folder: Path, columns: Sequence[str], fix: str) -> None:
    """``<split>.parquet`` of each split of ``data`` (its ``columns``, each file atomically) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        df = getattr(data, name)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise LayerinfError(f"the {name} split lacks column(s) {missing}", fix)
        _write_parquet(df[list(columns)], folder / split_file(name))


def save_prepared(data: PreparedData, folder: str | os.PathLike) -> Path:
    """Write ``<split>.parquet`` per split and ``meta.json`` into ``folder`` (each file written atomically)."""
    from layerinf.store.rundir import atomic_write_json

    folder = Path(folder)
    write_split_tables(data, folder, SPLIT_COLUMNS, "build splits with layerinf.data.prepare")
    meta = {**data.meta, "label_names": list(data.label_names), "task": data.task, "format": FORMAT}
    atomic_write_json(folder / DATA_META_FILE, meta)
    return folder


def read_split_tables(folder: Path, columns: Sequence[str]) -> dict[str, pd.DataFrame]:
    """``<split>.parquet`` of every split in ``folder``, reduced to ``columns`` (a copy); a missing file, an
    unreadable one or a missing column is a one-line error saying to redo ``prepare``."""
    tables = {}
    for name in SPLITS:
        path = Path(folder) / split_file(name)
        if not path.is_file():
            raise LayerinfError(f"missing {path}", "rerun prepare with --force")
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - corrupt parquet
            raise LayerinfError(f"cannot read {path}: {type(exc).__name__}", "rerun prepare with --force") from None
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise LayerinfError(f"{path} lacks column(s) {missing}", "rerun prepare with --force")
        tables[name] = df[list(columns)].copy()
    return tables


def load_prepared(folder: str | os.PathLike) -> PreparedData:
    """Read what ``save_prepared`` wrote (checks files and columns; restores dtypes)."""
    folder = Path(folder)
    meta_path = folder / DATA_META_FILE
    if not meta_path.is_file():
        raise LayerinfError(f"no {DATA_META_FILE} in {folder}", "run `layerinf prepare` (or data.save_prepared) first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LayerinfError(f"{meta_path} is not valid JSON ({exc.msg})", "rerun prepare with --force") from None
    except UnicodeDecodeError:
        raise LayerinfError(f"{meta_path} is not UTF-8 text", "rerun prepare with --force") from None
    if not isinstance(meta, dict):
        raise LayerinfError(f"{meta_path} holds a JSON {type(meta).__name__}, not an object",
                            "rerun prepare with --force")
    tables = {}
    for name, df in read_split_tables(folder, SPLIT_COLUMNS).items():
        for col in ("idx", "source_idx", "label", "clean_label"):
            df[col] = df[col].astype(np.int64)
        df["noisy"] = df["noisy"].astype(bool)
        df["text"] = df["text"].astype(object)
        df["text_pair"] = df["text_pair"].astype(object).where(df["text_pair"].notna(), None)
        tables[name] = df
    return PreparedData(**tables, label_names=list(meta.get("label_names") or []), task=meta.get("task"), meta=meta)
