"""What a report reads must exist and be intact, checked before anything is written: a run directory (its
finished stages, verified: checksums, up to date with their inputs) or a sweep directory (every unit's)."""

from __future__ import annotations

from pathlib import Path

from layerinf.errors import LayerinfError
from layerinf.store.layout import REPORT, STAGE_FILE, STAGES, RunLayout, SweepLayout, is_sweep
from layerinf.store.rundir import RunDir, check_writable_dir


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
    if not sweep and not any((root / name / STAGE_FILE).is_file() for name in STAGES) \
            and not RunLayout(root).results().exists():
        raise LayerinfError(f"no results in {root}: no finished stage of `layerinf run` (no eval/ nor scores/)",
                            "run `layerinf run` first, or point at a run or sweep directory")
    for run in runs:
        rd = RunDir(run)
        for name in STAGES:
            if rd.stage_path(name).is_dir() and (rd.stage_path(name) / STAGE_FILE).exists():
                rd.require(name)
