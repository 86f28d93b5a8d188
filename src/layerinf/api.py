"""The Python API: one function per CLI subcommand, with the same option names and defaults.

Options are the fields of the config dataclasses in ``layerinf.config`` (``help(layerinf.config.ScoreConfig)``),
passed flat: ``li.score(run, vote_kappa=0.25)`` is ``layerinf score RUN --vote-kappa 0.25`` is YAML
``score: {vote_kappa: 0.25}``.

>>> import layerinf as li
>>> li.prepare("runs/sst2", source="../shared/data/glue/SST-2", max_train=1000, noise_rate=0.2)
>>> li.finetune("runs/sst2", model="minilm", epochs=3)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from layerinf.config import (DataConfig, ExperimentConfig, FilterConfig, GradsConfig, ModelConfig, RuntimeConfig,
                             ScoreConfig, TrainConfig, runtime_options_except, split_options)
from layerinf.store.layout import DATA, FINETUNE, GRADS, SCORES, STAGE_FILE
from layerinf.store.rundir import RunDir, check_writable_dir


def _device(runtime: RuntimeConfig) -> str:
    from layerinf.model import resolve_device

    return str(resolve_device(runtime.device))


def check_model(model: ModelConfig) -> None:
    """Resolve the model name (built-in, shape, local folder, Hub id) without loading weights: a misspelled
    or unavailable model is a clear error (with a did-you-mean) before anything is written."""
    from layerinf.model.sources import resolve_source

    resolve_source(model.name)


def check_device(runtime: RuntimeConfig, model: ModelConfig | None = None) -> str:
    """The resolved device (a clear error when it is not there), and the precision and quantisation checked
    against it."""
    device = _device(runtime)
    if model is not None:
        from layerinf.model import base_dtype, check_quantization

        base_dtype(model.precision, device)  # fp16 is refused on a CPU
        check_quantization(model.quantization, device)  # bitsandbytes: CUDA only, and installed
    return device


def _finetuned_model(run_dir) -> ModelConfig | None:
    """The model section a run was fine-tuned with (None when unknown)."""
    model = (RunDir(run_dir).stage_info(FINETUNE).get("summary") or {}).get("model")
    try:
        return ModelConfig(**model) if isinstance(model, dict) else None
    except Exception:  # noqa: BLE001 — an older or foreign summary: the stage reports what is wrong
        return None


def require_upstream(run_dir, *stages: str) -> None:
    """The stages a command reads must be finished, intact and up to date (checked before the stage's heavy
    modules are imported; the stage itself verifies them again when it runs)."""
    rd = RunDir(run_dir)
    for name in stages:
        rd.require(name, verify=False)  # checksums: by the stage itself, once


def prepare(run_dir, *, force: bool = False, progress: bool = True, **options):
    """Load a data source, split it and inject label noise (options: ``DataConfig``); returns the splits."""
    (data,) = split_options(options, DataConfig, where="prepare")
    check_writable_dir(run_dir)
    data.require_source()
    from layerinf.stages.data import DataStage

    with RunDir(run_dir).guard():
        return DataStage(run_dir).run(data, force=force, progress=progress)


def finetune(run_dir, *, force: bool = False, progress: bool = True, **options):
    """LoRA-fine-tune on a prepared run (options: ``ModelConfig`` with ``model=``, ``TrainConfig``, and of
    ``RuntimeConfig`` ``device``, ``gradient_checkpointing``, ``eval_batch_size``)."""
    model, train, runtime = split_options(options, ModelConfig, TrainConfig, RuntimeConfig, where="finetune",
                                          exclude=runtime_options_except("finetune"))
    check_writable_dir(run_dir)
    require_upstream(run_dir, DATA)
    check_model(model)
    device = check_device(runtime, model)
    from layerinf.stages.finetune import FinetuneStage

    with RunDir(run_dir).guard():
        return FinetuneStage(run_dir, runtime=runtime).run(model, train, force=force, progress=progress, device=device)


def grads(run_dir, *, force: bool = False, progress: bool = True, **options):
    """Per-sample gradients of the train and influence splits (options: ``GradsConfig`` — ``tracin_checkpoints``:
    also at these checkpoints, for ``tracin_cp`` —, and ``RuntimeConfig``'s ``device``, ``grad_batch_size``, …)."""
    cfg, runtime = split_options(options, GradsConfig, RuntimeConfig, where="grads",
                                 exclude=runtime_options_except("grads"))
    check_writable_dir(run_dir)
    require_upstream(run_dir, DATA, FINETUNE)
    model = _finetuned_model(run_dir)
    device = check_device(runtime, model) if model is not None else _device(runtime)
    from layerinf.stages.grads import GradsStage, check_tracin_checkpoints

    check_tracin_checkpoints(cfg, run_dir)

    with _executor(runtime) as executor, RunDir(run_dir).guard():
        return GradsStage(run_dir, executor=executor, task_device=device, runtime=runtime).run(
            cfg, shards=runtime.grad_shards, force=force, progress=progress, device=device)


@contextlib.contextmanager
def _executor(runtime: RuntimeConfig):
    """The executor of ``runtime`` (local or Ray), started (an unreachable cluster fails here) and closed after."""
    from layerinf.workflows.executor import make_executor

    executor, owned = make_executor(runtime.executor, ray_address=runtime.ray_address, num_cpus=runtime.num_cpus,
                                    num_gpus=runtime.num_gpus, max_retries=runtime.max_retries)
    try:
        executor.start()
        yield executor
    finally:
        if owned:
            executor.close()


def score(run_dir, *, force: bool = False, progress: bool = True, echo=print, **options):
    """Influence scores, aggregation and metrics (options: ``ScoreConfig``, and ``device`` / ``chunk_size`` of
    ``RuntimeConfig``); returns the summary table.

    A finished score set with other options is kept (``RUN/score_sets/<hash>/``), never silently replaced; a
    kept set with these options is made current again without recomputing (``force``: recomputed). ``echo``
    (None: silent) gets what was kept or restored and one line naming the current set and the kept ones; the
    table's ``attrs["score_set"]`` is the current set's hash (``score_sets(run_dir)`` lists them all)."""
    cfg, runtime = split_options(options, ScoreConfig, RuntimeConfig, where="score",
                                 exclude=runtime_options_except("score"))
    check_writable_dir(run_dir)
    require_upstream(run_dir, DATA, GRADS)
    device = check_device(runtime)
    from layerinf.stages.grads import check_tracin_request
    from layerinf.stages.score import ScoreStage

    collected = ((RunDir(run_dir).stage_info(GRADS).get("config") or {}).get("grads") or {}).get("tracin_checkpoints")
    check_tracin_request(cfg.methods, GradsConfig(tracin_checkpoints=collected or None))

    say = echo or (lambda _msg: None)
    with RunDir(run_dir).guard():
        table = ScoreStage(run_dir, echo=say, runtime=runtime).run(cfg, force=force, progress=progress, device=device)
    from layerinf.store.score_sets import list_sets, summary_line

    say(summary_line(list_sets(RunDir(run_dir))))
    return table


def score_sets(run_dir, *, verify: bool = False) -> list[dict]:
    """The run's score sets: the current one (``scores/``, first) and the kept ones (``score_sets/<hash>/``,
    newest first), each ``{"hash", "path", "current", "methods", "groups", "aggregators", "started", "fresh",
    "intact", "config"}``. ``fresh``: made from the run's current data and gradients (only such a set is
    restored by ``score``); ``verify``: check every file's checksum (``intact``; otherwise None)."""
    from layerinf.store.score_sets import list_sets

    return [s.as_dict() for s in list_sets(RunDir(run_dir), verify=verify)]


def retrain(run_dir, *, force: bool = False, progress: bool = True, echo=print, **options):
    """Filter and retrain, the paper's main experiment, on a scored run (``layerinf retrain RUN``): remove the
    bottom ``fraction`` by every configuration of ``configs`` (default: every scored one) and by the baselines,
    retrain each kept subset from the run's initial checkpoint with the recipe it was fine-tuned with, and
    return the test accuracies (also ``RUN/retrain/results.csv``). Options: ``FilterConfig`` (but ``retrain``)
    and of ``RuntimeConfig`` ``device``, ``gradient_checkpointing``, ``eval_batch_size`` and the Ray ones. Each
    retraining is a checksummed record (``RUN/retrain/records/``): a rerun, or other options that keep the same
    subsets, retrain nothing twice. ``echo`` (None: silent) gets a line per finished retraining."""
    filt, runtime = split_options(options, FilterConfig, RuntimeConfig, where="retrain",
                                  exclude={"retrain"} | runtime_options_except("retrain"))
    check_writable_dir(run_dir)
    require_upstream(run_dir, DATA, FINETUNE, SCORES)
    from layerinf.stages.retrain import RetrainStage, finetuned_recipe

    model, train = finetuned_recipe(run_dir)
    device = check_device(runtime, model)
    with _executor(runtime) as executor, RunDir(run_dir).guard():
        return RetrainStage(run_dir, echo=echo, executor=executor, task_device=device, runtime=runtime).run(
            filt, model, train, force=force, progress=progress, device=device)


def run(config, out, *, overrides: dict[str, Any] | None = None, progress: bool = True, echo=print):
    """The whole experiment from a YAML file or ``ExperimentConfig`` (``layerinf run``)."""
    from layerinf.workflows.run import run as run_experiment

    cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    return run_experiment(cfg, out, progress=progress, echo=echo)


def sweep(config, grid: dict[str, list[Any]], out, *, workers: int = 1, echo=print, **runtime):
    """Every combination of ``grid`` (dotted keys → values) as its own run, collected in one table.

    ``runtime`` options (``RuntimeConfig``: ``executor="ray"``, ``ray_address``, ``num_cpus``, ``num_gpus``,
    ``max_retries``, ``device``, ...) override the config's ``runtime`` section."""
    from layerinf.errors import LayerinfError
    from layerinf.workflows.run import check_config, resolve_device
    from layerinf.workflows.sweep import plan_units
    from layerinf.workflows.sweep import sweep as run_sweep

    cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.from_yaml(config)
    (rt,) = split_options(runtime, RuntimeConfig, where="sweep") if runtime else (None,)
    if runtime:
        cfg = cfg.with_overrides({f"runtime.{k}": getattr(rt, k) for k in runtime})
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LayerinfError(f"workers = {workers!r} must be a whole number of at least 1", "use --workers 1 or more")
    check_writable_dir(out, "sweep directory")
    checked = set()
    for _, unit, _ in plan_units(cfg, grid):  # every unit's config, model and groups, before anything is written
        key = (unit.model, unit.grads.include_we, tuple(unit.score.groups or ()), tuple(unit.filter.configs or ()),
               tuple(unit.score.methods), tuple(unit.score.aggregators))
        if key not in checked:
            check_config(unit)
            checked.add(key)
        if unit.runtime.device not in checked:
            resolve_device(unit.runtime.device)
            checked.add(unit.runtime.device)
    r = cfg.runtime
    with _sweep_guard(out):
        return run_sweep(cfg, grid, out, workers=workers, echo=echo, executor=r.executor, ray_address=r.ray_address,
                         num_cpus=r.num_cpus, num_gpus=r.num_gpus, max_retries=r.max_retries)


@contextlib.contextmanager
def _sweep_guard(out):
    """A sweep that fails before any stage of any unit finished leaves no sweep directory behind (one that
    existed is left as it was: its units' finished stages are what a rerun reuses)."""
    import shutil

    from layerinf.store.layout import STAGES, SweepLayout

    root = Path(out)
    absent = [p for p in (root, *root.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        units = SweepLayout(root).units
        finished = units.is_dir() and any((u / name / STAGE_FILE).is_file() for u in units.iterdir()
                                          for name in STAGES)
        if absent and not finished:
            shutil.rmtree(root, ignore_errors=True)
            for folder in absent[1:]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def health_warning(run_dir) -> str | None:
    """The warning of a run whose fine-tuned model has not clearly learned the task (beaten the majority class
    on the influence and test sets, with a binomial interval), with what to change; None when it has."""
    from layerinf.stages.finetune import health_warning as warning

    return warning(run_dir)


def report(path, *, out=None, tau: float = 0.75, include_self: bool = False, bootstrap: int = 1000,
           bootstrap_seed: int = 0) -> Path:
    """Tables, figures and an HTML page for a run or sweep directory; returns the HTML path.

    ``bootstrap``: resamples of the training examples for the 95 % intervals of NDR@30 and AUC (0: none);
    ``bootstrap_seed`` seeds them.

    Every stage the report reads is verified first (checksums, up to date with its inputs): a corrupted or
    stale file is a clear error naming the command that redoes it, never a report of wrong numbers."""
    import math

    from layerinf.errors import LayerinfError

    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or not 0 <= tau <= 1:
        raise LayerinfError(f"tau = {tau!r} is out of range [0, 1]", "give the Pareto threshold τ as a win rate, "
                                                                   "e.g. --tau 0.75")
    for name, value, lo in (("bootstrap", bootstrap, 0), ("bootstrap_seed", bootstrap_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise LayerinfError(f"{name} = {value!r} must be a whole number ≥ {lo}",
                                "e.g. --bootstrap 1000 (0 turns the intervals off)")
    check_report_input(path, out)
    from layerinf.reporting import report as make_report

    return make_report(path, out=out, tau=tau, include_self=include_self, bootstrap=bootstrap,
                       bootstrap_seed=bootstrap_seed)


def check_report_input(path, out=None) -> None:
    """What ``report`` reads must exist and be intact (``layerinf.reporting.checks.check_report_input``)."""
    from layerinf.reporting.checks import check_report_input as check

    check(path, out)


def suspects(out_dir, *, source: str | None = None, run=None, adapter=None, force: bool = False,
             progress: bool = True, **options):
    """Rank the training examples of a dataset by how likely they hurt the model (no noise mask needed).

    Options: ``DataConfig`` (not ``noise_rate``), ``ModelConfig`` (``model=``), ``TrainConfig``,
    ``RankConfig`` and ``device``; see ``layerinf.workflows.suspects.find_suspects``.
    """
    from layerinf.workflows.suspects import find_suspects

    return find_suspects(out_dir, source=source, run=run, adapter=adapter, force=force, progress=progress, **options)


def advise(out_dir, *, source: str | None = None, probe_rate: float = 0.1, probes: int = 3, noise_folds: int | None = None,
           kappa_factor: float = 1.5, criterion: str = "ndr_30", force: bool = False, progress: bool = True,
           echo=print, **options):
    """Which (method, layer group, aggregator) finds bad labels best on YOUR data (planted-flip probes), and Vote's
    κ from an estimated noise rate (``layerinf advise``). Options: ``DataConfig`` (not ``noise_rate``),
    ``ModelConfig`` (``model=``), ``TrainConfig``, ``GradsConfig``, ``ScoreConfig``, ``device``; see docs/advisor.md."""
    from layerinf.workflows.advise import advise as run_advise

    check_writable_dir(out_dir)
    return run_advise(out_dir, source=source, probe_rate=probe_rate, probes=probes, noise_folds=noise_folds,
                      kappa_factor=kappa_factor, criterion=criterion, force=force, progress=progress, echo=echo,
                      **options)
