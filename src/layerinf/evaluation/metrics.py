"""Evaluation metrics (spec §6–§7) under one import: the detection metrics of
:mod:`layerinf.evaluation.detection` (filter order, NDR, precision, AUC-NDR, ROC-AUC, cancellation, noise ranks,
baseline scores) and the statistics of :mod:`layerinf.evaluation.statistics` (win rate, Pareto ranks, Spearman,
Wilcoxon, Friedman). New code may import either module directly.
"""

from __future__ import annotations

from layerinf.evaluation.detection import (NDR_LEVELS, Cancellation, GroupCancellation, auc_ndr, filter_order,
                                           max_ndr, ndr_at, ndr_curve, ndr_levels, noise_rank, noise_rank_by_layer,
                                           oracle_scores, precision_at, random_scores, removal_count, roc_auc)
from layerinf.evaluation.statistics import friedman, pareto_ranks, spearman, wilcoxon_paired, win_rate

__all__ = [
    "NDR_LEVELS",
    "Cancellation",
    "GroupCancellation",
    "auc_ndr",
    "filter_order",
    "friedman",
    "max_ndr",
    "ndr_at",
    "ndr_curve",
    "ndr_levels",
    "noise_rank",
    "noise_rank_by_layer",
    "oracle_scores",
    "pareto_ranks",
    "precision_at",
    "random_scores",
    "removal_count",
    "roc_auc",
    "spearman",
    "wilcoxon_paired",
    "win_rate",
]
