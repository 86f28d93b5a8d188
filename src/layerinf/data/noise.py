"""Synthetic label noise with a ground-truth mask: uniform flips of an exact fraction (spec §9), per-class
(class-conditional) flips and "ambiguous" flips of the rows a clean-label model finds least certain."""

from __future__ import annotations

from typing import Any

import numpy as np

from layerinf.errors import LayerinfError


def noise_count(n: int, rate: float) -> int:
    """How many of ``n`` labels ``rate`` flips: ⌊rate·n⌋ (with a 1e-9 guard against float round-off)."""
    return int(np.floor(rate * n + 1e-9))


def inject_noise(labels, rate: float, num_classes: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(noisy_labels, mask)``: exactly ``noise_count(n, rate)`` labels changed, ``mask`` marks them.

    Binary labels flip ``y → 1 − y``; with more classes a flipped label becomes a uniformly random OTHER class.
    ``num_classes`` defaults to ``max(labels) + 1`` (at least 2). Seeded with a numpy ``Generator``.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise LayerinfError(f"labels must be a 1-D array, got shape {y.shape}", "pass one label per example")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise LayerinfError(f"labels must be integer class ids, got dtype {y.dtype}", "encode labels as 0..K-1 first")
    y = y.astype(np.int64)
    if isinstance(rate, (bool, np.bool_)):
        raise LayerinfError(f"noise rate {rate!r} is a bool, not a number", "use a fraction in [0, 1), e.g. 0.2")
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise LayerinfError(f"noise rate {rate!r} is not a number", "use a fraction in [0, 1), e.g. 0.2") from None
    if not 0.0 <= rate < 1.0:
        raise LayerinfError(f"noise rate {rate} is outside [0, 1)", "use a fraction in [0, 1), e.g. 0.2 for 20 %")
    k_classes = int(num_classes) if num_classes is not None else max(int(y.max()) + 1 if y.size else 2, 2)
    if k_classes < 2:
        raise LayerinfError(f"num_classes={k_classes}: label noise needs at least 2 classes", "check the labels")
    if y.size and (y.min() < 0 or y.max() >= k_classes):
        raise LayerinfError(f"labels must lie in 0..{k_classes - 1}, found {int(y.min())}..{int(y.max())}",
                            "check num_classes and the label encoding")
    n = y.size
    mask = np.zeros(n, dtype=bool)
    noisy = y.copy()
    k = noise_count(n, rate)
    if k == 0:
        return noisy, mask
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, size=k, replace=False)
    mask[chosen] = True
    if k_classes == 2:
        noisy[chosen] = 1 - y[chosen]
    else:  # shift by 1..K-1 (mod K): uniform over the other classes, never the same one
        noisy[chosen] = (y[chosen] + rng.integers(1, k_classes, size=k)) % k_classes
    return noisy, mask


# ------------------------------------------------------------------------------------------------ noise kinds
#
# ``data.noise_kind`` for classification: ``uniform`` (above: ⌊rate·n⌋ rows chosen uniformly),
# ``class_conditional`` (per-class rates or a transition matrix, ``data.noise_rates``) and ``ambiguous`` (the rows
# a model trained on the clean labels finds least certain). ``auto`` is ``uniform``. Each returns
# ``(noisy_labels, mask)`` like :func:`inject_noise`, with an exact, documented count, and is deterministic given
# its seed.

CLASSIFICATION_NOISE_KINDS = ("uniform", "class_conditional", "ambiguous")
AMBIGUOUS_FOLDS = 5
_RATE_FIX = "give each rate as a fraction in [0, 1), e.g. noise_rates: {0: 0.35, 1: 0.05}"


def classification_noise_kind(kind: Any) -> str:
    """``kind`` checked for classification data (``auto`` → ``uniform``); the SFT kinds are refused."""
    kind = "uniform" if kind in (None, "auto") else kind
    if kind not in CLASSIFICATION_NOISE_KINDS:
        sft = " (an instruction-data kind)" if kind in ("label", "swap") else ""
        raise LayerinfError(f"noise_kind '{kind}' is not a classification noise kind{sft}",
                            f"use one of {', '.join(CLASSIFICATION_NOISE_KINDS)}")
    return kind


def _rate(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise LayerinfError(f"noise_rates: {what} rate {value!r} is a bool, not a number", _RATE_FIX)
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise LayerinfError(f"noise_rates: {what} rate {value!r} is not a number", _RATE_FIX) from None
    if not (np.isfinite(rate) and 0.0 <= rate < 1.0):
        raise LayerinfError(f"noise_rates: {what} rate {rate} is outside [0, 1)", _RATE_FIX)
    return rate


def rate_entries(spec: Any) -> list[tuple[str, float]]:
    """The ``(key, rate)`` pairs of a ``noise_rates`` spec, syntax and ranges checked (class names are resolved
    later, by :func:`transition_matrix`, once the classes are known).

    Accepted: a mapping ``{class: rate}`` or ``{"from>to": rate}``; a list of ``"class:rate"`` /
    ``"from>to:rate"`` texts (the CLI's ``--noise-rates 0:0.35,1:0.05``); or a list of plain rates, one per class
    in class order (keys ``0``, ``1``, …). A class is its index or its label name."""
    if spec is None:
        return []
    if isinstance(spec, dict):
        items = [(str(k).strip(), v) for k, v in spec.items()]
    elif isinstance(spec, (list, tuple)):
        items = []
        for i, entry in enumerate(spec):
            if isinstance(entry, str) and ":" in entry:
                key, _, value = entry.rpartition(":")
                items.append((key.strip(), value.strip()))
            else:
                items.append((str(i), entry))
    else:
        raise LayerinfError(f"noise_rates must be per-class rates, got {spec!r}", _RATE_FIX)
    if not items:
        raise LayerinfError("noise_rates is empty", _RATE_FIX)
    out = []
    for key, value in items:
        if not key or key.count(">") > 1 or any(not part.strip() for part in key.split(">")):
            raise LayerinfError(f"noise_rates: cannot read the entry '{key}'",
                                "write CLASS:RATE (0:0.35) or FROM>TO:RATE (0>1:0.3)")
        out.append((key, _rate(value, f"'{key}'")))
    keys = [k for k, _ in out]
    if len(set(keys)) != len(keys):
        raise LayerinfError(f"noise_rates names '{next(k for k in keys if keys.count(k) > 1)}' twice",
                            "give each class (or FROM>TO pair) once")
    return out


def _class_index(ref: str, label_names: list[str]) -> int:
    names = [str(n) for n in label_names]
    if ref in names:
        return names.index(ref)
    if ref.lstrip("-").isdigit() and 0 <= int(ref) < len(names):
        return int(ref)
    raise LayerinfError(f"noise_rates: class '{ref}' does not exist",
                        f"the classes are {', '.join(f'{i} ({n})' for i, n in enumerate(names))}")


def transition_matrix(spec: Any, label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(rates, T)`` from a ``noise_rates`` spec: ``rates[c]`` the share of class ``c`` flipped to a uniformly
    random other class, ``T[c, d]`` the share of class ``c`` flipped to class ``d`` (a transition matrix without
    its diagonal). A class is given one way or the other; a row's total must stay below 1."""
    k = len(label_names)
    rates, T = np.zeros(k), np.zeros((k, k))
    per_class: set[int] = set()
    for key, rate in rate_entries(spec):
        if ">" in key:
            src, dst = (_class_index(p.strip(), label_names) for p in key.split(">"))
            if src == dst:
                raise LayerinfError(f"noise_rates: '{key}' flips a class to itself", "name two different classes")
            T[src, dst] = rate
        else:
            c = _class_index(key, label_names)
            per_class.add(c)
            rates[c] = rate
    both = sorted(c for c in per_class if T[c].sum() > 0)
    if both:
        raise LayerinfError(f"noise_rates gives class '{label_names[both[0]]}' a rate and transitions",
                            "use either CLASS:RATE or FROM>TO:RATE for a class")
    total = rates + T.sum(axis=1)
    if (total >= 1.0).any():
        c = int(np.argmax(total))
        raise LayerinfError(f"noise_rates: class '{label_names[c]}' would lose {total[c]:g} of its rows (must be < 1)",
                            "lower its rates")
    return rates, T


def class_conditional_noise(labels, spec: Any, label_names: list[str], seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Per-class noise: exactly ``⌊rates[c]·n_c⌋`` rows of class ``c`` (``n_c`` its rows) flipped to another
    class (binary: ``1 − y``; else a uniformly random other one), or ``⌊T[c, d]·n_c⌋`` of them to class ``d``;
    rows chosen uniformly without replacement within their class, classes in order, one seeded generator."""
    y = np.asarray(labels).astype(np.int64)
    k = len(label_names)
    rates, T = transition_matrix(spec, label_names)
    noisy, mask = y.copy(), np.zeros(y.size, dtype=bool)
    rng = np.random.default_rng(seed)
    for c in range(k):
        rows = np.flatnonzero(y == c)
        counts = [noise_count(rows.size, T[c, d]) for d in range(k)]
        m = noise_count(rows.size, rates[c])
        chosen = rng.choice(rows, size=m + sum(counts), replace=False) if m + sum(counts) else rows[:0]
        mask[chosen] = True
        first = chosen[:m]
        if k == 2:
            noisy[first] = 1 - c
        elif m:
            noisy[first] = (c + rng.integers(1, k, size=m)) % k
        start = m
        for d in range(k):
            noisy[chosen[start:start + counts[d]]] = d
            start += counts[d]
    return noisy, mask


def out_of_sample_probs(texts, labels, num_classes: int, seed: int = 0, folds: int = AMBIGUOUS_FOLDS) -> np.ndarray:
    """Class probabilities of each row from a model that never saw it: TF-IDF of word 1–2-grams + logistic
    regression (scikit-learn), ``folds``-fold stratified cross-fitting seeded by ``seed``. Cheap, needs no
    network model, and depends on the data only, so every model of a study sees the same flipped rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels).astype(np.int64)
    smallest = int(np.bincount(y, minlength=num_classes)[np.bincount(y, minlength=num_classes) > 0].min())
    n_folds = min(folds, smallest)
    if n_folds < 2 or len(np.unique(y)) < 2:
        raise LayerinfError("ambiguous noise needs at least 2 training rows of each of at least 2 classes",
                            "use more training rows (max_train) or noise_kind uniform")
    probs = np.zeros((y.size, num_classes))
    for train, held in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(y.size), y):
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        x_train = vec.fit_transform([texts[i] for i in train])
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(x_train, y[train])
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(vec.transform([texts[i] for i in held]))
    return probs


def ambiguous_noise(labels, texts, rate: float, num_classes: int, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Annotator-like noise: exactly ``⌊rate·n⌋`` rows, those whose clean label gets the lowest out-of-sample
    probability (:func:`out_of_sample_probs`; ties broken by a seeded random order), each flipped to the most
    probable other class (binary: ``1 − y``). Returns ``(noisy_labels, mask, p_clean)``."""
    y = np.asarray(labels).astype(np.int64)
    rate = _rate(rate, "noise")
    noisy, mask = y.copy(), np.zeros(y.size, dtype=bool)
    k = noise_count(y.size, rate)
    if k == 0:
        return noisy, mask, np.full(y.size, np.nan)
    probs = out_of_sample_probs(list(texts), y, num_classes, seed=seed)
    p_clean = probs[np.arange(y.size), y]
    tiebreak = np.random.default_rng(seed).random(y.size)
    chosen = np.lexsort((tiebreak, p_clean))[:k]
    mask[chosen] = True
    other = probs[chosen].copy()
    other[np.arange(k), y[chosen]] = -np.inf
    noisy[chosen] = 1 - y[chosen] if num_classes == 2 else np.argmax(other, axis=1)
    return noisy, mask, p_clean
