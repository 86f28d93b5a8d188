"""The ``grads`` stage (``layerinf grads``): per-sample gradients of every module, train and influence sets.

One forward and one backward per batch at the chosen checkpoint (default: best influence loss); LoRA A/B
and head gradients are dense, word-embedding gradients row-sparse. Each split is a gradient store
(``store.gradstore``) under ``grads/<split>/``.

``run(cfg, shards=N)`` cuts the training set into N contiguous shards, each collected by its own task (on the
stage's executor: one after the other locally, in parallel on Ray) into ``grads/train/shard-000/`` …; the
store reads them as one, and its data are the same bytes as the unsharded store's (per-sample gradients do
not depend on which samples share a batch). ``shards=1`` (the default) is the unsharded layout.

TracInCP (``GradsConfig.tracin_checkpoints``, e.g. ``[init, best, last]``): the train and influence sets are
also collected at each listed checkpoint, into ``grads/tracin/<checkpoint>/<split>/`` (``layout.tracin_store``);
the stage's own checkpoint (``checkpoint``) is not collected twice: its stores are ``grads/<split>/``. The
learning rate η_c of each checkpoint (``engine.train.checkpoint_lr``: the mean rate of the epoch that produced
it, the peak rate for ``init``, 1 for an imported adapter) is recorded in the stage summary (``tracin``), where
the score stage's ``tracin_cp`` method reads it. Off (None, the default) the stage's key, files and summary are
those of a stage without the option.

``gradient_checkpointing`` and ``grad_batch_size`` (the stage's ``runtime``, not part of its identity) change how
fast, not what: checkpointing recomputes activations in the backward pass (less memory, the same gradients).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from layerinf.config import GradsConfig
from layerinf.errors import LayerinfError
from layerinf.stages.base import StageBase
from layerinf.store.layout import CHECKPOINTS, DATA, FINETUNE, GRAD_SPLITS, GRADS, adapter_file, tracin_store

if TYPE_CHECKING:
    from layerinf.store.gradstore import GradStore


class GradsStage(StageBase):
    name = GRADS
    upstream = (DATA, FINETUNE)
    artifacts = tuple(f"{split}/info.json" for split in GRAD_SPLITS)

    def __init__(self, run_dir, echo=None, *, source=None, executor=None, task_device: str | None = None,
                 gradient_checkpointing: bool | None = None, runtime=None):
        """``executor``: where shard tasks run, a ``workflows.executor.Executor``; default: this process, one
        by one.
        ``task_device``: the device each task resolves on its worker (default: the stage's device).
        ``gradient_checkpointing``: recompute activations in the backward pass (runtime: same gradients; None:
        ``runtime``'s). ``runtime.grad_batch_size``: samples per forward/backward."""
        super().__init__(run_dir, echo, source=source, runtime=runtime)
        self.executor = executor
        self.task_device = task_device
        gc = self.runtime.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        self.gradient_checkpointing = bool(gc)
        self.shards = 1

    def run(self, *configs, shards: int = 1, **kwargs):
        """``shards``: how many contiguous pieces of the training set are collected as separate tasks. The
        number of shards is not part of the stage's identity (a finished stage is reused whatever it was)."""
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise LayerinfError(f"shards = {shards!r} must be a whole number of at least 1", "use shards=1 or more")
        self.shards = shards
        if configs:
            check_tracin_checkpoints(configs[0], self.run_dir)
        return super().run(*configs, **kwargs)

    def key(self, cfg: GradsConfig) -> dict:
        key = asdict(cfg)
        if not cfg.tracin_checkpoints:  # off: the key of a stage made before the option existed
            key.pop("tracin_checkpoints", None)
        return {"grads": key}

    def compute(self, st, cfg: GradsConfig, *, inputs, progress=True, device="cpu") -> dict:
        if self.shards > 1:
            return self._compute_sharded(st, cfg, inputs=inputs, progress=progress, device=device)
        from layerinf.engine.collect import we_token_counts, write_store
        from layerinf.model import inventory, load_adapter
        from layerinf.stages.finetune import encode_splits
        from layerinf.store.gradstore import check_free_space, store_nbytes
        from layerinf.store.rundir import sha256_file

        prepared, finetuned = inputs[DATA], inputs.stage(FINETUNE)
        loaded, model_cfg = finetuned.model(prepared, cfg.checkpoint, device,
                                            gradient_checkpointing=self.gradient_checkpointing)
        objective = finetuned.objective(prepared)
        enc = encode_splits(prepared, loaded.tokenizer, model_cfg)
        folder = finetuned.path
        extra = extra_checkpoints(cfg)
        # every store's size is known before anything is written: check the disk once for all of them
        specs = [s for s in inventory(loaded.model, include_we=cfg.include_we) if cfg.include_we or s.kind != "we"]
        we = next((s for s in specs if s.kind == "we"), None)
        need = sum(store_nbytes(len(enc[split]), specs, cfg.grad_dtype,
                                int(we_token_counts(enc[split], int(we.shape[0])).sum()) if we is not None else 0,
                                len(prepared.label_names)) for split in GRAD_SPLITS)
        check_free_space(st.tmp, need * (1 + len(extra)))
        for checkpoint in (cfg.checkpoint, *extra):
            if checkpoint != cfg.checkpoint:  # the same model with another checkpoint's trainable tensors
                load_adapter(loaded.model, folder / adapter_file(checkpoint))
            ckpt_sha = sha256_file(folder / adapter_file(checkpoint))
            for split in GRAD_SPLITS:
                write_store(loaded.model, enc[split], st.tmp / store_path(cfg, checkpoint, split),
                            batch_size=self.runtime.grad_batch_size, include_we=cfg.include_we, dtype=cfg.grad_dtype,
                            checkpoint_sha256=ckpt_sha, progress=progress, objective=objective)
        return {"num_layers": loaded.num_layers, "checkpoint": cfg.checkpoint,
                "n_train": len(enc["train"]), "n_infl": len(enc["infl"]), **self._tracin_summary(cfg, inputs)}

    def _tracin_summary(self, cfg: GradsConfig, inputs) -> dict:
        if not cfg.tracin_checkpoints:
            return {}
        lrs, rule = tracin_lrs(inputs.stage(FINETUNE), len(inputs[DATA].train), tracin_list(cfg))
        return {"tracin": {"checkpoints": tracin_list(cfg), "lrs": lrs, "lr_rule": rule}}

    def _compute_sharded(self, st, cfg: GradsConfig, *, inputs, progress: bool, device: str) -> dict:
        from layerinf.stages.retrain import run_tasks
        from layerinf.store.gradstore import SHARD_DIR
        from layerinf.store.rundir import sha256_file

        n = len(inputs[DATA].train)
        count = max(1, min(self.shards, n))
        bounds = [k * n // count for k in range(count + 1)]
        dev = device if self.executor is None else (self.task_device or device)
        root = str(self.run_dir.root)
        gc, batch = self.gradient_checkpointing, self.runtime.grad_batch_size
        paths = [SHARD_DIR.format(k) for k in range(count)]
        tasks = []
        for checkpoint in (cfg.checkpoint, *extra_checkpoints(cfg)):
            at = dataclasses.replace(cfg, checkpoint=checkpoint, tracin_checkpoints=None)
            where = "" if checkpoint == cfg.checkpoint else f" at checkpoint '{checkpoint}'"
            tasks.append({"fn": grads_task, "key": (checkpoint, "infl"),
                          "args": (root, at, "infl", None, None, str(st.tmp / store_path(cfg, checkpoint, "infl")),
                                   dev, gc, batch),
                          "label": f"{root}: gradients of the influence set{where}"})
            for k in range(count):
                tasks.append({"fn": grads_task, "key": (checkpoint, "train", k),
                              "args": (root, at, "train", bounds[k], bounds[k + 1],
                                       str(st.tmp / store_path(cfg, checkpoint, "train") / paths[k]), dev, gc, batch),
                              "label": f"{root}: gradients of training samples {bounds[k]}:{bounds[k + 1]} "
                                       f"(shard {k + 1} of {count}){where}"})
        results = {}
        failures = run_tasks(self.executor, tasks, results.__setitem__, progress=progress, desc="gradients")
        if failures:
            raise LayerinfError(f"{len(failures)} of {len(tasks)} gradient tasks failed (first: {failures[0]})",
                                "fix the cause and rerun the command")
        for checkpoint in (cfg.checkpoint, *extra_checkpoints(cfg)):
            first = results[(checkpoint, "train", 0)]
            ckpt_sha = sha256_file(inputs.stage(FINETUNE).path / adapter_file(checkpoint))
            write_shard_index(st.tmp / store_path(cfg, checkpoint, "train"), paths, checkpoint_sha256=ckpt_sha,
                              data_sha256=first["split_sha256"])
        first = results[(cfg.checkpoint, "train", 0)]
        return {"num_layers": first["num_layers"], "checkpoint": cfg.checkpoint,
                "n_train": n, "n_infl": results[(cfg.checkpoint, "infl")]["n"], "shards": count,
                **self._tracin_summary(cfg, inputs)}

    def load(self):
        from layerinf.store.gradstore import GradStore

        return tuple(GradStore(self.path / split) for split in GRAD_SPLITS)

    def checkpoint_stores(self) -> list[tuple[str, "GradStore", "GradStore", float]]:
        """TracInCP's ``(checkpoint, train store, influence store, η_c)``, in ``tracin_checkpoints`` order;
        ``[]`` when the stage collected no checkpoints (``tracin_checkpoints`` off)."""
        from layerinf.store.gradstore import GradStore

        tracin = self.summary().get("tracin") or {}
        cfg = GradsConfig(**self.config()["grads"])
        return [(c, *(GradStore(self.path / store_path(cfg, c, split)) for split in GRAD_SPLITS),
                 float(tracin["lrs"][c])) for c in tracin.get("checkpoints", [])]

    @property
    def num_layers(self) -> int:
        return int(self.summary()["num_layers"])


def _write_shard(net, encoded, folder, start: int, stop: int, *, batch_size: int, include_we: bool, dtype: str,
                 checkpoint_sha256: str, progress: bool, objective=None):
    """Samples ``start:stop`` of a split's gradients as a complete store at ``folder`` (rows renumbered from 0)."""
    from layerinf.engine.collect import collect_gradients, split_fingerprint, we_token_counts
    from layerinf.model import inventory
    from layerinf.store.gradstore import StoreWriter

    specs = [s for s in inventory(net, include_we=include_we) if include_we or s.kind != "we"]
    we_spec = next((s for s in specs if s.kind == "we"), None)
    counts = we_token_counts(encoded, int(we_spec.shape[0]))[start:stop] if we_spec is not None else None
    with StoreWriter(folder, stop - start, specs, dtype=dtype, we_counts=counts) as writer:
        for batch in collect_gradients(net, encoded, specs, batch_size=batch_size, include_we=we_spec is not None,
                                       progress=progress, rows=np.arange(start, stop, dtype=np.int64),
                                       objective=objective):
            writer.add(dataclasses.replace(batch, rows=np.asarray(batch.rows, dtype=np.int64) - start))
        return writer.finish(checkpoint_sha256=checkpoint_sha256,
                             data_sha256=f"{split_fingerprint(encoded)}[{start}:{stop}]",
                             extra={"shard": {"start": start, "stop": stop}})


def grads_task(run_root: str, cfg: GradsConfig, split: str, start: int | None, stop: int | None, folder: str,
               device: str, gradient_checkpointing: bool = False, batch_size: int = 32) -> dict:
    """A task: one split's gradients (``start`` None), or samples ``start:stop`` of it, into ``folder`` (inside
    the stage's temporary folder: the stage publishes it when every task is done), at ``cfg.checkpoint``,
    ``batch_size`` samples per forward/backward (``RuntimeConfig.grad_batch_size``)."""
    from layerinf.engine.collect import split_fingerprint, write_store
    from layerinf.model import resolve_device
    from layerinf.stages.finetune import encode_splits, load_finetuned, run_objective
    from layerinf.store.rundir import sha256_file

    device = str(resolve_device(device))
    loaded, prepared, model_cfg = load_finetuned(run_root, cfg.checkpoint, device=device,
                                                 gradient_checkpointing=gradient_checkpointing)
    objective = run_objective(run_root, prepared)
    enc = encode_splits(prepared, loaded.tokenizer, model_cfg)[split]
    stage = StageBase(run_root)
    ckpt_sha = sha256_file(stage.run_dir.stage_path(FINETUNE) / adapter_file(cfg.checkpoint))
    if start is None:
        write_store(loaded.model, enc, folder, batch_size=batch_size, include_we=cfg.include_we,
                    dtype=cfg.grad_dtype, checkpoint_sha256=ckpt_sha, progress=False, objective=objective)
    else:
        _write_shard(loaded.model, enc, folder, start, stop, batch_size=batch_size,
                     include_we=cfg.include_we, dtype=cfg.grad_dtype, checkpoint_sha256=ckpt_sha, progress=False,
                     objective=objective)
    return {"num_layers": loaded.num_layers, "n": len(enc), "split_sha256": split_fingerprint(enc)}


def write_shard_index(folder: str | os.PathLike, shard_paths: Sequence[str], *, checkpoint_sha256: str = "",
                      data_sha256: str = "", extra: dict | None = None) -> "GradStore":
    """Write ``folder/info.json`` for the complete shard stores ``folder/<shard_paths[k]>`` (contiguous sample
    ranges, in order): the split's totals and the shard list. The shards' files stay where they are."""
    import torch

    from layerinf.version import __version__
    from layerinf.store.gradstore import INFO, STORE_FORMAT, GradStore
    from layerinf.store.rundir import atomic_write_json

    folder = Path(folder)
    subs = [GradStore(folder / p) for p in shard_paths]
    if not subs:
        raise LayerinfError(f"no shards to join in {folder}", "collect at least one shard")
    first = subs[0]
    shards, at, nnz = [], 0, 0
    for rel, sub in zip(shard_paths, subs):
        if sub.dtype != first.dtype or sub.modules != first.modules or bool(sub.info.get("we")) != first.has_we:
            raise LayerinfError(f"shard {sub.folder} was collected differently from {first.folder}",
                                "collect every shard with the same model and options")
        sub_nnz = int(sub.info["we"]["nnz"]) if sub.has_we else 0
        shards.append({"path": rel, "start": at, "stop": at + sub.n, "nnz": sub_nnz})
        at += sub.n
        nnz += sub_nnz
    we = dict(first.info["we"], nnz=nnz) if first.has_we else None
    info = {
        "format": STORE_FORMAT,
        "n": at,
        "dtype": first.dtype,
        "modules": first.info["modules"],
        "we": we,
        "num_labels": first.info.get("num_labels"),
        "checkpoint_sha256": checkpoint_sha256,
        "data_sha256": data_sha256,
        "layerinf_version": __version__,
        "torch_version": torch.__version__,
        **(extra or {}),
        "shards": shards,
    }
    atomic_write_json(folder / INFO, info)
    return GradStore(folder)


def tracin_list(cfg: GradsConfig) -> list[str]:
    """``tracin_checkpoints`` without repeats, in the given order (``[]`` when off)."""
    return list(dict.fromkeys(cfg.tracin_checkpoints or []))


def extra_checkpoints(cfg: GradsConfig) -> list[str]:
    """The TracInCP checkpoints collected besides the stage's own ``checkpoint`` (which is not collected twice)."""
    return [c for c in tracin_list(cfg) if c != cfg.checkpoint]


def store_path(cfg: GradsConfig, checkpoint: str, split: str) -> str:
    """Where a checkpoint's store of ``split`` lives, relative to ``grads/``."""
    return split if checkpoint == cfg.checkpoint else tracin_store(checkpoint, split)


def check_tracin_checkpoints(cfg: GradsConfig, run_dir=None) -> None:
    """``tracin_checkpoints`` names saved checkpoints (init | best | last); with ``run_dir``, ones that its
    finetune stage has (an imported adapter has only ``best``). Raises before anything is written."""
    if cfg.tracin_checkpoints is None:
        return
    if not cfg.tracin_checkpoints:
        raise LayerinfError("grads.tracin_checkpoints is an empty list",
                            "name the checkpoints, e.g. --tracin-checkpoints init,best,last (or leave it unset)")
    bad = [c for c in cfg.tracin_checkpoints if c not in CHECKPOINTS]
    if bad:
        raise LayerinfError(f"grads.tracin_checkpoints: unknown checkpoint '{bad[0]}'",
                            f"use some of {', '.join(CHECKPOINTS)}, e.g. --tracin-checkpoints init,best,last")
    if run_dir is None:
        return
    from layerinf.store.rundir import RunDir

    folder = RunDir(run_dir).stage_path(FINETUNE)
    if not folder.is_dir():
        return  # the stage says that finetune has not finished
    missing = [c for c in tracin_list(cfg) if not (folder / adapter_file(c)).is_file()]
    if missing:
        raise LayerinfError(f"the run has no '{missing[0]}' checkpoint for TracInCP (an imported adapter has "
                            "only 'best')", "use --tracin-checkpoints best, or fine-tune with layerinf finetune")


def check_tracin_request(methods, cfg: GradsConfig | None) -> None:
    """A multi-checkpoint method (``tracin_cp``) in ``methods`` needs ``cfg.tracin_checkpoints`` (the grads
    stage's, or the experiment's): a clear error otherwise, before anything is written."""
    from layerinf.influence import registry

    wanted = [m for m in methods or [] if registry.method(m).checkpoints]
    if wanted and (cfg is None or not cfg.tracin_checkpoints):
        raise LayerinfError(f"method {wanted[0]} needs gradients at several checkpoints, but grads.tracin_checkpoints "
                            "is not set", "collect them first: layerinf grads RUN --tracin-checkpoints init,best,last "
                            "--force (YAML: grads.tracin_checkpoints), or drop the method")


def tracin_lrs(finetuned, n_train: int, checkpoints: Sequence[str]) -> tuple[dict[str, float], str]:
    """η_c for each checkpoint, from the finetune stage's recipe (``engine.train.checkpoint_lr``; ``finetuned``: the
    finished ``FinetuneStage``, ``n_train``: its training rows), and the rule."""
    from layerinf.engine.train import checkpoint_lr

    summary, recipe = finetuned.summary(), (finetuned.run_dir.stage_info(FINETUNE).get("config") or {}).get("train")
    if summary.get("imported") or summary.get("lr") is None or not recipe:
        return {c: 1.0 for c in checkpoints}, "imported adapter (no training recipe): η = 1"
    steps = -(-int(n_train) // int(recipe["batch_size"]))
    lrs = {c: checkpoint_lr(c, lr=float(summary["lr"]), steps_per_epoch=steps, epochs=int(recipe["epochs"]),
                            warmup=float(recipe["warmup"]), best_epoch=int(summary["best_epoch"]))
           for c in checkpoints}
    return lrs, "init: the peak lr; best, last: the mean lr over the epoch that produced the checkpoint"


def load_grads(run_dir):
    """The (train, infl) gradient stores of a finished, verified grads stage."""
    stage = GradsStage(run_dir)
    stage.run_dir.require(GRADS)
    return stage.load()
