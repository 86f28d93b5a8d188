"""The pipeline's stages as Python functions, each writing one folder of a run directory.

``prepare`` → ``data/``, ``finetune`` → ``finetune/``, ``grads`` → ``grads/``, ``score`` → ``scores/``.
Each stage reads only what earlier stages wrote, records its configuration (including the hash of the
stages it depends on), and is reused on a rerun when nothing changed. The CLI is a thin layer over these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerinf.store.rundir import RunDir
from layerinf.config import DataConfig, GradsConfig, ModelConfig, ScoreConfig, TrainConfig, resolve_lr
from layerinf.errors import LayerinfError


def _merge(cfg, overrides: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise LayerinfError(f"unknown option(s) {', '.join(bad)}", f"valid: {', '.join(sorted(known))}")
    return dataclasses.replace(cfg, **overrides)


def _upstream_hash(run: RunDir, stage: str) -> str:
    return run.stage_info(stage)["config_hash"]


# ------------------------------------------------------------------------------------------------ prepare


def prepare(run_dir, config: DataConfig | None = None, *, force: bool = False, **overrides):
    """Load a data source, split it (train / influence / test) and inject label noise into train.

    Writes ``data/{train,infl,test}.parquet`` and ``data/meta.json``; returns the ``PreparedData``.
    """
    from layerinf import data as data_mod

    run = RunDir(run_dir)
    cfg = _merge(config or DataConfig(), overrides)
    stage_cfg = {**dataclasses.asdict(cfg), "fingerprint": source_fingerprint(cfg.source, cfg.dev_source)}
    with run.stage("data", stage_cfg, seed=cfg.seed, force=force) as st:
        if st.done:
            return data_mod.load_prepared(st.path)
        prepared = data_mod.prepare(
            cfg.source,
            task=cfg.task,
            text_column=cfg.text_column,
            text_pair_column=cfg.text_pair_column,
            label_column=cfg.label_column,
            dev_source=cfg.dev_source,
            label_names=cfg.label_names,
            max_train=cfg.max_train,
            max_dev=cfg.max_dev,
            noise_rate=cfg.noise_rate,
            seed=cfg.seed,
        )
        data_mod.save_prepared(prepared, st.tmp)
        st.info["summary"] = {
            "train": len(prepared.train),
            "infl": len(prepared.infl),
            "test": len(prepared.test),
            "noisy": int(prepared.train["noisy"].sum()),
            "labels": list(prepared.label_names),
        }
    return prepared


def source_fingerprint(*sources: str | None) -> str | None:
    """A content hash of local data sources, so that an edited file redoes ``prepare`` and what follows.

    Files are hashed whole; folders (GLUE tasks) by their files; ``demo`` by the shipped file; hub names
    (``hf:``) are not hashed (their revision is the hub's business).
    """
    from layerinf.store.rundir import config_hash, sha256_file

    parts = {}
    for src in sources:
        if not src:
            continue
        if src == "demo":
            from importlib import resources

            parts[src] = sha256_file(str(resources.files("layerinf") / "data" / "demo.jsonl"))
            continue
        path = Path(src).expanduser()
        if path.is_file():
            parts[src] = sha256_file(path)
        elif path.is_dir():
            parts[src] = {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return config_hash(parts) if parts else None


def load_data(run_dir):
    """The prepared splits of a run (``prepare`` must have finished)."""
    from layerinf import data as data_mod

    run = RunDir(run_dir)
    return data_mod.load_prepared(run.require("data", f"run `layerinf prepare {run.root}` first"))


# ------------------------------------------------------------------------------------------------ finetune


@dataclass
class FinetuneOutput:
    """What ``finetune`` leaves in ``finetune/`` and its headline numbers."""

    folder: Path
    history: pd.DataFrame
    best_epoch: int
    best_accuracy: float
    accuracy_at_best_epoch: float


def train_settings(train: TrainConfig, model: ModelConfig, data_seed: int):
    from layerinf.engine.train import TrainSettings

    return TrainSettings(
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=resolve_lr(model.name, train.lr),
        weight_decay=train.weight_decay,
        warmup=train.warmup,
        eval_batch_size=train.eval_batch_size,
        seed=data_seed if train.seed is None else train.seed,
    )


def load_model(model: ModelConfig, num_labels: int, seed: int, adapter: Path | None = None):
    """Load the configured base model with LoRA attached (seeded init), optionally with an adapter."""
    from layerinf.model.loading import LoraSettings, load_classifier

    lora = LoraSettings(
        r=model.lora_r,
        alpha=model.lora_alpha,
        dropout=model.lora_dropout,
        targets=tuple(model.lora_targets) if model.lora_targets else None,
    )
    return load_classifier(
        model.name, num_labels, lora=lora, seed=seed, trust_remote_code=model.trust_remote_code, adapter=adapter
    )


def encode_splits(prepared, tokenizer, max_length: int) -> dict[str, Any]:
    from layerinf.engine.batching import encode_split

    return {name: encode_split(getattr(prepared, name), tokenizer, max_length) for name in ("train", "infl", "test")}


def finetune(
    run_dir,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    on_epoch=None,
) -> FinetuneOutput:
    """LoRA-fine-tune on the run's noisy training split; save init / best / last adapters (safetensors).

    The best checkpoint is the epoch with the lowest influence-set loss (ties → later epoch); its
    influence-set logits are saved too (``infl_logits.npy``) for the correct-prediction filter.
    """
    from layerinf.model.loading import save_adapter
    from layerinf.engine.train import fit

    run = RunDir(run_dir)
    model = model or ModelConfig()
    train = train or TrainConfig()
    prepared = load_data(run)
    settings = train_settings(train, model, prepared.meta.get("seed", 0))
    stage_cfg = {
        "data": _upstream_hash(run, "data"),
        "model": dataclasses.asdict(model),
        "train": settings.to_dict(),
    }
    with run.stage("finetune", stage_cfg, seed=settings.seed, force=force) as st:
        if not st.done:
            loaded = load_model(model, len(prepared.label_names), settings.seed)
            enc = encode_splits(prepared, loaded.tokenizer, model.max_length)
            result = fit(loaded.model, enc["train"], enc["infl"], enc["test"], settings, progress=progress, on_epoch=on_epoch)
            meta = {"model": model.name, "lora_r": str(model.lora_r)}
            save_adapter(result.init_state, st.out("init.safetensors"), meta)
            save_adapter(result.best_state, st.out("best.safetensors"), {**meta, "epoch": str(result.best_epoch)})
            save_adapter(result.last_state, st.out("last.safetensors"), meta)
            np.save(st.out("infl_logits.npy"), result.best_infl_logits)
            result.history.to_parquet(st.out("history.parquet"), index=False)
            result.history.to_csv(st.out("history.csv"), index=False)
            st.info["summary"] = {
                "best_epoch": result.best_epoch,
                "best_accuracy": result.best_accuracy,
                "accuracy_at_best_epoch": result.accuracy_at_best_epoch,
                "lr": settings.lr,
            }
    summary = run.stage_info("finetune")["summary"]
    return FinetuneOutput(
        folder=run.stage_path("finetune"),
        history=pd.read_parquet(run.stage_path("finetune") / "history.parquet"),
        best_epoch=summary["best_epoch"],
        best_accuracy=summary["best_accuracy"],
        accuracy_at_best_epoch=summary["accuracy_at_best_epoch"],
    )


def load_finetuned(run_dir, checkpoint: str = "best"):
    """The run's model with the chosen adapter (init | best | last) loaded, plus its prepared data."""
    run = RunDir(run_dir)
    if checkpoint not in ("init", "best", "last"):
        raise LayerinfError(f"unknown checkpoint '{checkpoint}'", "use init, best or last")
    info = run.stage_info("finetune") if run.is_finished("finetune", verify=False) else None
    if info is None:
        raise LayerinfError(f"stage 'finetune' has not finished in {run.root}", f"run `layerinf finetune {run.root}` first")
    prepared = load_data(run)
    model = ModelConfig(**info["config"]["model"])
    loaded = load_model(model, len(prepared.label_names), info["config"]["train"]["seed"],
                        adapter=run.stage_path("finetune") / f"{checkpoint}.safetensors")
    return loaded, prepared, model




# ------------------------------------------------------------------------------------------------ grads


def grads(run_dir, config: GradsConfig | None = None, *, progress: bool = True, force: bool = False, **overrides):
    """Per-sample gradients of every module for the train and influence splits → ``grads/{train,infl}``.

    One forward and one backward per batch at the chosen checkpoint (default: best influence loss); the
    word-embedding gradient is stored row-sparse. Reused while the checkpoint and data are unchanged.
    """
    from layerinf.store.rundir import sha256_file
    from layerinf.store.gradstore import GradStore, write_store

    run = RunDir(run_dir)
    cfg = _merge(config or GradsConfig(), overrides)
    if cfg.dtype not in ("float32", "float16", "bfloat16"):
        raise LayerinfError(f"unknown gradient dtype '{cfg.dtype}'", "use float32, float16 or bfloat16")
    run.require("finetune", f"run `layerinf finetune {run.root}` first")
    adapter = run.stage_path("finetune") / f"{cfg.checkpoint}.safetensors"
    stage_cfg = {"finetune": _upstream_hash(run, "finetune"), "grads": dataclasses.asdict(cfg)}
    with run.stage("grads", stage_cfg, force=force) as st:
        if not st.done:
            loaded, prepared, model_cfg = load_finetuned(run, cfg.checkpoint)
            enc = encode_splits(prepared, loaded.tokenizer, model_cfg.max_length)
            ckpt_sha = sha256_file(adapter)
            for split in ("train", "infl"):
                write_store(loaded.model, enc[split], st.tmp / split, batch_size=cfg.batch_size,
                            include_we=cfg.include_we, dtype=cfg.dtype, checkpoint_sha256=ckpt_sha,
                            progress=progress)
            st.info["summary"] = {"num_layers": loaded.num_layers, "checkpoint": cfg.checkpoint,
                                  "n_train": len(enc["train"]), "n_infl": len(enc["infl"])}
    folder = run.stage_path("grads")
    return GradStore(folder / "train"), GradStore(folder / "infl")


# ------------------------------------------------------------------------------------------------ score


def score(run_dir, config: ScoreConfig | None = None, *, progress: bool = True, force: bool = False, **overrides):
    """Influence scores for every method × layer group × aggregator, with NDR / AUC / cancellation tables.

    Writes ``scores/table.parquet|csv`` (one row per configuration, sorted by NDR@30), ``aggregated.parquet``
    (one score column per configuration; higher = more helpful), ``curves``, ``modules`` (layer-wise NDR),
    ``noise_rank`` and the per-module matrices ``matrices/<method>/<module>.npy``. Returns the table.
    """
    from layerinf.store.gradstore import GradStore
    from layerinf.stages.score import score_stores

    run = RunDir(run_dir)
    cfg = _merge(config or ScoreConfig(), overrides)
    run.require("grads", f"run `layerinf grads {run.root}` first")
    stage_cfg = {"grads": _upstream_hash(run, "grads"), "score": dataclasses.asdict(cfg)}
    with run.stage("scores", stage_cfg, force=force) as st:
        if not st.done:
            prepared = load_data(run)
            train = GradStore(run.stage_path("grads") / "train")
            infl = GradStore(run.stage_path("grads") / "infl")
            correct = infl.logits.argmax(1) == infl.labels
            noisy = prepared.train["noisy"].to_numpy(bool)
            num_layers = run.stage_info("grads")["summary"]["num_layers"]
            res = score_stores(train, infl, noisy, correct, num_layers, cfg, st.tmp / "matrices", progress=progress)
            for name in ("table", "curves", "modules", "noise_rank", "aggregated"):
                getattr(res, name).to_parquet(st.out(f"{name}.parquet"), index=False)
            res.table.to_csv(st.out("table.csv"), index=False)
            st.info["summary"] = {"configurations": len(res.table), "correct_infl": int(correct.sum()),
                                  "infl": int(len(correct))}
    return pd.read_parquet(run.stage_path("scores") / "table.parquet")
