"""Prepared SFT data: seeded train / influence / test splits of an ``SFTRaw``, response noise with a ground-truth
mask, and storage as ``<split>.parquet`` + ``meta.json`` (names from ``layerinf.store.layout``).

Split tables have columns ``SFT_COLUMNS``: ``idx`` (0..n-1), ``source_idx``, ``messages`` (the prompt's turns,
JSON), ``prompt`` (display text), ``response`` (what the loss uses: the noisy one in train), ``clean_response``
(before noise) and ``noisy`` (only ever True in train).

Noise kinds (``noise_kind``): exactly ``⌊noise_rate·n⌋`` training rows, chosen uniformly without replacement,
get another response:

* ``"label"`` — classification as generation: the responses are a small set of class words (``class_words``:
  2..20 distinct responses of at most 3 words each, at most half as many as there are rows, sorted;
  ``"negative"``/``"positive"`` …), detected over the train and dev parts. A noisy row's response becomes a
  different class word, uniformly among the others (binary: the other one).
* ``"swap"`` — a noisy row gets another noisy row's response: a derangement of the chosen rows' responses in
  which no row keeps its own response or receives an identical string (a draw where that is impossible — one
  response held by more than half the chosen rows — is redrawn; never possible → error).
* ``"auto"`` — ``"label"`` when the responses are class words, else ``"swap"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerinf.data.checks import count_arg, fraction_arg
from layerinf.data.noise import inject_noise
from layerinf.data.sft import DEMO_SFT, SFTRaw, check_sft_raw, load_sft
from layerinf.data.sft_noise import (  # noqa: F401 (re-exported)
    MAX_CLASS_WORDS, MAX_CLASSES, NOISE_KINDS, _class_words_or_fail, class_words, inject_sft_noise, label_noise,
    noise_kind_arg, swap_noise)
from layerinf.data.splits import SplitIndices
from layerinf.errors import LayerinfError
from layerinf.store.layout import DATA_META_FILE

SFT_COLUMNS = ["idx", "source_idx", "messages", "prompt", "response", "clean_response", "noisy"]
SFT_FORMAT = "layerinf.sft/1"


@dataclass
class SFTPrepared:
    """The three SFT split tables (columns ``SFT_COLUMNS``) and ``meta`` (``class_words``, ``noise_kind`` …)."""

    train: pd.DataFrame
    infl: pd.DataFrame
    test: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def class_words(self) -> list[str] | None:
        """The class words of classification-as-generation data (sorted), else None."""
        words = self.meta.get("class_words")
        return list(words) if words else None

    @property
    def label_names(self) -> list[str]:
        """The class words as label names (empty for free-form responses), like ``PreparedData.label_names``."""
        return self.class_words or []

    @property
    def task(self) -> str:
        return "sft"


# ------------------------------------------------------------------------------------------------ splits


def sft_splits(n_train: int, n_dev: int, *, max_train: int | None = 4500, max_dev: int | None = 1000,
               seed: int = 0) -> SplitIndices:
    """Seeded, unstratified: train capped at ``max_train`` (a random subset, file order kept), dev capped at
    ``max_dev`` and halved at random into ``infl`` (the larger half when odd) and ``test``."""
    max_train = count_arg("max_train", max_train, example="4500")
    max_dev = count_arg("max_dev", max_dev, example="1000")
    rng = np.random.default_rng(count_arg("seed", seed, minimum=0, allow_none=False, example="0"))
    if n_train < 1:
        raise LayerinfError("the train split is empty", "check the data source")
    train = np.arange(n_train) if max_train is None or max_train >= n_train else \
        np.sort(rng.choice(n_train, size=max_train, replace=False))
    dev = np.arange(n_dev) if max_dev is None or max_dev >= n_dev else \
        np.sort(rng.choice(n_dev, size=max_dev, replace=False))
    if dev.size < 2:
        cap = f" after max_dev={max_dev}" if max_dev is not None and max_dev < n_dev else ""
        raise LayerinfError(f"{dev.size} dev example(s){cap} cannot be halved into an influence and a test set",
                            "raise max_dev to at least 2" if cap else "give a dev part with at least 2 rows")
    order = rng.permutation(dev.size)
    half = dev.size - dev.size // 2
    return SplitIndices(train=train, infl=np.sort(dev[order[:half]]), test=np.sort(dev[order[half:]]))


def _table(raw: pd.DataFrame, rows: np.ndarray, responses: list[str] | None = None,
           noisy: np.ndarray | None = None) -> pd.DataFrame:
    part = raw.iloc[rows].reset_index(drop=True)
    clean = part["response"].astype(str).tolist()
    return pd.DataFrame({
        "idx": np.arange(len(part), dtype=np.int64),
        "source_idx": part["source_idx"].to_numpy(dtype=np.int64),
        "messages": part["messages"].astype(str).astype(object),
        "prompt": part["prompt"].astype(str).astype(object),
        "response": pd.Series(clean if responses is None else list(responses), dtype=object),
        "clean_response": pd.Series(clean, dtype=object),
        "noisy": np.zeros(len(part), bool) if noisy is None else np.asarray(noisy, dtype=bool),
    })


def prepare_sft(
    source: str | os.PathLike | SFTRaw = DEMO_SFT,
    *,
    prompt_column: str | None = None,
    response_column: str | None = None,
    messages_column: str | None = None,
    dev_source: str | os.PathLike | None = None,
    max_train: int | None = 4500,
    max_dev: int | None = 1000,
    noise_rate: float = 0.2,
    noise_kind: str = "auto",
    seed: int = 0,
    dev_fraction: float = 0.2,
) -> SFTPrepared:
    """Load ``source`` (``load_sft``; an ``SFTRaw`` is used as is), split it and inject response noise."""
    if isinstance(noise_rate, (bool, np.bool_)) or not isinstance(noise_rate, (int, float, np.number)):
        raise LayerinfError(f"noise_rate={noise_rate!r} is not a number", "use a fraction in [0, 1), e.g. 0.2")
    inject_noise(np.zeros(1, np.int64), noise_rate)  # the range check
    noise_kind = noise_kind_arg(noise_kind)
    max_train = count_arg("max_train", max_train, example="4500")
    max_dev = count_arg("max_dev", max_dev, example="1000")
    seed = count_arg("seed", seed, minimum=0, allow_none=False, example="0")
    dev_fraction = fraction_arg("dev_fraction", dev_fraction, lo_open=True, hi_open=True, example="0.2")
    if isinstance(source, SFTRaw):
        raw = check_sft_raw(source)
    else:
        raw = load_sft(source, prompt_column=prompt_column, response_column=response_column,
                       messages_column=messages_column, dev_source=dev_source, seed=seed, dev_fraction=dev_fraction)
    idx = sft_splits(len(raw.train), len(raw.dev), max_train=max_train, max_dev=max_dev, seed=seed)
    words = class_words(raw.train["response"].tolist() + raw.dev["response"].tolist())
    clean = raw.train["response"].astype(str).to_numpy(dtype=object)[idx.train].tolist()
    if noise_kind == "label" and words is None:
        _class_words_or_fail(raw.train["response"].tolist() + raw.dev["response"].tolist())
    noisy, mask, kind = inject_sft_noise(clean, noise_rate, noise_kind, seed, words=words)
    train = _table(raw.train, idx.train, noisy, mask)
    infl, test = _table(raw.dev, idx.infl), _table(raw.dev, idx.test)
    meta = _meta(raw, train, infl, test, seed=seed, noise_rate=float(noise_rate), noise_kind=kind, words=words,
                 max_train=max_train, max_dev=max_dev, noisy=int(mask.sum()))
    return SFTPrepared(train=train, infl=infl, test=test, meta=meta)


def prepare_sft_fold(raw: SFTRaw, *, max_dev: int | None = 1000, seed: int = 0) -> SFTPrepared:
    """One cross-fitting fit's SFT data (like ``data.prepare(..., infl_equals_test=True)`` for classification):
    train = every training row of ``raw`` (no cap, no noise), influence = test = its dev rows, capped at
    ``max_dev`` (a seeded random subset, file order kept)."""
    raw = check_sft_raw(raw)
    max_dev = count_arg("max_dev", max_dev, example="1000")
    seed = count_arg("seed", seed, minimum=0, allow_none=False, example="0")
    n_dev = len(raw.dev)
    dev = np.arange(n_dev) if max_dev is None or max_dev >= n_dev else \
        np.sort(np.random.default_rng(seed).choice(n_dev, size=max_dev, replace=False))
    if dev.size < 2:
        raise LayerinfError(f"{dev.size} dev example(s) after max_dev={max_dev} are too few for a validation set",
                            "raise max_dev to at least 2")
    words = class_words(raw.train["response"].tolist() + raw.dev["response"].tolist())
    train = _table(raw.train, np.arange(len(raw.train)))
    infl, test = _table(raw.dev, dev), _table(raw.dev, dev)
    meta = _meta(raw, train, infl, test, seed=seed, noise_rate=0.0, noise_kind="label" if words else "swap",
                 words=words, max_train=None, max_dev=max_dev, noisy=0)
    return SFTPrepared(train=train, infl=infl, test=test, meta={**meta, "infl_equals_test": True})


def _meta(raw: SFTRaw, train, infl, test, *, seed: int, noise_rate: float, noise_kind: str, words, max_train,
          max_dev, noisy: int) -> dict[str, Any]:
    """``meta.json`` of prepared SFT data: where the rows came from, the noise, the caps and the counts."""
    return {
        "format": SFT_FORMAT, "task_kind": "sft", "source": raw.source, "layout": raw.info.get("layout"),
        "columns": raw.info.get("columns"), "dev_origin": raw.info.get("dev_origin"), "seed": int(seed),
        "noise_rate": noise_rate, "noise_kind": noise_kind, "class_words": words, "max_train": max_train,
        "max_dev": max_dev,
        "counts": {"source_train": len(raw.train), "source_dev": len(raw.dev), "train": len(train),
                   "infl": len(infl), "test": len(test), "noisy": noisy},
    }


# ------------------------------------------------------------------------------------------------ storage


def save_sft_prepared(data: SFTPrepared, folder: str | os.PathLike) -> Path:
    """Write ``<split>.parquet`` per split and ``meta.json`` into ``folder`` (each file written atomically)."""
    from layerinf.data.prepared import write_split_tables
    from layerinf.store.rundir import atomic_write_json

    folder = Path(folder)
    write_split_tables(data, folder, SFT_COLUMNS, "build splits with layerinf.data.sft_prepared.prepare_sft")
    atomic_write_json(folder / DATA_META_FILE, {**data.meta, "format": SFT_FORMAT})
    return folder


def is_sft_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder``'s meta.json says it holds SFT data (False when absent or unreadable)."""
    try:
        meta = json.loads((Path(folder) / DATA_META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == SFT_FORMAT


def load_sft_prepared(folder: str | os.PathLike) -> SFTPrepared:
    """Read what ``save_sft_prepared`` wrote (checks the format, files and columns; restores dtypes)."""
    folder = Path(folder)
    meta_path = folder / DATA_META_FILE
    if not meta_path.is_file():
        raise LayerinfError(f"no {DATA_META_FILE} in {folder}", "prepare the SFT data first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise LayerinfError(f"{meta_path} is not valid JSON", "rerun prepare with --force") from None
    if not isinstance(meta, dict) or meta.get("format") != SFT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise LayerinfError(f"{folder} holds {got!r} data, not SFT data ({SFT_FORMAT})",
                            "load it with layerinf.data.load_prepared, or prepare SFT data there")
    from layerinf.data.prepared import read_split_tables

    tables = {}
    for name, df in read_split_tables(folder, SFT_COLUMNS).items():
        for col in ("idx", "source_idx"):
            df[col] = df[col].astype(np.int64)
        for col in ("messages", "prompt", "response", "clean_response"):
            df[col] = df[col].astype(str).astype(object)
        df["noisy"] = df["noisy"].astype(bool)
        tables[name] = df
    return SFTPrepared(**tables, meta=meta)


__all__ = [
    "MAX_CLASSES",
    "MAX_CLASS_WORDS",
    "NOISE_KINDS",
    "SFTPrepared",
    "SFT_COLUMNS",
    "SFT_FORMAT",
    "class_words",
    "inject_sft_noise",
    "is_sft_folder",
    "label_noise",
    "load_sft_prepared",
    "noise_kind_arg",
    "prepare_sft",
    "prepare_sft_fold",
    "save_sft_prepared",
    "sft_splits",
    "swap_noise",
]
