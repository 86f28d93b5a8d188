"""What a model is trained on and what each example's loss is: classification or instruction tuning (SFT).

An ``Objective`` turns a model's logits and a collated batch into

* ``per_sample(logits, batch)`` — each example's own loss, a ``(B,)`` float32 (at least) tensor: the loss
  whose per-sample gradients are collected and whose batch mean is trained on;
* ``summary(logits, batch)`` — a small ``(B, k)`` float32 tensor kept per example in evaluation passes and
  gradient stores (classification: the logits; SFT: ``[response loss, greedy match]``);
* ``metrics(summary, encoded)`` — the split's mean loss and accuracy from those summaries.

``Classification`` (the paper's setting): cross-entropy of the class logits on the example's label.

``ResponseLoss`` (SFT, causal-LM LoRA): the loss covers the response tokens only. A collated batch carries
``token_labels`` (B, T): the token id at response positions, -100 on prompt and padding positions. As in
Hugging Face's causal-LM loss, the logits at position ``t`` predict token ``t + 1``: the per-token
cross-entropy is taken between ``logits[:, :-1]`` and ``token_labels[:, 1:]`` (in float32), and each example's
loss is the **mean over its response tokens** (``reduction="mean"``, the default) or their sum (``"sum"``).
The mean is the default because it makes examples of different response lengths comparable — a long
response would otherwise dominate every gradient norm, so every influence score, simply by its length — and
because for one-word answers it equals the classification loss of that word. Training minimises the batch
mean of these per-example losses, so a training example's gradient is the gradient of its own loss.

"Greedy match" is 1.0 when the model's most likely token equals the response token at every response position
(teacher forcing): exactly when greedy decoding from the prompt would produce the response. It is the SFT
counterpart of a correct prediction (accuracy = exact match; the ``use_correct`` validation filter keeps the
examples that match).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from layerinf.engine.batching import IGNORE_INDEX
from layerinf.errors import LayerinfError

REDUCTIONS = ("mean", "sum")


class Objective(Protocol):
    name: str

    def forward_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def per_sample(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def summary(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def loss_and_summary(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def metrics(self, summary: np.ndarray, encoded) -> tuple[float, float]: ...


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class Classification:
    """Cross-entropy of each example's class logits on its own label (at least float32)."""

    name = "classification"

    def forward_kwargs(self, batch: dict[str, torch.Tensor]) -> dict:
        return {}

    def per_sample(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["labels"].to(logits.device)
        return F.cross_entropy(logits.to(_loss_dtype(logits.dtype)), labels, reduction="none")

    def summary(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return logits

    def loss_and_summary(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]):
        """``per_sample`` and ``summary`` together (gradient collection needs both)."""
        return self.per_sample(logits, batch), logits.detach()

    def metrics(self, summary: np.ndarray, encoded) -> tuple[float, float]:
        labels = np.asarray(encoded.labels)
        loss = F.cross_entropy(torch.from_numpy(summary), torch.tensor(labels)).item()
        return loss, float((summary.argmax(1) == labels).mean())


class ResponseLoss:
    """Each example's next-token cross-entropy over its response tokens (module docstring)."""

    name = "response_loss"

    def __init__(self, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise LayerinfError(f"unknown loss reduction '{reduction}'", f"use one of {', '.join(REDUCTIONS)}")
        self.reduction = reduction

    @staticmethod
    def _labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "token_labels" not in batch:
            raise LayerinfError("the batch has no token_labels (response tokens)",
                                "encode instruction data with layerinf.engine.sft_batching.encode_sft")
        return batch["token_labels"]

    def positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The positions whose logits the loss reads: ``t`` where some example has a response token at
        ``t + 1`` (sorted)."""
        labels = self._labels(batch)
        return torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(0)).flatten()

    def forward_kwargs(self, batch: dict[str, torch.Tensor]) -> dict:
        """``logits_to_keep``: the LM head runs on the loss's positions only (prompt and padding positions are
        never projected onto the vocabulary: far less time and memory with long prompts)."""
        return {"logits_to_keep": self.positions(batch)}

    def token_losses(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]):
        """Per-position losses ``(B, K)`` (0 where masked), the response mask and the greedy hits, at the K
        positions of ``positions(batch)``. ``logits`` may hold all T positions or just those K."""
        labels = self._labels(batch).to(logits.device)
        keep = self.positions(batch).to(logits.device)
        pred = logits[:, keep] if logits.shape[1] == labels.shape[1] else logits  # all T, or the K kept
        target = labels[:, keep + 1]
        mask = target != IGNORE_INDEX
        losses = pred.new_zeros(target.shape, dtype=_loss_dtype(pred.dtype))
        if bool(mask.any()):  # the cross-entropy over the vocabulary only where a response token is predicted
            losses = losses.masked_scatter(mask, F.cross_entropy(pred[mask].to(losses.dtype), target[mask],
                                                                 reduction="none"))
        hits = (pred.detach().argmax(-1) == target) | ~mask
        return losses, mask, hits

    def per_sample(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._reduce(*self.token_losses(logits, batch)[:2])

    def _reduce(self, losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = losses.sum(1)
        if self.reduction == "sum":
            return total
        count = mask.sum(1)
        if bool((count == 0).any()):
            raise LayerinfError("an example has no response tokens", "every example needs a non-empty response")
        return total / count.to(total.dtype)

    def loss_and_summary(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]):
        """``per_sample`` and ``summary`` from one pass over the vocabulary (gradient collection needs both)."""
        losses, mask, hits = self.token_losses(logits, batch)
        loss = self._reduce(losses, mask)
        return loss, torch.stack([loss.detach().float(), hits.all(1).float()], 1)

    def summary(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[loss, greedy match]`` per example (float32)."""
        with torch.no_grad():
            return self.loss_and_summary(logits, batch)[1]

    def metrics(self, summary: np.ndarray, encoded) -> tuple[float, float]:
        return float(summary[:, 0].mean()), float(summary[:, 1].mean())


CLASSIFICATION = Classification()


OBJECTIVES = {"classification": lambda reduction: CLASSIFICATION, "sft": ResponseLoss}  # by task type


def objective_for(task: str | None, reduction: str = "mean") -> Objective:
    """The objective of a task type (``OBJECTIVES``; None: classification)."""
    make = OBJECTIVES.get("classification" if task is None else task)
    if make is None:
        raise LayerinfError(f"unknown task type '{task}'", f"use one of: {', '.join(OBJECTIVES)}")
    return make(reduction)


__all__ = ["CLASSIFICATION", "Classification", "IGNORE_INDEX", "Objective", "REDUCTIONS", "ResponseLoss",
           "objective_for"]
