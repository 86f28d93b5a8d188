"""Response noise for instruction data, with a ground-truth mask: class words (classification as generation)
and the two noise kinds, ``label`` and ``swap`` (``layerinf.data.sft_prepared`` explains them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from layerinf.data.noise import inject_noise, noise_count
from layerinf.errors import LayerinfError

NOISE_KINDS = ("auto", "label", "swap")
MAX_CLASSES = 20
MAX_CLASS_WORDS = 3
_SWAP_DRAWS = 100


# ------------------------------------------------------------------------------------------------ class words


def class_words(responses, max_classes: int = MAX_CLASSES, max_words: int = MAX_CLASS_WORDS) -> list[str] | None:
    """The sorted distinct responses when they look like class words (2..``max_classes`` distinct, each of at
    most ``max_words`` whitespace-separated words, and repeated: at most half as many distinct responses as
    rows), else None."""
    responses = [str(r) for r in responses]
    distinct = sorted(set(responses))
    if not 2 <= len(distinct) <= max_classes or 2 * len(distinct) > len(responses):
        return None
    if any(len(r.split()) > max_words or not r.strip() for r in distinct):
        return None
    return distinct


def _class_words_or_fail(responses) -> list[str]:
    words = class_words(responses)
    if words is None:
        distinct = sorted({str(r) for r in responses})
        longest = max(distinct, key=lambda r: len(r.split()))
        why = (f"{len(distinct)} distinct response(s)" if not 2 <= len(distinct) <= MAX_CLASSES else
               f"a response of {len(longest.split())} words ({longest[:40]!r})"
               if len(longest.split()) > MAX_CLASS_WORDS else f"{len(distinct)} distinct of {len(responses)}")
        raise LayerinfError(f"noise_kind='label' needs class-word responses (2..{MAX_CLASSES} distinct, each at most "
                            f"{MAX_CLASS_WORDS} words, each class repeated) but the data has {why}",
                            "use noise_kind='swap' (CLI --noise-kind swap) for free-form responses")
    return words


def noise_kind_arg(kind: Any) -> str:
    if not isinstance(kind, str) or kind.strip().lower() not in NOISE_KINDS:
        raise LayerinfError(f"noise_kind={kind!r} is not one of {', '.join(NOISE_KINDS)}",
                            "use 'label' (class-word responses), 'swap' (free-form responses) or 'auto'")
    return kind.strip().lower()


# ------------------------------------------------------------------------------------------------ noise


def _derangement(values: list[str], rng: np.random.Generator) -> np.ndarray | None:
    """A permutation ``p`` of range(k) with ``values[p[i]] != values[i]`` for all i, or None if none exists.

    Equal values are grouped contiguously (groups and members in random order) and every position takes the
    value ``m`` places on (``m`` = the largest group); that never lands in the same group when ``m ≤ k/2``.
    """
    k = len(values)
    groups: dict[str, list[int]] = {}
    for i in rng.permutation(k):
        groups.setdefault(values[int(i)], []).append(int(i))
    m = max(len(g) for g in groups.values())
    if k < 2 or 2 * m > k:
        return None
    members = list(groups.values())
    order = [i for g in rng.permutation(len(members)) for i in members[int(g)]]
    perm = np.empty(k, dtype=np.int64)
    for j, i in enumerate(order):
        perm[i] = order[(j + m) % k]
    return perm


def swap_noise(responses, rate: float, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``(noisy_responses, mask)``: ``⌊rate·n⌋`` rows trade responses (a derangement, never an identical string)."""
    clean = [str(r) for r in responses]
    n = len(clean)
    inject_noise(np.zeros(1, np.int64), rate)  # the range check
    k = noise_count(n, float(rate))
    mask = np.zeros(n, dtype=bool)
    if k == 0:
        return list(clean), mask
    if k == 1:
        raise LayerinfError(f"swap noise needs at least 2 noisy rows to trade responses, but noise_rate={rate} of "
                            f"{n} training rows is 1", "raise noise_rate (or max_train), or use noise_rate=0")
    rng = np.random.default_rng([int(seed), 1])
    for _ in range(_SWAP_DRAWS):
        chosen = np.sort(rng.choice(n, size=k, replace=False))
        perm = _derangement([clean[i] for i in chosen], rng)
        if perm is not None:
            break
    else:
        values, counts = np.unique(np.array(clean, dtype=object).astype(str), return_counts=True)
        top = values[np.argmax(counts)]
        raise LayerinfError(f"swap noise cannot give {k} rows a different response: {counts.max()} of the {n} "
                            f"training responses are {str(top)[:40]!r}",
                            "use noise_kind='label' for class-word responses, or a lower noise_rate")
    noisy = list(clean)
    for i, p in zip(chosen, perm):
        noisy[int(i)] = clean[int(chosen[p])]
    mask[chosen] = True
    return noisy, mask


def label_noise(responses, rate: float, words: list[str], seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``(noisy_responses, mask)``: ``⌊rate·n⌋`` responses replaced by a different class word of ``words``."""
    lookup = {w: i for i, w in enumerate(words)}
    clean = [str(r) for r in responses]
    unknown = sorted({r for r in clean if r not in lookup})
    if unknown:
        raise LayerinfError(f"response(s) {unknown[:3]} are not among the class words {words}",
                            "use noise_kind='swap' for free-form responses")
    ids = np.array([lookup[r] for r in clean], dtype=np.int64)
    noisy_ids, mask = inject_noise(ids, rate, num_classes=len(words), seed=seed)
    return [words[i] for i in noisy_ids], mask


def inject_sft_noise(responses, rate: float, kind: str = "auto", seed: int = 0,
                     words: list[str] | None = None) -> tuple[list[str], np.ndarray, str]:
    """``(noisy_responses, mask, kind)`` with ``kind`` resolved (``"auto"`` → ``"label"`` or ``"swap"``).

    ``words``: the class words (default: detected from ``responses``).
    """
    kind = noise_kind_arg(kind)
    if kind == "auto":
        kind = "label" if (words or class_words(responses)) else "swap"
    if kind == "label":
        words = words or _class_words_or_fail(responses)
        noisy, mask = label_noise(responses, rate, words, seed)
    else:
        noisy, mask = swap_noise(responses, rate, seed)
    return noisy, mask, kind


__all__ = ["MAX_CLASSES", "MAX_CLASS_WORDS", "NOISE_KINDS", "class_words", "inject_sft_noise", "label_noise",
           "noise_kind_arg", "swap_noise"]
