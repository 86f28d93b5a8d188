"""Seeded, stratified splits (spec §9): train capped at ``max_train``; the dev set capped at ``max_dev`` and
split 50/50 into the influence set (``infl``) and the test set (``test``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layerinf.data.checks import count_arg, seed_arg
from layerinf.errors import LayerinfError


def _state(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check(labels: np.ndarray, what: str, cap: str | None = None, need: int | None = None) -> None:
    """Every class of ``labels`` needs 2 examples; ``cap`` (e.g. ``"max_dev=3"``) names the cap that left fewer
    and ``need`` the cap that would do."""
    if labels.size == 0:
        raise LayerinfError(f"the {what} split is empty", "check the data source (and its dev part)")
    values, counts = np.unique(labels, return_counts=True)
    small = {int(v): int(c) for v, c in zip(values, counts) if c < 2}
    if small:
        fix = "stratified splitting needs at least 2 examples per class: add data or drop the rare class"
        if cap:
            to = f" to at least {need}" if need else ""
            fix = f"raise {cap.split('=')[0]}{to} (stratified splitting needs at least 2 examples per class)"
        raise LayerinfError(
            f"class(es) {sorted(small)} of the {what} split have only {min(small.values())} example(s) "
            f"(class counts {dict(zip(values.tolist(), counts.tolist()))}{f' after {cap}' if cap else ''})",
            fix,
        )


def _needed(y: np.ndarray, per_class: int = 2) -> int:
    """A size whose stratified subset surely keeps ``per_class`` examples of every class."""
    counts = np.unique(y, return_counts=True)[1]
    return int(min(y.size, np.ceil(per_class * y.size / counts.min())))


def stratified_subset(labels, size: int | None, seed=0, what: str = "train", name: str | None = None) -> np.ndarray:
    """Sorted positions of a stratified random subset of ``size`` (all positions when ``size`` ≥ n or None).

    ``name`` (e.g. ``"max_train"``) is the option named in errors; a subset that would lose a class is refused.
    """
    from sklearn.model_selection import train_test_split

    label = name or "size"
    size = count_arg(label, size, example="1000")
    y = np.asarray(labels)
    if y.size == 0:
        raise LayerinfError(f"the {what} split is empty", "check the data source")
    if size is None or size >= y.size:
        return np.arange(y.size)
    _check(y, what)
    n_cls = np.unique(y).size
    if size < n_cls:
        raise LayerinfError(f"{label}={size}: {size} examples cannot cover the {n_cls} classes of the {what} split",
                            f"keep at least {n_cls} (better {_needed(y)}), or leave {label} out")
    try:
        keep, _ = train_test_split(np.arange(y.size), train_size=int(size), stratify=y, random_state=_state(_rng(seed)))
    except ValueError as exc:
        raise LayerinfError(f"cannot subsample the {what} split: {exc}", "use a larger size or more data") from None
    lost = sorted(set(np.unique(y).tolist()) - set(np.unique(y[keep]).tolist()))
    if lost:
        values, counts = np.unique(y, return_counts=True)
        raise LayerinfError(
            f"{label}={size} keeps no example of class(es) {lost} of the {what} split "
            f"(class counts {dict(zip(values.tolist(), counts.tolist()))})",
            f"raise {label} to at least {_needed(y)}, or drop the rare class",
        )
    return np.sort(keep)


def split_infl_test(labels, seed=0, infl_equals_test: bool = False, cap: str | None = None, need: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Split dev positions 50/50, stratified, into (infl, test); ``infl_equals_test`` gives both all (RTE quirk).

    ``cap`` (e.g. ``"max_dev=3"``) is the option named when the dev set is too small to halve; ``need`` a cap
    that would do.
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    if infl_equals_test:
        if y.size == 0:
            raise LayerinfError("the dev split is empty", "check the data source (and its dev part)")
        return np.arange(y.size), np.arange(y.size)
    _check(y, "dev", cap, need)
    n_cls = np.unique(y).size
    if y.size < 2 * n_cls:
        raise LayerinfError(f"{y.size} dev examples cannot be halved with every one of {n_cls} classes on each side"
                            f"{f' ({cap})' if cap else ''}",
                            f"raise {cap.split('=')[0]}{f' to at least {need}' if need else ''}" if cap
                            else "give a larger dev set")
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
    """Cap train (stratified), cap dev (stratified), then halve dev into infl/test; all from one seeded Generator.

    Caps must be whole numbers ≥ 1 (or None); a cap that leaves a class without 2 examples is refused.
    """
    max_train = count_arg("max_train", max_train, example="4500")
    max_dev = count_arg("max_dev", max_dev, example="1000")
    rng = np.random.default_rng(seed_arg(seed))
    tr_y, dv_y = np.asarray(train_labels), np.asarray(dev_labels)
    train = stratified_subset(tr_y, max_train, rng, "train", name="max_train")
    capped = train.size < tr_y.size
    _check(tr_y[train], "train", f"max_train={max_train}" if capped else None, _needed(tr_y) if capped else None)
    if np.unique(tr_y[train]).size < 2:
        raise LayerinfError(f"the train split has a single class ({int(tr_y[train][0])})",
                            "a classifier needs at least 2 classes; check the label column")
    dev = stratified_subset(dv_y, max_dev, rng, "dev", name="max_dev")
    capped = dev.size < dv_y.size
    infl, test = split_infl_test(dv_y[dev], rng, infl_equals_test, f"max_dev={max_dev}" if capped else None,
                                 _needed(dv_y) if capped else None)
    return SplitIndices(train=train, infl=dev[infl], test=dev[test])
