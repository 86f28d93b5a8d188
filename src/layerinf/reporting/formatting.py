"""Formatting and writing the report's tables: display strings (readable names, 3 decimals, '–' for NaN),
Markdown, and ``<name>.csv`` (raw numbers) + ``<name>.md`` (formatted) files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from layerinf.reporting.common import AGG_NAMES, METHOD_NAMES, fmt, fmt_p, pm
from layerinf.reporting.summary import ALPHA_SPEARMAN
from layerinf.reporting.uncertainty import collapsed_words

DETECTION_LABELS = {"precision_30": "precision@30", "auc_ndr": "AUC-NDR", "roc_auc": "ROC-AUC",
                    "cancellation": "cancellation"}


def display(name: str, df: pd.DataFrame) -> pd.DataFrame:
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
        if "retrainings" in df.columns and (df["retrainings"] > df["runs"]).any():
            d["retrainings"] = [fmt(v) for v in df["retrainings"]]
        spread = "_ci95" if "best_accuracy_ci95" in df.columns else "_std"
        d["best accuracy"] = [pm(m, s) + _collapsed(df, i)
                              for i, (m, s) in enumerate(zip(df["best_accuracy_mean"], df["best_accuracy" + spread]))]
        d["acc. at best-loss epoch"] = [pm(m, s) for m, s in zip(df["acc_at_best_epoch_mean"],
                                                                 df["acc_at_best_epoch" + spread])]
        d["NDR@30"] = [fmt(v) + _interval(df, "ndr_30", i) for i, v in enumerate(df["ndr_30_mean"])]
        d["AUC-NDR"] = [fmt(v) + _interval(df, "auc_ndr", i) for i, v in enumerate(df["auc_ndr_mean"])]
        if "roc_auc_mean" in df.columns and df["roc_auc_mean"].notna().any():
            d["ROC-AUC"] = [fmt(v) + _interval(df, "roc_auc", i) for i, v in enumerate(df["roc_auc_mean"])]
        d["win rate"] = [fmt(v) for v in df["win_rate"]]
        d["wstd"] = [fmt(v) for v in df["wstd"]]
        d["Pareto rank"] = [fmt(v) for v in df["pareto_rank"]]
        if "friedman_avg_rank" in df.columns and df["friedman_avg_rank"].notna().any():
            d["avg. rank"] = [fmt(v, 1) for v in df["friedman_avg_rank"]]
        return d.reset_index(drop=True)
    if name == "spearman":
        d = pd.DataFrame({"method": df["method"], "aggregator": df["aggregator"],
                          "points": [fmt(v) for v in df["n_points"]]})
        for proxy, label in (("ndr_30", "NDR@30"), ("auc_ndr", "AUC-NDR"), ("cancellation", "cancellation")):
            rho, p = df[f"rho_{proxy}"], df[f"p_{proxy}"]
            d[f"ρ {label}"] = [fmt(r) + ("*" if np.isfinite(r) and not (pv <= ALPHA_SPEARMAN) else "")
                               for r, pv in zip(rho, p)]
            d[f"p ({label})"] = [fmt_p(v) for v in p]
        return d.reset_index(drop=True)
    if name == "detection":
        d = pd.DataFrame({c: df[c] for c in ("method", "group", "aggregator", "runs") if c in df.columns})
        for c in df.columns:
            m = re.fullmatch(r"ndr_(\d+)", c)
            if m or c in DETECTION_LABELS:
                d[f"NDR@{m.group(1)}" if m else DETECTION_LABELS[c]] = [fmt(v) + _interval(df, c, i)
                                                                         for i, v in enumerate(df[c])]
        if "runs" in d.columns:
            d["runs"] = [fmt(v) for v in d["runs"]]
        return d.reset_index(drop=True)
    d = df.copy()
    if name == "wilcoxon":
        d["significant"] = ["–" if pd.isna(s) else ("yes" if s else "no") for s in df["significant"]]
        d["p_value"] = [fmt_p(v) for v in df["p_value"]]
        d = d.rename(columns={"mean_accuracy": "Mean acc.", "other_accuracy": "other acc.",
                              "difference": "other − Mean", "p_value": "p"})
    for c in d.columns:
        d[c] = [fmt(v) for v in d[c]]
    return d.reset_index(drop=True)


def _interval(df: pd.DataFrame, metric: str, i: int) -> str:
    """`` [lo, hi]`` of row ``i`` when the table has the bootstrap interval of ``metric`` there, else ``""``."""
    lo, hi = f"{metric}_lo", f"{metric}_hi"
    if lo not in df.columns or hi not in df.columns:
        return ""
    a, b = df[lo].iloc[i], df[hi].iloc[i]
    return f" [{a:.3f}, {b:.3f}]" if np.isfinite(a) and np.isfinite(b) else ""


def _collapsed(df: pd.DataFrame, i: int) -> str:
    """`` ⚠ k collapsed`` when row ``i`` counts retrainings that collapsed to the majority class."""
    if "collapsed" not in df.columns or not df["collapsed"].iloc[i]:
        return ""
    n = int(df["collapsed"].iloc[i])
    used = int(df["collapsed_included"].iloc[i]) if "collapsed_included" in df.columns else 0
    return f" ⚠ {collapsed_words(n, used)}"


def markdown(df: pd.DataFrame) -> str:
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
        md = f"# {name}\n\n" + markdown(display(name, df))
        notes = df.attrs.get("notes") or []
        if notes:
            md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
        (out_dir / f"{name}.md").write_text(md, encoding="utf-8")
        paths += [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    return paths
