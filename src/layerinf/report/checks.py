"""What a report reads must exist and be intact, checked before anything is written: a run directory (its
finished stages, verified: checksums, up to date with their inputs) or a sweep directory (every unit's). A run
whose retrainings are an older layerinf's ``eval/`` stage (before it was named ``retrain``) is one line naming the
command that redoes them."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from layerinf.config import FilterConfig
from layerinf.errors import LayerinfError
from layerinf.store.layout import (LEGACY_EVAL, REPORT, RETRAIN, STAGE_FILE, STAGES, RunLayout, SweepLayout,
                                   is_sweep)
from layerinf.store.rundir import RunDir, check_writable_dir


def check_legacy_eval(run: Path) -> None:
    """An ``eval/`` stage of an older layerinf and no ``retrain/`` stage: its retrainings are not read (their
    records' keys have changed since); the error names `layerinf retrain` with the filter options it had."""
    old = Path(run) / LEGACY_EVAL / STAGE_FILE
    if not old.is_file() or (Path(run) / RETRAIN / STAGE_FILE).is_file():
        return
    try:
        given = json.loads(old.read_text(encoding="utf-8"))["config"]["filter"]
    except (OSError, ValueError, KeyError, TypeError):
        given = {}
    given, default, flags = given if isinstance(given, dict) else {}, FilterConfig(), ""
    for f in fields(FilterConfig):  # the options it was made with, where they differ from `retrain`'s defaults
        value = given.get(f.name)
        if f.name != "retrain" and value is not None and value != getattr(default, f.name):
            shown = ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}" if isinstance(
                value, float) else value
            flags += f" --{f.name.replace('_', '-')} {shown}"
    raise LayerinfError(f"{Path(run) / LEGACY_EVAL} was made by an older layerinf version",
                        f"rerun `layerinf retrain {run}{flags}` (it reads the run's scores and fine-tuning)")


def check_report_input(path, out=None) -> None:
    """What ``report`` reads must exist and be intact: a run directory (its finished stages, verified) or a
    sweep directory (every unit's); ``out`` must be a folder we can write."""

    root = Path(path)
    if root.is_file() and root.suffix == ".parquet":
        return  # a results table given directly: nothing to verify it against
    if not root.exists():
        raise LayerinfError(f"{root} does not exist", "give a run directory (layerinf run) or a sweep directory "
                                                      "(layerinf sweep)")
    if not root.is_dir():
        raise LayerinfError(f"{root} is a file, not a run or sweep directory", "give the folder `layerinf run` "
                                                                               "or `layerinf sweep` wrote")
    if out is not None:
        check_writable_dir(out, "report folder")
    else:
        check_writable_dir(root / REPORT, "report folder")
    sweep = is_sweep(root)
    runs = sorted(p for p in SweepLayout(root).units.iterdir() if p.is_dir()) if sweep and \
        SweepLayout(root).units.is_dir() else [root]
    for run in runs:
        check_legacy_eval(run)
    if not sweep and not any((root / name / STAGE_FILE).is_file() for name in STAGES) \
            and not RunLayout(root).results().exists():
        raise LayerinfError(f"no results in {root}: no finished stage of `layerinf run` (no retrain/ nor scores/)",
                            "run `layerinf run` first, or point at a run or sweep directory")
    for run in runs:
        rd = RunDir(run)
        for name in STAGES:
            if rd.stage_path(name).is_dir() and (rd.stage_path(name) / STAGE_FILE).exists():
                rd.require(name)
