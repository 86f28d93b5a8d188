"""The Python API: one function per CLI subcommand, with the same option names.

>>> import layerinf as li
>>> li.prepare("runs/sst2", source="../shared/data/glue/SST-2", max_train=1000, noise_rate=0.2)
>>> li.finetune("runs/sst2", model="minilm", epochs=3)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import pipeline
from .config import DataConfig, ModelConfig, TrainConfig


def _split(kwargs: dict[str, Any], *classes) -> list[dict[str, Any]]:
    """Distribute flat keyword options over config dataclasses (``lora_r`` → ModelConfig.lora_r, ...)."""
    out = []
    rest = dict(kwargs)
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        out.append({k: rest.pop(k) for k in list(rest) if k in names})
    if rest:
        from .errors import LayerinfError

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
