"""Label encoding shared by the loaders, the class checks every loaded source must pass, and dev carving."""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from layerinf.data.checks import count_arg, fraction_arg, names_arg
from layerinf.data.raw import RawData, preview, row_list
from layerinf.errors import LayerinfError

_preview = preview  # old private name


def _clean(values: Sequence[Any]) -> list[str]:
    """Raw label values as strings; integral floats (1.0) become "1", missing values ""."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append("")
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(str(int(v)))
        elif isinstance(v, (bool, np.bool_)):
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


def _is_int(s: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", s) is not None


def encode_labels(
    parts: dict[str, Sequence[Any]],
    label_names: Sequence[str] | None = None,
    where: str = "the data",
    rows: dict[str, Sequence[int]] | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map raw label values (strings or ints) of several parts (e.g. train, dev) to shared int ids.

    With ``label_names``, a value matching a name gets that name's position, and an integer value is taken as
    an id that must lie in ``range(len(label_names))``. Without, integers 0..K-1 keep their ids (names
    ``"0"``…), other values are sorted and numbered. Unknown or empty labels raise ``LayerinfError``, naming
    their rows (``rows[part]``, default the positions 0..n-1).
    """
    label_names = names_arg(label_names)
    cleaned = {k: _clean(list(v)) for k, v in parts.items()}
    for k, vals in cleaned.items():
        empty = [i for i, v in enumerate(vals) if v == ""]
        if empty:
            named = np.asarray(rows[k])[empty] if rows and k in rows else empty
            raise LayerinfError(
                f"{len(empty)} row(s) of {where} ({k}) have an empty label (row {row_list(named)}; "
                "rows count from 0, a header line not counted)",
                "fill in or drop those rows, or point label_column at the right column",
            )
    values = sorted({v for vals in cleaned.values() for v in vals})
    if label_names is not None:
        names = label_names
        if len(set(names)) != len(names) or len(names) < 2:
            raise LayerinfError(f"label_names {names} must list at least 2 distinct names", "fix label_names")
        lookup = {n: i for i, n in enumerate(names)}
        if all(v in lookup for v in values):
            mapping = lookup
        elif all(_is_int(v) for v in values):
            bad = [v for v in values if not 0 <= int(v) < len(names)]
            if bad:
                raise LayerinfError(
                    f"label id(s) {preview(bad)} in {where} are outside 0..{len(names) - 1} for label_names {names}",
                    "give one name per label id, or use the label strings as names",
                )
            mapping = {v: int(v) for v in values}
        else:
            bad = [v for v in values if v not in lookup]
            raise LayerinfError(
                f"label(s) {preview(bad)} in {where} are not in label_names {names}",
                "add them to label_names (or leave label_names out to take the labels found in the data)",
            )
    elif all(_is_int(v) for v in values):
        ints = sorted({int(v) for v in values})
        names = [str(i) for i in ints]
        if ints == list(range(len(ints))):
            mapping = {v: int(v) for v in values}
        else:
            mapping = {v: names.index(str(int(v))) for v in values}
    else:
        names = values
        mapping = {v: i for i, v in enumerate(names)}
    if len(values) < 2 and label_names is None:
        raise LayerinfError(
            f"{where} has only one label value ({preview(values)})",
            "a classifier needs at least 2 classes; check label_column",
        )
    return {k: np.array([mapping[v] for v in vals], dtype=np.int64) for k, vals in cleaned.items()}, names


def check_classes(train_labels, dev_labels, label_names: Sequence[str], where: str) -> None:
    """Every class must have training examples: ≥ 2 classes in train, no dev-only label, no name without data.

    A dev label that never occurs in train would become a class the model is never trained on, and a name in
    ``label_names`` with no example at all an output that no example can teach; both are refused.
    """
    names = [str(n) for n in label_names]
    tr = np.asarray(train_labels, dtype=np.int64)
    dv = np.asarray(dev_labels, dtype=np.int64)
    if tr.size == 0:
        raise LayerinfError(f"{where} has no training rows", "give a source with labelled training data")
    if dv.size == 0:
        raise LayerinfError(f"{where} has no dev rows", "give a dev file with rows (or leave it out to carve one)")

    def name(i: int) -> str:
        return names[i] if 0 <= i < len(names) else str(i)

    in_train = set(np.unique(tr).tolist())
    if len(in_train) < 2:
        raise LayerinfError(
            f"the train part of {where} has a single class ({name(next(iter(in_train)))!r})",
            "a classifier needs at least 2 classes; check label_column or the file",
        )
    dev_only = sorted(set(np.unique(dv).tolist()) - in_train)
    if dev_only:
        counts = {name(i): int((dv == i).sum()) for i in dev_only}
        raise LayerinfError(
            f"dev label(s) {preview(counts)} of {where} never occur in its training data "
            f"(dev rows per label: {counts})",
            "every class needs training examples: drop those dev rows, add training rows with that label, "
            "or fix label_column",
        )
    unused = [n for i, n in enumerate(names) if i not in in_train]
    if unused:
        raise LayerinfError(
            f"label name(s) {preview(unused)} of {where} have no training example",
            "remove them from label_names (a class needs training examples), or add rows with those labels",
        )


def check_raw(raw: RawData) -> RawData:
    """``check_classes`` on a loaded source (``LayerinfError`` if it fails); returns ``raw``."""
    check_classes(raw.train["label"].to_numpy(), raw.dev["label"].to_numpy(), raw.label_names,
                  raw.source or "the data")
    return raw


def carve_dev(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table into (train, dev) with a stratified, seeded ``fraction`` going to dev."""
    from sklearn.model_selection import train_test_split

    fraction = fraction_arg("dev_fraction", fraction, lo_open=True, hi_open=True, example="0.2")
    seed = count_arg("seed", seed, minimum=0, allow_none=False, example="0")
    counts = df["label"].value_counts()
    if len(df) < 4 or counts.min() < 2:
        raise LayerinfError(
            f"cannot carve a stratified dev set from {len(df)} rows (class counts {counts.to_dict()})",
            "give a separate dev file (dev_source) or more rows per class (at least 2 each)",
        )
    state = int(np.random.default_rng([seed, 7]).integers(2**31 - 1))
    try:
        tr, dv = train_test_split(np.arange(len(df)), test_size=fraction, stratify=df["label"].to_numpy(),
                                  random_state=state)
    except ValueError as exc:
        raise LayerinfError(f"cannot carve a dev set: {exc}", "give a separate dev file (dev_source)") from None
    return (df.iloc[np.sort(tr)].reset_index(drop=True), df.iloc[np.sort(dv)].reset_index(drop=True))
