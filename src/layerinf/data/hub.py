"""Hugging Face datasets: ``hf:NAME[/CONFIG]`` through ``datasets.load_dataset``, or a ``DatasetDict`` you hold."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from layerinf.data.checks import column_arg, names_arg
from layerinf.data.glue import GLUE_TASKS, glue_task_key
from layerinf.data.labels import carve_dev, check_raw, encode_labels
from layerinf.data.raw import RawData, nonempty_rows, raw_frame
from layerinf.data.tables import _LABEL_GUESSES, _TEXT_GUESSES, _pick
from layerinf.errors import LayerinfError

# default (text, pair, label) columns of the GLUE configs on the Hub
_HF_GLUE = {
    "sst2": ("sentence", None, "label"),
    "cola": ("sentence", None, "label"),
    "mrpc": ("sentence1", "sentence2", "label"),
    "rte": ("sentence1", "sentence2", "label"),
    "wnli": ("sentence1", "sentence2", "label"),
    "qnli": ("question", "sentence", "label"),
    "qqp": ("question1", "question2", "label"),
    "mnli": ("premise", "hypothesis", "label"),
    "stsb": ("sentence1", "sentence2", "label"),
}
_HF_WITH_CONFIGS = {"glue", "nyu-mll/glue", "super_glue", "aps/super_glue", "tweet_eval", "cardiffnlp/tweet_eval"}
_DEV_SPLITS = ("validation", "validation_matched", "valid", "dev", "test")


def parse_hf(spec: str) -> tuple[str, str | None]:
    """``hf:NAME``, ``hf:NAME/CONFIG``, ``hf:ORG/NAME/CONFIG`` or ``hf:NAME:CONFIG`` → (name, config).

    ``a/b`` is NAME/CONFIG when ``a`` is a known multi-config dataset (``glue``…), else the Hub id ``a/b``.
    """
    body = spec[3:] if spec.lower().startswith("hf:") else spec
    body = body.strip().strip("/")
    if not body:
        raise LayerinfError(f"empty Hugging Face dataset name in {spec!r}", "write hf:NAME or hf:NAME/CONFIG")
    if ":" in body:
        name, config = body.split(":", 1)
        return name, config or None
    parts = body.split("/")
    if len(parts) == 1:
        return body, None
    if len(parts) == 2:
        return (parts[0], parts[1]) if parts[0].lower() in _HF_WITH_CONFIGS else (body, None)
    return "/".join(parts[:2]), "/".join(parts[2:])


def _hf_frame(ds, text: str, pair: str | None, label: str, where: str) -> pd.DataFrame:
    cols = list(ds.column_names)
    for c, flag in ((text, "text_column"), (pair, "text_pair_column"), (label, "label_column")):
        if c is not None and c not in cols:
            raise LayerinfError(f"column {c!r} not found in {where}; available columns: {', '.join(cols)}",
                                f"pass the right name with {flag}")
    if len(ds) == 0:
        raise LayerinfError(f"{where} has no rows", "use a dataset (or split) with data")
    return ds.to_pandas()


def from_hf_dataset(
    dsd,
    *,
    name: str = "dataset",
    config: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    seed: int = 0,
    dev_fraction: float = 0.2,
) -> RawData:
    """Turn a ``datasets.DatasetDict`` into ``RawData`` (train + validation/test split, else a dev carve).

    Rows with label -1 (hidden test labels) are dropped, and so are rows with an empty text (with a warning).
    """
    text_column = column_arg("text_column", text_column)
    text_pair_column = column_arg("text_pair_column", text_pair_column)
    label_column = column_arg("label_column", label_column)
    label_names = names_arg(label_names)
    where = f"hf:{name}" + (f"/{config}" if config else "")
    splits = list(dsd.keys())
    if "train" not in splits:
        raise LayerinfError(f"{where} has no 'train' split (splits: {', '.join(splits)})",
                            "use a dataset with a train split")
    glue_key = glue_task_key(config) if name.lower() in ("glue", "nyu-mll/glue") else None
    defaults = _HF_GLUE.get(glue_key or "", (None, None, None))
    train_ds = dsd["train"]
    empty = pd.DataFrame(columns=list(train_ds.column_names))
    text = text_column or defaults[0] or _pick(empty, None, _TEXT_GUESSES, "text", "text_column", where)
    pair = text_pair_column or defaults[1]
    label = label_column or defaults[2] or _pick(empty, None, _LABEL_GUESSES, "label", "label_column", where)
    dev_split = None
    for s in _DEV_SPLITS:
        if s in splits:
            labs = dsd[s][label] if label in dsd[s].column_names else []
            if len(labs) and not all(v == -1 for v in labs):  # GLUE test splits carry label -1
                dev_split = s
                break
    frames = {"train": _hf_frame(train_ds, text, pair, label, f"{where} (train)")}
    if dev_split:
        frames["dev"] = _hf_frame(dsd[dev_split], text, pair, label, f"{where} ({dev_split})")
    feature = train_ds.features.get(label)
    feature_names = list(getattr(feature, "names", None) or []) or None
    keep_rows = {k: np.arange(len(df)) for k, df in frames.items()}
    raw_labels: dict[str, list] = {}
    names_in = label_names if label_names is not None else feature_names
    for k, df in frames.items():
        lab = df[label]
        part = f"{where} ({'train' if k == 'train' else dev_split})"
        if glue_key == "stsb":  # similarity score: >= 3 is "similar"
            keep = nonempty_rows(df[text], df[pair] if pair else None, part, column=text)
            keep_rows[k] = keep_rows[k][keep]
            raw_labels[k] = (lab[keep].to_numpy(dtype=float) >= 3.0).astype(int).tolist()
            names_in = label_names or ["dissimilar", "similar"]
            continue
        if pd.api.types.is_float_dtype(lab) and not np.all(np.mod(lab.dropna().to_numpy(), 1) == 0):
            raise LayerinfError(f"{where} has a continuous label column {label!r}",
                                "use a classification dataset (integer or string labels) or another label_column")
        keep = lab.to_numpy() != -1 if pd.api.types.is_numeric_dtype(lab) else np.ones(len(lab), bool)
        if glue_key == "mnli":
            keep &= lab.to_numpy() != 2  # drop contradiction
            names_in = label_names or ["entailment", "neutral"]
        if keep.any():
            filled = nonempty_rows(df[text][keep], df[pair][keep] if pair else None, part, rows=np.flatnonzero(keep),
                                   column=text)
            keep[np.flatnonzero(keep)[~filled]] = False
        else:
            raise LayerinfError(f"{part} has no labelled row (every label is -1 or dropped)",
                                "use a split with labels, or another label_column")
        keep_rows[k] = keep_rows[k][keep]
        raw_labels[k] = lab[keep].tolist()
    ids, names = encode_labels(raw_labels, names_in, where=where, rows=keep_rows)
    tables = {}
    for k, df in frames.items():
        rows = keep_rows[k]
        tables[k] = raw_frame(rows, df[text].iloc[rows], df[pair].iloc[rows] if pair else None, ids[k])
    info: dict[str, Any] = {"columns": {"text": text, "text_pair": pair, "label": label}}
    if "dev" in tables:
        train, dev = tables["train"], tables["dev"]
        info["dev_origin"] = dev_split
    else:
        train, dev = carve_dev(tables["train"], dev_fraction, seed)
        info["dev_origin"] = f"carved from train ({dev_fraction:.0%}, stratified, seed {seed})"
    task = GLUE_TASKS[glue_key].name if glue_key in GLUE_TASKS else (config or name)
    return check_raw(RawData(train=train, dev=dev, label_names=names, task=task, source=where, info=info))


def fetch_hf(spec: str):
    """``(name, config, DatasetDict)`` of ``hf:NAME[/CONFIG]`` from ``datasets.load_dataset`` (needs the network
    or a warm cache); anything that goes wrong is one clear line."""
    name, config = parse_hf(spec)
    try:
        import datasets
    except ImportError:
        raise LayerinfError("the `datasets` package is not installed", "pip install datasets") from None
    try:
        dsd = datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
    except Exception as exc:  # noqa: BLE001 - anything from the Hub/cache becomes one clear line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LayerinfError(
            f"cannot load Hugging Face dataset {spec!r}: {msg}",
            "check the name/config, that you are online (HF_DATASETS_OFFLINE unset) or the dataset is cached",
        ) from None
    if not hasattr(dsd, "keys"):
        raise LayerinfError(f"{spec!r} did not return named splits", "use a dataset with train/validation splits")
    return name, config, dsd


def load_hf(spec: str, **options) -> RawData:
    """Load ``hf:NAME[/CONFIG]`` with ``datasets.load_dataset`` (needs the network or a warm cache)."""
    name, config, dsd = fetch_hf(spec)
    return from_hf_dataset(dsd, name=name, config=config, **options)
