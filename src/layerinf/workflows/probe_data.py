"""The advisor's probe and fold data (``layerinf advise``, docs/advisor.md).

Classification: OUT/data's splits are written as JSONL copies (``OUT/probes/source/``) and read back by each
probe and fold run with no cap: a cross-fitted probe k (the default) reads the rows of every fold but k
(``probe-fold<k>.jsonl``), a probe without folds the whole training set (``all.jsonl``), and plants its flips in
them.
Instruction (SFT) data: each probe re-prepares your source with the probe's seed (its own train / dev split, the
same sizes) and plants ``data.noise_kind`` response noise (class words replaced, or responses swapped).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from layerinf.config import DataConfig
from layerinf.store.rundir import atomic_write_bytes


def write_source(prepared, rows: np.ndarray | None, path: Path, split: str = "train") -> Path:
    """Rows of a prepared split as a JSONL file (``text``, ``text_pair`` for pair tasks, ``label`` by name), in
    order, so that a run reading it with no cap has the same training index (written only when changed)."""
    df = getattr(prepared, split) if split != "dev" else pd.concat([prepared.infl, prepared.test], ignore_index=True)
    df = df if rows is None else df.iloc[rows]
    out = pd.DataFrame({"text": df["text"].astype(str)})
    if prepared.train["text_pair"].notna().any():
        out["text_pair"] = df["text_pair"].fillna("").astype(str)
    out["label"] = [prepared.label_names[i] for i in df["label"].to_numpy(np.int64)]
    text = out.to_json(orient="records", lines=True, force_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_bytes(path, text.encode("utf-8"))
    return path


def source_config(prepared, train_file: Path, dev_file: Path, *, noise_rate: float, seed: int) -> DataConfig:
    """A DataConfig reading JSONL copies: every row kept, ``noise_rate`` of the training labels flipped."""
    pair = bool(prepared.train["text_pair"].notna().any())
    return DataConfig(source=str(train_file), dev_source=str(dev_file), text_column="text",
                      text_pair_column="text_pair" if pair else None, label_column="label",
                      label_names=list(prepared.label_names), max_train=None, max_dev=None,
                      noise_rate=float(noise_rate), seed=int(seed))


def probe_seeds(data_seed: int, probes: int) -> list[int]:
    return [int(data_seed) + 1 + i for i in range(int(probes))]


def probe_config(base, data: DataConfig, train_file: Path | None, dev_file: Path | None, *, noise_rate: float,
                 seed: int) -> DataConfig:
    """The DataConfig of probe ``seed``: OUT/data's copies with ``noise_rate`` of the training labels flipped, or
    for instruction data the user's source with the probe's seed and ``noise_rate`` response noise."""
    from layerinf.stages.task import task_of

    if task_of(base).class_probabilities:  # labels to flip in a copy of the splits
        return source_config(base, train_file, dev_file, noise_rate=noise_rate, seed=seed)
    return dataclasses.replace(data, noise_rate=float(noise_rate), seed=int(seed))


__all__ = ["probe_config", "probe_seeds", "source_config", "write_source"]
