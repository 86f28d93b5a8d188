"""The claims' inputs (``layerinf.reporting.claims``): per run, one row per configuration and NDR@30 per LoRA
module kind, read from run or sweep folders — or from a folder of committed tables, so that a study that runs for
many hours continues across sessions whose run folders do not survive.

:func:`export_study_inputs` keeps what the claims need from a finished run in such a folder (``results.csv``,
``modules.csv``, ``inputs.json``: a few tens of KB a run); :func:`load_study_inputs` reads it as it reads a sweep,
so the verdicts are the same from either (tested).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from layerinf.reporting.common import CONFIG
from layerinf.reporting.results import load_results, read_units, unit_dirs
from layerinf.store.layout import INPUTS_MANIFEST, INPUTS_MODULES, INPUTS_RESULTS


def run_ids(df: pd.DataFrame) -> list[str]:
    """A run's name: its sweep ``unit`` (unique within a sweep; pooled sweeps prefix it with the sweep's name),
    else ``model/task/seed``."""
    if "unit" in df.columns:
        return df["unit"].astype(str).tolist()
    return ["/".join(t) for t in zip(*(df[c].astype(str) for c in ("model", "task", "seed")))]


def load_study_inputs(paths: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results (``collapsed`` flagged; for sweeps scored but not retrained, their score tables) and the
    stacked ``modules`` frames of one or more runs / sweeps / inputs folders. With several, each run's name is
    prefixed with its folder's name, so that the runs of all of them are pooled."""
    frames, mods = [], []
    for path in map(Path, paths):
        res, m = read_study_inputs(path) if is_study_inputs(path) else _read_run_or_sweep(path)
        if len(paths) > 1:
            res["unit"] = [f"{path.name}/{r}" for r in run_ids(res)]
            if len(m):
                m["_run"] = f"{path.name}/" + m["_run"].astype(str)
        frames.append(res)
        if len(m):
            mods.append(m)
    results = pd.concat(frames, ignore_index=True)
    return results, (pd.concat(mods, ignore_index=True) if mods else pd.DataFrame())


def _read_run_or_sweep(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run or sweep folder's results and ``modules`` frames (``_run``: the run's name)."""
    from layerinf.errors import LayerinfError
    from layerinf.reporting.results import load_detection
    from layerinf.reporting.uncertainty import flag_collapsed

    try:
        res = flag_collapsed(load_results(path), path)
    except LayerinfError:  # detection only (filter.retrain: false)
        res = load_detection(path)
        if res.empty:
            raise
    units = unit_dirs(path)
    m = read_units(units, "modules")
    if len(m):
        m["_run"] = (m["_unit"].map({i: u.name for i, u in enumerate(units)}) if "unit" in res.columns
                     else run_ids(res)[0])
    return res, m


_MODULE_COLUMNS = ["_run", "kind", "ndr_30"]


def is_study_inputs(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by :func:`export_study_inputs`."""
    return (Path(path) / INPUTS_MANIFEST).is_file() and (Path(path) / INPUTS_RESULTS).is_file()


def read_study_inputs(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results and modules frames kept in an inputs folder (run names in ``unit`` and ``_run``)."""
    path = Path(path)
    text = {c: str for c in ("unit", "model", "task", "kind", *CONFIG)}
    res = pd.read_csv(path / INPUTS_RESULTS, dtype=text)
    mods_file = path / INPUTS_MODULES
    mods = pd.read_csv(mods_file, dtype={"_run": str, "kind": str}) if mods_file.is_file() else pd.DataFrame()
    return res, mods


def inputs_manifest(path: str | os.PathLike) -> dict:
    """``inputs.json`` of an inputs folder: ``{"units": {name: {"seconds": …, "finished": …, …}}}`` ({} if none)."""
    import json

    file = Path(path) / INPUTS_MANIFEST
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {"units": {}}


def export_study_inputs(run: str | os.PathLike, dest: str | os.PathLike, unit: str | None = None, **info) -> Path:
    """Add the finished run or sweep ``run`` to the inputs folder ``dest``: its results rows and its modules'
    NDR@30 per kind, with ``info`` (e.g. the seconds it took) in ``inputs.json``. ``unit`` names a single run
    (a run folder, or a sweep of one unit); without it a sweep's runs keep their unit names. A unit already in
    ``dest`` is replaced. Written atomically, file by file, the manifest last."""
    from datetime import datetime, timezone

    from layerinf.store.rundir import atomic_write_bytes, atomic_write_json

    dest = Path(dest)
    res, mods = load_study_inputs([run])
    if len(mods):
        mods = mods[[c for c in _MODULE_COLUMNS if c in mods.columns]]
    else:
        mods = pd.DataFrame(columns=_MODULE_COLUMNS)
    names = run_ids(res)
    if unit is not None:
        if len(set(names)) > 1:
            raise ValueError(f"{run} holds {len(set(names))} runs; name none of them (unit=None) or export one")
        res, mods = res.assign(unit=unit), mods.assign(_run=unit)
    else:
        res = res.assign(unit=names)
    units = list(dict.fromkeys(res["unit"].astype(str)))
    old_res, old_mods = read_study_inputs(dest) if is_study_inputs(dest) else (pd.DataFrame(), pd.DataFrame())
    if len(old_res):
        res = pd.concat([old_res[~old_res["unit"].isin(units)], res], ignore_index=True)
    if len(old_mods):
        mods = pd.concat([old_mods[~old_mods["_run"].isin(units)], mods], ignore_index=True)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest / INPUTS_RESULTS, res.to_csv(index=False).encode())
    atomic_write_bytes(dest / INPUTS_MODULES, mods.to_csv(index=False).encode())
    manifest = inputs_manifest(dest)
    finished = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for u in units:
        manifest.setdefault("units", {})[u] = {**info, "finished": finished}
    atomic_write_json(dest / INPUTS_MANIFEST, manifest)
    return dest
