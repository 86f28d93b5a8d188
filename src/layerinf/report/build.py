"""Reports: summary tables, figures and one static HTML page for a run or a sweep directory.

``report(path)`` reads the results of ``layerinf run`` (``eval/results.parquet``) or ``layerinf sweep``
(``results.parquet`` + ``units/<unit>/``) and writes, atomically, ``<path>/report/``::

    index.html          one self-contained page (inline CSS, no JavaScript, no external URLs)
    tables/*.csv|.md    every table, machine-readable and as Markdown
    figures/*.png       NDR curves, layer-wise NDR@30, accuracy box plots, noise ranks, NDR@30 heat map

Statistics (win rate, Pareto rank, Spearman, Wilcoxon) come from :mod:`layerinf.metrics`; this module only
selects, pools and formats. Sign convention everywhere: higher score = more helpful; the bottom 30 % of the
training examples is removed before retraining.

How runs and configurations are compared (win rate, Pareto rank):

* a *run* is a (model, task, seed) triple (plus the sweep unit when two units share a triple, e.g. a sweep
  over a hyper-parameter); a *configuration* is (method, group, aggregator), the baselines included;
* the comparison pool holds the configurations present in more than half of the runs (if none is, those
  present in the most runs); configurations outside the pool still get their accuracy statistics but no
  win rate; then **every run that misses a pool configuration is dropped** from the comparison, so the
  accuracy matrix is complete. Dropped configurations and runs are listed under the table.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from layerinf.evaluation import metrics
from layerinf.errors import LayerinfError

BASELINES = ("none", "random", "oracle")
CONFIG = ["method", "group", "aggregator"]
RUN_KEY = ["model", "task", "seed"]
REQUIRED = ["model", "task", "seed", "method", "group", "aggregator", "best_accuracy"]
OPTIONAL_FLOAT = ["ndr_30", "auc_ndr", "roc_auc", "cancellation", "accuracy_at_best_epoch"]

MIN_WILCOXON = 6  # the paper shows a Mean-vs-X difference as significant only with more than 5 seeds
MIN_RUNS_CLAIM = 3  # fewer runs than this: a claim's verdict is "too little data"
MIN_POINTS_SPEARMAN = 5  # fewer pooled points than this: no Spearman correlation
ALPHA_SPEARMAN = 0.05  # "*" marks rho with p above this (as in the paper's tables)
ALPHA_WILCOXON = 0.1

METHOD_NAMES = {"tracin": "TracIn", "cosine": "Cosine", "datainf": "DataInf",
                "random": "Random", "oracle": "Oracle (Full)", "none": "No removal"}
AGG_NAMES = {"mean": "Mean", "rank": "Rank", "vote": "Vote", "-": ""}
KIND_NAMES = {"query_A": "Query A", "query_B": "Query B", "value_A": "Value A", "value_B": "Value B"}
METHOD_COLORS = {"tracin": "#1f77b4", "cosine": "#ff7f0e", "datainf": "#2ca02c",
                 "random": "#7f7f7f", "oracle": "#9467bd", "none": "#bcbd22"}
ATTN_RE = re.compile(r"^(\d+)-(\d+)$")
DPI = 110

__all__ = ["load_results", "tables", "write_tables", "figures", "write_html", "report"]


# ------------------------------------------------------------------------------------------- loading


def _is_sweep(path: Path) -> bool:
    return (path / "results.parquet").exists() or (path / "sweep.json").exists() or (path / "units").is_dir()


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """The results table of a run directory (``eval/results.parquet``) or a sweep (``results.parquet``).

    One row per (model, task, seed, method, group, aggregator), baselines included (see docs/internals.md);
    a sweep's table has an extra ``unit`` column. Missing optional metric columns are filled with NaN and
    ``kind`` is derived from ``method`` when absent.
    """
    path = Path(path)
    if not path.exists():
        raise LayerinfError(f"{path} does not exist", "give a run or sweep directory (run `layerinf run` first)")
    if path.is_file() and path.suffix == ".parquet":
        file = path
    elif (path / "results.parquet").exists():
        file = path / "results.parquet"
    elif (path / "eval" / "results.parquet").exists():
        file = path / "eval" / "results.parquet"
    elif _is_sweep(path):
        raise LayerinfError(f"no results.parquet in sweep directory {path}",
                            "run `layerinf sweep` to completion first (finished units are reused)")
    else:
        raise LayerinfError(f"no results in {path} (neither eval/results.parquet nor results.parquet)",
                            "run `layerinf run` first (with retraining enabled), or point at a run/sweep directory")
    try:
        df = pd.read_parquet(file)
    except Exception as exc:  # noqa: BLE001 - a broken artifact is a user-facing problem
        raise LayerinfError(f"cannot read {file}: {exc}", "rerun `layerinf run` to rewrite it") from exc
    if df.empty:
        raise LayerinfError(f"{file} holds no results (was retraining switched off?)",
                            "run `layerinf run` with filter.retrain enabled")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise LayerinfError(f"{file} lacks the column(s) {', '.join(missing)}",
                            "it was written by another version; rerun `layerinf run` to rewrite it")
    df = df.copy()
    for c in OPTIONAL_FLOAT:
        if c not in df.columns:
            df[c] = np.nan
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["best_accuracy"] = pd.to_numeric(df["best_accuracy"], errors="coerce").astype(float)
    if "kind" not in df.columns:
        df["kind"] = np.where(df["method"].isin(BASELINES), "baseline", "influence")
    for c in ["model", "task", "method", "group", "aggregator", "kind"]:
        df[c] = df[c].astype(str)
    df.attrs["source"] = str(file)
    return df


# --------------------------------------------------------------------------------------- small helpers


def group_order(group: str) -> tuple:
    """WE, attention groups by first layer, CL, all, then anything else by name."""
    m = ATTN_RE.match(group)
    if group == "WE":
        return (0, 0, group)
    if m:
        return (1, int(m.group(1)), group)
    if group == "CL":
        return (2, 0, group)
    if group == "all":
        return (3, 0, group)
    if group == "-":
        return (5, 0, group)
    return (4, 0, group)


def _method_order(m: str) -> tuple:
    order = ["tracin", "cosine", "datainf", "none", "random", "oracle"]
    return (order.index(m) if m in order else len(order), m)


def _agg_order(a: str) -> tuple:
    order = ["mean", "rank", "vote", "-"]
    return (order.index(a) if a in order else len(order), a)


def config_label(method: str, group: str, aggregator: str) -> str:
    """Readable name of a configuration: ``TracIn · 04-07 · Vote`` or ``Random`` for a baseline."""
    if method in BASELINES or group == "-":
        return METHOD_NAMES.get(method, method)
    return f"{METHOD_NAMES.get(method, method)} · {group} · {AGG_NAMES.get(aggregator, aggregator)}"


def attention_groups(groups: Iterable[str]) -> list[str]:
    return sorted({g for g in groups if ATTN_RE.match(g)}, key=group_order)


def _paper_groups(groups: Iterable[str]) -> list[str]:
    groups = set(groups)
    out = [g for g in groups if g in ("WE", "CL") or ATTN_RE.match(g)]
    return sorted(out, key=group_order)


def _run_key(df: pd.DataFrame) -> list[str]:
    """(model, task, seed), plus ``unit`` when two sweep units share a triple for the same configuration."""
    if "unit" in df.columns and df.duplicated(RUN_KEY + CONFIG).any():
        return RUN_KEY + ["unit"]
    return list(RUN_KEY)


def _run_name(key: Any) -> str:
    return "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))


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


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or x is pd.NA or x is pd.NaT:
        return "–"
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "–" if np.isnan(x) else ("∞" if x > 0 else "−∞")
        return f"{x:.{digits}f}"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return str(x)


# ------------------------------------------------------------------------------------------- tables


def _win_stats(df: pd.DataFrame, tau: float, include_self: bool) -> tuple[pd.DataFrame, list[str], int]:
    """Win rate, wstd and Pareto rank per configuration of ``df`` (one scope); notes; runs compared."""
    key = _run_key(df)
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
    dropped_runs = [_run_name(r) for r in acc.columns[~complete]]
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
                     f"χ² = {_fmt(fr['statistic'], 2)}, p = {_fmt_p(fr['pvalue'])}; Nemenyi critical difference "
                     f"of average ranks (α = 0.05) = {_fmt(fr['cd'], 2)}")
    return out, notes, int(acc.shape[1])


def _config_table(df: pd.DataFrame, tau: float, include_self: bool) -> tuple[pd.DataFrame, list[str], int]:
    g = df.groupby(CONFIG, sort=False)
    stats = pd.DataFrame({
        "kind": g["kind"].first(),
        "runs": g["best_accuracy"].count(),
        "best_accuracy_mean": g["best_accuracy"].mean(),
        "best_accuracy_std": g["best_accuracy"].std(ddof=1),
        "acc_at_best_epoch_mean": g["accuracy_at_best_epoch"].mean(),
        "acc_at_best_epoch_std": g["accuracy_at_best_epoch"].std(ddof=1),
        "ndr_30_mean": g["ndr_30"].mean(),
        "auc_ndr_mean": g["auc_ndr"].mean(),
    })
    wins, notes, n_cmp = _win_stats(df, tau, include_self)
    stats = stats.join(wins, how="left")
    stats = stats.reset_index()
    stats["pareto_rank"] = stats["pareto_rank"].astype("Int64")
    stats["_m"] = stats["method"].map(_method_order)
    stats["_g"] = stats["group"].map(group_order)
    stats["_a"] = stats["aggregator"].map(_agg_order)
    stats = stats.sort_values(["win_rate", "best_accuracy_mean", "_m", "_g", "_a"],
                              ascending=[False, False, True, True, True], na_position="last")
    stats = stats.drop(columns=["_m", "_g", "_a"]).reset_index(drop=True)
    stats.insert(stats.columns.get_loc("runs") + 1, "runs_compared", n_cmp)
    return stats, notes, n_cmp


def _spearman_table(df: pd.DataFrame) -> pd.DataFrame:
    infl = df[df["kind"] != "baseline"]
    paper = _paper_groups(infl["group"].unique())
    groups = paper or sorted(set(infl["group"]) - {"all", "-"}, key=group_order)
    rows = []
    pairs = sorted({(m, a) for m, a in zip(infl["method"], infl["aggregator"])},
                   key=lambda t: (_method_order(t[0]), _agg_order(t[1])))
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
    key = _run_key(df)
    rows = []
    pairs = sorted({(m, g) for m, g in zip(infl["method"], infl["group"])},
                   key=lambda t: (_method_order(t[0]), group_order(t[1])))
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
        mid = _nanmean(by_group.get(g, np.nan) for g in middle)
        measured = (f"middle ({', '.join(middle)}): {_fmt(mid)}; "
                    + "; ".join(f"{g}: {_fmt(v)}" for g, v in ends.items()))
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
        measured = f"Vote {_fmt(v)} (best {_fmt(vb)}) vs Mean {_fmt(m)} (best {_fmt(mb)})"
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
    r_ndr = _nanmean(vote["rho_ndr_30"]) if len(vote) else float("nan")
    r_c = _nanmean(spear["rho_cancellation"]) if len(spear) else float("nan")
    pts = int(vote["n_ndr_30"].min()) if len(vote) else 0
    if len(vote):
        per = ", ".join(f"{METHOD_NAMES.get(r.method, r.method)} {_fmt(r.rho_ndr_30, 2)}"
                        f"{'*' if not (r.p_ndr_30 <= ALPHA_SPEARMAN) else ''}" for r in vote.itertuples())
        measured = f"ρ(NDR@30 | Vote) = {_fmt(r_ndr, 2)} ({per}); ρ(cancellation) = {_fmt(r_c, 2)} (mean over rows)"
    else:
        measured = "no Vote configurations"
    if not (np.isfinite(r_ndr) and np.isfinite(r_c)) or pts < MIN_POINTS_SPEARMAN:
        verdict = "too little data"
    else:
        verdict = "supported" if r_ndr > r_c and r_ndr > 0 else "not supported"
    rows.append({"claim": claim, "paper": paper, "measured": measured, "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "paper", "measured", "verdict"])


def tables(results: pd.DataFrame, tau: float = 0.75, include_self: bool = False) -> dict[str, pd.DataFrame]:
    """Summary tables of a results frame (see :func:`load_results`).

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

    conf, notes, n_cmp = _config_table(df, tau, include_self)
    conf.attrs["notes"] = notes
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


# ------------------------------------------------------------------------------ table formatting/writing


def _fmt_p(p: Any) -> str:
    if p is None or p is pd.NA or not np.isfinite(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _pm(mean: Any, std: Any) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    return _fmt(mean) + (f" ± {std:.3f}" if std is not None and np.isfinite(std) else "")


def _display(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """The table as display strings (Markdown / HTML): compact columns, readable method/aggregator names,
    3 decimals, '–' for NaN, small p-values in scientific notation, and '*' after ρ when p > 0.05 (spearman)."""
    d = _display_raw(name, df)
    if "method" in d.columns:
        d["method"] = [METHOD_NAMES.get(m, m) for m in d["method"]]
    if "aggregator" in d.columns:
        d["aggregator"] = [AGG_NAMES.get(a, a) or "–" for a in d["aggregator"]]
    if "group" in d.columns:
        d["group"] = [("–" if g == "-" else g) for g in d["group"]]
    if "comparison" in d.columns:
        d["comparison"] = [c.replace("mean", "Mean").replace("rank", "Rank").replace("vote", "Vote")
                           for c in d["comparison"]]
    return d


def _display_raw(name: str, df: pd.DataFrame) -> pd.DataFrame:
    if name.startswith("configurations") and "best_accuracy_mean" in df.columns:
        d = pd.DataFrame({c: df[c] for c in ("model", "method", "group", "aggregator") if c in df.columns})
        d["runs"] = [f"{int(r)}" for r in df["runs"]]
        d["best accuracy"] = [_pm(m, s) for m, s in zip(df["best_accuracy_mean"], df["best_accuracy_std"])]
        d["acc. at best-loss epoch"] = [_pm(m, s) for m, s in zip(df["acc_at_best_epoch_mean"],
                                                                 df["acc_at_best_epoch_std"])]
        d["NDR@30"] = [_fmt(v) for v in df["ndr_30_mean"]]
        d["AUC-NDR"] = [_fmt(v) for v in df["auc_ndr_mean"]]
        d["win rate"] = [_fmt(v) for v in df["win_rate"]]
        d["wstd"] = [_fmt(v) for v in df["wstd"]]
        d["Pareto rank"] = [_fmt(v) for v in df["pareto_rank"]]
        if "friedman_avg_rank" in df.columns and df["friedman_avg_rank"].notna().any():
            d["avg. rank"] = [_fmt(v, 1) for v in df["friedman_avg_rank"]]
        return d.reset_index(drop=True)
    if name == "spearman":
        d = pd.DataFrame({"method": df["method"], "aggregator": df["aggregator"],
                          "points": [_fmt(v) for v in df["n_points"]]})
        for proxy, label in (("ndr_30", "NDR@30"), ("auc_ndr", "AUC-NDR"), ("cancellation", "cancellation")):
            rho, p = df[f"rho_{proxy}"], df[f"p_{proxy}"]
            d[f"ρ {label}"] = [_fmt(r) + ("*" if np.isfinite(r) and not (pv <= ALPHA_SPEARMAN) else "")
                               for r, pv in zip(rho, p)]
            d[f"p ({label})"] = [_fmt_p(v) for v in p]
        return d.reset_index(drop=True)
    d = df.copy()
    if name == "wilcoxon":
        d["significant"] = ["–" if pd.isna(s) else ("yes" if s else "no") for s in df["significant"]]
        d["p_value"] = [_fmt_p(v) for v in df["p_value"]]
        d = d.rename(columns={"mean_accuracy": "Mean acc.", "other_accuracy": "other acc.",
                              "difference": "other − Mean", "p_value": "p"})
    for c in d.columns:
        d[c] = [_fmt(v) for v in d[c]]
    return d.reset_index(drop=True)


def _markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_tables(tabs: dict[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """Write each table as ``<name>.csv`` (raw numbers) and ``<name>.md`` (formatted) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tabs.items():
        df.to_csv(out_dir / f"{name}.csv", index=False)
        md = f"# {name}\n\n" + _markdown(_display(name, df))
        notes = df.attrs.get("notes") or []
        if notes:
            md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
        (out_dir / f"{name}.md").write_text(md, encoding="utf-8")
        paths += [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    return paths


# ------------------------------------------------------------------------------------------- figures


def _unit_dirs(root: Path) -> list[Path]:
    """The run directories of a run (itself) or a sweep (``units/*``), in name order."""
    units = root / "units"
    if units.is_dir():
        return sorted(p for p in units.iterdir() if p.is_dir())
    return [root]


def _unit_model(run: Path) -> str:
    for file in (run / "eval" / "results.parquet",):
        if file.exists():
            try:
                models = pd.read_parquet(file, columns=["model"])["model"].unique()
                if len(models):
                    return str(models[0])
            except Exception:  # noqa: BLE001
                pass
    cfg = run / "config.json"
    if cfg.exists():
        try:
            import json

            return str(json.loads(cfg.read_text())["model"]["name"])
        except Exception:  # noqa: BLE001
            pass
    return "model"


def _read_units(runs: Sequence[Path], rel: str) -> pd.DataFrame:
    frames = []
    for i, run in enumerate(runs):
        f = run / rel
        if f.exists():
            try:
                df = pd.read_parquet(f)
            except Exception:  # noqa: BLE001 - a broken figure input skips that figure, not the report
                continue
            df["_unit"] = i
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
                         "figure.titlesize": 12, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _fig_curves(runs, out: Path, suffix: str, model: str, plt) -> Path | None:
    curves = _read_units(runs, "scores/curves.parquet")
    if curves.empty:
        return None
    grid = np.linspace(0, 1, 201)
    interp = {}
    for (cfg, unit), c in curves.groupby([(curves["method"] + "\t" + curves["group"] + "\t" + curves["aggregator"]),
                                          "_unit"]):
        c = c.sort_values("fraction")
        x = np.concatenate([[0.0], c["fraction"].to_numpy(float)])
        y = np.concatenate([[0.0], c["ndr"].to_numpy(float)])
        interp.setdefault(cfg, []).append(np.interp(grid, x, y))
    mean = {k: np.mean(v, axis=0) for k, v in interp.items()}
    auc = {k: float(np.trapezoid(v, grid)) if hasattr(np, "trapezoid") else float(np.trapz(v, grid))
           for k, v in mean.items()}
    ranked = sorted(auc, key=lambda k: -auc[k])
    chosen: list[str] = []
    for method in sorted({k.split("\t")[0] for k in ranked}, key=_method_order):
        best = next(k for k in ranked if k.split("\t")[0] == method)
        chosen.append(best)
    for k in ranked:
        if len(chosen) >= 6:
            break
        if k not in chosen:
            chosen.append(k)
    chosen.sort(key=lambda k: -auc[k])
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    styles = ["-", "--", "-.", ":"]
    seen: dict[str, int] = {}
    for k in chosen:
        method, group, agg = k.split("\t")
        i = seen.get(method, 0)
        seen[method] = i + 1
        ax.plot(grid, mean[k], styles[i % 4], color=METHOD_COLORS.get(method), lw=2,
                label=f"{config_label(method, group, agg)} (area {auc[k]:.2f})")
    ax.plot([0, 1], [0, 1], color="#7f7f7f", lw=1.2, ls=":", label="random (diagonal)")
    table = _read_units(runs, "scores/table.parquet")
    if not table.empty and {"n", "n_noisy"} <= set(table.columns):
        rate = float((table["n_noisy"] / table["n"]).mean())
        if 0 < rate < 1:
            ax.plot(grid, np.minimum(grid / rate, 1), color="#9467bd", lw=1.2, ls="--",
                    label=f"perfect detector ({rate:.0%} noisy)")
    ax.axvline(0.30, color="#444", lw=0.8, ls=":")
    ax.text(0.305, 0.03, "30 % removed", fontsize=8, color="#444")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of training data removed (lowest scores first)")
    ax.set_ylabel("NDR: share of flipped labels found")
    ax.set_title(f"Noise detection curves, best configurations{model}\n"
                 "(scores: higher = more helpful; curve: higher = better detection)")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.text(0.01, 0.97, f"mean over {len(runs)} units", transform=ax.transAxes, fontsize=8, va="top")
    return _save(fig, out / f"ndr_curves{suffix}.png", plt)


def _layer_ticks(ax, max_pos: int):
    """x ticks at positions 0 = WE, 1..L = layers 0..L-1 (every step-th), L+1 = CL."""
    step = max(1, int(math.ceil((max_pos - 1) / 12)))
    inner = [t for t in range(1, max_pos)
             if (t - 1) % step == 0 and (step == 1 or step <= t - 1) and max_pos - t >= max(1, step // 2 + 1)]
    shown = [0] + inner + [max_pos]
    ax.set_xticks(shown)
    ax.set_xticklabels(["WE" if t == 0 else ("CL" if t == max_pos else str(t - 1)) for t in shown])


def _fig_layerwise(runs, out: Path, suffix: str, model: str, plt) -> Path | None:
    mods = _read_units(runs, "scores/modules.parquet")
    if mods.empty:
        return None
    per = mods.groupby(["method", "aggregator", "kind", "position"], as_index=False)["ndr_30"].mean()
    methods = sorted(per["method"].unique(), key=_method_order)
    aggs = sorted(per["aggregator"].unique(), key=_agg_order)
    max_pos = int(per["position"].max())
    fig, axes = plt.subplots(len(methods), len(aggs), figsize=(4.3 * len(aggs), 3.1 * len(methods)),
                             squeeze=False, sharex=True, sharey=True)
    colors = {"query_A": "#9ecae1", "query_B": "#3182bd", "value_A": "#fdae6b", "value_B": "#e6550d"}
    for i, method in enumerate(methods):
        for j, agg in enumerate(aggs):
            ax = axes[i, j]
            sub = per[(per["method"] == method) & (per["aggregator"] == agg)]
            for kind in ("query_A", "query_B", "value_A", "value_B"):
                k = sub[sub["kind"] == kind].sort_values("position")
                if len(k):
                    ax.plot(k["position"], k["ndr_30"], "-o", ms=3, lw=1.5, color=colors[kind],
                            label=KIND_NAMES[kind])
            for kind, marker, color, label in (("we", "s", "#2ca02c", "WE"), ("cl", "D", "#d62728", "CL")):
                k = sub[sub["kind"] == kind].groupby("position", as_index=False)["ndr_30"].mean()
                if len(k):
                    ax.plot(k["position"], k["ndr_30"], marker, ms=7, color=color, label=label, ls="none")
            ax.axhline(0.30, color="#7f7f7f", lw=0.8, ls=":")
            ax.set_title(f"{METHOD_NAMES.get(method, method)} · {AGG_NAMES.get(agg, agg)}")
            ax.grid(alpha=0.3)
            _layer_ticks(ax, max_pos)
            if j == 0:
                ax.set_ylabel("NDR@30")
            if i == len(methods) - 1:
                ax.set_xlabel("layer (WE = word embeddings, CL = head)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    handles.append(plt.Line2D([], [], color="#7f7f7f", ls=":"))
    labels.append("random (0.30)")
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    unit_note = f", mean over {len(runs)} units" if len(runs) > 1 else ""
    fig.suptitle(f"Layer-wise NDR@30 of single LoRA modules{model}{unit_note}\n"
                 "(each module's scores alone; higher score = more helpful, bottom 30 % checked for flipped labels)",
                 y=1.07)
    fig.tight_layout()
    return _save(fig, out / f"layerwise_ndr{suffix}.png", plt)


def _fig_noise_rank(runs, out: Path, suffix: str, model: str, plt) -> Path | None:
    nr = _read_units(runs, "scores/noise_rank.parquet")
    if nr.empty:
        return None
    cols = ["noisy_mean_rank", "clean_mean_rank", "top1_noisy_rank", "top1_clean_rank"]
    cols = [c for c in cols if c in nr.columns]
    per = nr.groupby(["method", "position"], as_index=False)[cols].mean()
    methods = sorted(per["method"].unique(), key=_method_order)
    max_pos = int(per["position"].max())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 3.8), squeeze=False, sharey=True)
    for j, method in enumerate(methods):
        ax = axes[0, j]
        sub = per[per["method"] == method].sort_values("position")
        ax.plot(sub["position"], sub["noisy_mean_rank"], "-o", ms=3, color="#d62728", label="noisy (mean)")
        ax.plot(sub["position"], sub["clean_mean_rank"], "-o", ms=3, color="#1f77b4", label="benign (mean)")
        if "top1_noisy_rank" in sub:
            ax.plot(sub["position"], sub["top1_noisy_rank"], ":", color="#d62728", lw=1, label="top-1 noisy")
        if "top1_clean_rank" in sub:
            ax.plot(sub["position"], sub["top1_clean_rank"], ":", color="#1f77b4", lw=1, label="top-1 benign")
        ax.axhline(0.30, color="#7f7f7f", lw=0.8, ls="--")
        ax.set_title(METHOD_NAMES.get(method, method))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        _layer_ticks(ax, max_pos)
        ax.set_xlabel("layer (WE = word embeddings, CL = head)")
        if j == 0:
            ax.set_ylabel("normalised rank (0 = lowest score)")
    axes[0, 0].legend(loc="upper left", frameon=False)
    unit_note = f", mean over {len(runs)} units" if len(runs) > 1 else ""
    fig.suptitle(f"Noise rank per layer{model}{unit_note}: where flipped examples sit in each layer's order\n"
                 "(higher score = more helpful; ranks below the dashed 0.30 line are removed)", y=1.04)
    fig.tight_layout()
    return _save(fig, out / f"noise_rank{suffix}.png", plt)


def _fig_boxplots(res: pd.DataFrame, out: Path, suffix: str, model: str, plt) -> Path | None:
    res = res.dropna(subset=["best_accuracy"])
    if res.empty:
        return None
    keyed = res.assign(_label=[config_label(m, g, a)
                               for m, g, a in zip(res["method"], res["group"], res["aggregator"])])
    groups = {lab: g for lab, g in keyed.groupby("_label")}
    order = sorted(groups, key=lambda lab: (groups[lab]["best_accuracy"].median(), groups[lab]["best_accuracy"].mean()))
    data = [groups[lab]["best_accuracy"].to_numpy(float) for lab in order]
    fig, ax = plt.subplots(figsize=(8.5, 1.6 + 0.27 * len(order)))
    bp = ax.boxplot(data, vert=False, patch_artist=True, widths=0.6, showfliers=False,
                    medianprops={"color": "black", "lw": 1.4})
    for patch, lab in zip(bp["boxes"], order):
        method = groups[lab]["method"].iloc[0]
        patch.set_facecolor(METHOD_COLORS.get(method, "#cccccc"))
        patch.set_alpha(0.55)
        if method in BASELINES:
            patch.set_hatch("//")
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.plot(d, i + rng.uniform(-0.15, 0.15, len(d)), "o", ms=3, color="#333", alpha=0.7)
    ax.set_yticks(range(1, len(order) + 1))
    ax.set_yticklabels(order, fontsize=8.5)
    for lab, ls in (("No removal", "--"), ("Random", ":")):
        if lab in groups:
            ax.axvline(groups[lab]["best_accuracy"].median(), color="#555", lw=1, ls=ls, label=f"{lab} (median)")
    ax.set_xlabel("test accuracy after retraining (best over epochs)")
    n_runs = keyed.groupby(RUN_KEY + (["unit"] if "unit" in keyed else [])).ngroups
    ax.set_title(f"Accuracy after removing the bottom 30 % per configuration{model}\n"
                 f"({n_runs} run{'s' if n_runs != 1 else ''}; higher = better; hatched = baselines)")
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", frameon=True, fontsize=8)
    return _save(fig, out / f"accuracy_boxplots{suffix}.png", plt)


def _fig_heatmap(res: pd.DataFrame, out: Path, suffix: str, model: str, plt) -> Path | None:
    infl = res[(res["kind"] != "baseline")].dropna(subset=["ndr_30"])
    if infl.empty:
        return None
    piv = infl.pivot_table(index=["method", "aggregator"], columns="group", values="ndr_30", aggfunc="mean")
    piv = piv[sorted(piv.columns, key=group_order)]
    piv = piv.loc[sorted(piv.index, key=lambda t: (_method_order(t[0]), _agg_order(t[1])))]
    vals = piv.to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.1 * vals.shape[1] + 3.2, 0.48 * vals.shape[0] + 1.8))
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", vmin=0, vmax=max(1.0, np.nanmax(vals)), aspect="auto")
    ax.set_xticks(range(vals.shape[1]))
    ax.set_xticklabels(piv.columns, rotation=0)
    ax.set_yticks(range(vals.shape[0]))
    ax.set_yticklabels([f"{METHOD_NAMES.get(m, m)} · {AGG_NAMES.get(a, a)}" for m, a in piv.index])
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8.5,
                    color="white" if v < 0.6 else "black")
        else:
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="#888")
    ax.set_xlabel("layer group")
    ax.spines[:].set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("NDR@30 (random ≈ 0.30)")
    n_runs = res.groupby(RUN_KEY + (["unit"] if "unit" in res else [])).ngroups
    ax.set_title(f"NDR@30 by method × aggregator and layer group{model}\n"
                 f"(mean over {n_runs} run{'s' if n_runs != 1 else ''}; "
                 "higher = more flipped labels in the removed 30 %)")
    return _save(fig, out / f"ndr30_heatmap{suffix}.png", plt)


def figures(run_or_sweep_dir: str | os.PathLike, out_dir: str | os.PathLike,
            results: pd.DataFrame | None = None) -> list[Path]:
    """Write the report's PNG figures into ``out_dir``; returns their paths (missing inputs skip a figure).

    From each run's ``scores/`` folder: NDR curves of the best configurations with the random diagonal,
    layer-wise NDR@30 per LoRA module type, noisy-vs-benign rank per layer; from the results table: accuracy
    box plots per configuration (baselines included) and an NDR@30 heat map. In a sweep, units of the same
    model are averaged; several models give one figure of each kind per model.
    """
    root = Path(run_or_sweep_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if results is None:
        try:
            results = load_results(root)
        except LayerinfError:
            results = pd.DataFrame()
    plt = _plt()
    by_model: dict[str, list[Path]] = {}
    for run in _unit_dirs(root):
        by_model.setdefault(_unit_model(run), []).append(run)
    models = sorted(set(by_model) | (set(results["model"].unique()) if len(results) else set()))
    several = len(models) > 1
    paths: list[Path] = []
    for model in models:
        suffix = f"_{_safe(model)}" if several else ""
        label = f" — {model}" if several else ""
        res = results[results["model"] == model] if len(results) else results
        runs = by_model.get(model, [])
        makers = [
            lambda: _fig_curves(runs, out, suffix, label, plt) if runs else None,
            lambda: _fig_heatmap(res, out, suffix, label, plt) if len(res) else None,
            lambda: _fig_boxplots(res, out, suffix, label, plt) if len(res) else None,
            lambda: _fig_layerwise(runs, out, suffix, label, plt) if runs else None,
            lambda: _fig_noise_rank(runs, out, suffix, label, plt) if runs else None,
        ]
        for make in makers:
            p = make()
            if p is not None:
                paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------- HTML

CAPTIONS = {
    "ndr_curves": "Share of the flipped (noisy) training labels found when the training examples are removed "
                  "from the lowest score upwards. The dotted diagonal is a random order, the dashed purple line a "
                  "perfect detector; the vertical line marks the 30 % that is actually removed (NDR@30). "
                  "The area under each curve, normalised, is AUC-NDR.",
    "ndr30_heatmap": "NDR@30 of every method × aggregator (rows) and layer group (columns): the share of flipped "
                     "labels inside the removed bottom 30 %. A random removal scores about 0.30; n/a = not computed "
                     "(e.g. DataInf on WE).",
    "accuracy_boxplots": "Test accuracy after removing each configuration's bottom 30 % and retraining from the same "
                         "initial checkpoint, one point per run. Hatched boxes are the baselines (no removal, random "
                         "removal, oracle removal of the noisy examples first).",
    "layerwise_ndr": "NDR@30 of each single LoRA module (Query/Value × A/B) against its layer; word embeddings (WE) "
                     "at the left end and the classification head (CL) at the right. The paper finds Value-B "
                     "modules the most informative.",
    "noise_rank": "Mean normalised rank of the noisy (red) and benign (blue) training examples in each layer's "
                  "score order (0 = lowest score = removed first). The further the red line lies below the blue "
                  "one, the better that layer separates flipped labels.",
}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2329;
background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:1.6em;margin:0 0 4px} h2{font-size:1.25em;margin:36px 0 8px;border-bottom:2px solid #e3e6ea;
padding-bottom:4px} h3{font-size:1.05em;margin:20px 0 6px}
.meta{color:#5a6570;font-size:.92em;margin:0 0 16px}
.guide{background:#f2f6fb;border-left:4px solid #3b7dd8;padding:10px 16px;font-size:.93em}
.guide dt{font-weight:600;margin-top:6px} .guide dd{margin:0 0 0 16px}
.caveat{background:#fff7e6;border-left:4px solid #e0a030;padding:8px 16px;font-size:.93em;margin-top:10px}
table{border-collapse:collapse;font-size:.86em;margin:6px 0;width:auto}
th,td{padding:4px 9px;border-bottom:1px solid #e6e8eb;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#eef1f4;position:sticky;top:0;font-weight:600}
td.t,th.t{text-align:left} td.wrap{white-space:normal;max-width:420px;text-align:left}
tr.baseline td{background:#faf7ef;font-style:italic}
tr:hover td{background:#f3f8ff}
.scroll{max-height:560px;overflow:auto;border:1px solid #e6e8eb;display:inline-block;max-width:100%}
.v-supported{background:#e3f4e1;color:#1d6b1a;font-weight:600}
.v-not-supported{background:#fbe4e2;color:#9b2219;font-weight:600}
.v-too-little-data{background:#eeeeee;color:#555;font-weight:600}
.notes{font-size:.85em;color:#5a6570;margin:4px 0 0 0;padding-left:18px}
figure{margin:18px 0 28px} figure img{max-width:100%;height:auto;border:1px solid #e6e8eb}
figcaption{font-size:.9em;color:#38424c;max-width:900px;margin-top:4px}
footer{margin-top:40px;font-size:.85em;color:#6b7680}
code{background:#f0f2f4;padding:0 3px;border-radius:3px}
"""

GUIDE = """
<dl>
<dt>Sign convention</dt><dd>Every influence score is oriented <b>higher = more helpful</b>. Filtering removes the
<b>bottom 30 %</b> (lowest scores) of the training set; the model is then retrained from the same initial
checkpoint and tested.</dd>
<dt>Configuration</dt><dd>influence method (TracIn, Cosine, DataInf) × layer group (WE = word embeddings,
four attention-layer groups named by their first–last layer, CL = classification head) × aggregator (Mean, Rank,
Vote over the per-module, per-validation-sample scores); baselines: no removal, random removal, oracle (noisy
examples first).</dd>
<dt>NDR@30</dt><dd>Noise detection rate: the share of the flipped (noisy) labels that fall inside the removed bottom
30 %. Random ≈ 0.30; 1.0 = every flipped label removed.</dd>
<dt>AUC-NDR</dt><dd>Area under the whole NDR curve (all removal fractions), normalised so that a perfect ranking
scores 1; random ≈ 0.5.</dd>
<dt>Cancellation</dt><dd>Σ‖gᵢ‖₁ / ‖Σgᵢ‖₁ over a group's per-example gradients: how much the gradients
cancel out. The paper argues it is <i>not</i> a reliable guide for choosing layers.</dd>
<dt>Win rate</dt><dd>For each run (model, task, seed), configuration c beats c′ if its accuracy after filtering is
strictly higher; the win rate is the fraction of such wins averaged over all other configurations (0–1). wstd is the
spread of c's pairwise win fractions.</dd>
<dt>Pareto rank</dt><dd>Keep only pairwise win fractions above τ; rank 1 = not dominated by any other configuration,
rank 2 = dominated only by rank-1 ones, and so on. Smaller is better. "avg. rank" is the Friedman average accuracy
rank within a run (1 = best).</dd>
</dl>
"""


def _html_table(name: str, df: pd.DataFrame, max_rows: int | None = None) -> str:
    disp = _display(name, df)
    if max_rows is not None and len(disp) > max_rows:
        disp = disp.iloc[:max_rows]
    text_cols = {"claim", "paper", "measured", "verdict", "method", "group", "aggregator", "kind", "model",
                 "comparison", "note", "groups", "significant"}
    wrap_cols = {"claim", "paper", "measured"}
    cols = list(disp.columns)
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">{html.escape(str(c))}</th>' for c in cols)
    body = []
    kinds = df["kind"].tolist() if "kind" in df.columns else [None] * len(df)
    kinds = kinds[: len(disp)]
    for i, row in enumerate(disp.itertuples(index=False)):
        cells = []
        for c, v in zip(cols, row):
            cls = "wrap" if c in wrap_cols else ("t" if c in text_cols else "")
            if c == "verdict":
                cls += " v-" + str(v).replace(" ", "-")
            cells.append(f'<td class="{cls.strip()}">{html.escape(str(v))}</td>')
        tr = ' class="baseline"' if i < len(kinds) and kinds[i] == "baseline" else ""
        body.append(f"<tr{tr}>" + "".join(cells) + "</tr>")
    notes = df.attrs.get("notes") or []
    note_html = ('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    scroll = len(disp) > 18
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if scroll:
        table = f'<div class="scroll">{table}</div>'
    return table + note_html


def _caption(path: Path) -> str:
    stem = path.stem
    for key in sorted(CAPTIONS, key=len, reverse=True):
        if stem == key or stem.startswith(key + "_"):
            extra = stem[len(key) + 1:]
            return CAPTIONS[key] + (f" Model: {extra}." if extra else "")
    return stem.replace("_", " ")


SECTIONS = [
    ("claims", "The paper's claims, checked on this data",
     "Verdicts compare the measured numbers only; with few runs they are indicative, not significant."),
    ("configurations", "Configurations ranked by win rate",
     "Accuracy is the test accuracy after removing the bottom 30 % and retraining: best over epochs (as in the "
     "paper) and at the epoch with the lowest influence-set loss. Baselines in italics."),
    ("configurations_by_model", "Configurations per model", "Win rates and Pareto ranks computed within each model."),
    ("spearman", "Do the proxies predict accuracy? (Spearman ρ)",
     "One ρ per method × aggregator, pooling the layer groups × runs (DataInf × WE skipped); "
     "* = p > 0.05 (not significant)."),
    ("wilcoxon", "Mean vs Rank / Vote (paired Wilcoxon over runs)",
     "difference = accuracy with Rank/Vote minus accuracy with Mean; positive favours Rank/Vote."),
]


def write_html(out_dir: str | os.PathLike, tables: dict[str, pd.DataFrame], figures: Sequence[Path | str],
               meta: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/index.html``: one static page (inline CSS, no JavaScript, no external URLs).

    ``figures`` are PNG paths; those outside ``out_dir/figures`` are copied there and referenced by relative
    path. ``meta`` may hold ``title``, ``source``, ``runs``, ``models``, ``tasks``, ``seeds``, ``tau``,
    ``include_self``, ``generated``, ``version``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    fig_dir = out / "figures"
    rel_figs = []
    for f in figures:
        f = Path(f)
        try:
            rel = f.resolve().relative_to(out.resolve())
        except ValueError:
            fig_dir.mkdir(exist_ok=True)
            shutil.copy2(f, fig_dir / f.name)
            rel = Path("figures") / f.name
        rel_figs.append(rel)
    title = meta.get("title") or "layerinf report"
    bits = []
    for key, label in (("source", "source"), ("kind", "type"), ("models", "models"), ("tasks", "tasks"),
                       ("seeds", "seeds"), ("runs", "runs"), ("units", "units"), ("tau", "Pareto τ"),
                       ("win_rate_denominator", "win rate ÷"),
                       ("generated", "generated"), ("version", "layerinf")):
        if meta.get(key) not in (None, "", []):
            v = meta[key]
            v = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            bits.append(f"{label}: <b>{html.escape(str(v))}</b>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{" · ".join(bits)}</p>',
        "<h2>How to read this report</h2>",
        '<div class="guide">' + GUIDE + "</div>",
        '<div class="caveat"><b>Caveats.</b> "best_accuracy" is the maximum test accuracy over retraining epochs, '
        "which is optimistic (it is what the paper reports); the accuracy at the epoch with the lowest "
        "influence-set loss is shown next to it. Win rates over few runs are coarse: with one run every pairwise "
        "comparison is 0 or 1. Correlations and tests with few points are marked or left out.</div>",
    ]
    for name, heading, intro in SECTIONS:
        if name not in tables:
            continue
        parts.append(f'<h2 id="{name}">{html.escape(heading)}</h2>')
        parts.append(f"<p>{html.escape(intro)}</p>")
        parts.append(_html_table(name, tables[name]))
    for name, df in tables.items():
        if name not in dict((s[0], s) for s in SECTIONS):
            parts.append(f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>')
            parts.append(_html_table(name, df))
    if rel_figs:
        parts.append('<h2 id="figures">Figures</h2>')
        for i, rel in enumerate(rel_figs, start=1):
            src = html.escape(rel.as_posix(), quote=True)
            cap = html.escape(_caption(rel))
            parts.append(f'<figure><img src="{src}" alt="{html.escape(rel.stem)}">'
                         f"<figcaption><b>Figure {i}.</b> {cap}</figcaption></figure>")
    csvs = ", ".join(f'<a href="tables/{html.escape(n)}.csv"><code>{html.escape(n)}.csv</code></a> '
                     f'(<a href="tables/{html.escape(n)}.md">md</a>)' for n in tables)
    parts.append(f"<footer>All tables as CSV and Markdown: {csvs}. Sign convention: higher score = more helpful; "
                 "the bottom 30 % is removed.</footer>")
    parts.append("</main></body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------- report


def report(path: str | os.PathLike, out: str | os.PathLike | None = None, tau: float = 0.75,
           include_self: bool = False) -> Path:
    """Tables, figures and ``index.html`` for a run or sweep directory; returns the HTML path.

    Writes into ``<path>/report/`` unless ``out`` is given, atomically: everything is built in a temporary
    sibling folder that replaces the old report only when complete.
    """
    root = Path(path)
    results = load_results(root)
    target = Path(out) if out is not None else (root if root.is_dir() else root.parent) / "report"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    try:
        tabs = tables(results, tau=tau, include_self=include_self)
        write_tables(tabs, tmp / "tables")
        figs = figures(root if root.is_dir() else root.parent, tmp / "figures", results=results)
        key = _run_key(results)
        from layerinf import __version__

        meta = {
            "title": f"layerinf report — {root.resolve().name}",
            "source": str(root),
            "kind": "sweep" if "unit" in results.columns else "run",
            "models": sorted(results["model"].unique()),
            "tasks": sorted(results["task"].unique()),
            "seeds": sorted(int(s) if str(s).lstrip("-").isdigit() else s for s in results["seed"].unique()),
            "runs": int(results.groupby(key).ngroups),
            "units": int(results["unit"].nunique()) if "unit" in results.columns else None,
            "tau": tau,
            "win_rate_denominator": "|C| (paper)" if include_self else "|C| − 1",
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": __version__,
        }
        write_html(tmp, tabs, figs, meta)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    return target / "index.html"
