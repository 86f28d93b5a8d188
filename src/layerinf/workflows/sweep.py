"""``layerinf sweep``: every combination of a grid of config values as its own run, one results table.

Units run in ``workers`` local processes; a finished unit is reused (its stages are all cached). The
combined table is ``SWEEP/results.parquet|csv`` with a ``unit`` column and one column per grid key.
"""

from __future__ import annotations

import itertools
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from layerinf.config import ExperimentConfig
from layerinf.errors import LayerinfError
from layerinf.store.layout import SweepLayout
from layerinf.store.rundir import atomic_write_bytes, atomic_write_json, config_hash
from layerinf.workflows.run import run


def unit_name(assignment: dict[str, Any]) -> str:
    """A folder name for one grid point (``seed=0,name=minilm``), safe on every filesystem."""
    parts = [f"{k.split('.')[-1]}={v}" for k, v in assignment.items()]
    return re.sub(r"[^A-Za-z0-9=,._-]+", "_", ",".join(parts)).lstrip(".") or "base"


def _run_unit(raw_cfg: dict, out: str, threads: int) -> str:
    import torch

    torch.set_num_threads(max(1, threads))
    run(ExperimentConfig.from_dict(raw_cfg), out, progress=False, echo=None)
    return out


def plan_units(base: ExperimentConfig, grid: dict[str, list[Any]]) -> list[tuple[str, ExperimentConfig, dict]]:
    """(unit name, config, assignment) per grid point; every config is validated before anything runs."""
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], (list, tuple)) or not grid[k]:
            raise LayerinfError(f"grid key '{k}' has no values", "give at least one: --grid data.seed=0,1")
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]
    return [(unit_name(a), base.with_overrides(a), a) for a in combos]


def sweep(config: ExperimentConfig | str | Path, grid: dict[str, list[Any]], out: str | Path, *, workers: int = 1,
          echo: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Run every combination of ``grid`` (dotted config keys → values) as its own run; collect one table."""
    base = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    if int(workers) < 1:
        raise LayerinfError(f"workers = {workers} must be at least 1", "use --workers 1 or more")
    layout = SweepLayout(out)
    units = plan_units(base, grid)
    atomic_write_json(layout.sweep_file, {"base": base.to_dict(), "grid": grid, "units": [u[0] for u in units],
                                          "config_hash": config_hash(base.to_dict())})
    say = echo or (lambda _msg: None)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    failures = []
    if workers <= 1:
        for name, cfg, _ in units:
            say(f"unit {name}")
            try:
                run(cfg, layout.unit(name), progress=True, echo=echo)
            except LayerinfError as exc:
                failures.append((name, str(exc)))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_run_unit, cfg.to_dict(), str(layout.unit(name)), threads): name
                    for name, cfg, _ in units}
            for fut in as_completed(futs):
                name = futs[fut]
                try:
                    fut.result()
                    say(f"unit {name}: done")
                except LayerinfError as exc:
                    failures.append((name, str(exc)))
                    say(f"unit {name}: failed: {exc}")
    results = collect(layout, units)
    if failures:
        raise LayerinfError(
            f"{len(failures)} of {len(units)} sweep units failed (first: {failures[0][0]}: {failures[0][1]})",
            "fix the cause and rerun the sweep; finished units are reused",
        )
    return results


def collect(layout: SweepLayout, units) -> pd.DataFrame:
    """The finished units' results in one table (written atomically as parquet and CSV)."""
    from layerinf.store.layout import RunLayout

    frames = []
    for name, _, assignment in units:
        path = RunLayout(layout.unit(name)).results()
        if path.exists():
            df = pd.read_parquet(path)
            df.insert(0, "unit", name)
            for k, v in assignment.items():
                col = k.replace(".", "_")
                if col not in df.columns:
                    df[col] = v
            frames.append(df)
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(results):
        import io

        buf = io.BytesIO()
        results.to_parquet(buf, index=False)
        atomic_write_bytes(layout.results(), buf.getvalue())
        atomic_write_bytes(layout.results("csv"), results.to_csv(index=False).encode())
    return results


__all__ = ["sweep", "plan_units", "unit_name", "collect"]
