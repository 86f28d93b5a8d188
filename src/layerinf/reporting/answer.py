"""The report's first screen: what was found, in one sentence each, before any table.

Sentences: whether the fine-tuned models learned at all (health check); whether any influence configuration beat
no filtering (said first when none did); the best configuration against no filtering, random removal, the
noise-aware oracle and the model's own loss; how the paper's recommended configuration (DataInf, second attention
group, Vote) did; and what the runs can support. A gap is called a win only when it is clear of the noise: more than
one test example, and either outside both 95 % intervals or, for single measurements, beyond the 95 % binomial
half-width of an accuracy on the test set (±h, stated in the last sentence); otherwise it is a tie. Accuracies are
means over the runs (model × task × seed), each run's repeated retrainings averaged first, with the half-width of
the 95 % t-interval (over the runs, or over one run's repeats); NDR@30 and ROC-AUC carry their 95 % bootstrap
interval over the training examples; retrainings that collapsed to the majority class are reported.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from layerinf.reporting.common import RUN_KEY
from layerinf.reporting.params import ReportParams
from layerinf.reporting.uncertainty import collapsed_words

ATTN = re.compile(r"^\d+-\d+$")
NOT_INFLUENCE = ("none", "random", "oracle", "loss", "self_influence")


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


def _lookup(table: pd.DataFrame | None, cfg: tuple) -> pd.Series | None:
    if table is None or table.empty or not {"method", "group", "aggregator"} <= set(table.columns):
        return None
    sel = table[(table["method"] == cfg[0]) & (table["group"] == cfg[1]) & (table["aggregator"] == cfg[2])]
    return sel.iloc[0] if len(sel) else None


def _interval(row: pd.Series | None, metric: str) -> tuple[float, float] | None:
    if row is None or f"{metric}_lo" not in row.index:
        return None
    lo, hi = row[f"{metric}_lo"], row[f"{metric}_hi"]
    return (float(lo), float(hi)) if np.isfinite(lo) and np.isfinite(hi) else None


def _value(data: pd.DataFrame, table: pd.DataFrame | None, cfg: tuple, metric: str, retrained: bool) -> str:
    """The configuration's value with its interval: accuracy ± t half-width, NDR@30 [bootstrap interval]."""
    row = _lookup(table, cfg)
    if retrained:
        if row is not None and "best_accuracy_ci95" in row.index and np.isfinite(row["best_accuracy_mean"]):
            half = row["best_accuracy_ci95"]
            flag = (f" ⚠ {collapsed_words(int(row['collapsed']), int(row['collapsed_included']))}"
                    if row.get("collapsed", 0) else "")
            return f"{row['best_accuracy_mean']:.3f}" + (f" ± {half:.3f}" if np.isfinite(half) else "") + flag
        sel = data[(data["method"] == cfg[0]) & (data["group"] == cfg[1]) & (data["aggregator"] == cfg[2])]
        return _mean_ci(sel[metric])
    sel = data[(data["method"] == cfg[0]) & (data["group"] == cfg[1]) & (data["aggregator"] == cfg[2])]
    ci = _interval(row, "ndr_30")
    return _mean_ci(sel[metric]).split(" ±")[0] + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _detection(table: pd.DataFrame | None, cfg: tuple) -> str:
    """``NDR@30 0.62 [0.55, 0.70], ROC-AUC 0.81 [0.77, 0.85]`` of a configuration (what is known of it)."""
    row = _lookup(table, cfg)
    if row is None:
        return ""
    parts = []
    for metric, label, col in (("ndr_30", "NDR@30", "ndr_30_mean"), ("roc_auc", "ROC-AUC", "roc_auc_mean")):
        col = col if col in row.index else metric
        if col in row.index and np.isfinite(row[col]):
            ci = _interval(row, metric)
            parts.append(f"{label} {row[col]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    return ", ".join(parts)


def _accuracy_interval(table: pd.DataFrame | None, cfg: tuple) -> tuple[float, float] | None:
    row = _lookup(table, cfg)
    if row is None or "best_accuracy_ci95" not in row.index or not np.isfinite(row["best_accuracy_ci95"]):
        return None
    m, h = float(row["best_accuracy_mean"]), float(row["best_accuracy_ci95"])
    return m - h, m + h


Z95 = 1.959964  # two-sided 95 % normal quantile


def _names(cfgs) -> str:
    return ", ".join("/".join(c) for c in cfgs)


def best_config(frame: pd.DataFrame, params: ReportParams, retrained: bool,
                table: pd.DataFrame | None = None) -> tuple[tuple, list[tuple]] | None:
    """The report's one best influence configuration (the highest mean accuracy, else NDR@30; equal values: the
    first in ``table``'s order) and the configurations tied with it (within one test example of accuracy, or equal
    NDR@30); None when no influence configuration has a result. The page, its first screen and its table of
    suspects all use this one."""
    metric = "best_accuracy" if retrained else "ndr_30"
    data = frame.dropna(subset=[metric]) if metric in frame.columns else frame.iloc[0:0]
    if data.empty:
        return None
    means = data.groupby(["method", "group", "aggregator"], dropna=False)[metric].mean()
    infl = means[[m not in NOT_INFLUENCE for m, _, _ in means.index]]
    if infl.empty:
        return None
    step = 1.0 / params.n_test if retrained and params.n_test else 0.0
    tied = infl[infl >= infl.max() - step - 1e-9]
    pos = {}
    if table is not None and {"method", "group", "aggregator"} <= set(table.columns):
        pos = {tuple(r): i for i, r in enumerate(table[["method", "group", "aggregator"]].itertuples(index=False))}
    ranked = sorted(tied.index, key=lambda c: (-round(float(tied[c]), 9), pos.get(c, len(pos))))
    return ranked[0], ranked[1:]


def _compare(a: float, b: float, ia, ib, n: int | None, h: float | None) -> tuple[int, str, bool]:
    """(+1 | −1 when ``a`` is clearly above | below ``b``, 0 for a tie; why; whether that rests on an interval or the
    test-set size). ``ia`` / ``ib``: 95 % intervals; ``n``: test examples (accuracy only); ``h``: the noise of a
    single measurement (±, accuracy only)."""
    d = a - b
    if n and abs(d) <= 1.0 / n + 1e-9:
        return 0, "within one test example", True
    if ia and ib:
        if ia[0] <= ib[1] and ib[0] <= ia[1]:
            return 0, "their 95 % intervals overlap", True
        return int(np.sign(d)), "their 95 % intervals do not overlap", True
    if h is not None:
        if abs(d) <= h:
            return 0, f"within ±{h:.3f}, the noise of one measurement", True
        return int(np.sign(d)), f"beyond ±{h:.3f}, the noise of one measurement", True
    if round(a, 3) == round(b, 3):
        return 0, "equal to three decimals", True
    return int(np.sign(d)), "single measurements without an interval", False


def answer(frame: pd.DataFrame, params: ReportParams, retrained: bool,
           table: pd.DataFrame | None = None, best: tuple[tuple, list[tuple]] | None = None) -> list[str]:
    """Plain-text sentences for the top of the report (HTML-escaped by the page).

    ``frame``: one row per run and configuration (repeats averaged); ``table``: the configurations table (or,
    without retraining, the detection table), whose intervals the sentences quote: accuracy ± the half-width of
    the 95 % t-interval (over the repeats of one run, or over runs), NDR@30 and ROC-AUC [95 % bootstrap
    interval over the training examples]; ``best``: :func:`best_config` (computed when not given)."""
    lines = []
    warnings = [r.health_warning for r in params.runs if r.health_warning]
    if warnings:  # first: nothing below means much if the model did not learn
        lines.append(f"Warning: in {len(warnings)} of {len(params.runs)} run(s) {warnings[0]}")
    runs = frame.groupby([c for c in RUN_KEY if c in frame.columns]).ngroups if len(frame) else 0
    repeats = int(frame["repeats"].max()) if "repeats" in frame.columns and len(frame) else 1
    key = ["method", "group", "aggregator"]
    metric = "best_accuracy" if retrained else "ndr_30"
    what = "test accuracy after removing the " + params.removed if retrained else "NDR@30 (random = 0.30)"
    data = frame.dropna(subset=[metric]) if metric in frame.columns else frame.iloc[0:0]
    if data.empty:
        return lines + ["No configuration has a result yet."]
    means = data.groupby(key, dropna=False)[metric].mean()
    infl = means[[m not in NOT_INFLUENCE for m, _, _ in means.index]]
    best = best or best_config(frame, params, retrained, table)
    if best is None:
        return lines + ["No influence configuration has a result yet."]
    best, tied = best
    n = params.n_test if retrained else None
    h = Z95 * math.sqrt(max(float(data[metric].mean()) * (1 - float(data[metric].mean())), 0.0) / n) if n else None
    single = not (retrained and (runs > 1 or repeats > 1))  # no interval on an accuracy

    def value(cfg):
        return _value(data, table, cfg, metric, retrained)

    def interval(cfg):
        return _accuracy_interval(table, cfg) if retrained else _interval(_lookup(table, cfg), "ndr_30")

    def compare(cfg, other):
        return _compare(float(means[cfg]), float(means[other]), interval(cfg), interval(other), n,
                        h if single else None)

    baseline = {}
    for name in ("none", "random", "oracle", "loss"):
        rows = data[data["method"] == name]
        if len(rows):
            baseline[name] = tuple(rows.iloc[0][key])
    if retrained and "none" in baseline:
        sign, why, sure = compare(best, baseline["none"])
        if sign <= 0:
            rnd = f"; random removal {value(baseline['random'])}" if "random" in baseline else ""
            verdict = ("Filtering made the model worse here" if sign < 0 and sure else
                       "A tie: filtering did not help here" if sign == 0 else "Filtering did not help here")
            lines.append(f"No influence configuration beat no filtering: the best, {'/'.join(best)}, reached "
                         f"{value(best)} against {value(baseline['none'])} without filtering{rnd}. {verdict} ({why}).")
    head = f"Best configuration by {what}: {'/'.join(best)} at {value(best)}"
    if tied:
        head += (f", tied with {_names(tied[:3])}{' and others' if len(tied) > 3 else ''} "
                 + ("(within one test example)" if retrained and params.n_test else "(equal)"))
    det = _detection(table, best) if retrained else ""
    parts = [head + (f" ({det})" if det else "")]
    for name, label in (("none", "no filtering"), ("random", "random removal"),
                        ("oracle", "removing the flipped labels"), ("loss", "ranking by the model's own loss")):
        if name in baseline:
            parts.append(f"{label} {value(baseline[name])}")
    how = []
    if not single:
        how.append("± = 95 % t-interval of the mean over " + (f"{runs} runs" if runs > 1 else
                                                               f"{repeats} retraining seeds"))
    if table is not None and "ndr_30_lo" in table.columns and table["ndr_30_lo"].notna().any():
        how.append("[ ] = 95 % bootstrap interval over training examples")
    lines.append(parts[0] + (" — vs " + ", ".join(parts[1:]) if len(parts) > 1 else "")
                 + f" (over {runs} run(s)" + (f" × {repeats} retrainings" if repeats > 1 else "")
                 + ("; " + "; ".join(how) if how else "") + ").")
    if retrained and "collapsed" in frame.columns and frame["collapsed"].sum():
        k, used = int(frame["collapsed"].sum()), int(frame["collapsed_used"].sum())
        lines.append(f"Warning: {k} of {int(frame['repeats'].sum())} retraining(s) collapsed to the majority class "
                     f"(test accuracy never above always predicting it): {k - used} excluded from the means because "
                     f"another repeat of the same configuration learned, {used} included (flagged ⚠ in the table).")
    if "loss" in baseline:
        sign, why, sure = compare(best, baseline["loss"])
        nums = f"{means[best]:.3f} vs {means[baseline['loss']]:.3f}"
        if sign > 0 and sure:
            lines.append(f"Influence beat the model's own loss on this data ({nums}; {why}).")
        elif sign > 0:
            lines.append(f"Influence scored above the model's own loss ({nums}), but single measurements without an "
                         "interval cannot show that it beat it.")
        else:
            lines.append(f"Influence did not beat the model's own loss on this data: "
                         + ("a tie" if sign == 0 else "it scored below it") + f" ({nums}; {why}).")
    group = _paper_group(data["group"])
    paper = ("datainf", group, "vote")
    if group is not None and paper in infl.index:
        if len(infl) == 1:
            where = "the only influence configuration " + ("retrained" if retrained else "scored")
        elif paper == best:
            where = "the best influence configuration" + (" (tied)" if tied else "")
        elif paper in tied:
            where = "tied with the best"
        else:
            where = f"rank {int((infl > infl[paper]).sum()) + 1} of {len(infl)} influence configurations"
        lines.append(f"The paper's recommended configuration ({'/'.join(paper)}) reached {value(paper)}, {where}.")
    if runs < 3:
        if retrained and repeats > 1:
            lines.append(f"With {runs} run(s) the accuracy intervals cover {repeats} retraining seeds only, not other "
                         "data samples or noise draws; the paper's claims need ≥ 3 runs (use `layerinf sweep "
                         "--grid data.seed=0,1,2`).")
        else:
            noise = (f"on {n} test examples an accuracy's 95 % binomial interval is about ±{h:.3f}, so gaps within it "
                     "are ties, not findings" if h is not None else "differences of a few points can be retraining "
                     "noise")
            lines.append(f"With {runs} run(s) these are single measurements: {noise} (set filter.repeats ≥ 3 for an "
                         "interval). The paper's claims need ≥ 3 runs (use `layerinf sweep --grid data.seed=0,1,2`).")
    return lines
