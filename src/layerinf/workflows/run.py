"""``layerinf run``: the paper's experiment as a sequence of stages (``RUN/config.json``: its last complete config).

prepare (noise) → fine-tune → gradients → scores → filter & retrain → one results table. Every stage is
reused when finished with the same config and inputs, so a killed run resumes where it stopped. The whole
config is validated (types, ranges, names, the model, its layer groups, the device) before anything is
written; a retraining record that no longer matches its checksum makes the ``retrain`` stage redo it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from layerinf.config import OOS_BASELINES, ExperimentConfig
from layerinf.errors import LayerinfError
from layerinf.store.layout import RETRAIN
from layerinf.store.rundir import RunDir, atomic_write_json, check_writable_dir

OOS_FOLDS = 2  # cross-fitted fold models for the out-of-sample model baselines (score.model_baselines)


def resolve_device(name: str) -> str:
    """The torch device string for ``runtime.device`` (clear error when it is not available)."""
    from layerinf.model import resolve_device as resolve

    return str(resolve(name))


def _standin_specs(num_layers: int, include_we: bool):
    """Module specs of a model with ``num_layers`` layers, by name and kind only (no weights loaded)."""
    from layerinf.spec import ModuleSpec

    specs = [ModuleSpec("WE", "", "", "weight", "we", None)] if include_we else []
    for layer in range(num_layers):
        for proj in ("query", "value"):
            for half in ("A", "B"):
                specs.append(ModuleSpec(f"L{layer:02d}.{proj}.{half}", "", "", "weight", f"{proj}_{half}", layer))
    specs.append(ModuleSpec("CL.head.weight", "", "", "weight", "cl", None))
    return specs


def check_config(cfg: ExperimentConfig) -> None:
    """Everything that can be checked without data or weights: the model name, the layer groups (from the
    model's layer count) and the retrained configurations. Raises before anything is written."""
    from layerinf.influence.groups import layer_groups
    from layerinf.influence.registry import all_groups
    from layerinf.model import num_layers_of

    cfg.data.require_source(yaml=True)
    num_layers = num_layers_of(cfg.model)  # resolves the name (did-you-mean), reads no weights
    specs = _standin_specs(num_layers, cfg.grads.include_we)
    known = all_groups(specs, num_layers)
    plain = [g for g in cfg.score.groups or [] if g not in ("", "ALL", "All") and not g.startswith("re:")
             and not set("*?[.") & set(g)]  # patterns and module names are resolved when scoring
    for group in plain:
        if group not in known:
            we = " (WE needs grads.include_we: true)" if group == "WE" else ""
            raise LayerinfError(f"score.groups: unknown layer group '{group}' for a {num_layers}-layer model{we}",
                                f"valid groups: {', '.join(list(known)[:12])}…; or a module name, a glob or re:<regex>")
    from layerinf.stages.grads import check_tracin_checkpoints, check_tracin_request

    check_tracin_checkpoints(cfg.grads)
    check_tracin_request(cfg.score.methods, cfg.grads)
    from layerinf.stages.task import task_for

    task = task_for(cfg.data)
    task.check_model(cfg.model)
    task.check_quantization(cfg.model)
    from layerinf.stages.score import needs_oos

    if needs_oos(cfg.score) and not task.class_probabilities:
        oos = ", ".join(sorted(set(OOS_BASELINES) & set(cfg.score.model_baselines)))
        raise LayerinfError(f"score.model_baselines: {oos} needs class probabilities, which {task.name} data do not "
                            "have", f"leave {oos} out of score.model_baselines")
    groups = set(cfg.score.groups) if cfg.score.groups is not None else set(layer_groups(specs, num_layers))
    for key in cfg.filter.configs or []:
        method, group, aggregator = key.split("/")
        if method in cfg.score.model_baselines and (group, aggregator) == ("-", "-"):
            continue  # a model baseline (loss/-/-, self_influence/-/-): scored whenever listed
        if method not in cfg.score.methods or aggregator not in cfg.score.aggregators or group not in groups:
            raise LayerinfError(f"filter.configs entry '{key}' is not among the scored configurations",
                                "use a method of score.methods, a group of score.groups and an aggregator of "
                                "score.aggregators")


def _records_broken(stage, cfg: ExperimentConfig) -> bool:
    """True when ``retrain`` finished but a retraining record it was made from is missing or fails its checksum."""
    from layerinf.stages.retrain import read_record

    if not stage.run_dir.is_finished(RETRAIN, verify=False):
        return False
    try:
        plan, _, _ = stage.plan(cfg.filter, cfg.model, cfg.train)
    except LayerinfError:
        return False  # the stage reports it when it runs
    return any(read_record(p[4]) is None for p in plan)


def run(config: ExperimentConfig | str | Path, out: str | Path, *, progress: bool = True,
        echo: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Run one experiment (model × task × seed) into ``out``; returns the results table (also saved)."""
    cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    check_writable_dir(out)
    check_config(cfg)
    device = resolve_device(cfg.runtime.device)
    from layerinf.model import base_dtype

    base_dtype(cfg.model.precision, device)  # fp16 is refused on a CPU, before anything is written
    from layerinf.model import check_quantization

    check_quantization(cfg.model.quantization, device)  # 8/4-bit needs CUDA and bitsandbytes
    from layerinf.workflows.executor import make_executor

    rt = cfg.runtime
    executor, owned = make_executor(rt.executor, ray_address=rt.ray_address, num_cpus=rt.num_cpus, num_gpus=rt.num_gpus,
                                    max_retries=rt.max_retries)
    say = echo or (lambda _msg: None)
    run_dir = RunDir(out)
    try:
        executor.start()  # an unreachable cluster fails here, before anything is written
        return _run_stages(cfg, run_dir, executor, device, progress, say)
    finally:
        if owned:
            executor.close()


def _run_stages(cfg: ExperimentConfig, run_dir: RunDir, executor, device: str, progress: bool, say) -> pd.DataFrame:
    from layerinf.stages.data import DataStage
    from layerinf.stages.retrain import RetrainStage
    from layerinf.stages.finetune import FinetuneStage
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.score import ScoreStage, needs_oos

    with run_dir.guard(), run_dir.locked():
        data = DataStage(run_dir).run(cfg.data, progress=progress)
        say(f"[1/5] data: train {len(data.train)} ({int(data.train['noisy'].sum())} noisy), "
            f"influence {len(data.infl)}, test {len(data.test)}")
        rt = cfg.runtime  # how fast, not what: no stage's key holds it
        ft = FinetuneStage(run_dir, runtime=rt).run(cfg.model, cfg.train, progress=progress, device=device)
        say(f"[2/5] fine-tuned {cfg.model.name} on {device}: best influence-loss epoch {ft.best_epoch}, "
            f"test accuracy at that epoch {ft.accuracy_at_best_epoch:.4f} (best over epochs {ft.best_accuracy:.4f})")
        from layerinf.stages.finetune import health_warning

        warning = health_warning(run_dir)
        if warning:
            say(f"WARNING: {warning}")
        GradsStage(run_dir, executor=executor, task_device=device, runtime=rt).run(
            cfg.grads, shards=rt.grad_shards, progress=progress, device=device)
        say("[3/5] per-sample gradients stored")
        if needs_oos(cfg.score):  # cross-fitted models: out-of-sample probabilities
            from layerinf.store.layout import CROSSFIT_DIR
            from layerinf.workflows.advise_noise import run_noise

            est = run_noise(run_dir, data, cfg.data, cfg.model, cfg.train, OOS_FOLDS, device=device, progress=progress,
                            runtime=rt, where=CROSSFIT_DIR)
            say(f"[3/5] out-of-sample probabilities from {OOS_FOLDS} cross-fitted models (confident learning: "
                f"{est.issues} label issues, noise rate {est})")
        table = ScoreStage(run_dir, echo=say, runtime=rt).run(cfg.score, progress=progress, device=device)
        best = f"best NDR@30 {table['ndr_30'].max():.3f} (random: 0.30)" if "ndr_30" in table else "no noise mask"
        say(f"[4/5] scored {len(table)} configurations; {best}")
        if warning:
            say(f"WARNING: these scores come from that model: {warning}")
        if not cfg.filter.retrain:
            atomic_write_json(run_dir.layout.config, cfg.to_dict())
            say("[5/5] retraining skipped (filter.retrain: false)")
            return pd.DataFrame()
        retrain = RetrainStage(run_dir, executor=executor, task_device=device, runtime=rt)
        redo = _records_broken(retrain, cfg)
        if redo:
            say("[5/5] a retraining record is missing or corrupted: redoing it")
        results = retrain.run(cfg.filter, cfg.model, cfg.train, progress=progress, device=device, force=redo)
        atomic_write_json(run_dir.layout.config, cfg.to_dict())  # the config of the last complete run
    say(f"[5/5] retrained {len(results)} filtered subsets → {run_dir.layout.results('csv')}")
    return results
