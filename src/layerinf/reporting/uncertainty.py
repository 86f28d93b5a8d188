"""How sure the report's numbers are: repeated retrainings, collapsed retrainings and bootstrap intervals.

* **Repeats** (``filter.repeats``): a run's results hold one row per configuration and retraining seed (column
  ``repeat``). :func:`average_repeats` turns them into one row per run and configuration, the mean over the
  repeats, with the 95 % Student t-interval of that mean (``best_accuracy_ci95``: the half-width
  t(0.975, r − 1) · s / √r over the r repeats used). Win rates, Pareto ranks and the best configuration use
  these means, never single repeats.
* **Collapsed retrainings**: a retraining whose test accuracy never, at any epoch, beat always predicting the
  test set's majority class (``best_accuracy`` ≤ the majority-class rate) has collapsed. :func:`flag_collapsed`
  marks them (``collapsed``) from each run's test labels. Policy: a collapsed repeat is **excluded** from its
  configuration's mean when another repeat of the same configuration and run learned (a failed optimisation,
  not the filter's doing); when every repeat collapsed (always so with one repeat) they are **included**, since
  the filter itself may have caused it (e.g. by removing most of a class). Both cases are flagged in the tables
  and in the first-screen answer, never averaged in silently.
* **Bootstrap over training examples** (:func:`detection_ci`): NDR@30, AUC-NDR and ROC-AUC of each
  configuration's aggregated scores against the run's noise mask, recomputed on ``B`` resamples of the training
  examples (with replacement, seeded; the same resamples for every configuration of a run), giving 95 %
  percentile intervals. Over several runs, each resample's values are averaged over the runs first, so the
  interval is that of the mean over runs the tables show.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from layerinf.evaluation import metrics
from layerinf.reporting.common import CONFIG, RUN_KEY
from layerinf.reporting.params import run_params
from layerinf.store.layout import AGGREGATED_FILE, SCORES, RunLayout, SweepLayout

LEVEL = 0.95
BOOTSTRAP = 1000  # default number of resamples
CI_METRICS = ("ndr_30", "auc_ndr", "roc_auc")
_BASELINE_SCORES = ("random", "oracle")


# ------------------------------------------------------------------------------------- collapsed retrainings


def _run_dir(base: Path, unit) -> Path:
    if unit is None or (isinstance(unit, float) and math.isnan(unit)):
        return base
    return SweepLayout(base).unit(str(unit))


def _majority(run: Path) -> float:
    """The test set's majority-class rate of one run (NaN when its test split cannot be read)."""
    try:
        labels = pd.read_parquet(RunLayout(run).split("test"), columns=["label"])["label"].to_numpy()
    except Exception:  # noqa: BLE001 - no data stage (a copied results table): unknown
        return float("nan")
    return float(np.bincount(labels.astype(np.int64)).max() / len(labels)) if len(labels) else float("nan")


def flag_collapsed(results: pd.DataFrame, base: str | Path) -> pd.DataFrame:
    """``results`` with ``majority`` (the run's test majority-class rate) and ``collapsed`` (best test accuracy
    over epochs ≤ that rate) columns; runs whose test split is missing get NaN and ``collapsed`` False."""
    base = Path(base)
    base = base.parent if base.is_file() else base
    df = results.copy()
    units = df["unit"] if "unit" in df.columns else pd.Series([None] * len(df), index=df.index)
    cache: dict = {}
    maj = []
    for u in units:
        key = None if u is None or (isinstance(u, float) and math.isnan(u)) else str(u)
        if key not in cache:
            cache[key] = _majority(_run_dir(base, key))
        maj.append(cache[key])
    df["majority"] = np.asarray(maj, dtype=float)
    acc = pd.to_numeric(df["best_accuracy"], errors="coerce").to_numpy(float)
    df["collapsed"] = np.isfinite(df["majority"].to_numpy()) & np.isfinite(acc) & (acc <= df["majority"] + 1e-9)
    return df


# ----------------------------------------------------------------------------------------------- repeats


def average_repeats(results: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """One row per run and configuration: accuracies averaged over its repeats (collapsed ones per the policy
    in the module docstring), with ``repeats`` (retrainings), ``repeats_used``, ``collapsed``, ``collapsed_used``
    and the t-interval half-widths ``best_accuracy_ci95`` / ``acc_at_best_epoch_ci95`` over the repeats used
    (NaN with one). A frame that was averaged already (it has ``repeats_used``) is returned as it is."""
    if "repeats_used" in results.columns or len(results) == 0:
        return results
    df = results.copy()
    if "collapsed" not in df.columns:
        df["collapsed"] = False
    df["collapsed"] = df["collapsed"].fillna(False).astype(bool)
    keys = [c for c in RUN_KEY + ["unit"] + CONFIG if c in df.columns]
    if "repeat" not in df.columns and not df.duplicated(keys).any():  # one retraining each: nothing to average
        out = df.copy()
        out["repeats"] = 1
        out["repeats_used"] = out["best_accuracy"].notna().astype(int)
        out["collapsed_used"] = out["collapsed"]
        out["collapsed"] = out["collapsed"].astype(int)
        out["collapsed_used"] = out["collapsed_used"].astype(int)
        out["best_accuracy_ci95"] = np.nan
        out["acc_at_best_epoch_ci95"] = np.nan
        return out
    df["_use"] = ~df["collapsed"]
    learned = df.groupby(keys, sort=False, dropna=False)["_use"].transform("any")
    df["_use"] = df["_use"] | ~learned  # every repeat collapsed: keep them all (flagged)
    rows = []
    for _, g in df.groupby(keys, sort=False, dropna=False):
        used = g[g["_use"]]
        row = g.iloc[0].to_dict()
        best_mean, best_half, n_used = metrics.t_interval(used["best_accuracy"], level)
        epoch_mean, epoch_half, _ = metrics.t_interval(used["accuracy_at_best_epoch"], level)
        row.update(best_accuracy=best_mean, accuracy_at_best_epoch=epoch_mean, repeats=int(len(g)),
                   repeats_used=int(n_used), collapsed=int(g["collapsed"].sum()),
                   collapsed_used=int((used["collapsed"]).sum()), best_accuracy_ci95=best_half,
                   acc_at_best_epoch_ci95=epoch_half)
        rows.append(row)
    out = pd.DataFrame(rows).drop(columns=[c for c in ("_use", "repeat", "train_seed") if c in df.columns])
    out.attrs.update(results.attrs)
    return out


def collapsed_words(n: int, used: int) -> str:
    """``2 collapsed (included)``, ``1 collapsed (excluded)`` or ``3 collapsed (1 included)``."""
    how = "included" if used == n else "excluded" if used == 0 else f"{used} included"
    return f"{n} collapsed ({how})"


def collapse_notes(per_run: pd.DataFrame) -> list[str]:
    """Sentences on collapsed retrainings (none: no sentence)."""
    if "collapsed" not in per_run.columns or not per_run["collapsed"].sum():
        return []
    total = int(per_run["repeats"].sum())
    n = int(per_run["collapsed"].sum())
    used = int(per_run["collapsed_used"].sum())
    bad = per_run[per_run["collapsed"] > 0]
    names = sorted({"/".join(map(str, (r.method, r.group, r.aggregator))) for r in bad.itertuples()})
    maj = bad["majority"].dropna() if "majority" in bad.columns else pd.Series(dtype=float)
    rate = f" (≤ {maj.max():.3f})" if len(maj) else ""
    how = []
    if n - used:
        how.append(f"{n - used} excluded from the means (another repeat of the same configuration learned)")
    if used:
        how.append(f"{used} included, flagged ⚠ (every repeat of that configuration collapsed)")
    return [f"{n} of {total} retraining(s) collapsed to the majority class — best test accuracy never above always "
            f"predicting the majority class{rate}: " + "; ".join(how) + ". Configurations: "
            + ", ".join(names[:12]) + (" …" if len(names) > 12 else "")]


# ------------------------------------------------------------------------------------ bootstrap intervals


def _run_scores(run: Path) -> tuple[dict[tuple, np.ndarray], np.ndarray] | None:
    """Aggregated scores by configuration (plus the random and oracle baselines) and the noise mask of a run."""
    lay = RunLayout(run)
    try:
        agg = pd.read_parquet(lay.stage(SCORES) / AGGREGATED_FILE)
        noisy = pd.read_parquet(lay.split("train"), columns=["noisy"])["noisy"].to_numpy(bool)
    except Exception:  # noqa: BLE001 - not a complete run directory: no interval
        return None
    cols = [c for c in agg.columns if isinstance(c, str) and c.count("/") == 2]
    if len(agg) != len(noisy) or not cols:
        return None
    scores = {tuple(c.split("/")): agg[c].to_numpy(np.float64) for c in cols}
    seed = run_params(run).seed or 0  # the retrain stage draws its baselines with the data seed
    scores[("random", "-", "-")] = metrics.random_scores(len(noisy), seed)
    scores[("oracle", "-", "-")] = metrics.oracle_scores(noisy, seed)
    return scores, noisy


def detection_ci(runs: list[Path], configs=None, *, B: int = BOOTSTRAP, seed: int = 0,
                 level: float = LEVEL) -> pd.DataFrame:
    """95 % percentile bootstrap intervals of NDR@30, AUC-NDR and ROC-AUC per configuration, pooled over
    ``runs`` (each resample's values averaged over the runs that have the configuration). ``configs`` limits
    the configurations ((method, group, aggregator) tuples). Columns: CONFIG, ``<metric>_lo``,
    ``<metric>_hi``, ``bootstrap_runs``; empty when no run has aggregated scores and a noise mask."""
    wanted = None if configs is None else {tuple(map(str, c)) for c in configs}
    reps: dict[tuple, list[np.ndarray]] = {}
    for i, run in enumerate(runs):
        got = _run_scores(Path(run))
        if got is None:
            continue
        scores, noisy = got
        names = [c for c in scores if wanted is None or c in wanted]
        if not names or not noisy.any():
            continue
        mat = np.column_stack([scores[c] for c in names])
        if not np.all(np.isfinite(mat)):
            keep = np.isfinite(mat).all(axis=0)
            names, mat = [c for c, k in zip(names, keep) if k], mat[:, keep]
            if not names:
                continue
        r = metrics.bootstrap_detection(mat, noisy, B=B, seed=seed + 7919 * i)
        for j, c in enumerate(names):
            reps.setdefault(c, []).append(np.stack([r["ndr"][:, j], r["auc_ndr"][:, j], r["roc_auc"][:, j]]))
    rows = []
    for c, per_run in reps.items():
        pooled = np.nanmean(np.stack(per_run), axis=0) if len(per_run) > 1 else per_run[0]  # (3, B)
        lo, hi = metrics.percentile_interval(pooled, level, axis=1)
        row = dict(zip(CONFIG, c))
        for k, name in enumerate(CI_METRICS):
            row[f"{name}_lo"], row[f"{name}_hi"] = float(lo[k]), float(hi[k])
        row["bootstrap_runs"] = len(per_run)
        rows.append(row)
    cols = CONFIG + [f"{m}_{s}" for m in CI_METRICS for s in ("lo", "hi")] + ["bootstrap_runs"]
    out = pd.DataFrame(rows, columns=cols)
    out.attrs["B"] = int(B)
    return out


def ci_note(ci: pd.DataFrame | None) -> str:
    """What the bracketed intervals are (one line), or why there are none."""
    if ci is None:
        return ""
    if ci.empty:
        return ("no bootstrap intervals for NDR@30 / AUC: the runs' aggregated scores or noise masks were not found "
                "(only the run directories written by `layerinf run` have them)")
    several = len(ci) and int(ci["bootstrap_runs"].max()) > 1
    return (f"[lo, hi] after NDR@30, AUC-NDR and ROC-AUC: 95 % percentile bootstrap interval over the training "
            f"examples ({ci.attrs.get('B', BOOTSTRAP)} resamples with replacement, seeded"
            + ("; each resample averaged over the runs, as the table's means are)" if several else ")"))


def merge_ci(table: pd.DataFrame, ci: pd.DataFrame | None) -> pd.DataFrame:
    """``table`` with the interval columns of ``ci`` joined on the configuration (NaN where there is none)."""
    if ci is None:
        return table
    attrs = dict(table.attrs)
    out = table.merge(ci, on=CONFIG, how="left") if len(ci) else table.assign(
        **{c: np.nan for c in ci.columns if c not in CONFIG})
    out.attrs.update(attrs)
    return out
