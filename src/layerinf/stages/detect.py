"""Which ranking a cross-fitted ``suspects`` result uses, and how many rows it flags (``evaluation.rankings``).

* The rankings side by side (``side_by_side``): influence, out-of-sample confidence, embedding, combined.
* The choice: ``--ranking`` when given; with ``auto``, the planted probe's winner (``choose_ranking``); when the
  fold models did not learn, the ``embedding`` ranking (it needs no fine-tuned model) and the page says so. "Did
  not learn" is judged on all the ranked rows together (``learned``: the folds' out-of-sample accuracy, its 95 %
  Wilson interval clear of the majority class; ``CrossfitStage``): one fold's held-out part (a third of a 500-row
  file, with its labels as noisy as the rest) is too small to tell a model that learned from one that did not.
* How many rows: ``--top`` × n when given, else the number of rows confident learning calls mislabelled on the
  same out-of-sample probabilities (``evaluation.noise_rate.count_label_issues``: cleanlab's
  ``num_label_issues``), with its 95 % bootstrap interval. The calibrated noise-rate estimate is reported beside
  it; it is not what is flagged, because it counts the rows with no confident class as noisy in proportion,
  which inflates it when the fold models are only moderately accurate (docs/detection.md: 607 flagged for 400
  flips on 2,000 SST-2 rows by the rate, 487 by the count).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from layerinf.config import RankConfig

DEFAULT_TOP = 0.30  # rankings with no out-of-sample probabilities to estimate a rate from (instruction data)


def detection_choice(labels: np.ndarray, fits: Sequence[Any], oos_probs: np.ndarray, emb_probs: np.ndarray,
                     cfg: RankConfig, *, learned: bool, seed: int = 0) -> dict[str, Any]:
    """``rankings`` (name → scores), the ``ranking`` used and ``why``, the ``probe`` AUCs, the ``noise`` estimate
    and the ``flagged`` count."""
    from layerinf.evaluation.noise_rate import estimate_noise_rate
    from layerinf.evaluation.rankings import choose_ranking, flag_count, side_by_side

    rankings, aucs = side_by_side(labels, fits, oos_probs, emb_probs)
    probe = {k: [float(x) for x in v] for k, v in aucs.items()}
    if not learned:
        ranking = "embedding"
        why = ("the fold models did not learn the task (their out-of-sample accuracy on all the rows does not clearly "
               "beat the majority class), so the rankings that need a fine-tuned model (influence, confidence, "
               "combined) are close to random: the embedding ranking is used, which needs none")
        if cfg.ranking not in ("auto", "embedding"):
            ranking, why = cfg.ranking, f"--ranking {cfg.ranking} was asked for (although the fold models did not learn)"
    elif cfg.ranking != "auto":
        ranking, why = cfg.ranking, f"--ranking {cfg.ranking} was asked for"
    elif probe:
        ranking, why = choose_ranking(probe)
    else:
        ranking, why = ("combined", "no probe (--probe-rate 0, or fewer than 3 folds): combined, the rank average of "
                        "the three signals")
    source = oos_probs if learned else emb_probs
    noise = estimate_noise_rate(source, labels, seed=seed)
    n = len(labels)
    flagged = flag_count(n, cfg.top, noise.issues / n if n else None)
    whose = "the fine-tuned folds'" if learned else "the embedding classifier's"
    how = (f"--top {cfg.top:g}" if cfg.top is not None else
           f"the rows confident learning calls mislabelled on {whose} out-of-sample probabilities, "
           f"{noise.issues / n:.1%} of them (95 % CI {noise.issues_low:.1%}–{noise.issues_high:.1%}; the calibrated "
           f"noise-rate estimate is {noise.rate:.1%}, CI {noise.low:.1%}–{noise.high:.1%})")
    return {"rankings": rankings, "ranking": ranking, "why": why, "probe": probe,
            "probe_mean": {k: float(np.nanmean(v)) for k, v in probe.items()},
            "probe_rate": float(cfg.probe_rate), "learned": bool(learned),
            "noise": {"rate": noise.rate, "low": noise.low, "high": noise.high, "n": noise.n,
                      "issues": noise.issues, "issues_low": noise.issues_low, "issues_high": noise.issues_high},
            "flagged": int(flagged), "flagged_by": how}


__all__ = ["DEFAULT_TOP", "detection_choice"]
