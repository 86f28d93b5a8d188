"""Loading what a report summarises: the results table of a run or sweep, and each run's score frames.

Every path comes from :mod:`layerinf.store.layout`. :func:`load_results` reads the filter-and-retrain results
(``RunLayout.results()`` of a run, ``SweepLayout.results()`` of a sweep); :func:`load_detection` reads the score
tables (``RunLayout.scores()``) of each run instead, for runs scored but not retrained; :func:`read_units` stacks
one score frame (``curves``, ``modules``, ``noise_rank``, ...) over the units of a sweep.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from layerinf.errors import LayerinfError
from layerinf.reporting.common import BASELINES
from layerinf.reporting.params import run_params
from layerinf.store.layout import RunLayout, SweepLayout, is_sweep

REQUIRED = ["model", "task", "seed", "method", "group", "aggregator", "best_accuracy"]
OPTIONAL_FLOAT = ["ndr_30", "auc_ndr", "roc_auc", "cancellation", "accuracy_at_best_epoch"]


def _is_sweep(path: Path) -> bool:
    return SweepLayout(path).results().exists() or is_sweep(path)


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """The results table of a run directory (``RunLayout.results()``) or a sweep (``SweepLayout.results()``).

    One row per (model, task, seed, method, group, aggregator), baselines included (see docs/internals.md),
    and per retraining seed when the run had ``filter.repeats`` > 1 (columns ``repeat``, ``train_seed``; the
    report averages them, :mod:`.uncertainty`); a sweep's table has an extra ``unit`` column. Missing optional metric columns are filled with NaN and
    ``kind`` is derived from ``method`` when absent.
    """
    path = Path(path)
    if not path.exists():
        raise LayerinfError(f"{path} does not exist", "give a run or sweep directory (run `layerinf run` first)")
    sweep_file, run_file = SweepLayout(path).results(), RunLayout(path).results()
    if path.is_file() and path.suffix == ".parquet":
        file = path
    elif sweep_file.exists():
        file = sweep_file
    elif run_file.exists():
        file = run_file
    elif _is_sweep(path):
        raise LayerinfError(f"no {sweep_file.name} in sweep directory {path}",
                            "run `layerinf sweep` to completion first (finished units are reused)")
    else:
        raise LayerinfError(f"no results in {path} (neither {run_file.relative_to(path).as_posix()} "
                            f"nor {sweep_file.name})",
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


def has_results(path: str | os.PathLike) -> bool:
    """True when a results table of the run, the sweep or one of its units exists and is not empty (or cannot
    even be read): then a failing :func:`load_results` is a real error, not a run that was never retrained."""
    path = Path(path)
    files = [path, SweepLayout(path).results(), RunLayout(path).results()]
    files += [RunLayout(u).results() for u in unit_dirs(path)] if path.is_dir() else []
    for file in files:
        if file.is_file() and file.suffix == ".parquet":
            try:
                if len(pd.read_parquet(file)) > 0:
                    return True
            except Exception:  # noqa: BLE001 - unreadable: load_results says why
                return True
    return False


def unit_dirs(root: Path) -> list[Path]:
    """The run directories of a run (itself) or a sweep (``SweepLayout.units``), in name order."""
    units = SweepLayout(root).units
    if units.is_dir():
        return sorted(p for p in units.iterdir() if p.is_dir())
    return [root]


def unit_model(run: Path) -> str:
    """The model of one run: its recorded parameters (see :mod:`.params`), else its results, else ``model``."""
    model = run_params(run).model
    if model:
        return model
    file = RunLayout(run).results()
    if file.exists():
        try:
            models = pd.read_parquet(file, columns=["model"])["model"].unique()
            if len(models):
                return str(models[0])
        except Exception:  # noqa: BLE001
            pass
    return "model"


def read_units(runs: Sequence[Path], name: str) -> pd.DataFrame:
    """The score frame ``RunLayout.scores(name)`` of each run, stacked, with the run's position in ``_unit``."""
    frames = []
    for i, run in enumerate(runs):
        f = RunLayout(run).scores(name)
        if f.exists():
            try:
                df = pd.read_parquet(f)
            except Exception:  # noqa: BLE001 - a broken figure input skips that figure, not the report
                continue
            df["_unit"] = i
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_detection(path: str | os.PathLike) -> pd.DataFrame:
    """The score tables (``RunLayout.scores()``) of a run or of every unit of a sweep, as one frame.

    The detection side only, for runs scored but not retrained: one row per (run, method, group, aggregator)
    with ``model``, ``task``, ``seed`` (from each run's parameters), ``unit`` (sweeps only), ``kind`` =
    ``influence`` and ``best_accuracy`` = NaN next to the score table's columns. Empty when no run has one.
    """
    root = Path(path)
    if not root.is_dir():
        return pd.DataFrame()
    sweep = is_sweep(root)
    frames = []
    for run in unit_dirs(root):
        file = RunLayout(run).scores()
        if not file.exists():
            continue
        try:
            df = pd.read_parquet(file)
        except Exception:  # noqa: BLE001 - an unreadable unit is left out, like a missing one
            continue
        if df.empty or not {"method", "group", "aggregator"} <= set(df.columns):
            continue
        p = run_params(run)
        df = df.copy()
        df.insert(0, "seed", p.seed if p.seed is not None else 0)
        df.insert(0, "task", p.task or "task")
        df.insert(0, "model", p.model or "model")
        if sweep:
            df.insert(0, "unit", run.name)
        df["kind"] = "influence"
        df["best_accuracy"] = np.nan
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    for c in OPTIONAL_FLOAT:
        if c not in out.columns:
            out[c] = np.nan
    for c in ["model", "task", "method", "group", "aggregator", "kind"]:
        out[c] = out[c].astype(str)
    return out
