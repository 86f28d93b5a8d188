"""What a run's task is, and everything that depends on it: one ``Task`` object per task, asked by every stage.

* ``ClassificationTask`` (the paper's setting): labelled text; a sequence classifier with LoRA and a head,
  ``engine.batching.encode_split``, cross-entropy on the label, "correct" = the argmax is the label;
* ``InstructionTask`` (``data.task_type: sft``): prompt/response or chat rows (``data.sft``, ``data.sft_prepared``);
  a causal LM with LoRA (``model.causal``), ``engine.sft_batching.encode_sft`` (prompt capped by
  ``model.max_length`` from the left, response by ``model.max_response_length``, chat template per
  ``model.chat_template``), the response-token loss (``engine.objectives.ResponseLoss``, mean or sum per
  ``train.loss_reduction``), "correct" = greedy decoding reproduces the response.

A task prepares, saves and loads the data stage's splits, checks its inputs before anything is written, loads the
model (adapters and quantisation included), encodes the splits, gives the objective and "correct", and builds the
suspects table. ``task_for(data_config)`` (what a run will hold), ``task_of(prepared)`` (what it holds),
``task_named(name)`` (what a summary recorded) and ``task_in_folder(data_folder)`` find it; nothing outside the
task modules branches on the task's name (``tests/test_tasks.py``). Cross-fitting's fold plans live in
``stages.task_folds``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

from layerinf.config import DataConfig, ModelConfig, TrainConfig

SFT_SOURCES = ("demo-sft", "demo_sft")  # the built-in instruction demo (built from the shipped demo file)


class Task:
    """One kind of training data and model. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]  # what the data stage's summary and a suspects summary record (``task_type``)
    class_probabilities: ClassVar[bool]  # rows have class labels and probabilities: label flips (probes), the noise
    # estimate, the embedding and out-of-sample rankings
    step_budget: ClassVar[bool]  # the small-data recipe's step budget (``min_steps``) applies
    planted: ClassVar[str]  # what the advisor's probes plant
    no_noise_estimate: ClassVar[str | None] = None  # why the advisor never estimates the noise rate (None: it can)

    # ------------------------------------------------------------------ data
    def prepare(self, cfg: DataConfig, *, noise_rate: float | None = None, raw=None):
        """The data section's splits, with its noise (``noise_rate`` overrides it; ``raw``: the source, loaded)."""
        raise NotImplementedError

    def save(self, prepared, folder) -> None:
        raise NotImplementedError

    def load(self, folder):
        raise NotImplementedError

    def data_summary(self, prepared) -> dict:
        """The data stage's summary."""
        return {"train": len(prepared.train), "infl": len(prepared.infl), "test": len(prepared.test),
                "noisy": int(prepared.train["noisy"].sum()), "labels": list(prepared.label_names)}

    def check_data(self, data: DataConfig, model: ModelConfig):
        """Pre-write checks of the source as fine-tuning will read it; returns the loaded source (or None)."""
        return None

    def check_model(self, model: ModelConfig, adapter=None) -> None:
        """Pre-write checks that the model (and a user's adapter) fit the task."""

    def check_quantization(self, model: ModelConfig) -> None:
        """Refuse a quantisation the task's loader does not apply."""

    def plan_folds(self, data: DataConfig, folds: int, raw=None) -> dict | None:
        """Cross-fitting: the rows taking part cut into folds (``FoldPlan``'s fields), or None when the source
        brings its own dev part (``stages.task_folds``; ``raw``: the source, loaded)."""
        raise NotImplementedError

    def prepare_fold(self, plan, train, dev, info: dict, cfg: DataConfig):
        """Cross-fitting: one fold's splits (train = ``train``, influence = test = ``dev``, ≤ ``max_dev``)."""
        raise NotImplementedError

    def advice_context(self, load_probe) -> dict:
        """What the advisor's page records about the task (``load_probe()``: a probe's prepared data)."""
        return {}

    def probe_text(self, rate: float, noise_kind: str | None) -> str:
        """What each of the advisor's probes planted (plain text)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ model
    def load_model(self, prepared, model: ModelConfig, *, seed: int, device="cpu", adapter=None,
                   gradient_checkpointing: bool = False):
        """The LoRA model for this task (``LoadedModel``), with an optional saved adapter."""
        raise NotImplementedError

    def import_model(self, prepared, model: ModelConfig, adapter, *, seed: int, device="cpu"):
        """The model with a user's trained adapter (a layerinf file or a PEFT folder)."""
        raise NotImplementedError

    def encode(self, prepared, tokenizer, model: ModelConfig | int) -> dict:
        """The train / infl / test splits tokenised (``model``: the model section, or for classification its
        ``max_length``)."""
        raise NotImplementedError

    def objective(self, train: TrainConfig | dict | None = None):
        """The loss (``engine.objectives``)."""
        raise NotImplementedError

    def recipe_fields(self, reduction: str | None) -> dict:
        """What the finetune summary records beside the recipe (SFT: the loss reduction)."""
        return {}

    def correct(self, logits, labels):
        """Which examples the model gets right, from a store's or an evaluation's per-example summaries."""
        raise NotImplementedError

    def judged(self, prepared) -> bool:
        """Whether accuracy can be judged against a majority class (the health check)."""
        return True

    def labels_match(self, store_labels, prepared) -> bool:
        """Whether a gradient store's labels are the training split's."""
        return len(store_labels) == len(prepared.train)

    def retrain_fields(self, unit: dict) -> dict:
        """Extra columns of a retraining's result row."""
        return {}

    # ------------------------------------------------------------------ suspects
    def suspects_table(self, train, label_names, scores, store, top: float, mask_known: bool):
        """Every training row ranked by ``scores`` (``store``: the training gradient store: logits, losses)."""
        raise NotImplementedError

    def suspects_summary(self, result) -> dict:
        """What a suspects summary records for this task."""
        return {}

    def summary_rows(self, head, short, width: int):
        """The one-screen summary of the ``head`` rows (``short(text, pair[, width])`` shortens a text)."""
        raise NotImplementedError

    @property
    def page(self):
        """The suspects page's task-specific parts (``rank_page``)."""
        raise NotImplementedError


class ClassificationTask(Task):
    name = "classification"
    class_probabilities = True
    step_budget = True
    planted = "planted flips"

    def probe_text(self, rate, noise_kind):
        return (f"Each probe flipped {rate:.0%} of the training labels (uniformly among the training examples, "
                "whatever their label)")

    def prepare(self, cfg: DataConfig, *, noise_rate: float | None = None, raw=None):
        from layerinf import data as data_mod

        return data_mod.prepare(
            cfg.source if raw is None else raw, task=cfg.task, text_column=cfg.text_column,
            text_pair_column=cfg.text_pair_column, label_column=cfg.label_column, dev_source=cfg.dev_source,
            label_names=cfg.label_names, max_train=cfg.max_train, max_dev=cfg.max_dev,
            noise_rate=cfg.noise_rate if noise_rate is None else noise_rate, seed=cfg.seed,
            # an explicit noise_rate (a probe's planted flips) is uniform; the data section's kind otherwise
            **({"noise_kind": cfg.noise_kind, "noise_rates": cfg.noise_rates} if noise_rate is None else {}))

    def save(self, prepared, folder) -> None:
        from layerinf import data as data_mod

        data_mod.save_prepared(prepared, folder)

    def load(self, folder):
        from layerinf import data as data_mod

        return data_mod.load_prepared(folder)

    def plan_folds(self, data: DataConfig, folds: int, raw=None) -> dict | None:
        from layerinf.stages.task_folds import classification_folds

        return classification_folds(data, folds)

    def prepare_fold(self, plan, train, dev, info: dict, cfg: DataConfig):
        from layerinf import data as data_mod
        from layerinf.data import RawData

        raw = RawData(train=train, dev=dev, label_names=plan.label_names, task=plan.task, source=plan.source,
                      info=info)
        prepared = data_mod.prepare(raw, max_train=None, max_dev=cfg.max_dev, noise_rate=0.0, seed=cfg.seed,
                                    infl_equals_test=True)
        if len(prepared.test) < len(dev):  # the test split holds every held-out row: out-of-sample probabilities
            prepared.test = data_mod.prepare(raw, max_train=None, max_dev=None, noise_rate=0.0, seed=cfg.seed,
                                             infl_equals_test=True).test
        return prepared

    def load_model(self, prepared, model, *, seed, device="cpu", adapter=None, gradient_checkpointing=False):
        from layerinf.model import load_classifier

        return load_classifier(model, len(prepared.label_names), seed=seed, adapter=adapter, device=device,
                               gradient_checkpointing=gradient_checkpointing)

    def import_model(self, prepared, model, adapter, *, seed, device="cpu"):
        from layerinf.model import import_adapter

        return import_adapter(model, adapter, len(prepared.label_names), seed=seed, device=device)

    def encode(self, prepared, tokenizer, model):
        from layerinf.engine.batching import encode_split

        max_length = model if isinstance(model, int) else model.max_length
        return {name: encode_split(getattr(prepared, name), tokenizer, max_length)
                for name in ("train", "infl", "test")}

    def objective(self, train=None):
        from layerinf.engine.objectives import CLASSIFICATION

        return CLASSIFICATION

    def correct(self, logits, labels):
        import numpy as np

        return np.asarray(logits).argmax(1) == np.asarray(labels)

    def labels_match(self, store_labels, prepared) -> bool:
        import numpy as np

        return super().labels_match(store_labels, prepared) and bool(
            np.array_equal(np.asarray(store_labels), prepared.train["label"].to_numpy()))

    def suspects_table(self, train, label_names, scores, store, top, mask_known):
        from layerinf.stages.suspects_table import build_table

        return build_table(train, label_names, scores, store.logits, top, mask_known)

    def suspects_summary(self, result) -> dict:  # classification summaries have no task key (older ones match)
        t = result.table
        return {"suspects_disagreeing": int((t["suspect"] & (t["given_label"] != t["predicted_label"])).sum())}

    def summary_rows(self, head, short, width):
        import pandas as pd

        return pd.DataFrame({
            "rank": head["rank"].to_numpy(),
            "row": head["source_idx"].to_numpy(),  # the row in the user's file
            "given": head["given_label"].to_numpy(),
            "predicted": head["predicted_label"].to_numpy(),
            "p(given)": head["probability"].round(3).to_numpy(),
            "score": head["score"].to_numpy(),
            "text": [short(a, b) for a, b in zip(head["text"], head["text_pair"])],
        })

    @property
    def page(self):
        from layerinf.stages.rank_page import CLASSIFICATION_PAGE

        return CLASSIFICATION_PAGE


class InstructionTask(Task):
    name = "sft"
    class_probabilities = False
    step_budget = False
    planted = "planted responses"
    no_noise_estimate = "instruction data"

    @staticmethod
    def _source(cfg: DataConfig):
        return "demo-sft" if cfg.source in SFT_SOURCES else cfg.source

    def load_raw(self, cfg: DataConfig):
        """The source loaded whole (``data.sft.load_sft``: one-line errors for bad input)."""
        from layerinf.data.sft import load_sft

        return load_sft(self._source(cfg), prompt_column=cfg.prompt_column, response_column=cfg.response_column,
                        messages_column=cfg.messages_column, dev_source=cfg.dev_source, seed=cfg.seed)

    def prepare(self, cfg: DataConfig, *, noise_rate: float | None = None, raw=None):
        from layerinf.data.sft_prepared import prepare_sft

        return prepare_sft(self._source(cfg) if raw is None else raw, prompt_column=cfg.prompt_column,
                           response_column=cfg.response_column, messages_column=cfg.messages_column,
                           dev_source=cfg.dev_source, max_train=cfg.max_train, max_dev=cfg.max_dev,
                           noise_rate=cfg.noise_rate if noise_rate is None else noise_rate,
                           noise_kind=cfg.noise_kind, seed=cfg.seed)

    def save(self, prepared, folder) -> None:
        from layerinf.data.sft_prepared import save_sft_prepared

        save_sft_prepared(prepared, folder)

    def load(self, folder):
        from layerinf.data.sft_prepared import load_sft_prepared

        return load_sft_prepared(folder)

    def data_summary(self, prepared) -> dict:
        return {**super().data_summary(prepared), "task_type": self.name, "noise_kind": prepared.meta.get("noise_kind")}

    def check_data(self, data: DataConfig, model: ModelConfig):
        """The source loaded whole (``load_sft``'s one-line errors: no response column, empty responses …) and
        every row tokenised as fine-tuning will (a chat template asked for but missing, a response that tokenises
        to nothing). Returns the loaded ``SFTRaw``."""
        import pandas as pd

        from layerinf.data.sft import SFTRaw
        from layerinf.data.sft_prepared import prepare_sft_fold
        from layerinf.model import load_tokenizer

        raw = self.load_raw(data)
        rows = pd.concat([raw.train, raw.dev], ignore_index=True)
        whole = prepare_sft_fold(SFTRaw(train=rows, dev=raw.dev, source=raw.source, info=raw.info), max_dev=None)
        self.encode(whole, load_tokenizer(model.name, trust_remote_code=model.trust_remote_code), model)
        return raw

    def check_model(self, model: ModelConfig, adapter=None) -> None:
        from layerinf.model.causal import check_causal_adapter, check_causal_model

        check_causal_model(model)
        if adapter is not None:
            check_causal_adapter(adapter)

    def check_quantization(self, model: ModelConfig) -> None:
        from layerinf.errors import LayerinfError

        if model.quantization != "none":
            raise LayerinfError("model.quantization is not supported for instruction (SFT) data yet",
                                "use --quantization none (and --precision bf16 to save memory)")

    def plan_folds(self, data: DataConfig, folds: int, raw=None) -> dict | None:
        from layerinf.stages.task_folds import instruction_folds

        return instruction_folds(data, folds, self.load_raw(data) if raw is None else raw)

    def prepare_fold(self, plan, train, dev, info: dict, cfg: DataConfig):
        from layerinf.data.sft import SFTRaw
        from layerinf.data.sft_prepared import prepare_sft_fold

        return prepare_sft_fold(SFTRaw(train=train, dev=dev, source=plan.source, info=info), max_dev=cfg.max_dev,
                                seed=cfg.seed)

    def probe_text(self, rate, noise_kind):
        how = {"label": "the answer word replaced by another class's", "swap": "another training example's response"}
        return (f"Each probe re-prepared your instruction data with its own seed and replaced {rate:.0%} of the "
                f"training responses ({how.get(noise_kind, str(noise_kind))})")

    def advice_context(self, load_probe) -> dict:
        return {"task": self.name, "noise_kind": load_probe().meta.get("noise_kind")}

    def load_model(self, prepared, model, *, seed, device="cpu", adapter=None, gradient_checkpointing=False):
        from layerinf.model.causal import load_causal_lm

        return load_causal_lm(model, seed=seed, adapter=adapter, device=device,
                              gradient_checkpointing=gradient_checkpointing)

    def import_model(self, prepared, model, adapter, *, seed, device="cpu"):
        from layerinf.model.causal import import_causal_adapter

        return import_causal_adapter(model, adapter, seed=seed, device=device)

    def encode(self, prepared, tokenizer, model):
        from layerinf.engine.sft_batching import encode_sft

        return {name: encode_sft(getattr(prepared, name), tokenizer, max_prompt_length=model.max_length,
                                 max_response_length=model.max_response_length, chat_template=model.chat_template,
                                 class_words=prepared.class_words)
                for name in ("train", "infl", "test")}

    def objective(self, train=None):
        from layerinf.engine.objectives import ResponseLoss

        reduction = train.get("loss_reduction") if isinstance(train, dict) else getattr(train, "loss_reduction", None)
        return ResponseLoss(reduction or "mean")

    def recipe_fields(self, reduction: str | None) -> dict:
        return {"loss_reduction": reduction}

    def correct(self, logits, labels):
        import numpy as np

        return np.asarray(logits)[:, 1] > 0.5

    def judged(self, prepared) -> bool:  # free-form responses have no majority class
        return bool(prepared.class_words)

    def retrain_fields(self, unit: dict) -> dict:  # accuracy = exact match; and the loss
        import math

        import pandas as pd

        hist = pd.DataFrame(unit["history"])
        at_best = hist.loc[hist["epoch"] == unit["best_epoch"]]
        return {"test_loss_at_best_epoch": float(at_best["test_loss"].iloc[0]) if len(at_best) else math.nan,
                "best_test_loss": float(hist["test_loss"].min())}

    def suspects_table(self, train, label_names, scores, store, top, mask_known):
        import numpy as np

        from layerinf.stages.suspects_table import build_sft_table

        return build_sft_table(train, scores, np.asarray(store.loss, dtype=np.float64), top, mask_known)

    def suspects_summary(self, result) -> dict:
        return {"task": self.name}

    def summary_rows(self, head, short, width):
        import pandas as pd

        return pd.DataFrame({
            "rank": head["rank"].to_numpy(),
            "row": head["source_idx"].to_numpy(),  # the row in the user's file
            "loss": head["response_loss"].round(3).to_numpy(),
            "score": head["score"].to_numpy(),
            "prompt": [short(p, None) for p in head["prompt"]],
            "response": [short(r, None, max(width // 2, 10)) for r in head["response"]],
        })

    @property
    def page(self):
        from layerinf.stages.rank_page import INSTRUCTION_PAGE

        return INSTRUCTION_PAGE


CLASSIFICATION, INSTRUCTION = ClassificationTask(), InstructionTask()
TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFICATION, INSTRUCTION)}


def task_named(name: str | None) -> Task:
    """The task a summary recorded (none recorded: classification, as before tasks were recorded)."""
    from layerinf.errors import LayerinfError

    if name in (None, ""):
        return CLASSIFICATION
    if name not in TASKS:
        raise LayerinfError(f"unknown task type '{name}'", f"use one of: {', '.join(TASKS)}")
    return TASKS[name]


def task_of(prepared) -> Task:
    """The task of prepared data (``data.prepared.PreparedData`` or ``data.sft_prepared.SFTPrepared``)."""
    sft = getattr(prepared, "task", None) == INSTRUCTION.name and hasattr(prepared, "class_words")
    return INSTRUCTION if sft else CLASSIFICATION


def task_in_folder(folder) -> Task:
    """The task of a finished data folder, from its format."""
    from layerinf.data.sft_prepared import is_sft_folder

    return INSTRUCTION if is_sft_folder(folder) else CLASSIFICATION


@functools.lru_cache(maxsize=8)
def _column_names(path: str, mtime_ns: int, size: int) -> frozenset[str] | None:
    """A table file's column names, lower-cased (None when it cannot be read: the loader reports why); read once
    per file version however often ``task_for`` asks."""
    from layerinf.data.tables import read_table
    from layerinf.errors import LayerinfError

    try:
        return frozenset(str(c).lower() for c in read_table(Path(path)).columns)
    except LayerinfError:
        return None


def task_type(cfg: DataConfig) -> str:
    """``classification`` or ``sft``: ``data.task_type``, or for ``auto`` from the source — ``demo-sft``, an SFT
    column option, or a local file with a response/messages column and no label column."""
    if cfg.task_type != "auto":
        return cfg.task_type
    if cfg.source in SFT_SOURCES or cfg.prompt_column or cfg.response_column or cfg.messages_column:
        return INSTRUCTION.name
    if cfg.label_column or cfg.text_column or cfg.source is None:
        return CLASSIFICATION.name
    path = Path(cfg.source).expanduser()
    if path.is_dir():
        from layerinf.data.tables import table_files

        files = table_files(path)
        path = files[0] if files else path
    if path.is_file():
        from layerinf.data.sft_rows import MESSAGES_GUESSES, RESPONSE_GUESSES
        from layerinf.data.tables import _LABEL_GUESSES

        st = path.stat()
        columns = _column_names(str(path.resolve()), st.st_mtime_ns, st.st_size)
        if columns is not None and not columns & set(_LABEL_GUESSES) and columns & {*RESPONSE_GUESSES,
                                                                                   *MESSAGES_GUESSES}:
            return INSTRUCTION.name
    return CLASSIFICATION.name


def task_for(cfg: DataConfig) -> Task:
    """The task a data section makes (``task_type``)."""
    return task_named(task_type(cfg))


__all__ = ["CLASSIFICATION", "ClassificationTask", "INSTRUCTION", "InstructionTask", "SFT_SOURCES", "TASKS", "Task",
           "task_for", "task_in_folder", "task_named", "task_of", "task_type"]
