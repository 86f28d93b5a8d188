"""Label-noise rate estimation (confident learning), the adaptive Vote κ, and planted-noise probe metrics.

Pure numpy (no model code), like the rest of ``layerinf.evaluation``.

**Noise rate.** :func:`estimate_noise_rate` follows confident learning (Northcutt, Jiang & Chuang, "Confident
Learning: Estimating Uncertainty in Dataset Labels", JAIR 70, 2021, §3.1–3.2):

1. per-class thresholds ``t_j`` = the mean predicted probability of class ``j`` over the examples *labelled* j;
2. the confident joint ``C[i, j]``: an example labelled ``i`` is counted in column ``j`` = the most probable
   class among those whose probability reaches their threshold (``p_j(x) ≥ t_j``); examples with no class at
   its threshold are not counted;
3. calibration: each row is rescaled to the number of examples labelled ``i`` and the matrix normalised to sum
   to 1, giving ``Q[i, j]`` ≈ P(given label i, true label j);
4. the estimated noise rate is the off-diagonal mass ``1 − trace(Q)``.

**How many rows.** :func:`count_label_issues` counts the examples themselves rather than the calibrated mass:
those in the off-diagonal of the (uncalibrated) confident joint whose most probable class is not the given
label — cleanlab's ``num_label_issues`` (its default ``"off_diagonal"`` method, which cleanlab documents as its
most accurate estimate of the number of label issues). The calibrated rate rescales every row to the
given-label counts, so the examples with no class at its threshold are counted as if they were noisy in the
same proportion as the confident ones; with moderately accurate models that inflates the rate (a model error
looks like a flipped label). ``NoiseEstimate.issues`` (with its bootstrap interval) is what ``suspects`` flags.

The probabilities should be **out-of-sample** (cross-validated, as in the paper): a model that has fitted
the flipped labels assigns them high probability and the estimate is biased low. The uncertainty is a
percentile bootstrap over examples (the thresholds, the joint and the calibration are recomputed on every
resample); it does not include the uncertainty of the model itself.

**Adaptive κ.** :func:`adaptive_kappa` is the rule ``κ = clip(factor × rate, 0.05, 0.5)``: each Vote voter
votes against a bottom fraction a little larger than the share of noisy examples (factor 1.5 reproduces the
paper's κ = 0.30 at its 20 % noise; see docs/advisor.md for the validation).

**Planted-noise probes.** :func:`planted_metrics` scores a ranking against the labels *the advisor flipped*
only: every other example — including ones that were already mislabelled in the user's data (real noise,
unknown) — counts as clean. A configuration that also ranks real noise low is therefore *not* rewarded for it
(real-noise examples take bottom slots that planted flips could have had), which makes the planted metrics a
conservative, comparable yardstick across configurations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from layerinf.errors import LayerinfError

__all__ = [
    "KAPPA_BOUNDS",
    "KAPPA_FACTOR",
    "NoiseEstimate",
    "adaptive_kappa",
    "confident_joint",
    "count_label_issues",
    "estimate_noise_rate",
    "mean_ci",
    "noise_rate_from_joint",
    "planted_metrics",
    "softmax",
]

KAPPA_FACTOR = 1.5
KAPPA_BOUNDS = (0.05, 0.5)
PLANTED_LEVELS = (0.10, 0.30)


# ------------------------------------------------------------------------------------------- inputs


def softmax(logits: Any) -> np.ndarray:
    """Row-wise softmax of an (n × C) array of logits (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise LayerinfError(f"logits must be an (n × C) array, got shape {z.shape}", "pass one row per example")
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[1] < 2:
        raise LayerinfError(f"probs must be an (n × C) array with C ≥ 2 classes, got shape {p.shape}",
                            "pass predicted class probabilities, one row per example")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise LayerinfError(f"labels must be one label per row of probs ({p.shape[0]}), got shape {y.shape}",
                            "pass the given (possibly noisy) label of every example")
    if p.shape[0] == 0:
        raise LayerinfError("no examples to estimate the noise rate from", "pass at least one example per class")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise LayerinfError(f"labels must be integer class ids, got dtype {y.dtype}", "encode labels as 0..C-1")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise LayerinfError(f"labels must lie in 0..{p.shape[1] - 1}, found {int(y.min())}..{int(y.max())}",
                            "check the label encoding against the probability columns")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or np.abs(p.sum(axis=1) - 1).max() > 1e-3:
        raise LayerinfError("probs must be finite probabilities whose rows sum to 1",
                            "apply a softmax to logits first (layerinf.evaluation.noise_rate.softmax)")
    return p, y


# ------------------------------------------------------------------------------------ confident learning


def confident_joint(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """The confident joint ``C`` (C × C counts; rows: given label, columns: estimated true label) and the
    per-class thresholds ``t`` (Northcutt et al. 2021, eq. 1–2). A class with no labelled example gets
    threshold +inf (nothing is ever assigned to it)."""
    p, y = _check(probs, labels)
    joint, t, _ = _joint(p, y)
    return joint, t


def count_label_issues(probs: Any, labels: Any) -> int:
    """How many examples confident learning calls mislabelled: off the diagonal of the confident joint (a class
    other than the given one reaches its threshold and is the most probable of those that do) and not predicted
    as the given label. Equals ``cleanlab.count.num_label_issues(labels, probs)`` (tested)."""
    p, y = _check(probs, labels)
    return _joint(p, y)[2]


def _joint(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The confident joint, the thresholds and the number of label issues, from one confident assignment."""
    k = p.shape[1]
    counts = np.bincount(y, minlength=k).astype(np.float64)
    sums = np.bincount(y, weights=p[np.arange(len(y)), y], minlength=k)  # Σ p_j(x) over x labelled j
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)  # t_j: mean p_j over x labelled j
    above = p >= t[None, :] - 1e-12
    masked = np.where(above, p, -np.inf)
    best = masked.argmax(axis=1)
    keep = above.any(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (y[keep], best[keep]), 1.0)
    bumped = p.copy()
    bumped[np.arange(len(y)), y] += 1e-6  # a tie with the given label is not an issue (as cleanlab)
    issues = int(np.count_nonzero(keep & (best != y) & (bumped.argmax(axis=1) != y)))
    return joint, t, issues


def noise_rate_from_joint(joint: np.ndarray, label_counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Calibrate the confident joint (rows rescaled to the given-label counts, then normalised) and return
    ``(1 − trace(Q), Q)``. A row with no confident example keeps its mass on the diagonal (no evidence of noise)."""
    joint = np.asarray(joint, dtype=np.float64)
    counts = np.asarray(label_counts, dtype=np.float64)
    rows = joint.sum(axis=1)
    Q = np.zeros_like(joint)
    for i in range(len(counts)):
        if rows[i] > 0:
            Q[i] = joint[i] / rows[i] * counts[i]
        else:
            Q[i, i] = counts[i]
    total = Q.sum()
    if total <= 0:
        return float("nan"), Q
    Q /= total
    return float(1.0 - np.trace(Q)), Q


@dataclass
class NoiseEstimate:
    """An estimated label-noise rate with its bootstrap interval (fractions in [0, 1])."""

    rate: float
    low: float
    high: float
    n: int
    num_classes: int
    per_class: list[float]  # P(true ≠ i | given label i), from the calibrated joint
    joint: list[list[float]]  # calibrated joint Q (given × true), sums to 1
    thresholds: list[float]
    issues: int = 0  # count_label_issues: the examples confident learning calls mislabelled
    issues_low: float = 0.0  # its bootstrap interval, as fractions of n
    issues_high: float = 0.0
    level: float = 0.95
    n_boot: int = 0
    out_of_sample: bool = True
    method: str = "confident learning (Northcutt et al. 2021), calibrated joint, off-diagonal mass"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        ci = f" [{self.low:.1%}, {self.high:.1%}]" if self.n_boot else ""
        return f"{self.rate:.1%}{ci}"


def estimate_noise_rate(probs: Any, labels: Any, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                        out_of_sample: bool = True) -> NoiseEstimate:
    """Estimated share of wrong given labels from predicted probabilities (n × C) and the given labels (n,).

    Confident learning (see the module docstring) with a percentile bootstrap over examples (``n_boot``
    resamples; 0 = no interval). ``out_of_sample`` only records where the probabilities came from (in-sample
    probabilities underestimate the rate).
    """
    p, y = _check(probs, labels)
    if not (0 < level < 1):
        raise LayerinfError(f"level={level} is not in (0, 1)", "use e.g. 0.95")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise LayerinfError(f"n_boot={n_boot!r} must be a whole number ≥ 0", "use e.g. 1000 (0: no interval)")
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    joint, t, issues = _joint(p, y)
    rate, Q = noise_rate_from_joint(joint, counts)
    rowsum = Q.sum(axis=1)
    per_class = [float(1 - Q[i, i] / rowsum[i]) if rowsum[i] > 0 else float("nan") for i in range(k)]
    low = high = rate
    n = len(y)
    issues_low = issues_high = issues / n if n else 0.0
    if n_boot:
        rng = np.random.default_rng(seed)
        boot, boot_issues = np.empty(n_boot), np.empty(n_boot)
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            jb, _, issues_b = _joint(p[idx], y[idx])
            boot[b], _ = noise_rate_from_joint(jb, np.bincount(y[idx], minlength=k))
            boot_issues[b] = issues_b / n
        boot = boot[np.isfinite(boot)]
        a = (1 - level) / 2
        low, high = (float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))) if boot.size else (rate, rate)
        issues_low, issues_high = float(np.quantile(boot_issues, a)), float(np.quantile(boot_issues, 1 - a))
    return NoiseEstimate(rate=rate, low=low, high=high, n=int(n), num_classes=int(k), per_class=per_class,
                         joint=Q.tolist(), thresholds=[float(x) for x in t], issues=int(issues),
                         issues_low=float(issues_low), issues_high=float(issues_high), level=float(level),
                         n_boot=int(n_boot), out_of_sample=bool(out_of_sample))


# --------------------------------------------------------------------------------------------- κ rule


def adaptive_kappa(rate: float, factor: float = KAPPA_FACTOR, bounds: tuple[float, float] = KAPPA_BOUNDS) -> float:
    """Vote's κ from an estimated noise rate: ``clip(factor × rate, 0.05, 0.5)``.

    Each voter votes against the bottom κ·n examples; the rule keeps κ a little above the share of noisy
    examples (so a voter's bottom can hold all of them) without voting against most of the data. With the
    default factor 1.5 a 20 % rate gives the paper's κ = 0.30.
    """
    for name, v in (("rate", rate), ("factor", factor)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)):
            raise LayerinfError(f"{name}={v!r} is not a finite number", f"pass the {name} as a fraction, e.g. 0.2")
    lo, hi = bounds
    if not (0 < lo <= hi <= 1):
        raise LayerinfError(f"κ bounds {bounds} must satisfy 0 < low ≤ high ≤ 1", "use e.g. (0.05, 0.5)")
    if rate < 0 or rate > 1:
        raise LayerinfError(f"noise rate {rate} is outside [0, 1]", "pass the estimated share of wrong labels")
    if factor <= 0:
        raise LayerinfError(f"factor={factor} must be positive", "use e.g. 1.5")
    return float(min(hi, max(lo, float(factor) * float(rate))))


# ------------------------------------------------------------------------------------- planted-noise metrics


def planted_metrics(scores: Any, planted: Any, levels: Sequence[float] = PLANTED_LEVELS) -> dict[str, float]:
    """NDR@k (for ``levels``), AUC-NDR and ROC-AUC of a ranking against the **planted** flips only.

    ``scores``: one score per training example (higher = more helpful; the bottom is suspected).
    ``planted``: the mask of the labels the probe flipped. Everything else counts as clean — including
    examples that are wrong in the user's data already (real noise), which nobody knows here. NDR@k is the
    share of the planted flips among the ⌊k·n⌋ lowest scores (stable order, as everywhere in layerinf).
    """
    from layerinf.evaluation import detection

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    mask = np.asarray(planted).reshape(-1).astype(bool)
    if mask.shape[0] != s.shape[0]:
        raise LayerinfError(f"the planted mask has {mask.shape[0]} entries for {s.shape[0]} scores",
                            "pass one flag per training example")
    if not mask.any() or mask.all():
        raise LayerinfError("the planted mask must mark some, but not all, examples",
                            "plant flips on a fraction in (0, 0.5] of the training set")
    out = {f"ndr_{int(round(k * 100))}": float(detection.ndr_at(s, mask, k)) for k in levels}
    out["auc_ndr"] = float(detection.auc_ndr(s, mask))
    out["roc_auc"] = float(detection.roc_auc(s, mask))
    out["n"] = int(len(s))
    out["n_planted"] = int(mask.sum())
    return out


def mean_ci(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over independent repeats (probes); NaN interval with one value."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half
