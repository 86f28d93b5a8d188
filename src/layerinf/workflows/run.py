"""``layerinf run``: the paper's experiment as a sequence of stages (``RUN/config.json``: its last complete config).

prepare (noise) → fine-tune → gradients → scores → filter & retrain → one results table. Every stage is
reused when finished with the same config and inputs, so a killed run resumes where it stopped. The whole
config is validated (types, ranges, names) before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from layerinf.config import ExperimentConfig
from layerinf.stages.data import DataStage
from layerinf.stages.evaluate import EvalStage
from layerinf.stages.finetune import FinetuneStage
from layerinf.stages.grads import GradsStage
from layerinf.stages.score import ScoreStage
from layerinf.store.layout import table_file
from layerinf.store.rundir import RunDir, atomic_write_json


def resolve_device(name: str) -> str:
    """The torch device string for ``runtime.device`` (clear error when it is not available)."""
    from layerinf.model import resolve_device as resolve

    return str(resolve(name))


def run(config: ExperimentConfig | str | Path, out: str | Path, *, progress: bool = True,
        echo: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Run one experiment (model × task × seed) into ``out``; returns the results table (also saved)."""
    cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    device = resolve_device(cfg.runtime.device)
    say = echo or (lambda _msg: None)
    run_dir = RunDir(out)
    with run_dir.guard(), run_dir.locked():
        data = DataStage(run_dir).run(cfg.data, progress=progress)
        say(f"[1/5] data: train {len(data.train)} ({int(data.train['noisy'].sum())} noisy), "
            f"influence {len(data.infl)}, test {len(data.test)}")
        ft = FinetuneStage(run_dir).run(cfg.model, cfg.train, progress=progress, device=device)
        say(f"[2/5] fine-tuned {cfg.model.name} on {device}: best influence-loss epoch {ft.best_epoch}, "
            f"test acc there {ft.accuracy_at_best_epoch:.4f} (best over epochs {ft.best_accuracy:.4f})")
        GradsStage(run_dir).run(cfg.grads, progress=progress, device=device)
        say("[3/5] per-sample gradients stored")
        table = ScoreStage(run_dir).run(cfg.score, progress=progress)
        best = f"best NDR@30 {table['ndr_30'].max():.3f} (random: 0.30)" if "ndr_30" in table else "no noise mask"
        say(f"[4/5] scored {len(table)} configurations; {best}")
        if not cfg.filter.retrain:
            atomic_write_json(run_dir.layout.config, cfg.to_dict())
            say("[5/5] retraining skipped (filter.retrain: false)")
            return pd.DataFrame()
        results = EvalStage(run_dir).run(cfg.filter, cfg.model, cfg.train, progress=progress, device=device)
        atomic_write_json(run_dir.layout.config, cfg.to_dict())  # the config of the last complete run
    say(f"[5/5] retrained {len(results)} filtered subsets → {run_dir.layout.results('csv')}")
    return results
