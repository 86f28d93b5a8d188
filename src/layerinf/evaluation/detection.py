"""Detection metrics (spec §6–§7.2, §7.5): filter order, removal count, random / oracle baselines, NDR,
precision, AUC-NDR, ROC-AUC, cancellation and layer-wise noise ranks.

Scores ``s`` follow the one sign convention: HIGHER = more helpful; the filter removes the bottom
``⌊f·n + 1e-9⌋`` samples of the stable ascending order (ties by training index).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from layerinf.errors import LayerinfError

__all__ = [
    "NDR_LEVELS",
    "Cancellation",
    "GroupCancellation",
    "auc_ndr",
    "filter_order",
    "max_ndr",
    "ndr_at",
    "ndr_curve",
    "ndr_levels",
    "noise_rank",
    "noise_rank_by_layer",
    "oracle_scores",
    "precision_at",
    "random_scores",
    "removal_count",
    "roc_auc",
]

NDR_LEVELS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.60, 0.70, 0.80, 0.90)
_EPS = 1e-9  # float guard in ⌊f·n⌋ (spec §6: 0.29·100 must give 29)


# -------------------------------------------------------------------------------------------- filtering


def _scores(s: Any) -> np.ndarray:
    arr = np.asarray(s, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise LayerinfError("the scores contain NaN or infinite values", "recompute the influence scores")
    return arr


def _noise_mask(noisy: Any, n: int) -> np.ndarray:
    mask = np.asarray(noisy).reshape(-1).astype(bool)
    if mask.shape[0] != n:
        raise LayerinfError(f"the noise mask has {mask.shape[0]} entries for {n} scores",
                            "pass one noise flag per training sample")
    return mask


def filter_order(s: Any) -> np.ndarray:
    """Ascending order of the scores, stable (ties by ascending training index), spec §6 step 2."""
    return np.argsort(_scores(s), kind="stable")


def removal_count(f: float, n: int) -> int:
    """R = ⌊f·n + 1e-9⌋, clipped to [0, n] (spec §6 step 3)."""
    if not (0.0 <= f <= 1.0):
        raise LayerinfError(f"the filter fraction must lie in [0, 1], got {f}", "use e.g. 0.30")
    return int(min(n, max(0, math.floor(f * n + _EPS))))


def random_scores(n: int, seed: int) -> np.ndarray:
    """Random baseline (spec §6): s ~ U(0, 1) i.i.d."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, int(n))


def oracle_scores(noisy: Any, seed: int) -> np.ndarray:
    """Oracle 'Full' baseline (spec §6): −1 on noisy samples, U(0, 1) on clean ones."""
    mask = np.asarray(noisy).reshape(-1).astype(bool)
    s = np.random.default_rng(seed).uniform(0.0, 1.0, mask.shape[0])
    s[mask] = -1.0
    return s


# -------------------------------------------------------------------------------------------------- NDR


def ndr_curve(s: Any, noisy: Any) -> np.ndarray:
    """Detection curve c(t) = (noisy among the first t of the stable order) / N, t = 1..n (spec §7.1); NaN if N=0."""
    s = _scores(s)
    mask = _noise_mask(noisy, len(s))
    hits = np.cumsum(mask[filter_order(s)])
    N = int(mask.sum())
    if N == 0:
        return np.full(len(s), np.nan)
    return hits / N


def _hits_at(s: np.ndarray, mask: np.ndarray, K: int, ties: str) -> float:
    if K == 0:
        return 0.0
    order = filter_order(s)
    if ties == "stable":
        return float(mask[order[:K]].sum())
    if ties != "expected":
        raise LayerinfError(f"unknown ties mode '{ties}'", "use 'stable' or 'expected'")
    cut = s[order[K - 1]]  # the tie block straddling the cut is credited fractionally
    below = s < cut
    block = s == cut
    n_below = int(below.sum())
    take = K - n_below
    return float(mask[below].sum() + take * mask[block].sum() / block.sum())


def ndr_at(s: Any, noisy: Any, k: float, ties: str = "stable", compat: bool = False) -> float:
    """NDR@k = |first ⌊k·n⌋ of the order ∩ noisy| / N (spec §7.1). N = 0 → NaN; K = 0 → 0.

    ``ties="expected"`` credits the tie block at the cut fractionally. ``compat=True`` reproduces [C]'s
    off-by-one (counts the first round(k·n) + 1 samples).
    """
    s = _scores(s)
    mask = _noise_mask(noisy, len(s))
    N = int(mask.sum())
    if N == 0:
        return float("nan")
    if compat:
        idx = min(len(s) - 1, int(round(k * len(s))))
        return float(mask[filter_order(s)][: idx + 1].sum() / N)
    return _hits_at(s, mask, removal_count(k, len(s)), ties) / N


def ndr_levels(s: Any, noisy: Any, levels: Sequence[float] = NDR_LEVELS) -> dict[float, float]:
    """NDR at each level (default 5, 10, …, 50, 60, 70, 80, 90 %)."""
    return {float(k): ndr_at(s, noisy, k) for k in levels}


def precision_at(s: Any, noisy: Any, k: float, ties: str = "stable") -> float:
    """precision@k = hits among the first K = ⌊k·n⌋ / K (spec §7.1); NaN when K = 0."""
    s = _scores(s)
    mask = _noise_mask(noisy, len(s))
    K = removal_count(k, len(s))
    if K == 0:
        return float("nan")
    return _hits_at(s, mask, K, ties) / K


def max_ndr(noisy: Any, k: float) -> float:
    """The best achievable NDR@k: min(K, N) / N (spec §7.1); NaN when N = 0."""
    mask = np.asarray(noisy).reshape(-1).astype(bool)
    N = int(mask.sum())
    if N == 0:
        return float("nan")
    return min(removal_count(k, len(mask)), N) / N


def auc_ndr(s: Any, noisy: Any, compat: bool = False) -> float:
    """Area under the detection curve (spec §7.1): Σ_t c(t) / Σ_t min(t, N)/N, so a perfect ranking gives 1.

    ``compat=True`` uses [C]'s approximate denominator N/2 + (n − N). Affine in :func:`roc_auc`.
    """
    curve = ndr_curve(s, noisy)
    n = len(curve)
    N = int(np.asarray(noisy).astype(bool).sum())
    if N == 0:
        return float("nan")
    if compat:
        return float(curve.sum() / (N / 2 + (n - N)))
    t = np.arange(1, n + 1)
    return float(curve.sum() / (np.minimum(t, N).sum() / N))


def roc_auc(s: Any, noisy: Any, ties: str = "stable") -> float:
    """ROC-AUC of detecting noisy samples with detector −s (spec §7.1); NaN (+ warning) with one class only.

    ``ties="stable"`` scores each sample by its position in the stable filter order (so the AUC-NDR identity is
    exact even with ties); ``ties="expected"`` uses −s directly (tied pairs count one half).
    """
    from sklearn.metrics import roc_auc_score

    s = _scores(s)
    mask = _noise_mask(noisy, len(s))
    if mask.all() or not mask.any():
        warnings.warn("roc_auc: the noise mask has a single class; ROC-AUC is undefined", RuntimeWarning,
                      stacklevel=2)
        return float("nan")
    if ties == "stable":
        detector = np.empty(len(s))
        detector[filter_order(s)] = -np.arange(len(s), dtype=np.float64)
    elif ties == "expected":
        detector = -s
    else:
        raise LayerinfError(f"unknown ties mode '{ties}'", "use 'stable' or 'expected'")
    return float(roc_auc_score(mask, detector))


# --------------------------------------------------------------------------------------- cancellation


class Cancellation:
    """Streaming cancellation accumulator for one module (spec §7.2); combine modules with :meth:`combine`.

    Accumulates, per parameter, Σ_i|g_ip| and Σ_i g_ip, and per sample ‖g_i‖₂² (O(d + n) memory). ``value``:

    * ``"l1"`` (default, [C]'s tables): Σ_i‖g_i‖₁ / ‖Σ_i g_i‖₁;
    * ``"l2"`` (possibly Yeh's original): Σ_i‖g_i‖₂ / ‖Σ_i g_i‖₂;
    * ``"l1_l2"`` ([C]'s "cancellation_l2"): Σ_i‖g_i‖₁ / ‖Σ_i g_i‖₂.

    For a group the modules are treated as one concatenated gradient: for L1 this is exactly "numerators and
    denominators summed across modules"; for L2 the per-sample norms combine as √(Σ_b ‖g_i^b‖²).
    """

    NORMS = ("l1", "l2", "l1_l2")

    def __init__(self, norm: str = "l1"):
        if norm not in self.NORMS:
            raise LayerinfError(f"unknown cancellation norm '{norm}'", f"use one of {', '.join(self.NORMS)}")
        self.norm = norm
        self.sum_abs = np.zeros(0)  # (d,) Σ_i |g_ip|
        self.sum_g = np.zeros(0)  # (d,) Σ_i g_ip
        self._sample_sq: list[np.ndarray] = []  # per chunk: (c,) ‖g_i‖₂²
        self.n = 0

    # -- accumulation
    def update(self, chunk: Any) -> "Cancellation":
        """Add a dense (c × d) chunk of per-sample gradients."""
        g = np.asarray(chunk.detach().cpu().numpy() if hasattr(chunk, "detach") else chunk)
        g = g.reshape(g.shape[0], -1) if g.ndim > 1 else g.reshape(1, -1)
        g = g.astype(np.float64, copy=False)
        if self.n == 0 and self.sum_abs.size == 0:
            self.sum_abs = np.zeros(g.shape[1])
            self.sum_g = np.zeros(g.shape[1])
        elif g.shape[1] != self.sum_abs.size:
            raise LayerinfError(f"a gradient chunk has {g.shape[1]} columns, expected {self.sum_abs.size}",
                                "feed one module's gradients per accumulator")
        self.sum_abs += np.abs(g).sum(axis=0)
        self.sum_g += g.sum(axis=0)
        self._sample_sq.append(np.einsum("ij,ij->i", g, g))
        self.n += g.shape[0]
        return self

    def update_row_sparse(self, indptr: Any, tokens: Any, rows: Any) -> "Cancellation":
        """Add row-sparse WE gradients (sample i owns rows indptr[i]:indptr[i+1]); parameters = (token, column)."""
        indptr = np.asarray(indptr, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        R = np.asarray(rows.detach().cpu().numpy() if hasattr(rows, "detach") else rows, dtype=np.float64)
        b = len(indptr) - 1
        sample = np.repeat(np.arange(b), np.diff(indptr))
        h = R.shape[1] if R.ndim == 2 else 0
        if len(tokens):
            base = int(tokens.max()) + 1
            uniq, inv = np.unique(sample * base + tokens, return_inverse=True)
            summed = np.zeros((len(uniq), h))
            np.add.at(summed, inv.reshape(-1), R)  # a sample's repeated tokens add up first
            tok, smp = uniq % base, uniq // base
            vocab = int(tok.max()) + 1
            if self.sum_abs.size < vocab * h:
                grow = vocab * h - self.sum_abs.size
                self.sum_abs = np.concatenate([self.sum_abs, np.zeros(grow)])
                self.sum_g = np.concatenate([self.sum_g, np.zeros(grow)])
            flat = (tok[:, None] * h + np.arange(h)[None, :]).reshape(-1)
            np.add.at(self.sum_abs, flat, np.abs(summed).reshape(-1))
            np.add.at(self.sum_g, flat, summed.reshape(-1))
            sq = np.bincount(smp, weights=np.einsum("ij,ij->i", summed, summed), minlength=b)
        else:
            sq = np.zeros(b)
        self._sample_sq.append(sq)
        self.n += b
        return self

    # -- results
    @property
    def sample_sq_norms(self) -> np.ndarray:
        return np.concatenate(self._sample_sq) if self._sample_sq else np.zeros(0)

    @staticmethod
    def _ratio(num: float, den: float) -> float:
        if den == 0:
            return float("inf") if num > 0 else float("nan")
        return float(num / den)

    @classmethod
    def _value(cls, norm: str, parts: Sequence["Cancellation"]) -> float:
        if norm == "l2":
            sq = None
            for p in parts:
                v = p.sample_sq_norms
                if sq is not None and len(v) != len(sq):
                    raise LayerinfError("modules of a group saw different numbers of samples",
                                        "accumulate every module over the same training set")
                sq = v if sq is None else sq + v
            num = float(np.sqrt(sq).sum()) if sq is not None else 0.0
        else:
            num = float(sum(p.sum_abs.sum() for p in parts))
        if norm == "l1":
            den = float(sum(np.abs(p.sum_g).sum() for p in parts))
        else:
            den = math.sqrt(float(sum((p.sum_g ** 2).sum() for p in parts)))
        return cls._ratio(num, den)

    @property
    def value(self) -> float:
        """C for this module under ``self.norm`` (+inf if Σg = 0 with non-zero gradients, NaN with none)."""
        return self._value(self.norm, [self])

    def param_stats(self) -> dict[str, float]:
        """Per-parameter c_p = Σ_i|g_ip| / |Σ_i g_ip|: median/min/max/count, skipping Σ|g| = 0 (max may be +inf)."""
        return _param_stats(self.sum_abs, self.sum_g)

    @classmethod
    def combine(cls, parts: Sequence["Cancellation"], norm: str | None = None) -> "GroupCancellation":
        """Group cancellation: modules as one concatenated gradient (numerators/denominators summed)."""
        parts = list(parts)
        return GroupCancellation(parts, norm or (parts[0].norm if parts else "l1"))


class GroupCancellation:
    """Cancellation of a group of modules (spec §7.2); ``value`` and ``param_stats`` like a module's."""

    def __init__(self, parts: Sequence[Cancellation], norm: str):
        self.parts = list(parts)
        self.norm = norm

    @property
    def value(self) -> float:
        if not self.parts:
            return float("nan")
        return Cancellation._value(self.norm, self.parts)

    def param_stats(self) -> dict[str, float]:
        if not self.parts:
            return _param_stats(np.zeros(0), np.zeros(0))
        return _param_stats(np.concatenate([p.sum_abs for p in self.parts]),
                            np.concatenate([p.sum_g for p in self.parts]))


def _param_stats(sum_abs: np.ndarray, sum_g: np.ndarray) -> dict[str, float]:
    keep = sum_abs > 0
    if not keep.any():
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "count": 0}
    with np.errstate(divide="ignore"):
        c = sum_abs[keep] / np.abs(sum_g[keep])
    return {"median": float(np.median(c)), "min": float(c.min()), "max": float(c.max()), "count": int(keep.sum())}


# ----------------------------------------------------------------------------- layer-wise noise ranks (§7.5)


def noise_rank(S: Any, noisy: Any, tie_method: str = "min", normalize: bool = True) -> dict[str, Any]:
    """Noise-rank diagnostic of one module (spec §7.5) from its (m × n) score matrix.

    Each training sample's 0-based ascending rank per validation sample, averaged over validation samples
    (``mean_ranks``, divided by n − 1 when ``normalize``). Returns the mean over noisy and over clean samples
    and the top-1 of each class: [O] the LOWEST mean rank among noisy (the first noisy sample the filter
    would reach) and among clean samples (the most suspicious benign one). NaN for an empty class.
    """
    from layerinf.ranks import rank_rows

    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or not np.all(np.isfinite(S)):
        raise LayerinfError("noise_rank needs a finite (validation × train) score matrix", "recompute the scores")
    n = S.shape[1]
    mask = _noise_mask(noisy, n)
    r = rank_rows(S, tie_method).mean(axis=0)
    if normalize:
        r = r / max(n - 1, 1)
    return {
        "mean_ranks": r,
        "noisy_mean_rank": float(r[mask].mean()) if mask.any() else float("nan"),
        "clean_mean_rank": float(r[~mask].mean()) if (~mask).any() else float("nan"),
        "top1_noisy_rank": float(r[mask].min()) if mask.any() else float("nan"),
        "top1_clean_rank": float(r[~mask].min()) if (~mask).any() else float("nan"),
    }


def noise_rank_by_layer(module_scores: Mapping[str, Any], positions: Mapping[str, int], noisy: Any,
                        tie_method: str = "min", normalize: bool = True) -> dict[str, dict]:
    """Layer-wise noise ranks (spec §7.5): per module :func:`noise_rank`, then per layer position the average.

    ``module_scores`` maps module name → (m × n) matrix (read one at a time); ``positions`` maps module name →
    layer position (0 = WE, 1..L = layer index + 1, L + 1 = CL). Returns ``{"modules": {name: stats},
    "layers": {position: stats}}``; a layer's stats average its modules' per-sample mean ranks first.
    """
    per_module: dict[str, dict] = {}
    per_layer_ranks: dict[int, list[np.ndarray]] = {}
    mask = None
    for name, S in module_scores.items():
        if name not in positions:
            raise LayerinfError(f"module {name} has no layer position", "pass positions for every module")
        st = noise_rank(S, noisy, tie_method, normalize)
        mask = _noise_mask(noisy, len(st["mean_ranks"]))
        per_module[name] = {k: v for k, v in st.items() if k != "mean_ranks"}
        per_layer_ranks.setdefault(int(positions[name]), []).append(st["mean_ranks"])
    layers = {}
    for pos in sorted(per_layer_ranks):
        r = np.mean(per_layer_ranks[pos], axis=0)
        layers[pos] = {
            "noisy_mean_rank": float(r[mask].mean()) if mask.any() else float("nan"),
            "clean_mean_rank": float(r[~mask].mean()) if (~mask).any() else float("nan"),
            "top1_noisy_rank": float(r[mask].min()) if mask.any() else float("nan"),
            "top1_clean_rank": float(r[~mask].min()) if (~mask).any() else float("nan"),
            "modules": len(per_layer_ranks[pos]),
        }
    return {"modules": per_module, "layers": layers}
