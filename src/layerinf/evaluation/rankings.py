"""The rankings ``suspects`` puts side by side, and the planted probe that picks one. Pure numpy / scikit-learn.

Every ranking follows the project's sign convention: a HIGHER score is a more trustworthy row, the LOWEST scores
are the suspects. For a row ``i`` with given label ``y_i``:

* ``influence``: the influence configuration's score (its within-fit percentile rank, averaged over fits);
* ``confidence``: the out-of-sample self-confidence ``p(y_i | x_i)`` of the fine-tuned model that did not train on
  the row (confident learning's default ranking; cleanlab's ``self_confidence``);
* ``embedding``: the same, from a logistic regression on the frozen base model's mean-pooled sentence embeddings
  fitted by K-fold cross-validation (the cleanlab text tutorial's recipe; it needs no fine-tuned model);
* ``combined``: the mean of the percentile ranks of the three rankings above (a rank average: each signal on the
  same [0, 1] scale, no weights to tune).

**The probe** (``probe_aucs`` / ``choose_ranking``) decides which ranking a user's file gets. Inside the same
cross-fit, a few percent more labels are flipped in each fold's training part (``plant_flips``); each fold's model
trains on them, and every ranking is scored by how well it finds those planted rows (ROC-AUC, planted = positive,
every other row counted clean — real noise in the file is unknown and makes the yardstick conservative). The
ranking with the highest mean probe AUC over the folds is used; a ranking within ``tie`` of the best loses to
``combined`` (the most robust on average) and then to the order of ``RANKINGS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from layerinf.errors import LayerinfError

RANKINGS = ("combined", "influence", "confidence", "embedding")  # also the preference order on ties
PROBE_TIE = 0.01


def percentile_ranks(scores: Any) -> np.ndarray:
    """Percentile ranks in [0, 1] (ascending score; ties share their average rank; NaN stays NaN)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    out = np.full(s.shape, np.nan)
    ok = ~np.isnan(s)
    m = int(ok.sum())
    if m == 1:
        out[ok] = 0.5
    elif m > 1:
        out[ok] = (rankdata(s[ok], method="average") - 1.0) / (m - 1.0)
    return out


def self_confidence(probs: Any, labels: Any) -> np.ndarray:
    """``p(given label)`` per row: the class probability of each row's own label."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise LayerinfError(f"probs {p.shape} and labels {y.shape} do not match", "one probability row per label")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise LayerinfError("a label is outside the probability columns", "labels must be 0 … C-1")
    return p[np.arange(y.size), y]


def combine(columns: Sequence[Any]) -> np.ndarray:
    """Rank average: the mean of each column's percentile ranks (a NaN column entry is left out of that row)."""
    ranks = np.vstack([percentile_ranks(c) for c in columns])
    with np.errstate(invalid="ignore"):
        return np.nanmean(ranks, axis=0) if ranks.size else np.zeros(0)


def embedding_probs(features: Any, labels: Any, *, num_classes: int | None = None, folds: int = 5,
                    seed: int = 0) -> np.ndarray:
    """Out-of-sample class probabilities of a logistic regression on ``features`` (n × d), by stratified K-fold
    cross-validation (``cross_val_predict``): the cleanlab text tutorial's recipe. ``num_classes`` columns."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)
    k = int(min(folds, np.bincount(y)[present].min()))
    if k < 2:
        raise LayerinfError("a class has fewer than 2 rows: no out-of-sample probabilities",
                            "add rows of that class")
    cv = StratifiedKFold(k, shuffle=True, random_state=int(seed))
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=cv, method="predict_proba")
    full = np.zeros((y.size, max(int(num_classes or 0), int(y.max()) + 1)))
    full[:, present] = probs  # a class with no row gets probability 0
    return full


def plant_flips(labels: Any, eligible: Any, count: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` positions drawn from ``eligible`` whose label is flipped for the probe (sorted), and their planted
    labels (another class, uniformly)."""
    y = np.asarray(labels, dtype=np.int64)
    pool = np.asarray(eligible, dtype=np.int64)
    if not 0 <= count <= pool.size:
        raise LayerinfError(f"cannot plant {count} flips among {pool.size} rows", "lower the probe rate")
    rng = np.random.default_rng(int(seed))
    at = np.sort(rng.choice(pool, size=int(count), replace=False))
    shift = rng.integers(1, num_classes, size=at.size)
    return at, (y[at] + shift) % num_classes


def probe_aucs(rankings: Mapping[str, Any], planted: Any) -> dict[str, float]:
    """ROC-AUC of every ranking at finding the ``planted`` rows (low score = suspicious; NaN scores excluded)."""
    from layerinf.evaluation.detection import roc_auc

    mask = np.asarray(planted, dtype=bool)
    out = {}
    for name, s in rankings.items():
        s = np.asarray(s, dtype=np.float64)
        ok = ~np.isnan(s)
        m = mask[ok]
        out[name] = float(roc_auc(s[ok], m)) if 0 < m.sum() < m.size else float("nan")
    return out


def choose_ranking(aucs: Mapping[str, Sequence[float]], tie: float = PROBE_TIE) -> tuple[str, str]:
    """The ranking with the best mean probe AUC (``aucs``: name → one AUC per fold) and a sentence saying why.
    Rankings within ``tie`` of the best are tied; the first of them in ``RANKINGS`` order wins."""
    means = {k: float(np.nanmean(v)) for k, v in aucs.items() if len(v) and not np.all(np.isnan(v))}
    if not means:
        return "combined", "no probe could be scored; combined is the default"
    best = max(means.values())
    tied = [k for k in RANKINGS if k in means and means[k] >= best - tie]
    pick = tied[0] if tied else max(means, key=means.get)
    table = ", ".join(f"{k} {means[k]:.3f}" for k in sorted(means, key=lambda k: -means[k]))
    why = f"planted-flip probe ROC-AUC (mean over folds): {table}"
    if len(tied) > 1:
        why += f"; {', '.join(tied)} tie within {tie:g}, so {pick} (the first in the order {', '.join(RANKINGS)})"
    return pick, why


@dataclass
class FitScores:
    """One cross-fitted model's influence scores of its training rows: ``rows`` (positions among all ranked rows),
    ``scores``, the ``labels`` it trained on (planted ones included) and which of them were ``planted``."""

    rows: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    planted: np.ndarray


def side_by_side(labels: Any, fits: Sequence[FitScores], oos_probs: Any, emb_probs: Any
                 ) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Every ranking of the rows (``RANKINGS``; higher = more trustworthy) and the probe's AUCs per fit.

    ``influence`` is the mean within-fit percentile rank over the fits that trained on the row under its own label
    (a fit where it was planted is left out); ``confidence`` and ``embedding`` are p(given label) under the
    out-of-sample ``oos_probs`` and ``emb_probs``; ``combined`` their rank average. For the probe, each fit's
    training rows are ranked under the labels that fit saw, and scored on its planted rows."""
    y = np.asarray(labels, dtype=np.int64)
    n = y.size
    total, count = np.zeros(n), np.zeros(n)
    aucs: dict[str, list[float]] = {k: [] for k in RANKINGS}
    for fit in fits:
        pct = percentile_ranks(fit.scores)
        keep = ~np.asarray(fit.planted, dtype=bool)
        np.add.at(total, fit.rows[keep], pct[keep])
        np.add.at(count, fit.rows[keep], 1.0)
        if np.any(fit.planted):
            probe = {"influence": fit.scores,
                     "confidence": self_confidence(np.asarray(oos_probs)[fit.rows], fit.labels),
                     "embedding": self_confidence(np.asarray(emb_probs)[fit.rows], fit.labels)}
            probe["combined"] = combine(list(probe.values()))
            for k, v in probe_aucs(probe, fit.planted).items():
                aucs[k].append(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        influence = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    out = {"influence": influence, "confidence": self_confidence(oos_probs, y),
           "embedding": self_confidence(emb_probs, y)}
    out["combined"] = combine([out["influence"], out["confidence"], out["embedding"]])
    return {k: out[k] for k in RANKINGS}, {k: v for k, v in aucs.items() if v}


def flag_count(n: int, top: float | None, rate: float | None) -> int:
    """How many rows to flag: ``top × n`` when ``top`` is given, else the estimated noise ``rate × n`` (rounded)."""
    frac = top if top is not None else (rate if rate is not None else 0.0)
    return int(min(n, max(0, round(float(frac) * n))))


__all__ = ["PROBE_TIE", "RANKINGS", "FitScores", "choose_ranking", "combine", "embedding_probs", "flag_count",
           "percentile_ranks", "plant_flips", "probe_aucs", "self_confidence", "side_by_side"]
