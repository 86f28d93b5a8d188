"""The ``finetune`` stage (``layerinf finetune``): LoRA fine-tuning, or importing a trained adapter.

Writes ``init|best|last.safetensors`` (the trainable LoRA + head tensors), the influence-set logits at the
best checkpoint and the per-epoch history. The best checkpoint is the epoch with the lowest influence-set
loss (ties → the later epoch). ``AdapterStage`` fills the same folder from a user's adapter instead (a
layerinf ``.safetensors`` file or a PEFT folder): only ``best`` exists then, and there is no history.

``gradient_checkpointing`` and ``eval_batch_size`` (``RuntimeConfig``, the stage's ``runtime``; not part of the
stage's identity) change how fast, not what: checkpointing recomputes activations in the backward pass (less
memory, slower, the same results). ``ModelConfig.quantization``
(bitsandbytes, CUDA only) is part of the identity, but left out of the key while it is ``none``, so that runs
made before the option existed are reused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from layerinf.config import ModelConfig, TrainConfig
from layerinf.errors import LayerinfError
from layerinf.stages.base import StageBase
from layerinf.stages.data import load_data
from layerinf.stages.task import task_of
from layerinf.store.layout import (CHECKPOINTS, DATA, FINETUNE, HISTORY, INFL_LOGITS_FILE, TEST_LOGITS_FILE, adapter_file,
                                   table_file)


@dataclass
class FinetuneOutput:
    """What ``finetune`` leaves in ``finetune/`` and its headline numbers."""

    folder: Path
    history: pd.DataFrame
    best_epoch: int
    best_accuracy: float
    accuracy_at_best_epoch: float


def train_seed(train: TrainConfig, data_seed: int) -> int:
    return data_seed if train.train_seed is None else train.train_seed


def recipe(run_dir, model: ModelConfig, train: TrainConfig) -> dict:
    """The training recipe with the learning rate and seed resolved (what makes a training run)."""
    from layerinf.model import default_lr

    data_seed = int(StageBase(run_dir).run_dir.stage_info(DATA)["seed"] or 0)
    lr = default_lr(model.name) if train.lr is None else float(train.lr)
    rec = {**asdict(train), "lr": lr, "train_seed": train_seed(train, data_seed)}
    for name, default in (("loss_reduction", "mean"), ("min_steps", None)):  # added later: left out at their
        if name in rec and rec[name] == default:  # defaults, so that older runs still match
            rec.pop(name)
    return rec


def model_key(model: ModelConfig) -> dict:
    """The model section as it keys a stage: fields added later are left out while at their default."""
    key = asdict(model)
    defaults = asdict(ModelConfig())
    for name in ("quantization", "max_response_length", "chat_template"):
        if key.get(name) == defaults[name]:
            key.pop(name)
    return key


def encode_splits(prepared, tokenizer, model: ModelConfig | int) -> dict:
    """The run's splits tokenised for its task (``stages.task``: ``Task.encode``)."""
    return task_of(prepared).encode(prepared, tokenizer, model)


def lora_metadata(model: ModelConfig) -> dict[str, str]:
    """The LoRA settings an adapter file records (an import reads alpha and dropout back; rank and targets come
    from its tensors)."""
    return {"lora_r": str(model.lora_r), "lora_alpha": str(model.lora_alpha), "lora_dropout": str(model.lora_dropout)}


def _save_outputs(st, result, model: ModelConfig) -> None:
    from layerinf.model import save_adapter

    meta = {"model": model.name, **lora_metadata(model)}
    save_adapter(result.init_state, st.out(adapter_file("init")), meta)
    save_adapter(result.best_state, st.out(adapter_file("best")), {**meta, "epoch": str(result.best_epoch)})
    save_adapter(result.last_state, st.out(adapter_file("last")), meta)
    np.save(st.out(INFL_LOGITS_FILE), result.best_infl_logits)
    if result.best_test_logits is not None:
        np.save(st.out(TEST_LOGITS_FILE), result.best_test_logits)
    result.history.to_parquet(st.out(table_file(HISTORY)), index=False)
    result.history.to_csv(st.out(table_file(HISTORY, "csv")), index=False)


def wilson(acc: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    if n <= 0:
        return 0.0, 1.0
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def health_check(infl_acc: float, infl_labels: np.ndarray, test_acc: float, test_labels: np.ndarray) -> dict:
    """Did the model learn? Its influence-set accuracy at the chosen checkpoint must beat the majority-class
    rate with a 95 % Wilson interval clear of it; otherwise its gradients say little and the scores are noise."""
    out = {}
    for split, acc, labels in (("infl", infl_acc, infl_labels), ("test", test_acc, test_labels)):
        labels = np.asarray(labels)
        majority = float(np.bincount(labels).max() / len(labels)) if len(labels) else 1.0
        lo, hi = wilson(acc, len(labels))
        out[split] = {"accuracy": acc, "majority": majority, "ci95": [lo, hi], "n": int(len(labels))}
    infl = out["infl"]
    out["learned"] = bool(infl["ci95"][0] > infl["majority"])
    if not out["learned"]:
        out["warning"] = (
            f"the fine-tuned model has not clearly learned the task: influence-set accuracy {infl['accuracy']:.3f} "
            f"(95 % CI {infl['ci95'][0]:.3f}–{infl['ci95'][1]:.3f}) vs {infl['majority']:.3f} for always predicting "
            "the majority class, so its influence scores are close to random. Train longer (--epochs), adjust "
            "--lr, raise --max-length, or use more data (--max-train)")
    return out


def retry_decision(health: dict | None, min_steps: int | None, best_epoch: int, epochs: int) -> str | None:
    """The small-data recipe (``min_steps`` set) retries a fit whose model did not learn once, with twice the
    steps, when its influence-set loss was still falling at the end (best epoch in the last quarter): ``"retry"``.
    A loss that was lowest earlier and rose after is memorisation, which more steps only deepen: ``"memorised"``
    (no retry). None: learned, not judged (free-form responses), or no step budget (the paper's recipe)."""
    if health is None or health["learned"] or not min_steps:
        return None
    return "retry" if best_epoch > 0.75 * epochs else "memorised"


def health_warning(run_dir) -> str | None:
    """The warning of a run whose model did not learn (None when it did, or when unknown)."""
    run = StageBase(run_dir).run_dir
    if run._info(FINETUNE) is None:
        return None
    return (run.stage_info(FINETUNE).get("summary", {}).get("health") or {}).get("warning")


class FinetuneStage(StageBase):
    """LoRA-fine-tune on the run's (noisy) training split."""

    name = FINETUNE
    upstream = (DATA,)
    artifacts = (*(adapter_file(c) for c in CHECKPOINTS), INFL_LOGITS_FILE, table_file(HISTORY),
                 table_file(HISTORY, "csv"))

    def __init__(self, run_dir, echo=None, *, source=None, gradient_checkpointing: bool | None = None, runtime=None):
        """``gradient_checkpointing``: recompute activations in the backward pass (runtime: same results; None:
        ``runtime``'s)."""
        super().__init__(run_dir, echo, source=source, runtime=runtime)
        gc = self.runtime.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        self.gradient_checkpointing = bool(gc)

    def key(self, model: ModelConfig, train: TrainConfig) -> dict:
        return {"model": model_key(model), "train": recipe(self.run_dir, model, train)}

    def seed(self, model: ModelConfig, train: TrainConfig) -> int:
        return self.key(model, train)["train"]["train_seed"]

    def compute(self, st, model: ModelConfig, train: TrainConfig, *, inputs, progress=True, device="cpu",
                on_epoch=None):
        from layerinf.engine.train import fit

        prepared = inputs[DATA]
        task = task_of(prepared)
        rec = recipe(self.run_dir, model, train)
        gc = self.gradient_checkpointing
        loaded = task.load_model(prepared, model, seed=rec["train_seed"], device=device, gradient_checkpointing=gc)
        enc = task.encode(prepared, loaded.tokenizer, model)
        judged = task.judged(prepared)

        def train_once(recipe_: TrainConfig, init_state=None):
            result = fit(loaded.model, enc["train"], enc["infl"], enc["test"], recipe_, lr=rec["lr"],
                         init_state=init_state,
                         seed=rec["train_seed"], progress=progress, on_epoch=on_epoch, gradient_checkpointing=gc,
                         objective=task.objective(recipe_), eval_batch_size=self.runtime.eval_batch_size)
            best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
            health = health_check(float(best["infl_acc"]), enc["infl"].labels, float(best["test_acc"]),
                                  enc["test"].labels) if judged else None
            return result, health

        result, health = train_once(train)
        retried = None
        decision = retry_decision(health, train.min_steps, result.best_epoch, result.epochs)
        if decision == "memorised":
            self._say(f"not retried with more steps: the influence-set loss was lowest at epoch {result.best_epoch} "
                      f"of {result.epochs} and rose after (the model began to memorise its training labels)")
        if decision == "retry":
            first = {"epochs": result.epochs, "infl_acc": health["infl"]["accuracy"]}
            stronger = replace(train, min_steps=2 * int(train.min_steps))
            self._say(f"the model did not learn in {first['epochs']} epochs (influence-set accuracy "
                      f"{first['infl_acc']:.3f} vs {health['infl']['majority']:.3f} for the majority class): "
                      f"retrying once with twice the steps ({stronger.min_steps})")
            result, health = train_once(stronger, init_state=result.init_state)
            retried = {"first": first, "min_steps": stronger.min_steps, "learned": health["learned"]}
        if health is not None and not health["learned"]:
            self._say("warning: " + health["warning"])
        _save_outputs(st, result, model)
        if health is not None and retried is not None:
            health["retried"] = retried
        return {"best_epoch": result.best_epoch, "best_accuracy": result.best_accuracy,
                "accuracy_at_best_epoch": result.accuracy_at_best_epoch, "lr": rec["lr"],
                "model": asdict(model), "train_seed": rec["train_seed"], "health": health,
                **({"epochs": result.epochs} if train.min_steps else {}),
                **task.recipe_fields(train.loss_reduction)}

    def model(self, prepared, checkpoint: str = "best", device: str = "cpu", *, gradient_checkpointing: bool = False):
        """The fine-tuned model of the finished stage with the chosen adapter (init | best | last) loaded, for
        ``prepared`` (the run's data), and its model config."""
        summary = self.summary()
        model = ModelConfig(**summary["model"])
        path = self.path / adapter_file(checkpoint)
        if not path.is_file():
            raise LayerinfError(f"the run has no '{checkpoint}' checkpoint ({path.name} is absent: the adapter was "
                                "imported)", "use --checkpoint best")
        loaded = task_of(prepared).load_model(prepared, model, seed=summary["train_seed"], adapter=path, device=device,
                                              gradient_checkpointing=gradient_checkpointing)
        return loaded, model

    def test_logits(self):
        """The best checkpoint's per-example logits (SFT: loss summaries) of the test split; None when absent (an
        imported adapter, or a stage made by an older layerinf)."""
        path = self.path / TEST_LOGITS_FILE
        return np.load(path) if path.is_file() else None

    def objective(self, prepared):
        """The loss the model was fine-tuned with (``engine.objectives``), for its gradients and retrainings."""
        return task_of(prepared).objective({"loss_reduction": self.summary().get("loss_reduction", "mean")})

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    def load(self) -> FinetuneOutput:
        summary = self.summary()
        return FinetuneOutput(
            folder=self.path,
            history=pd.read_parquet(self.path / table_file(HISTORY)),
            best_epoch=summary["best_epoch"],
            best_accuracy=summary["best_accuracy"],
            accuracy_at_best_epoch=summary["accuracy_at_best_epoch"],
        )


class AdapterStage(FinetuneStage):
    """The ``finetune`` folder filled from a user's trained adapter (no training)."""

    artifacts = (adapter_file("best"), INFL_LOGITS_FILE, table_file(HISTORY), table_file(HISTORY, "csv"))

    def key(self, model: ModelConfig, adapter: Path) -> dict:
        from layerinf.model import adapter_fingerprint

        # "import": 2 — the layout of imports since PEFT adapters without a head get one (older imports redone)
        return {"model": model_key(model), "adapter": str(adapter), "adapter_sha256": adapter_fingerprint(adapter),
                "import": 2}

    def seed(self, model: ModelConfig, adapter: Path) -> int:
        return int(self.run_dir.stage_info(DATA)["seed"] or 0)

    def compute(self, st, model: ModelConfig, adapter: Path, *, inputs, progress=True, device="cpu"):
        from layerinf.engine.train import evaluate
        from layerinf.model import save_adapter, trainable_state

        prepared = inputs[DATA]
        task = task_of(prepared)
        seed = self.seed(model, adapter)
        loaded = task.import_model(prepared, model, adapter, seed=seed, device=device)
        enc = task.encode(prepared, loaded.tokenizer, model)
        objective = task.objective()  # SFT: the mean response loss (an imported adapter has no recipe)
        save_adapter(trainable_state(loaded.model), st.out(adapter_file("best")),
                     {"model": model.name, "imported_from": Path(adapter).name, **lora_metadata(loaded.config)})
        infl_loss, infl_acc, infl_logits = evaluate(loaded.model, enc["infl"], self.runtime.eval_batch_size, objective)
        test_loss, test_acc, _ = evaluate(loaded.model, enc["test"], self.runtime.eval_batch_size, objective)
        np.save(st.out(INFL_LOGITS_FILE), infl_logits)
        history = pd.DataFrame([{"epoch": 0, "train_loss": float("nan"), "infl_loss": infl_loss, "infl_acc": infl_acc,
                                 "test_loss": test_loss, "test_acc": test_acc, "lr": 0.0}])
        history.to_parquet(st.out(table_file(HISTORY)), index=False)
        history.to_csv(st.out(table_file(HISTORY, "csv")), index=False)
        health = None
        if task.judged(prepared):
            health = health_check(infl_acc, enc["infl"].labels, test_acc, enc["test"].labels)
        return {"best_epoch": 0, "best_accuracy": test_acc, "accuracy_at_best_epoch": test_acc, "lr": None,
                "model": asdict(loaded.config), "train_seed": seed, "imported": True, "health": health,
                **task.recipe_fields(getattr(objective, "reduction", None))}


def run_objective(run_dir, prepared):
    """The loss the run's model was fine-tuned with (``engine.objectives``), for its gradients and retrainings."""
    return FinetuneStage(run_dir).objective(prepared)


def load_finetuned(run_dir, checkpoint: str = "best", device: str = "cpu", *, gradient_checkpointing: bool = False):
    """The run's model with the chosen adapter (init | best | last) loaded, its data and model config
    (``gradient_checkpointing``: recompute activations in the backward pass; the same gradients)."""
    stage = FinetuneStage(run_dir)
    stage.run_dir.require(FINETUNE)
    prepared = load_data(run_dir)
    loaded, model = stage.model(prepared, checkpoint, device, gradient_checkpointing=gradient_checkpointing)
    return loaded, prepared, model
