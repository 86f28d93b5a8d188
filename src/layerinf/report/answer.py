"""The report's first screen: what was found, in one sentence each, before any table.

Sentences: whether the fine-tuned models learned at all (health check); the best configuration against no
filtering, random removal, the noise-aware oracle and the model's own loss; how the paper's recommended
configuration (DataInf, second attention group, Vote) did; and what the runs can support. Means are over the
runs (model × task × seed) with a 95 % t-interval when there are at least two.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from layerinf.report.common import RUN_KEY
from layerinf.report.params import ReportParams

ATTN = re.compile(r"^\d+-\d+$")


def _mean_ci(values) -> str:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    from scipy import stats

    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return f"{v.mean():.3f} ± {half:.3f}"


def _paper_group(groups) -> str | None:
    attn = sorted((g for g in set(groups) if ATTN.match(str(g))), key=lambda g: int(str(g).split("-")[0]))
    return attn[1] if len(attn) > 1 else (attn[0] if attn else None)


def answer(frame: pd.DataFrame, params: ReportParams, retrained: bool) -> list[str]:
    """Plain-text sentences for the top of the report (HTML-escaped by the page)."""
    lines = []
    warnings = [r.health_warning for r in params.runs if r.health_warning]
    if warnings:
        lines.append(f"Warning: in {len(warnings)} of {len(params.runs)} run(s) {warnings[0]}")
    runs = frame.groupby([c for c in RUN_KEY if c in frame.columns]).ngroups if len(frame) else 0
    key = ["method", "group", "aggregator"]
    metric = "best_accuracy" if retrained else "ndr_30"
    what = "test accuracy after removing the " + params.removed if retrained else "NDR@30 (random = 0.30)"
    data = frame.dropna(subset=[metric]) if metric in frame.columns else frame.iloc[0:0]
    if data.empty:
        return lines + ["No configuration has a result yet."]
    means = data.groupby(key, dropna=False)[metric].mean()
    infl = means[[m not in ("none", "random", "oracle", "loss", "self_influence") for m, _, _ in means.index]]
    if infl.empty:
        return lines + ["No influence configuration has a result yet."]
    best = infl.idxmax()
    best_vals = data.set_index(key).loc[[best], metric]
    parts = [f"Best configuration by {what}: {'/'.join(best)} at {_mean_ci(best_vals)}"]
    for name, label in (("none", "no filtering"), ("random", "random removal"), ("oracle", "removing the flipped labels"),
                        ("loss", "ranking by the model's own loss")):
        rows = data[data["method"] == name]
        if len(rows):
            parts.append(f"{label} {_mean_ci(rows[metric])}")
    lines.append(parts[0] + (" — vs " + ", ".join(parts[1:]) if len(parts) > 1 else "") + f" (over {runs} run(s)).")
    loss = data[data["method"] == "loss"][metric]
    if len(loss):
        verdict = "beat" if infl.max() > loss.mean() else "did not beat"
        lines.append(f"Influence {verdict} the model's own loss on this data ({infl.max():.3f} vs {loss.mean():.3f}).")
    group = _paper_group(data["group"])
    paper = ("datainf", group, "vote")
    if group is not None and paper in infl.index:
        rank = int((infl > infl[paper]).sum()) + 1
        lines.append(f"The paper's recommended configuration ({'/'.join(paper)}) reached {infl[paper]:.3f}, "
                     f"rank {rank} of {len(infl)} influence configurations.")
    if runs < 3:
        lines.append(f"With {runs} run(s) these are single measurements: differences of a few points can be "
                     "retraining noise. The paper's claims need ≥ 3 runs (use `layerinf sweep --grid data.seed=0,1,2`).")
    return lines
