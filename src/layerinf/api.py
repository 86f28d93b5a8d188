"""The Python API: one function per CLI subcommand, with the same option names and defaults.

Options are the fields of the config dataclasses in ``layerinf.config`` (``help(layerinf.config.ScoreConfig)``),
passed flat: ``li.score(run, vote_kappa=0.25)`` is ``layerinf score RUN --vote-kappa 0.25`` is YAML
``score: {vote_kappa: 0.25}``.

>>> import layerinf as li
>>> li.prepare("runs/sst2", source="../shared/data/glue/SST-2", max_train=1000, noise_rate=0.2)
>>> li.finetune("runs/sst2", model="minilm", epochs=3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerinf.config import (DataConfig, ExperimentConfig, GradsConfig, ModelConfig, RuntimeConfig, ScoreConfig,
                             TrainConfig, split_options)
from layerinf.store.rundir import RunDir


def _device(runtime: RuntimeConfig) -> str:
    from layerinf.model import resolve_device

    return str(resolve_device(runtime.device))


def prepare(run_dir, *, force: bool = False, progress: bool = True, **options):
    """Load a data source, split it and inject label noise (options: ``DataConfig``); returns the splits."""
    from layerinf.stages.data import DataStage

    (data,) = split_options(options, DataConfig, where="prepare")
    with RunDir(run_dir).guard():
        return DataStage(run_dir).run(data, force=force, progress=progress)


def finetune(run_dir, *, force: bool = False, progress: bool = True, **options):
    """LoRA-fine-tune on a prepared run (options: ``ModelConfig`` with ``model=``, ``TrainConfig``, ``device``)."""
    from layerinf.stages.finetune import FinetuneStage

    model, train, runtime = split_options(options, ModelConfig, TrainConfig, RuntimeConfig, where="finetune")
    device = _device(runtime)
    with RunDir(run_dir).guard():
        return FinetuneStage(run_dir).run(model, train, force=force, progress=progress, device=device)


def grads(run_dir, *, force: bool = False, progress: bool = True, **options):
    """Per-sample gradients of the train and influence splits (options: ``GradsConfig``, ``device``)."""
    from layerinf.stages.grads import GradsStage

    cfg, runtime = split_options(options, GradsConfig, RuntimeConfig, where="grads")
    device = _device(runtime)
    with RunDir(run_dir).guard():
        return GradsStage(run_dir).run(cfg, force=force, progress=progress, device=device)


def score(run_dir, *, force: bool = False, progress: bool = True, **options):
    """Influence scores, aggregation and metrics (options: ``ScoreConfig``); returns the summary table."""
    from layerinf.stages.score import ScoreStage

    (cfg,) = split_options(options, ScoreConfig, where="score")
    with RunDir(run_dir).guard():
        return ScoreStage(run_dir).run(cfg, force=force, progress=progress)


def run(config, out, *, overrides: dict[str, Any] | None = None, progress: bool = True, echo=print):
    """The whole experiment from a YAML file or ``ExperimentConfig`` (``layerinf run``)."""
    from layerinf.workflows.run import run as run_experiment

    cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    return run_experiment(cfg, out, progress=progress, echo=echo)


def sweep(config, grid: dict[str, list[Any]], out, *, workers: int = 1, echo=print):
    """Every combination of ``grid`` (dotted keys → values) as its own run, collected in one table."""
    from layerinf.workflows.sweep import sweep as run_sweep

    return run_sweep(config, grid, out, workers=workers, echo=echo)


def report(path, *, out=None, tau: float = 0.75, include_self: bool = False) -> Path:
    """Tables, figures and an HTML page for a run or sweep directory; returns the HTML path."""
    from layerinf.report import report as make_report

    return make_report(path, out=out, tau=tau, include_self=include_self)


def suspects(out_dir, *, source: str | None = None, run=None, adapter=None, force: bool = False,
             progress: bool = True, **options):
    """Rank the training examples of a dataset by how likely they hurt the model (no noise mask needed).

    Options: ``DataConfig`` (not ``noise_rate``), ``ModelConfig`` (``model=``), ``TrainConfig``,
    ``RankConfig`` and ``device``; see ``layerinf.workflows.suspects.find_suspects``.
    """
    from layerinf.workflows.suspects import find_suspects

    return find_suspects(out_dir, source=source, run=run, adapter=adapter, force=force, progress=progress, **options)
