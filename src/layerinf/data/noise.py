"""Synthetic label noise: flip an exact fraction of labels, chosen uniformly without replacement (spec §9)."""

from __future__ import annotations

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
