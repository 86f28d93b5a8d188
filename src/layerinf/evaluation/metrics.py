"""Evaluation metrics (spec §6–§7) under one import: the detection metrics of
:mod:`layerinf.evaluation.detection` (filter order, NDR, precision, AUC-NDR, ROC-AUC, cancellation, noise ranks,
baseline scores) and the statistics of :mod:`layerinf.evaluation.statistics` (win rate, Pareto ranks, Spearman,
Wilcoxon, Friedman; t-intervals and the bootstrap of the detection metrics). New code may import either module
directly.
"""

from __future__ import annotations

from layerinf.evaluation.detection import (NDR_LEVELS, Cancellation, GroupCancellation, auc_ndr, filter_order,
                                           max_ndr, ndr_at, ndr_curve, ndr_levels, noise_rank, noise_rank_by_layer,
                                           oracle_scores, precision_at, random_scores, removal_count, roc_auc)
from layerinf.evaluation.statistics import (bootstrap_counts, bootstrap_detection, friedman, pareto_ranks,
                                            percentile_interval, spearman, t_interval, wilcoxon_paired, win_rate)

__all__ = [
    "NDR_LEVELS",
    "Cancellation",
    "GroupCancellation",
    "auc_ndr",
    "bootstrap_counts",
    "bootstrap_detection",
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
    "percentile_interval",
    "precision_at",
    "random_scores",
    "removal_count",
    "roc_auc",
    "spearman",
    "t_interval",
    "wilcoxon_paired",
    "win_rate",
]
