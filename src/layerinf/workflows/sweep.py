"""``layerinf sweep``: every combination of a grid of config values as its own run, one results table.

With the local executor and one worker, units run one after the other in this process. Otherwise (local
worker processes, or Ray: ``executor="ray"``) a sweep is one task graph: per unit, one task runs the chain
data → finetune → grads → scores in the unit's run directory (the stages write atomically there, so with
Ray the sweep directory must be on a filesystem every node sees, at the same path: docs/ray.md), then every
retraining of every unit is its own task, so the retrainings of all units fill the workers. Workers return
the retraining records; this process (the driver) writes them as they arrive and finishes each unit's
``retrain`` stage when its last record is in. A finished task is reused by a rerun (stages by their
``stage.json``, retrainings by their records), also after the driver was killed.

The combined table is ``SWEEP/results.parquet|csv`` with a ``unit`` column and one column per grid key.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from layerinf.config import ExperimentConfig
from layerinf.errors import LayerinfError
from layerinf.store.layout import RETRAIN, SweepLayout
from layerinf.store.rundir import RunDir, atomic_write_bytes, atomic_write_json, config_hash
from layerinf.workflows.executor import Executor, Task, make_executor, run_graph
from layerinf.workflows.run import run

LOGS_DIR = "logs"  # SWEEP/logs/<unit>[.<record>].log: the traceback of a failed task (written by the driver)


def unit_name(assignment: dict[str, Any]) -> str:
    """A folder name for one grid point (``seed=0,name=minilm``), safe on every filesystem."""
    parts = [f"{k.split('.')[-1]}={v}" for k, v in assignment.items()]
    return re.sub(r"[^A-Za-z0-9=,._-]+", "_", ",".join(parts)).lstrip(".") or "base"


def plan_units(base: ExperimentConfig, grid: dict[str, list[Any]]) -> list[tuple[str, ExperimentConfig, dict]]:
    """(unit name, config, assignment) per grid point; every config is validated before anything runs."""
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], (list, tuple)) or not grid[k]:
            raise LayerinfError(f"grid key '{k}' has no values", "give at least one: --grid data.seed=0,1")
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]
    return [(unit_name(a), base.with_overrides(a), a) for a in combos]


def _check(cfg: ExperimentConfig) -> None:
    """The run workflow's own up-front checks (model name, groups, retrained configurations), when it has them."""
    from layerinf.workflows import run as run_mod

    check = getattr(run_mod, "check_config", None)
    if check is not None:
        check(cfg)


def unit_chain(raw_cfg: dict, out: str) -> dict:
    """A task: a unit's stages up to its scores (each reused when finished), in its run directory."""
    from layerinf.stages.data import DataStage
    from layerinf.stages.finetune import FinetuneStage
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.score import ScoreStage
    from layerinf.workflows.run import resolve_device

    cfg = ExperimentConfig.from_dict(raw_cfg)
    device = resolve_device(cfg.runtime.device)
    run_dir = RunDir(out)
    with run_dir.guard(), run_dir.locked():
        DataStage(run_dir).run(cfg.data, progress=False)
        rt = cfg.runtime  # how fast, not what
        FinetuneStage(run_dir, runtime=rt).run(cfg.model, cfg.train, progress=False, device=device)
        GradsStage(run_dir, runtime=rt).run(cfg.grads, progress=False, device=device)
        ScoreStage(run_dir, runtime=rt).run(cfg.score, progress=False, device=device)
    return {"device": device}


def sweep(config: ExperimentConfig | str | Path, grid: dict[str, list[Any]], out: str | Path, *, workers: int = 1,
          echo: Callable[[str], None] | None = print, executor: "Executor | str | None" = None,
          ray_address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None,
          max_retries: int = 2, progress: bool = True) -> pd.DataFrame:
    """Run every combination of ``grid`` (dotted config keys → values) as its own run; collect one table.

    ``executor``: ``"local"`` (default; ``workers`` processes) or ``"ray"`` (``ray_address``: None = a local
    Ray instance, or ``auto`` / ``host:port`` / ``ray://host:port``; ``num_cpus`` / ``num_gpus`` per task,
    fractions allowed; ``max_retries`` for tasks whose worker died), or an ``Executor`` instance.
    """
    base = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LayerinfError(f"workers = {workers!r} must be at least 1", "use --workers 1 or more")
    layout = SweepLayout(out)
    units = plan_units(base, grid)
    ex, owned = make_executor(executor, workers=workers, ray_address=ray_address, num_cpus=num_cpus,
                              num_gpus=num_gpus, max_retries=max_retries)
    say = echo or (lambda _msg: None)
    try:
        if not ex.in_process:
            ex.start()  # before anything is written: an unreachable cluster leaves no sweep folder behind
        atomic_write_json(layout.sweep_file, {"base": base.to_dict(), "grid": grid, "units": [u[0] for u in units],
                                              "config_hash": config_hash(base.to_dict())})
        if ex.in_process:
            failures = []
            for name, cfg, _ in units:
                say(f"unit {name}")
                try:
                    run(cfg, layout.unit(name), progress=progress, echo=echo)
                except LayerinfError as exc:
                    failures.append(f"{name}: {exc}")
            total = len(units)
        else:
            failures, total = _sweep_graph(ex, units, layout, say, progress)
    finally:
        if owned:
            ex.close()
    results = collect(layout, units)
    if failures:
        raise LayerinfError(
            f"{len(failures)} of {total} sweep {'units' if ex.in_process else 'tasks'} failed (first: {failures[0]})",
            "fix the cause and rerun the sweep; finished units and retrainings are reused",
        )
    return results


class _Unit:
    def __init__(self, name: str, cfg: ExperimentConfig, out: Path):
        self.name, self.cfg, self.out = name, cfg, out
        self.run_dir = RunDir(out)
        self.stage = None  # its RetrainStage, once its chain is done
        self.plan = None
        self.pending: set = set()
        self.redo = False
        self.device = "cpu"


def _sweep_graph(ex: Executor, units, layout: SweepLayout, say, progress: bool) -> tuple[list[str], int]:
    """The sweep as one task graph on ``ex``; returns (failure lines, number of tasks)."""
    from layerinf.stages.retrain import RetrainStage, read_record

    logs = layout.root / LOGS_DIR
    locks = contextlib.ExitStack()
    state = {name: _Unit(name, cfg, layout.unit(name)) for name, cfg, _ in units}
    count = [0]
    failures: list[str] = []

    def finish(u: _Unit) -> None:
        """All records in: the unit's retrain stage (no training left) and its config, written here."""
        cfg = u.cfg
        try:
            with u.run_dir.guard():
                stage = RetrainStage(u.run_dir, runtime=cfg.runtime)
                stage.run(cfg.filter, cfg.model, cfg.train, progress=False, device=u.device, force=u.redo)
                atomic_write_json(u.run_dir.layout.config, cfg.to_dict())
        except LayerinfError as exc:
            failures.append(f"unit {u.name}: {exc}")
            return
        say(f"unit {u.name}: done")

    def on_result(key, value):
        kind, name = key[0], key[1]
        u = state[name]
        if kind == "chain":
            u.device = value["device"]
            cfg = u.cfg
            if not cfg.filter.retrain:
                atomic_write_json(u.run_dir.layout.config, cfg.to_dict())
                say(f"unit {u.name}: done (retraining skipped)")
                return []
            try:
                locks.enter_context(u.run_dir.locked())  # held until the unit's retrain stage is written
                u.stage = RetrainStage(u.run_dir, runtime=cfg.runtime)
                u.plan, _, _ = u.stage.plan(cfg.filter, cfg.model, cfg.train)
                u.redo = u.run_dir.is_finished(RETRAIN, verify=False) and any(read_record(p[4]) is None for p in u.plan)
                tasks = u.stage.retrain_tasks(u.plan, cfg.model, cfg.train, device=cfg.runtime.device,
                                              label=f"unit {name}: ")
            except LayerinfError as exc:
                failures.append(f"unit {name}: {exc}")
                return []
            for t in tasks:  # dicts of Task fields, keyed by the record's path
                t["key"] = ("retrain", name, t["key"])
                t["log"] = logs / f"{name}.{t['key'][-1].stem}.log"
            u.pending = {t["key"] for t in tasks}
            count[0] += len(tasks)
            if not tasks:
                finish(u)
            return tasks
        u.stage.store_result(key[-1], value)
        (logs / f"{name}.{key[-1].stem}.log").unlink(missing_ok=True)
        u.pending.discard(key)
        if not u.pending:
            finish(u)
        return []

    chains = []
    for name, cfg, _ in units:
        try:
            _check(cfg)  # as `run` does: a unit whose config is wrong fails, the others run
        except LayerinfError as exc:
            failures.append(f"unit {name}: {exc}")
            continue
        chains.append(Task(unit_chain, (cfg.to_dict(), str(layout.unit(name))), label=f"unit {name}: data → scores",
                           key=("chain", name), log=logs / f"{name}.log"))
    count[0] = len(units)
    with locks:  # the units' writer locks taken by the driver are released at the end, whatever happens
        failed = run_graph(ex, chains, on_result, progress=progress, desc="sweep")
    # a unit with a failed retraining keeps a pending task, so it is not finished; its records stay for the rerun
    return [str(f) for f in failed] + failures, count[0]


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


__all__ = ["sweep", "plan_units", "unit_name", "collect", "unit_chain"]
