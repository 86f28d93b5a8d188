"""What kind of task a run holds, and the three things that depend on it: the model, the tokenised splits and
the loss.

* classification (the paper's setting): a sequence classifier with LoRA and a head, ``encode_split``, and
  cross-entropy on the label;
* ``sft`` (instruction tuning, ``data.task_type: sft``): a causal LM with LoRA (``model.causal``),
  ``encode_sft`` (prompt capped by ``model.max_length`` from the left, response by
  ``model.max_response_length``, chat template per ``model.chat_template``) and the response-token loss
  (``engine.objectives.ResponseLoss``, mean or sum per ``train.loss_reduction``).

The stages (finetune, grads, score, eval) call these and are otherwise the same for both.
"""

from __future__ import annotations

from layerinf.config import ModelConfig, TrainConfig


def is_sft(prepared) -> bool:
    """True for instruction data (``data.sft_prepared.SFTPrepared``)."""
    return getattr(prepared, "task", None) == "sft" and hasattr(prepared, "class_words")


def load_model(prepared, model: ModelConfig, *, seed: int, device="cpu", adapter=None,
               gradient_checkpointing: bool = False):
    """The LoRA model for this run's task (``LoadedModel``), with an optional saved adapter."""
    if is_sft(prepared):
        from layerinf.model.causal import load_causal_lm

        return load_causal_lm(model, seed=seed, adapter=adapter, device=device,
                              gradient_checkpointing=gradient_checkpointing)
    from layerinf.model import load_classifier

    return load_classifier(model, len(prepared.label_names), seed=seed, adapter=adapter, device=device,
                           gradient_checkpointing=gradient_checkpointing)


def import_model(prepared, model: ModelConfig, adapter, *, seed: int, device="cpu"):
    """The run's model with a user's trained adapter (a layerinf file or a PEFT folder) for this task."""
    if is_sft(prepared):
        from layerinf.model.causal import import_causal_adapter

        return import_causal_adapter(model, adapter, seed=seed, device=device)
    from layerinf.model import import_adapter

    return import_adapter(model, adapter, len(prepared.label_names), seed=seed, device=device)


def encode_splits(prepared, tokenizer, model: ModelConfig | int) -> dict:
    """The train / infl / test splits tokenised for the task (``model``: the model section, or for
    classification just its ``max_length``)."""
    if is_sft(prepared):
        from layerinf.engine.sft_batching import encode_sft

        return {name: encode_sft(getattr(prepared, name), tokenizer, max_prompt_length=model.max_length,
                                 max_response_length=model.max_response_length, chat_template=model.chat_template,
                                 class_words=prepared.class_words)
                for name in ("train", "infl", "test")}
    from layerinf.engine.batching import encode_split

    max_length = model if isinstance(model, int) else model.max_length
    return {name: encode_split(getattr(prepared, name), tokenizer, max_length) for name in ("train", "infl", "test")}


def objective(prepared, train: TrainConfig | dict | None = None):
    """The loss of the run's task (``engine.objectives``)."""
    from layerinf.engine.objectives import CLASSIFICATION, ResponseLoss

    if not is_sft(prepared):
        return CLASSIFICATION
    reduction = (train.get("loss_reduction") if isinstance(train, dict) else getattr(train, "loss_reduction", None))
    return ResponseLoss(reduction or "mean")


def correct(prepared, logits, labels):
    """Which examples the model gets right, from a store's or an evaluation's per-example summaries:
    classification: the argmax is the label; SFT: greedy decoding reproduces the response."""
    import numpy as np

    logits = np.asarray(logits)
    if is_sft(prepared):
        return logits[:, 1] > 0.5
    return logits.argmax(1) == np.asarray(labels)


__all__ = ["correct", "encode_splits", "import_model", "is_sft", "load_model", "objective"]
