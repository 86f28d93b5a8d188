"""The paper's experiment end to end (``layerinf run``) and sweeps over it (``layerinf sweep``).

``run``: prepare (noise) → fine-tune → gradients → scores → for each configuration and baseline, remove the
bottom f % and retrain from the same initial checkpoint → one results table. Every stage is reused when
finished; each retraining is its own small JSON file keyed by the exact set of kept examples, so a killed
run resumes where it stopped and configurations that remove the same examples share one retraining.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from layerinf.evaluation import metrics
from layerinf.stages import pipeline
from layerinf.store.rundir import RunDir, atomic_write_json, config_hash
from layerinf.config import ExperimentConfig
from layerinf.errors import LayerinfError

BASELINES = ("none", "random", "oracle")


def config_key(method: str, group: str, aggregator: str) -> str:
    return f"{method}/{group}/{aggregator}"


def _unit_key(kept: np.ndarray, salt: str) -> str:
    """File key of one retraining: the exact kept subset plus what else shapes it (start point, recipe)."""
    h = hashlib.sha256(salt.encode())
    h.update(np.ascontiguousarray(kept, dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def baseline_scores(name: str, noisy: np.ndarray, seed: int) -> np.ndarray | None:
    """Scores of a baseline (spec §6): Random, the noise-aware oracle ('Full'), or None for no removal."""
    if name == "random":
        return metrics.random_scores(len(noisy), seed)
    if name == "oracle":
        return metrics.oracle_scores(noisy, seed)
    if name == "none":
        return None
    raise LayerinfError(f"unknown baseline '{name}'", f"use any of {', '.join(BASELINES)}")


def retrain_filters(
    run_dir,
    cfg: ExperimentConfig,
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Filter the bottom ``cfg.filter.fraction`` by every configuration and baseline, retrain, collect results."""
    from tqdm.auto import tqdm

    from layerinf.engine.train import fit

    run = RunDir(run_dir)
    prepared = pipeline.load_data(run)
    noisy = prepared.train["noisy"].to_numpy(bool)
    n = len(noisy)
    table = pd.read_parquet(run.require("scores") / "table.parquet")
    aggregated = pd.read_parquet(run.stage_path("scores") / "aggregated.parquet")
    wanted = cfg.filter.configs
    keys = [config_key(r.method, r.group, r.aggregator) for r in table.itertuples()]
    if wanted is not None:
        unknown = sorted(set(wanted) - set(keys))
        if unknown:
            raise LayerinfError(
                f"filter.configs names unscored configuration(s) {', '.join(unknown)}",
                "add their method/group/aggregator to the score section, or fix the names",
            )
        keys = [k for k in keys if k in set(wanted)]
    units: list[tuple[str, str, np.ndarray | None]] = []
    seed = cfg.data.seed
    for b in cfg.filter.baselines:
        units.append(("baseline", b, baseline_scores(b, noisy, seed)))
    for k in keys:
        units.append(("influence", k, aggregated[k].to_numpy(np.float64)))

    removed_n = metrics.removal_count(cfg.filter.fraction, n)
    folder = run.root / "retrain"
    folder.mkdir(parents=True, exist_ok=True)
    settings = pipeline.train_settings(cfg.train, cfg.model, cfg.data.seed)
    # a retraining is reused only for the same kept subset, initial checkpoint and recipe
    salt = config_hash({"finetune": run.stage_info("finetune")["config_hash"], "train": settings.to_dict()})
    plan = []
    for kind, name, s in units:
        kept = np.arange(n) if s is None else np.sort(metrics.filter_order(s)[removed_n:])
        plan.append((kind, name, s, kept, folder / f"{_unit_key(kept, salt)}.json"))
    todo = {p[4] for p in plan if not _valid_unit(p[4])}
    if todo:
        loaded, _, model_cfg = pipeline.load_finetuned(run, "init")
        enc = pipeline.encode_splits(prepared, loaded.tokenizer, model_cfg.max_length)
        from layerinf.model.loading import read_adapter

        init_state = read_adapter(run.stage_path("finetune") / "init.safetensors")
        done_paths: set[Path] = set()
        bar = tqdm(total=len(todo), desc="retrain", disable=not progress)
        for kind, name, s, kept, path in plan:
            if path not in todo or path in done_paths:
                continue
            t0 = time.time()
            res = fit(loaded.model, enc["train"], enc["infl"], enc["test"], settings,
                      rows=kept, init_state=init_state, progress=False)
            atomic_write_json(path, {
                "kept": int(len(kept)),
                "unit": path.stem,
                "best_accuracy": res.best_accuracy,
                "accuracy_at_best_epoch": res.accuracy_at_best_epoch,
                "best_epoch": res.best_epoch,
                "history": res.history.to_dict(orient="list"),
                "first_config": name,
                "seconds": round(time.time() - t0, 2),
            })
            done_paths.add(path)
            bar.update(1)
            if echo:
                echo(f"retrained without {n - len(kept)} examples chosen by {name}: "
                     f"best test acc {res.best_accuracy:.4f}")
        bar.close()

    rows = []
    metric_cols = ["ndr_30", "auc_ndr", "roc_auc", "cancellation"]
    by_key = {config_key(r.method, r.group, r.aggregator): r for r in table.itertuples()}
    for kind, name, s, kept, path in plan:
        unit = json.loads(path.read_text())
        if kind == "baseline":
            method, group, agg = name, "-", "-"
            m = _baseline_metrics(s, noisy)
        else:
            method, group, agg = name.split("/")
            r = by_key[name]
            m = {c: float(getattr(r, c)) for c in metric_cols}
        rows.append({
            "model": cfg.model.name, "task": prepared.task or cfg.data.source, "seed": cfg.data.seed,
            "method": method, "group": group, "aggregator": agg, "kind": kind, **m,
            "removed": int(n - len(kept)), "best_accuracy": unit["best_accuracy"],
            "accuracy_at_best_epoch": unit["accuracy_at_best_epoch"],
        })
    return pd.DataFrame(rows)


def _valid_unit(path: Path) -> bool:
    try:
        unit = json.loads(path.read_text())
        return "best_accuracy" in unit
    except (OSError, json.JSONDecodeError):
        return False


def _baseline_metrics(s: np.ndarray | None, noisy: np.ndarray) -> dict[str, float]:
    if s is None or not noisy.any():
        return {"ndr_30": float("nan"), "auc_ndr": float("nan"), "roc_auc": float("nan"), "cancellation": float("nan")}
    return {
        "ndr_30": float(metrics.ndr_at(s, noisy, 0.30)),
        "auc_ndr": float(metrics.auc_ndr(s, noisy)),
        "roc_auc": float(metrics.roc_auc(s, noisy)),
        "cancellation": float("nan"),
    }


def run(
    config: ExperimentConfig | str | Path,
    out: str | Path,
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Run one experiment (model × task × seed) into ``out``; returns the results table (also saved)."""
    cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    run_dir = RunDir(out)
    run_dir.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir.root / "config.json", cfg.to_dict())
    say = echo or (lambda _msg: None)

    data = pipeline.prepare(run_dir, cfg.data)
    say(f"[1/5] data: train {len(data.train)} ({int(data.train['noisy'].sum())} noisy), "
        f"influence {len(data.infl)}, test {len(data.test)}")
    ft = pipeline.finetune(run_dir, cfg.model, cfg.train, progress=progress)
    say(f"[2/5] fine-tuned {cfg.model.name}: best influence-loss epoch {ft.best_epoch}, "
        f"test acc there {ft.accuracy_at_best_epoch:.4f} (best over epochs {ft.best_accuracy:.4f})")
    pipeline.grads(run_dir, cfg.grads, progress=progress)
    say("[3/5] per-sample gradients stored")
    table = pipeline.score(run_dir, cfg.score, progress=progress)
    say(f"[4/5] scored {len(table)} configurations; best NDR@30 {table['ndr_30'].max():.3f} (random: 0.30)")
    eval_cfg = {
        "scores": run_dir.stage_info("scores")["config_hash"],
        "filter": asdict(cfg.filter),
        "train": asdict(cfg.train),
    }
    with run_dir.stage("eval", eval_cfg, seed=cfg.data.seed) as st:
        if not cfg.filter.retrain:
            results = pd.DataFrame()
        elif st.done:
            results = pd.read_parquet(st.path / "results.parquet")
        else:
            results = retrain_filters(run_dir, cfg, progress=progress, echo=None)
            results.to_parquet(st.out("results.parquet"), index=False)
            results.to_csv(st.out("results.csv"), index=False)
    say(f"[5/5] retrained {len(results)} filtered subsets → {run_dir.root / 'eval' / 'results.csv'}")
    return results


# ------------------------------------------------------------------------------------------------ sweep


def _unit_name(assignment: dict[str, Any]) -> str:
    parts = [f"{k.split('.')[-1]}={v}" for k, v in assignment.items()]
    return re.sub(r"[^A-Za-z0-9=,._-]+", "_", ",".join(parts)) or "base"


def _run_unit(raw_cfg: dict, out: str, threads: int) -> str:
    import torch

    torch.set_num_threads(max(1, threads))
    run(ExperimentConfig.from_dict(raw_cfg), out, progress=False, echo=None)
    return out


def sweep(
    config: ExperimentConfig | str | Path,
    grid: dict[str, list[Any]],
    out: str | Path,
    *,
    workers: int = 1,
    echo: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Run every combination of ``grid`` (dotted config keys → values) as its own run; collect one table.

    Units run in ``workers`` processes; a finished unit is reused (its stages are all cached).
    """
    base = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    out = Path(out)
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]
    units = []
    for assignment in combos:
        cfg = base.with_overrides(assignment)
        units.append((_unit_name(assignment), cfg, assignment))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", {
        "base": base.to_dict(), "grid": grid, "units": [u[0] for u in units], "config_hash": config_hash(base.to_dict()),
    })
    say = echo or (lambda _msg: None)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    failures = []
    if workers <= 1:
        for name, cfg, _ in units:
            say(f"unit {name}")
            try:
                run(cfg, out / "units" / name, progress=True, echo=echo)
            except LayerinfError as exc:
                failures.append((name, str(exc)))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_run_unit, cfg.to_dict(), str(out / "units" / name), threads): name
                    for name, cfg, _ in units}
            for fut in as_completed(futs):
                name = futs[fut]
                try:
                    fut.result()
                    say(f"unit {name}: done")
                except LayerinfError as exc:
                    failures.append((name, str(exc)))
                    say(f"unit {name}: failed: {exc}")
    frames = []
    for name, _, assignment in units:
        path = out / "units" / name / "eval" / "results.parquet"
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
        tmp = out / ".results.parquet.tmp"
        results.to_parquet(tmp, index=False)
        os.replace(tmp, out / "results.parquet")
        tmp = out / ".results.csv.tmp"
        results.to_csv(tmp, index=False)
        os.replace(tmp, out / "results.csv")
    if failures:
        raise LayerinfError(
            f"{len(failures)} of {len(units)} sweep units failed (first: {failures[0][0]}: {failures[0][1]})",
            "fix the cause and rerun the sweep; finished units are reused",
        )
    return results
