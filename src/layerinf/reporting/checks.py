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
from layerinf.store.hints import redo_command
from layerinf.store.layout import (ADVISE, DATA, FINETUNE, GRADS, LEGACY_EVAL, PAGE_FILE, REPORT, RETRAIN, SCORES,
                                   STAGE_FILE, STAGES, SUSPECTS, RunLayout, SweepLayout, is_sweep)
from layerinf.store.rundir import RunDir, check_writable_dir

EXPERIMENT = "`layerinf report` summarises an experiment: `layerinf run CONFIG` or `layerinf sweep`"


def not_a_run(root: Path) -> LayerinfError:
    """The error for a folder with nothing to report: what kind of folder it is and what to run instead."""
    lay = RunLayout(root)
    if (root / STAGE_FILE).is_file():  # a stage folder inside a run
        if root.name == SUSPECTS:
            return LayerinfError(f"{root} is the result folder of `layerinf suspects`, not a run or sweep",
                                 f"open its page {root / PAGE_FILE}; {EXPERIMENT}")
        return LayerinfError(f"{root} is the '{root.name}' stage folder of a run, not the run",
                             f"give the run directory: `layerinf report {root.parent}`")
    if (lay.stage(SUSPECTS) / STAGE_FILE).is_file():
        return LayerinfError(f"{root} is an output folder of `layerinf suspects` (a ranking of your rows), not a run "
                             "or sweep",
                             f"open its page {lay.stage(SUSPECTS) / PAGE_FILE}; {EXPERIMENT}")
    if (root / ADVISE).is_dir():
        return LayerinfError(f"{root} is an output folder of `layerinf advise`, not a run or sweep",
                             f"open its page {root / ADVISE / PAGE_FILE}; {EXPERIMENT}")
    done = [name for name in (DATA, FINETUNE, GRADS) if (lay.stage(name) / STAGE_FILE).is_file()]
    if done:
        following = {DATA: FINETUNE, FINETUNE: GRADS, GRADS: SCORES}[done[-1]]
        return LayerinfError(f"{root} is a run directory that has not been scored yet (finished: {', '.join(done)})",
                             f"first run {redo_command(following, root, force=False)}, then `layerinf report {root}`; "
                             f"or run the whole experiment: `layerinf run CONFIG --out {root}`")
    return LayerinfError(f"no results in {root}: no finished stage of `layerinf run` (no retrain/ nor scores/)",
                         "run `layerinf run` first, or point at a run or sweep directory")


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
    lay = RunLayout(root)
    scored = lay.results().exists() or lay.scores().exists() or (lay.stage(SCORES) / STAGE_FILE).is_file()
    if not sweep and not scored:
        raise not_a_run(root)
    for run in runs:
        rd = RunDir(run)
        for name in STAGES:
            if rd.stage_path(name).is_dir() and (rd.stage_path(name) / STAGE_FILE).exists():
                rd.require(name)
