"""Fine-tune a LoRA classifier, pick the influence checkpoint, and retrain from the same start on a subset.

The recipe follows the paper (spec §9): AdamW (torch defaults), cosine schedule with 10 % warm-up, batch 32;
after every epoch the loss and accuracy on the influence and test splits are measured. The influence
checkpoint is the epoch with the lowest mean influence-set loss (ties → the later epoch).

Out of device memory (``engine.memory``), a training batch is not made smaller: it is cut into micro-batches
of half the size whose gradients are accumulated — each micro-batch's mean loss weighted by its share of the
batch — before the one optimiser step, so the effective batch, the number of steps, the learning-rate
schedule and the reported training loss are those of the recipe (equal up to float rounding). The batch is
collated once and sliced, so micro-batches keep the batch's padding and positions. The failed step is
redone from its start (gradients cleared, RNG state restored) and the micro-batch size is kept for the rest
of the run; at batch size 1 the run stops with a LayerinfError. With dropout (LoRA dropout, the base's own),
a split batch draws its masks in a different order, so such a run is as random as the original but not
identical to it. Evaluation passes halve their batch as collection does (per-sample results are unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from layerinf.config import TrainConfig
from layerinf.engine.batching import EncodedSplit, model_inputs
from layerinf.engine.memory import free_memory, halve, is_oom
from layerinf.engine.objectives import CLASSIFICATION, Classification, Objective
from layerinf.errors import LayerinfError, raise_if_interrupted
from layerinf.model import set_gradient_checkpointing, trainable_state


@dataclass
class FitResult:
    """What one training run produced: per-epoch history and the init / best / last trainable states."""

    history: pd.DataFrame  # epoch, train_loss, infl_loss, infl_acc, test_loss, test_acc, lr
    init_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    last_state: dict[str, torch.Tensor]
    best_epoch: int
    best_infl_logits: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    best_test_logits: np.ndarray | None = None  # the test split's logits at the best epoch (out of sample)

    @property
    def epochs(self) -> int:
        """Epochs trained (``epochs_for``: more than the recipe's on small data when it sets ``min_steps``)."""
        return int(self.history["epoch"].max()) if len(self.history) else 0

    @property
    def best_accuracy(self) -> float:
        """Maximum test accuracy over epochs (what the paper reports; optimistic, spec §6.5)."""
        return float(self.history["test_acc"].max())

    @property
    def accuracy_at_best_epoch(self) -> float:
        """Test accuracy at the lowest influence-loss epoch (honest counterpart)."""
        return float(self.history.loc[self.history["epoch"] == self.best_epoch, "test_acc"].iloc[0])


def evaluate(model, encoded: EncodedSplit, batch_size: int = 64,
             objective: Objective | None = None) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and logits (in split order) of ``model`` on a split, in eval mode (classification:
    cross-entropy, accuracy, logits; SFT: mean response loss, exact match, per-example summaries)."""
    from layerinf.engine.collect import predictions

    objective = objective or CLASSIFICATION
    logits = predictions(model, encoded, batch_size, objective=objective)
    loss, acc = objective.metrics(logits, encoded)
    return loss, acc, logits


def cosine_with_warmup(optimizer, total_steps: int, warmup: float):
    """Linear warm-up over ``warmup`` of the steps, then cosine decay to 0 (transformers' schedule)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, int(round(warmup * total_steps)), total_steps)


def schedule_lrs(lr: float, total_steps: int, warmup: float) -> np.ndarray:
    """The learning rate of each optimiser step of :func:`fit` (``total_steps`` values, step 0 first): the
    same scheduler object as training, stepped on a dummy parameter."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = cosine_with_warmup(optimizer, total_steps, warmup)
    out = np.empty(max(0, int(total_steps)), dtype=np.float64)
    for step in range(len(out)):
        out[step] = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
    return out


def checkpoint_lr(checkpoint: str, *, lr: float, steps_per_epoch: int, epochs: int, warmup: float,
                  best_epoch: int) -> float:
    """η_c of TracInCP for a saved checkpoint of :func:`fit` (``init | best | last``).

    ``best`` (saved after epoch ``best_epoch``) and ``last`` (after the final epoch): the MEAN learning rate over
    the optimiser steps of the epoch that produced the checkpoint — the step size that carried training to it.
    The rate at the checkpoint's own step is not used: the cosine schedule ends at 0, so ``last`` would always
    weigh nothing. ``init`` (no step taken yet; the warm-up starts at 0): the peak learning rate ``lr``.
    """
    if checkpoint == "init":
        return float(lr)
    epoch = {"best": best_epoch, "last": epochs}.get(checkpoint)
    if epoch is None:
        raise LayerinfError(f"unknown checkpoint '{checkpoint}'", "use init, best or last")
    if steps_per_epoch < 1 or not 1 <= epoch <= epochs:
        raise LayerinfError(f"checkpoint '{checkpoint}' (epoch {epoch}) is not an epoch of a {epochs}-epoch run",
                            "refit: layerinf finetune RUN --force")
    lrs = schedule_lrs(lr, steps_per_epoch * epochs, warmup)
    return float(lrs[(epoch - 1) * steps_per_epoch: epoch * steps_per_epoch].mean())


def epochs_for(recipe: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs of a training run: the recipe's, or more when its ``min_steps`` (a budget in optimiser steps, for
    small data) needs more: ``max(epochs, ⌈min_steps / steps_per_epoch⌉)``."""
    min_steps = getattr(recipe, "min_steps", None)
    if not min_steps or steps_per_epoch < 1:
        return int(recipe.epochs)
    return max(int(recipe.epochs), -(-int(min_steps) // int(steps_per_epoch)))


def fit(
    model,
    train: EncodedSplit,
    infl: EncodedSplit,
    test: EncodedSplit,
    recipe: TrainConfig,
    *,
    lr: float,
    seed: int,
    rows: np.ndarray | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    gradient_checkpointing: bool | None = None,
    objective: Objective | None = None,
    eval_batch_size: int = 64,
) -> FitResult:
    """Train the trainable (LoRA + head) parameters of ``model`` on ``train`` (optionally only ``rows``).

    ``recipe`` holds epochs, batch size, weight decay and warm-up; ``lr`` and ``seed`` are resolved by the
    caller (per-model default learning rate, data seed). ``init_state`` restores the trainable tensors first
    (retraining from the same start). Deterministic given ``seed``: the shuffling and dropout streams are seeded.
    Batches run on the model's device. ``gradient_checkpointing`` True/False turns the base model's
    checkpointing on/off first (None: as loaded). Out of memory: gradient accumulation (module docstring).
    ``objective`` (``engine.objectives``): the loss, default classification; training minimises the batch mean
    of its per-example losses, and the influence checkpoint is picked by its mean influence-set loss.
    ``eval_batch_size``: the batch of the evaluation passes after each epoch (``RuntimeConfig``: speed only).
    """
    objective = objective or CLASSIFICATION
    if rows is not None and len(rows) == 0:
        raise LayerinfError("nothing left to train on after filtering", "remove a smaller fraction")
    if gradient_checkpointing is not None:
        set_gradient_checkpointing(model, gradient_checkpointing)
    if init_state is not None:
        _load_state(model, init_state)
    init = trainable_state(model)
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = train.num_batches(recipe.batch_size, rows)
    epochs = epochs_for(recipe, steps_per_epoch)
    scheduler = cosine_with_warmup(optimizer, steps_per_epoch * epochs, recipe.warmup)

    device = next(model.parameters()).device
    micro = recipe.batch_size  # micro-batch size: the batch size until memory runs out (module docstring)
    history, best_loss, best_epoch = [], math.inf, 0
    best_state, best_logits, best_test = init, None, None
    same_test = test is infl or (len(test) == len(infl) and np.array_equal(test.labels, infl.labels)
                                 and test.features == infl.features)
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        bar = tqdm(
            train.batches(recipe.batch_size, shuffle=True, generator=rng, rows=rows),
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for batch in bar:
            raise_if_interrupted()
            size = len(batch["labels"])
            while True:
                saved_rng = _rng_state(device)
                batch_loss = None
                try:
                    batch_loss = _forward_backward(model, optimizer, batch, micro, device, epoch, objective)
                except Exception as exc:  # noqa: BLE001 — only out-of-memory errors are handled
                    if not is_oom(exc):
                        raise
                if batch_loss is not None:
                    break
                optimizer.zero_grad(set_to_none=True)  # redo the whole step from its start
                _set_rng_state(device, saved_rng)
                free_memory(device)
                micro = halve(min(micro, size), device,
                              f" (gradients of micro-batches accumulated over the batch of {size})")
            optimizer.step()
            scheduler.step()
            total += batch_loss
            count += size
            bar.set_postfix(loss=f"{total / count:.4f}")
        infl_loss, infl_acc, infl_logits = evaluate(model, infl, eval_batch_size, objective)
        if same_test:  # cross-fitting's held-out fold is both splits: one pass
            test_loss, test_acc, test_logits = infl_loss, infl_acc, infl_logits
        else:
            test_loss, test_acc, test_logits = evaluate(model, test, eval_batch_size, objective)
        row = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "infl_loss": infl_loss,
            "infl_acc": infl_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": scheduler.get_last_lr()[0],
        }
        history.append(row)
        if infl_loss <= best_loss:  # ties → the later epoch
            best_loss, best_epoch = infl_loss, epoch
            best_state, best_logits, best_test = trainable_state(model), infl_logits, test_logits
        if on_epoch is not None:
            on_epoch(row)
    return FitResult(pd.DataFrame(history), init, best_state, trainable_state(model), best_epoch, best_logits,
                     best_test_logits=best_test)


def _forward_backward(model, optimizer, batch: dict[str, torch.Tensor], micro: int, device: torch.device,
                      epoch: int, objective: Objective = CLASSIFICATION) -> float:
    """Gradients of the batch's mean loss, in micro-batches of ``micro`` rows; returns the summed loss."""
    batch = {k: v.to(device) for k, v in batch.items()}
    size = len(batch["labels"])
    if micro >= size:  # the recipe's step, exactly
        pieces = [(batch, 1.0)]
    else:
        pieces = [({k: v[lo : lo + micro] for k, v in batch.items()}, min(micro, size - lo) / size)
                  for lo in range(0, size, micro)]
    total = 0.0
    optimizer.zero_grad(set_to_none=True)
    for piece, share in pieces:
        piece_labels = piece["labels"]
        if isinstance(objective, Classification):
            inputs = model_inputs(piece)
        else:  # left-padded decoder batches get the positions collection gives them (engine.collect.forward_inputs)
            from layerinf.engine.collect import forward_inputs

            inputs = forward_inputs(model, piece, device)
        logits = model(**inputs, **objective.forward_kwargs(piece)).logits
        if isinstance(objective, Classification):  # the recipe's loss, exactly as before objectives existed
            loss = F.cross_entropy(logits.float(), piece_labels)
        else:
            loss = objective.per_sample(logits, piece).float().mean()
        if not torch.isfinite(loss):
            raise LayerinfError(
                f"training loss became {loss.item()} at epoch {epoch}", "lower the learning rate (--lr)"
            )
        (loss if share == 1.0 else loss * share).backward()
        total += loss.item() * len(piece_labels)
    return total


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def _load_state(model, state: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        raise LayerinfError("initial state does not fit this model", "use the same --model and LoRA settings")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])
