"""Seeded, stratified splits (spec §9): train capped at ``max_train``; the dev set capped at ``max_dev`` and
split 50/50 into the influence set (``infl``) and the test set (``test``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layerinf.errors import LayerinfError


def _state(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check(labels: np.ndarray, what: str) -> None:
    if labels.size == 0:
        raise LayerinfError(f"the {what} split is empty", "check the data source (and its dev part)")
    values, counts = np.unique(labels, return_counts=True)
    small = {int(v): int(c) for v, c in zip(values, counts) if c < 2}
    if small:
        raise LayerinfError(
            f"class(es) {sorted(small)} of the {what} split have only {min(small.values())} example(s) "
            f"(class counts {dict(zip(values.tolist(), counts.tolist()))})",
            "stratified splitting needs at least 2 examples per class: add data or drop the rare class",
        )


def stratified_subset(labels, size: int | None, seed=0, what: str = "train") -> np.ndarray:
    """Sorted positions of a stratified random subset of ``size`` (all positions when ``size`` ≥ n or None)."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    if y.size == 0:
        raise LayerinfError(f"the {what} split is empty", "check the data source")
    if size is None or size >= y.size:
        return np.arange(y.size)
    if size < 1:
        raise LayerinfError(f"cannot keep {size} examples of the {what} split", "use a positive size")
    _check(y, what)
    n_cls = np.unique(y).size
    if size < n_cls:
        raise LayerinfError(f"{size} examples cannot cover the {n_cls} classes of the {what} split",
                            f"keep at least {n_cls}")
    try:
        keep, _ = train_test_split(np.arange(y.size), train_size=int(size), stratify=y, random_state=_state(_rng(seed)))
    except ValueError as exc:
        raise LayerinfError(f"cannot subsample the {what} split: {exc}", "use a larger size or more data") from None
    return np.sort(keep)


def split_infl_test(labels, seed=0, infl_equals_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Split dev positions 50/50, stratified, into (infl, test); ``infl_equals_test`` gives both all (RTE quirk)."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    if infl_equals_test:
        if y.size == 0:
            raise LayerinfError("the dev split is empty", "check the data source (and its dev part)")
        return np.arange(y.size), np.arange(y.size)
    _check(y, "dev")
    n_cls = np.unique(y).size
    if y.size < 2 * n_cls:
        raise LayerinfError(f"{y.size} dev examples cannot be halved with every one of {n_cls} classes on each side",
                            "give a larger dev set")
    try:
        infl, test = train_test_split(np.arange(y.size), test_size=0.5, stratify=y, random_state=_state(_rng(seed)))
    except ValueError as exc:
        raise LayerinfError(f"cannot split the dev set: {exc}", "give a larger dev set") from None
    return np.sort(infl), np.sort(test)


@dataclass
class SplitIndices:
    """Positions into the raw train table (``train``) and the raw dev table (``infl``, ``test``)."""

    train: np.ndarray
    infl: np.ndarray
    test: np.ndarray


def make_splits(train_labels, dev_labels, *, max_train: int | None = 4500, max_dev: int | None = 1000, seed: int = 0,
                infl_equals_test: bool = False) -> SplitIndices:
    """Cap train (stratified), cap dev (stratified), then halve dev into infl/test; all from one seeded Generator."""
    rng = np.random.default_rng(seed)
    tr_y, dv_y = np.asarray(train_labels), np.asarray(dev_labels)
    train = stratified_subset(tr_y, max_train, rng, "train")
    _check(tr_y[train], "train")
    if np.unique(tr_y[train]).size < 2:
        raise LayerinfError(f"the train split has a single class ({int(tr_y[train][0])})",
                            "a classifier needs examples of at least 2 classes; check the label column")
    dev = stratified_subset(dv_y, max_dev, rng, "dev")
    infl, test = split_infl_test(dv_y[dev], rng, infl_equals_test)
    return SplitIndices(train=train, infl=dev[infl], test=dev[test])
