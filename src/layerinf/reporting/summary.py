"""The report's statistics: per-configuration accuracy, win rate and Pareto rank, Spearman ρ of the proxies,
Wilcoxon of Mean vs Rank / Vote, the paper's claims, and the detection table of runs that were not retrained.

The statistics themselves come from :mod:`layerinf.evaluation.metrics`; this module selects, pools and
tabulates. How runs and configurations are compared (win rate, Pareto rank):

* a *run* is a (model, task, seed) triple (plus the sweep unit when two units share a triple, e.g. a sweep
  over a hyper-parameter); a *configuration* is (method, group, aggregator), the baselines included;
* a run's repeated retrainings (``filter.repeats``) are averaged first (:mod:`.uncertainty`: collapsed repeats
  excluded where another repeat learned), so every statistic below sees one accuracy per run and configuration;
* the comparison pool holds the configurations present in more than half of the runs (if none is, those
  present in the most runs); configurations outside the pool still get their accuracy statistics but no
  win rate; then **every run that misses a pool configuration is dropped** from the comparison, so the
  accuracy matrix is complete. Dropped configurations and runs are listed under the table.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from layerinf.errors import LayerinfError
from layerinf.evaluation import metrics
from layerinf.reporting.common import (BASELINES, CONFIG, METHOD_NAMES, agg_order, attention_groups, config_label,
                                    fmt, fmt_p, group_order, method_order, nanmean, paper_groups, pct, run_key,
                                    run_name)
from layerinf.reporting.results import OPTIONAL_FLOAT, REQUIRED
from layerinf.reporting.uncertainty import LEVEL, average_repeats, ci_note, merge_ci

MIN_WILCOXON = 6  # the paper shows a Mean-vs-X difference as significant only with more than 5 seeds
MIN_RUNS_CLAIM = 3  # fewer runs than this: a claim's verdict is "too little data"
MIN_POINTS_SPEARMAN = 5  # fewer pooled points than this: no Spearman correlation
ALPHA_SPEARMAN = 0.05  # "*" marks rho with p above this (as in the paper's tables)
ALPHA_WILCOXON = 0.1
DETECTION_LEVELS = (10, 20, 30, 50)  # NDR@k columns of the detection table (plus the filtering fraction's)


def _unpack_test(res: Any) -> tuple[float, float]:
    """(statistic, p) from a metrics test result: a tuple, a named result or a dict."""
    if isinstance(res, dict):
        stat = res.get("statistic", res.get("stat", np.nan))
        p = res.get("pvalue", res.get("p", res.get("p_value", np.nan)))
        return float(stat), float(p)
    if hasattr(res, "pvalue"):
        return float(getattr(res, "statistic", np.nan)), float(res.pvalue)
    stat, p = tuple(res)[:2]
    return float(stat), float(p)


def _win_stats(df: pd.DataFrame, tau: float, include_self: bool) -> tuple[pd.DataFrame, list[str], int]:
    """Win rate, wstd and Pareto rank per configuration of ``df`` (one scope); notes; runs compared."""
    key = run_key(df)
    sub = df.dropna(subset=["best_accuracy"])
    acc = sub.pivot_table(index=CONFIG, columns=key, values="best_accuracy", aggfunc="mean")
    notes: list[str] = []
    out = pd.DataFrame(index=acc.index, columns=["win_rate", "wstd", "pareto_rank", "friedman_avg_rank"],
                       dtype=float)
    if acc.empty:
        return out, ["no accuracies to compare"], 0
    n_runs = acc.shape[1]
    present = acc.notna().sum(axis=1)
    pool = present[present > n_runs / 2].index
    if len(pool) == 0:
        pool = present[present == present.max()].index
    dropped_cfg = [config_label(*c) for c in acc.index if c not in set(pool)]
    if dropped_cfg:
        notes.append(f"no win rate for {len(dropped_cfg)} configuration(s) present in at most half of the runs: "
                     + ", ".join(dropped_cfg[:12]) + (" …" if len(dropped_cfg) > 12 else ""))
    acc = acc.loc[pool]
    complete = acc.notna().all(axis=0)
    dropped_runs = [run_name(r) for r in acc.columns[~complete]]
    if dropped_runs:
        notes.append(f"{len(dropped_runs)} run(s) left out of the win rates because they miss a configuration: "
                     + ", ".join(dropped_runs[:12]) + (" …" if len(dropped_runs) > 12 else ""))
    acc = acc.loc[:, complete]
    if acc.shape[0] < 2 or acc.shape[1] < 1:
        notes.append("win rates need at least two configurations and one complete run")
        return out, notes, int(acc.shape[1])
    wr, F, wstd = metrics.win_rate(acc.to_numpy(dtype=float), include_self=include_self)
    ranks = metrics.pareto_ranks(np.asarray(F, dtype=float), tau)
    out.loc[acc.index, "win_rate"] = np.asarray(wr, dtype=float)
    out.loc[acc.index, "wstd"] = np.asarray(wstd, dtype=float)
    out.loc[acc.index, "pareto_rank"] = np.asarray(ranks, dtype=float)
    if acc.shape[0] >= 3 and acc.shape[1] >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fr = metrics.friedman(acc.to_numpy(dtype=float))
        out.loc[acc.index, "friedman_avg_rank"] = np.asarray(fr["avg_ranks"], dtype=float)
        notes.append(f"Friedman test over {acc.shape[0]} configurations × {acc.shape[1]} runs: "
                     f"χ² = {fmt(fr['statistic'], 2)}, p = {fmt_p(fr['pvalue'])}; Nemenyi critical difference "
                     f"of average ranks (α = 0.05) = {fmt(fr['cd'], 2)}")
    return out, notes, int(acc.shape[1])


def _ci95(per_run: pd.Series, within: pd.Series) -> float:
    """Half-width of the 95 % t-interval of a configuration's accuracy: over its runs' means when it has several
    runs, else over the one run's repeats (``within``, from :func:`average_repeats`)."""
    _, half, n = metrics.t_interval(per_run, LEVEL)
    if n >= 2:
        return half
    within = within[per_run.notna().to_numpy()]
    return float(within.iloc[0]) if len(within) == 1 else float("nan")


def _config_table(df: pd.DataFrame, tau: float, include_self: bool) -> tuple[pd.DataFrame, list[str], int]:
    g = df.groupby(CONFIG, sort=False)
    kind = g["kind"].first()

    def ci(col: str, within: str) -> pd.Series:
        return pd.Series([_ci95(x[col], x[within]) for _, x in g], index=kind.index, dtype=float)

    stats = pd.DataFrame({
        "kind": kind,
        "runs": g["best_accuracy"].count(),
        "retrainings": g["repeats"].sum(),
        "collapsed": g["collapsed"].sum(),
        "collapsed_included": g["collapsed_used"].sum(),
        "best_accuracy_mean": g["best_accuracy"].mean(),
        "best_accuracy_ci95": ci("best_accuracy", "best_accuracy_ci95"),
        "best_accuracy_std": g["best_accuracy"].std(ddof=1),
        "acc_at_best_epoch_mean": g["accuracy_at_best_epoch"].mean(),
        "acc_at_best_epoch_ci95": ci("accuracy_at_best_epoch", "acc_at_best_epoch_ci95"),
        "acc_at_best_epoch_std": g["accuracy_at_best_epoch"].std(ddof=1),
        "ndr_30_mean": g["ndr_30"].mean(),
        "auc_ndr_mean": g["auc_ndr"].mean(),
        "roc_auc_mean": g["roc_auc"].mean(),
    })
    wins, notes, n_cmp = _win_stats(df, tau, include_self)
    stats = stats.join(wins, how="left")
    stats = stats.reset_index()
    stats["pareto_rank"] = stats["pareto_rank"].astype("Int64")
    stats["_m"] = stats["method"].map(method_order)
    stats["_g"] = stats["group"].map(group_order)
    stats["_a"] = stats["aggregator"].map(agg_order)
    stats = stats.sort_values(["win_rate", "best_accuracy_mean", "_m", "_g", "_a"],
                              ascending=[False, False, True, True, True], na_position="last")
    stats = stats.drop(columns=["_m", "_g", "_a"]).reset_index(drop=True)
    stats.insert(stats.columns.get_loc("runs") + 1, "runs_compared", n_cmp)
    return stats, notes, n_cmp


def _accuracy_notes(df: pd.DataFrame) -> list[str]:
    """What the ± after an accuracy is, and the collapsed retrainings."""
    from layerinf.reporting.uncertainty import collapse_notes

    reps = int(df["repeats"].max()) if "repeats" in df.columns and len(df) else 1
    runs = int(df.groupby(run_key(df)).ngroups)
    over = ("the runs' means (each run's repeats averaged first)" if runs > 1 else
            f"the {reps} repeated retrainings (training seeds train_seed, +1, …)" if reps > 1 else "")
    note = (f"accuracy ± = half-width of the 95 % Student t-interval of the mean over {over}; win rates and ranks "
            "use the means" if over else "one retraining per configuration: no interval on the accuracy "
            "(set filter.repeats ≥ 2, or sweep over seeds)")
    return [note] + collapse_notes(df)


def _spearman_table(df: pd.DataFrame) -> pd.DataFrame:
    infl = df[df["kind"] != "baseline"]
    paper = paper_groups(infl["group"].unique())
    groups = paper or sorted(set(infl["group"]) - {"all", "-"}, key=group_order)
    rows = []
    pairs = sorted({(m, a) for m, a in zip(infl["method"], infl["aggregator"])},
                   key=lambda t: (method_order(t[0]), agg_order(t[1])))
    for method, agg in pairs:
        pts = infl[(infl["method"] == method) & (infl["aggregator"] == agg) & infl["group"].isin(groups)]
        if method == "datainf":  # spec §7.3: DataInf × WE is skipped
            pts = pts[pts["group"] != "WE"]
        row: dict[str, Any] = {"method": method, "aggregator": agg,
                               "groups": ",".join(sorted(pts["group"].unique(), key=group_order)),
                               "n_points": int(pts["best_accuracy"].notna().sum())}
        for proxy in ("ndr_30", "auc_ndr", "cancellation"):
            ok = pts[["best_accuracy", proxy]].dropna()
            rho = p = float("nan")
            if len(ok) >= MIN_POINTS_SPEARMAN:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rho, p = metrics.spearman(ok[proxy].to_numpy(float), ok["best_accuracy"].to_numpy(float))
            row[f"rho_{proxy}"] = float(rho)
            row[f"p_{proxy}"] = float(p)
            row[f"n_{proxy}"] = int(len(ok))
        rows.append(row)
    cols = ["method", "aggregator", "groups", "n_points"] + [
        f"{s}_{p}" for p in ("ndr_30", "auc_ndr", "cancellation") for s in ("rho", "p", "n")]
    return pd.DataFrame(rows, columns=cols)


def _wilcoxon_table(df: pd.DataFrame) -> pd.DataFrame:
    infl = df[df["kind"] != "baseline"]
    key = run_key(df)
    rows = []
    pairs = sorted({(m, g) for m, g in zip(infl["method"], infl["group"])},
                   key=lambda t: (method_order(t[0]), group_order(t[1])))
    for method, group in pairs:
        sub = infl[(infl["method"] == method) & (infl["group"] == group)]
        wide = sub.pivot_table(index=key, columns="aggregator", values="best_accuracy", aggfunc="mean")
        if "mean" not in wide.columns:
            continue
        for other in ("rank", "vote"):
            if other not in wide.columns:
                continue
            pair = wide[["mean", other]].dropna()
            n = len(pair)
            row = {"method": method, "group": group, "comparison": f"mean vs {other}", "n": n,
                   "mean_accuracy": float(pair["mean"].mean()) if n else np.nan,
                   "other_accuracy": float(pair[other].mean()) if n else np.nan,
                   "difference": float((pair[other] - pair["mean"]).mean()) if n else np.nan,
                   "statistic": np.nan, "p_value": np.nan, "significant": pd.NA, "note": ""}
            if n < MIN_WILCOXON:
                row["note"] = f"too few runs (n<{MIN_WILCOXON})"
            elif np.allclose(pair["mean"].to_numpy(), pair[other].to_numpy()):
                row["note"] = "all differences zero"
            else:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        stat, p = _unpack_test(metrics.wilcoxon_paired(pair["mean"].to_numpy(float),
                                                                       pair[other].to_numpy(float)))
                    row["statistic"], row["p_value"] = stat, p
                    row["significant"] = bool(np.isfinite(p) and p < ALPHA_WILCOXON)
                except Exception as exc:  # noqa: BLE001 - degenerate inputs: report, don't fail the page
                    row["note"] = f"test failed: {exc}"[:80]
            rows.append(row)
    cols = ["method", "group", "comparison", "n", "mean_accuracy", "other_accuracy", "difference",
            "statistic", "p_value", "significant", "note"]
    out = pd.DataFrame(rows, columns=cols)
    out["significant"] = out["significant"].astype("boolean")
    return out


def _claims_table(conf: pd.DataFrame, n_cmp: int, spear: pd.DataFrame) -> pd.DataFrame:
    infl = conf[conf["kind"] != "baseline"]
    rows = []
    few = n_cmp < MIN_RUNS_CLAIM
    few_note = f" ({n_cmp} run{'s' if n_cmp != 1 else ''} compared; need ≥ {MIN_RUNS_CLAIM})"

    # 1. middle attention groups vs WE and CL (mean win rate over the configurations of each group)
    by_group = infl.groupby("group")["win_rate"].mean()
    attn = attention_groups(infl["group"].unique())
    middle = attn[1:-1] if len(attn) >= 3 else []
    claim = "Middle attention groups beat WE and CL (mean win rate)"
    paper = "attention groups 1–2 often top-ranked; CL worst for every model"
    ends = {g: float(by_group[g]) for g in ("WE", "CL") if g in by_group.index and np.isfinite(by_group[g])}
    if middle and ends:
        mid = nanmean(by_group.get(g, np.nan) for g in middle)
        measured = (f"middle ({', '.join(middle)}): {fmt(mid)}; "
                    + "; ".join(f"{g}: {fmt(v)}" for g, v in ends.items()))
        if few or not np.isfinite(mid):
            verdict = "too little data"
            measured += few_note if few else ""
        else:
            verdict = "supported" if all(mid > v for v in ends.values()) else "not supported"
            if len(ends) == 1:
                measured += f" ({'CL' if 'WE' in ends else 'WE'} not measured)"
    else:
        measured = "needs ≥ 3 attention groups and WE or CL with win rates"
        verdict = "too little data"
    rows.append({"claim": claim, "paper": paper, "measured": measured, "verdict": verdict})

    # 2. Vote vs Mean
    by_agg = infl.groupby("aggregator")["win_rate"]
    claim = "Vote beats Mean (mean win rate; best configuration in brackets)"
    paper = "Vote raises the best win rate, e.g. 0.71 → 0.84 on Mistral-7B"
    if {"vote", "mean"} <= set(infl["aggregator"]):
        v, m = by_agg.mean().get("vote", np.nan), by_agg.mean().get("mean", np.nan)
        vb, mb = by_agg.max().get("vote", np.nan), by_agg.max().get("mean", np.nan)
        measured = f"Vote {fmt(v)} (best {fmt(vb)}) vs Mean {fmt(m)} (best {fmt(mb)})"
        if few or not (np.isfinite(v) and np.isfinite(m)):
            verdict = "too little data"
            measured += few_note if few else ""
        else:
            verdict = "supported" if v > m else "not supported"
    else:
        measured, verdict = "needs both Mean and Vote configurations", "too little data"
    rows.append({"claim": claim, "paper": paper, "measured": measured, "verdict": verdict})

    # 3. NDR@30 under Vote is a good proxy of accuracy, cancellation is not
    claim = "ρ(NDR@30, accuracy) under Vote exceeds ρ(cancellation, accuracy)"
    paper = "ρ ≈ 0.8–0.9 for NDR@30 under Vote; cancellation −0.3 to 0.2"
    vote = spear[spear["aggregator"] == "vote"]
    r_ndr = nanmean(vote["rho_ndr_30"]) if len(vote) else float("nan")
    r_c = nanmean(spear["rho_cancellation"]) if len(spear) else float("nan")
    pts = int(vote["n_ndr_30"].min()) if len(vote) else 0
    if len(vote):
        per = ", ".join(f"{METHOD_NAMES.get(r.method, r.method)} {fmt(r.rho_ndr_30, 2)}"
                        f"{'*' if not (r.p_ndr_30 <= ALPHA_SPEARMAN) else ''}" for r in vote.itertuples())
        measured = f"ρ(NDR@30 | Vote) = {fmt(r_ndr, 2)} ({per}); ρ(cancellation) = {fmt(r_c, 2)} (mean over rows)"
    else:
        measured = "no Vote configurations"
    if not (np.isfinite(r_ndr) and np.isfinite(r_c)) or pts < MIN_POINTS_SPEARMAN:
        verdict = "too little data"
    else:
        verdict = "supported" if r_ndr > r_c and r_ndr > 0 else "not supported"
    rows.append({"claim": claim, "paper": paper, "measured": measured, "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "paper", "measured", "verdict"])


def tables(results: pd.DataFrame, tau: float = 0.75, include_self: bool = False,
           ci: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Summary tables of a results frame (see :func:`load_results`).

    Repeated retrainings (a ``repeat`` column) are averaged per run and configuration first
    (:func:`.uncertainty.average_repeats`; flag collapsed ones beforehand with ``flag_collapsed``). ``ci``: the
    bootstrap intervals of :func:`.uncertainty.detection_ci`, joined into the configurations table.

    Returns, in page order: ``claims`` (the paper's claims checked on this data), ``configurations`` (per
    configuration incl. baselines, all runs pooled, sorted by win rate), ``configurations_by_model`` (only
    when there are several models; win rates within each model), ``spearman`` (per method × aggregator,
    pooled over layer groups × runs, DataInf × WE skipped) and ``wilcoxon`` (Mean vs Rank / Vote per method ×
    group, paired over runs). Notes on dropped runs/configurations are in ``df.attrs["notes"]``.
    """
    if results is None or len(results) == 0:
        raise LayerinfError("no results to summarise", "run `layerinf run` first")
    missing = [c for c in REQUIRED if c not in results.columns]
    if missing:
        raise LayerinfError(f"results lack the column(s) {', '.join(missing)}", "load them with report.load_results")
    df = results.copy()
    for c in OPTIONAL_FLOAT:
        if c not in df.columns:
            df[c] = np.nan
    if "kind" not in df.columns:
        df["kind"] = np.where(df["method"].isin(BASELINES), "baseline", "influence")
    df = average_repeats(df)

    conf, notes, n_cmp = _config_table(df, tau, include_self)
    conf = merge_ci(conf, ci)
    conf.attrs["notes"] = _accuracy_notes(df) + notes + ([ci_note(ci)] if ci is not None else [])
    out: dict[str, pd.DataFrame] = {}
    spear = _spearman_table(df)
    pooled = sorted({g for gs in spear["groups"] for g in gs.split(",") if g}, key=group_order)
    spear.attrs["notes"] = [f"ρ between best accuracy and each proxy, pooled over layer groups ({', '.join(pooled)}) "
                            f"× runs; * = p > {ALPHA_SPEARMAN}; – when fewer than {MIN_POINTS_SPEARMAN} points "
                            "or a constant series"]
    out["claims"] = _claims_table(conf, n_cmp, spear)
    out["configurations"] = conf
    models = sorted(df["model"].unique())
    if len(models) > 1:
        parts, all_notes = [], []
        for model in models:
            t, nts, _ = _config_table(df[df["model"] == model], tau, include_self)
            t.insert(0, "model", model)
            parts.append(t)
            all_notes += [f"{model}: {n}" for n in nts]
        by_model = pd.concat(parts, ignore_index=True)
        by_model.attrs["notes"] = all_notes
        out["configurations_by_model"] = by_model
    out["spearman"] = spear
    wil = _wilcoxon_table(df)
    wil.attrs["notes"] = [f"paired over runs; difference = other − mean accuracy; tested only with n ≥ "
                          f"{MIN_WILCOXON}; significant = p < {ALPHA_WILCOXON}"]
    out["wilcoxon"] = wil
    return out


def detection_table(scores: pd.DataFrame, fraction: float | None = None,
                    ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """Noise detection per configuration, pooled over runs, from score tables (see :func:`load_detection`).

    One row per (method, group, aggregator): ``runs``, the mean NDR@k for k in 10, 20, 30, 50 and at the
    filtering ``fraction`` (when the score table has that level), ``precision_30``, ``auc_ndr``, ``roc_auc``,
    ``cancellation``; sorted by NDR at the filtering fraction (else NDR@30), best first. ``ci``: bootstrap
    intervals (:func:`.uncertainty.detection_ci`) joined as ``ndr_30_lo`` … ``roc_auc_hi``.
    """
    if scores is None or len(scores) == 0:
        raise LayerinfError("no score tables to summarise", "run `layerinf score` (or `layerinf run`) first")
    k = None if fraction is None else round(100 * float(fraction), 6)
    at = f"ndr_{int(k)}" if k is not None and k == int(k) else None
    has_at = at is not None and at in scores.columns
    levels = sorted(set(DETECTION_LEVELS) | ({int(k)} if has_at else set()))
    cols = [f"ndr_{lv}" for lv in levels] + ["precision_30", "auc_ndr", "roc_auc", "cancellation"]
    cols = [c for c in cols if c in scores.columns]
    g = scores.groupby(CONFIG, sort=False)
    out = g[cols].mean()
    out.insert(0, "runs", g.size())
    out = out.reset_index()
    order = [at] if has_at else (["ndr_30"] if "ndr_30" in out.columns else [])
    out["_m"] = out["method"].map(method_order)
    out["_g"] = out["group"].map(group_order)
    out["_a"] = out["aggregator"].map(agg_order)
    out = out.sort_values(order + ["_m", "_g", "_a"], ascending=[False] * len(order) + [True] * 3,
                          na_position="last")
    out = out.drop(columns=["_m", "_g", "_a"]).reset_index(drop=True)
    out = merge_ci(out, ci)
    notes = [f"mean over {int(out['runs'].max())} run(s) of each run's score table; no retraining, so no accuracy"]
    if ci is not None:
        notes.append(ci_note(ci))
    if k is not None and not has_at:
        notes.append(f"the score table has no NDR at the filtering fraction {pct(fraction)}; see the NDR curves")
    out.attrs["notes"] = notes
    return out
