"""``layerinf suspects``: rank a user's training examples by how likely they hurt the model.

A workflow over the same stages as ``run`` (``fit_and_rank``: ``data`` → ``finetune``, or a trained ``adapter=``
imported → ``grads`` → ``suspects``, one influence configuration ranking every training row of the fit). Which
rows are ranked, and by how many fits:

- ``source=`` with ``folds`` ≥ 2 (default 3) and no ``dev_source``: **cross-fitting**, every row of the file is
  ranked. The rows are cut into K stratified folds (seeded by the data seed); fit k (``OUT/folds/fold-<k>/``, a
  run directory of its own, cached stage by stage) trains on the other folds and takes fold k (at most
  ``max_dev`` rows) as its validation set. Each row is a training row of K − 1 fits; **its score is the mean of its
  within-fit percentile ranks** (0 = the lowest score of a fit, 1 = the highest; ties share their average rank),
  and ``OUT/suspects`` ranks the rows by it. ``max_train`` caps the rows that take part. Details:
  ``layerinf.workflows.crossfit``.
- ``source=`` with ``dev_source`` (or a source with its own dev part: ``demo``, a GLUE folder, an ``hf:``
  dataset with a validation split): one fit on the whole training part, every training row ranked.
- ``source=`` with ``folds=1``: one fit; a stratified 20 % of the rows is carved out as its validation set and
  **not ranked** (the console and the page say how many).
- ``run=``: the data and gradients of an existing run are read (its missing ``grads`` stage is computed there)
  and only the ranking is written to ``out_dir``; its training rows are ranked.

The result, console and page say how many rows were ranked and how (``SuspectsResult.coverage``), and carry the
fine-tuning health warning of every fit whose model did not clearly beat the majority class
(``SuspectsResult.health``). Every option is checked, the layer group validated against the model's layer count
and the folds against the class counts, before anything is written.

Instruction data (SFT: ``layerinf.stages.task.task_for`` gives ``InstructionTask`` — ``demo-sft``, ``--task-type
sft``, or a file with a response/messages column and no label column) take the same workflow: cross-fitting by default
(``layerinf.workflows.crossfit``), ``dev_source`` or ``folds=1`` as above. The whole file is loaded and
tokenised as fine-tuning will tokenise it (``Task.check_data``) before anything is written, so that a missing response
column, an empty response, ``--chat-template on`` for a tokenizer without one or a response that tokenises to
nothing is one line, not a half-made output folder. The table then holds ``prompt``, ``response``,
``response_loss`` and ``score`` (``layerinf.stages.rank.SFT_COLUMNS``). ``adapter=`` takes a layerinf adapter of an
SFT run or a LoRA-only PEFT ``CAUSAL_LM`` adapter folder (``model.causal.import_causal_adapter``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path
from typing import Any

from layerinf.config import (SCALE_OUT, DataConfig, GradsConfig, ModelConfig, RankConfig, RuntimeConfig, ScoreConfig,
                             TrainConfig, runtime_options, runtime_options_except, split_options)
from layerinf.errors import LayerinfError
from layerinf.store.layout import DATA, FINETUNE, GRADS
from layerinf.store.rundir import RunDir, check_writable_dir
from layerinf.workflows.defaults import SUSPECTS_DEFAULTS, small_data_recipe

# the stage modules (torch, pandas) are imported when used, so that `layerinf --help` and option errors are quick

SECTIONS = (DataConfig, ModelConfig, TrainConfig, RankConfig, ScoreConfig, RuntimeConfig)
NOT_OPTIONS = {"noise_rate", "noise_rates"}  # suspects never injects noise
RUN_RUNTIME = runtime_options("grads", "score") - SCALE_OUT  # what applies to ranking another run (run=)
# of the score section only Vote's κ (the ranking is one configuration); of the runtime section what its stages use
NOT_TAKEN = frozenset({f.name for f in dataclasses.fields(ScoreConfig)} - {"vote_kappa"}) | SCALE_OUT | (
    runtime_options_except("finetune", "grads", "score"))


def suspects_options() -> list[tuple[type, dataclasses.Field]]:
    """(section, field) of every option ``suspects`` takes, in CLI order."""
    return [(cls, f) for cls in SECTIONS for f in dataclasses.fields(cls)
            if f.name not in NOT_OPTIONS and f.name not in NOT_TAKEN]


def _configs(source: str | None, options: dict[str, Any]):
    opts = {**SUSPECTS_DEFAULTS, **options}
    bad = sorted(NOT_OPTIONS & set(opts))
    if bad:
        raise LayerinfError(f"suspects does not take {', '.join(bad)}", "suspects ranks your labels as they are")
    data, model, train, rank, score, runtime = split_options(
        {**({"source": source} if source is not None else {}), **opts}, *SECTIONS, where="suspects", exclude=NOT_TAKEN)
    if rank.method == "tracin_cp":
        raise LayerinfError("suspects ranks with the gradients of one checkpoint; tracin_cp needs several",
                            "use --method tracin (or run `layerinf run` with grads.tracin_checkpoints for TracInCP)")
    return dataclasses.replace(data, noise_rate=0.0), model, train, rank, score.vote_kappa, runtime


def __getattr__(name: str):  # the stage-level names this module has always exported, imported on first use
    if name in ("SuspectsResult", "default_group"):
        from layerinf.stages import rank

        return getattr(rank, name)
    if name == "load_data":
        from layerinf.stages.data import load_data

        return load_data
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def summary_table(result, k: int = 10, width: int = 70):
    """The ``k`` most suspicious examples (``layerinf.stages.rank.summary_table``)."""
    from layerinf.stages.rank import summary_table as table

    return table(result, k=k, width=width)


def check_adapter(adapter: str | os.PathLike) -> Path:
    """A user's adapter, checked before anything is written: a layerinf ``.safetensors`` file holding LoRA
    tensors, or a PEFT adapter folder (``adapter_config.json`` plus its weights)."""
    import json

    path = Path(adapter).expanduser().resolve()
    fix = "pass a layerinf .safetensors adapter (finetune/best.safetensors) or a PEFT adapter folder (save_pretrained)"
    if not path.exists():
        raise LayerinfError(f"adapter {path} does not exist", "check the path; " + fix)
    if path.is_dir():
        config = path / "adapter_config.json"
        if not config.is_file():
            raise LayerinfError(f"adapter folder {path} has no adapter_config.json", fix)
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise LayerinfError(f"{config} is not valid JSON ({type(exc).__name__})", fix) from None
        if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
            raise LayerinfError(f"adapter folder {path} has no adapter_model.safetensors", fix)
        from layerinf.model.adapters import read_peft_lora_config

        read_peft_lora_config(path)  # options layerinf's LoRA would not reproduce: refused now, not after data
        return path
    if not os.access(path, os.R_OK):
        raise LayerinfError(f"adapter {path} is not readable", "check its permissions")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            names = list(fh.keys())
    except Exception as exc:  # noqa: BLE001 — safetensors raises several types for a file that is not one
        first = str(exc).splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise LayerinfError(f"adapter {path} is not a safetensors file ({first})", fix) from None
    if not any(".lora_A." in n for n in names):
        raise LayerinfError(f"adapter file {path} holds no LoRA tensors", fix)
    return path


def check_group(rank: RankConfig, num_layers: int) -> bool:
    """Validate the group name from the layer count alone (no weights loaded); True when it needs WE."""
    from layerinf.influence.groups import LORA_KINDS, attention_groups
    from layerinf.stages.rank import default_group

    group = default_group(num_layers) if rank.group is None else rank.group
    names = ["WE", *(g for g, _ in attention_groups(num_layers)), "CL", "all", *LORA_KINDS,
             *(f"L{i:02d}" for i in range(num_layers))]
    pattern = group.startswith("re:") or any(c in group for c in "*?[") or "." in group
    if group not in names and not pattern:
        raise LayerinfError(f"unknown layer group '{group}' for a {num_layers}-layer model",
                            f"use one of {', '.join(names[:7])}, query_A…value_B, L00…L{num_layers - 1:02d}, "
                            "a module name or a glob")
    if rank.method == "datainf" and group == "WE":
        raise LayerinfError("method datainf does not apply to the WE group (DataInf skips word embeddings)",
                            "use --method tracin or cosine for WE, or pick an attention group")
    return group in ("WE", "all") or (pattern and not group.startswith("re:") and fnmatch.fnmatchcase("WE", group))


def check_probe(plan, rank: RankConfig) -> None:
    """The probe needs planted rows to score: at least 2 per fold (and some unplanted rows of each class)."""
    if not plan.job.class_probabilities or rank.probe_rate <= 0 or plan.folds < 3:
        return
    per_fold = min(int((plan.fold_of != k).sum()) for k in range(plan.folds))
    if round(rank.probe_rate * per_fold) < 2:
        raise LayerinfError(
            f"{plan.ranked} rows are too few for the planted-flip probe at --probe-rate {rank.probe_rate:g} "
            f"(it would flip {round(rank.probe_rate * per_fold)} label(s) per fold; 2 needed)",
            "add rows, raise --probe-rate, or turn the probe off with --probe-rate 0 (then --ranking auto uses "
            "combined)")


def check_sft(data: DataConfig, model: ModelConfig):
    """Instruction data checked before anything is written (``stages.task.InstructionTask.check_data``)."""
    from layerinf.stages.task import INSTRUCTION

    return INSTRUCTION.check_data(data, model)


def find_suspects(out_dir, *, source: str | None = None, run=None, adapter: str | os.PathLike | None = None,
                  progress: bool = True, force: bool = False, **options) -> SuspectsResult:
    """Rank every training example by influence (lowest = most likely mislabelled or harmful).

    ``source=``: a dataset (``demo``, a CSV/TSV/JSONL/Parquet file, a GLUE folder, ``hf:NAME``), prepared
    into ``out_dir`` with no noise and no cap; then fine-tuned (``epochs`` default 3) or, with ``adapter=``
    (a layerinf ``.safetensors`` file or a PEFT folder), imported. ``run=``: an existing run directory whose
    data and gradients are used. Options: every field of DataConfig (not noise_rate), ModelConfig,
    TrainConfig, RankConfig, ``vote_kappa`` (ScoreConfig) and the RuntimeConfig options of its stages (not the
    Ray ones), by the same names as everywhere. Outputs: ``out_dir/suspects/``.
    With ``folds`` ≥ 2 (default 3) and no ``dev_source`` every row is ranked by cross-fitting (the fits in
    ``out_dir/folds/fold-<k>/``; see the module docstring); ``result.coverage`` says how many rows were ranked
    and how, ``result.health`` holds the warnings of fits whose model did not clearly learn.
    """
    if (source is None) == (run is None):
        raise LayerinfError(
            "give exactly one of source= (your dataset) or run= (an existing layerinf run directory)"
            + (", not both" if source is not None else ""),
            "e.g. layerinf suspects OUT --source my_data.csv, or layerinf suspects OUT --run RUN_DIR",
        )
    if run is not None:
        extra = sorted(k for k, v in {"adapter": adapter, **options}.items() if v is not None and k not in
                       {f.name for f in dataclasses.fields(RankConfig)} | {"vote_kappa"} | RUN_RUNTIME)
        if extra:
            raise LayerinfError(f"option(s) {', '.join(extra)} only apply with source=",
                                "a run directory already holds its data and model; drop them or use source=")
    data, model, train, rank, kappa, runtime = _configs(source, options)
    check_writable_dir(out_dir, "output folder")
    out = RunDir(out_dir)
    if run is not None:
        work = RunDir(run)
        if not work.root.is_dir():
            what = "is a file, not a run directory" if work.root.exists() else "does not exist"
            raise LayerinfError(f"run directory {work.root} {what}", "check the path, or use --source")
        work.require(DATA, verify=False)  # checksums: verified by the suspects stage, which reads it
        if not work.is_finished(GRADS, verify=False):
            work.require(FINETUNE, f"run `layerinf finetune {work.root}` first (or use --source)", verify=False)
    adapter_path = None if adapter is None or run is not None else check_adapter(adapter)
    from layerinf.model import num_layers_of, resolve_device
    from layerinf.stages.base import StageSummary
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.rank import RankStage

    device = str(resolve_device(runtime.device))
    from layerinf.model import check_quantization

    check_quantization(model.quantization, device)  # 8/4-bit needs CUDA and bitsandbytes: before anything is written
    if run is not None:
        if rank.ranking not in ("auto", "influence"):
            raise LayerinfError(f"--ranking {rank.ranking} needs cross-fitting (out-of-sample probabilities for "
                                "every row); a run directory is ranked by influence", "drop --ranking, or use --source")
        if work.is_finished(GRADS, verify=False):
            check_group(rank, GradsStage(work).num_layers)
        else:
            work.require(FINETUNE, f"run `layerinf finetune {work.root}` first (or use --source)")
            ft_model = ModelConfig(**StageSummary(work, FINETUNE)["model"])
            check_group(rank, num_layers_of(ft_model))
            with work.guard():
                GradsStage(work, runtime=runtime).run(GradsConfig(), progress=progress, device=device)
        model_name = StageSummary(work, FINETUNE)["model"]["name"]
        with out.guard():
            return RankStage(out, source=work, runtime=runtime).run(rank, model_name, kappa, force=force,
                                                                    progress=progress)

    needs_we = check_group(rank, num_layers_of(model))  # fail before training, not after (resolves the model name)
    from layerinf.stages.task import task_for

    task = task_for(data)
    train = small_data_recipe(train, model.name, options, not task.step_budget)
    task.check_model(model, adapter_path)
    sft_raw = task.check_data(data, model)  # instruction data: loaded whole and tokenised (None: classification)
    plan = None
    if rank.folds >= 2 and data.dev_source is None and adapter_path is None:  # an adapter saw every row: one fit
        from layerinf.workflows.crossfit import plan_folds

        plan = plan_folds(data, rank.folds, sft_raw)  # None: the source has its own dev part (one fit ranks its train rows)
        if plan is not None:
            check_probe(plan, rank)
    if rank.ranking not in ("auto", "influence") and (plan is None or not plan.job.class_probabilities):
        raise LayerinfError(f"--ranking {rank.ranking} needs cross-fitted classification data (out-of-sample "
                            "probabilities for every row)", "drop --ranking (one fit ranks by influence), or use "
                            "--folds 3 without --dev-source / --adapter on a labelled file")
    fit = dict(model=model, train=train, rank=rank, vote_kappa=kappa, adapter=adapter_path, needs_we=needs_we,
               device=device, progress=progress, force=force, runtime=runtime)
    if plan is None:
        from layerinf.stages.data import DataStage

        with out.guard():
            return fit_and_rank(out, DataStage(out), data, **fit)
    from layerinf.workflows.crossfit import CrossfitStage, FoldDataStage, fold_path, plant_probe

    plant_probe(plan, rank.probe_rate, int(data.seed))
    folds = []
    for k in range(plan.folds):  # each fold is a run directory of its own: a rerun reuses the finished ones
        fold = RunDir(fold_path(out.root, k))
        with fold.guard():
            fit_and_rank(fold, FoldDataStage(fold, plan, k), data, **fit)
        folds.append(fold.root)
    with out.guard():
        if plan.job.class_probabilities:  # the embedding ranking: the base model's sentence embeddings
            from layerinf.stages.embed import EmbedStage

            EmbedStage(out, plan.rows, len(plan.label_names)).run(model, int(data.seed), progress=progress,
                                                                    device=device)
        return CrossfitStage(out, folds, plan).run(rank, model.name, kappa, force=force, progress=progress)


def fit_and_rank(run: RunDir, data_stage, data: DataConfig, *, model: ModelConfig, train: TrainConfig,
                 rank: RankConfig, vote_kappa: float, adapter: Path | None, needs_we: bool, device: str,
                 progress: bool = True, force: bool = False, runtime: RuntimeConfig | None = None):
    """One fit in ``run``: data (``data_stage``) → finetune (or the imported ``adapter``) → grads → suspects
    (``runtime``: how fast, e.g. gradient checkpointing and batch sizes; not part of any stage's key)."""
    from layerinf.stages.finetune import AdapterStage, FinetuneStage
    from layerinf.stages.base import StageSummary
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.rank import RankStage

    data_stage.run(data, force=force, progress=progress)
    if adapter is not None:
        AdapterStage(run, runtime=runtime).run(model, adapter, progress=progress, device=device)
    else:
        FinetuneStage(run, runtime=runtime).run(model, train, progress=progress, device=device)
    # row-sparse WE gradients (the costliest part) only when the group uses WE, or to reuse a store that has them
    prev = run.stage_info(GRADS)["config"]["grads"] if run.is_finished(GRADS, verify=False) else {}
    GradsStage(run, runtime=runtime).run(
        GradsConfig(include_we=needs_we or bool(prev.get("include_we", False))), progress=progress, device=device)
    return RankStage(run, runtime=runtime).run(rank, model.name, vote_kappa, force=force, progress=progress)


__all__ = ["SuspectsResult", "find_suspects", "fit_and_rank", "summary_table", "suspects_options", "SUSPECTS_DEFAULTS", "load_data",
           "check_adapter", "check_group", "check_sft"]
