"""The Python API: one function per CLI subcommand, with the same option names.

>>> import layerinf as li
>>> li.prepare("runs/sst2", source="../shared/data/glue/SST-2", max_train=1000, noise_rate=0.2)
>>> li.finetune("runs/sst2", model="minilm", epochs=3)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from layerinf.stages import pipeline
from layerinf.config import DataConfig, ExperimentConfig, GradsConfig, ModelConfig, ScoreConfig, TrainConfig


def _split(kwargs: dict[str, Any], *classes) -> list[dict[str, Any]]:
    """Distribute flat keyword options over config dataclasses (``lora_r`` → ModelConfig.lora_r, ...)."""
    out = []
    rest = dict(kwargs)
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        out.append({k: rest.pop(k) for k in list(rest) if k in names})
    if rest:
        from layerinf.errors import LayerinfError

        raise LayerinfError(f"unknown option(s) {', '.join(sorted(rest))}", "see help(layerinf.<function>)")
    return out


def prepare(run_dir, *, force: bool = False, **options):
    """Load a data source, split it and inject label noise (see ``DataConfig`` for the options)."""
    (data_kw,) = _split(options, DataConfig)
    return pipeline.prepare(run_dir, DataConfig(**data_kw), force=force)


def finetune(run_dir, *, model: str = "minilm", force: bool = False, progress: bool = True, **options):
    """LoRA-fine-tune ``model`` on a prepared run (options of ``ModelConfig`` and ``TrainConfig``).

    ``name`` of ModelConfig is given as ``model``; the training seed option is ``seed``.
    """
    model_kw, train_kw = _split(options, ModelConfig, TrainConfig)
    return pipeline.finetune(
        run_dir, ModelConfig(name=model, **model_kw), TrainConfig(**train_kw), force=force, progress=progress
    )


def grads(run_dir, *, force: bool = False, progress: bool = True, **options):
    """Per-sample gradients of the train and influence splits (options of ``GradsConfig``)."""
    (kw,) = _split(options, GradsConfig)
    return pipeline.grads(run_dir, GradsConfig(**kw), force=force, progress=progress)


def score(run_dir, *, force: bool = False, progress: bool = True, **options):
    """Influence scores, aggregation and metrics (options of ``ScoreConfig``); returns the summary table."""
    (kw,) = _split(options, ScoreConfig)
    return pipeline.score(run_dir, ScoreConfig(**kw), force=force, progress=progress)


def run(config, out, *, overrides: dict[str, Any] | None = None, progress: bool = True, echo=print):
    """The whole experiment from a YAML file or ``ExperimentConfig`` (``layerinf run``)."""
    from layerinf.workflows.experiment import run as run_experiment

    cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    return run_experiment(cfg, out, progress=progress, echo=echo)


def sweep(config, grid: dict[str, list[Any]], out, *, workers: int = 1, echo=print):
    """Every combination of ``grid`` (dotted keys → values) as its own run, collected in one table."""
    from layerinf.workflows.experiment import sweep as run_sweep

    return run_sweep(config, grid, out, workers=workers, echo=echo)


def report(path, *, out=None, tau: float = 0.75, include_self: bool = False):
    """Tables, figures and an HTML page for a run or sweep directory; returns the HTML path."""
    from layerinf.report.build import report as make_report

    return make_report(path, out=out, tau=tau, include_self=include_self)


def suspects(out_dir, **options):
    """Rank the training examples of a dataset by how likely they hurt the model (no noise mask needed)."""
    from layerinf.workflows.suspects import find_suspects

    return find_suspects(out_dir, **options)
