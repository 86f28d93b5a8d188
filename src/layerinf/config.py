"""Every option of layerinf, defined once: name, type, default, help text and valid range.

Each stage's settings are one dataclass (scikit-learn style: configuration in the constructor, checked in
``__post_init__``, no hidden state). The CLI options, the Python API keywords and the YAML keys are all made
from these fields, so an option has one name and one default everywhere:

* YAML: ``<section>.<field>`` (``score.vote_kappa``);
* Python API and CLI: the field name (``vote_kappa=0.3``, ``--vote-kappa 0.3``); the one exception is
  ``model.name``, which is ``model=`` / ``--model`` (a field called ``model`` inside the ``model`` section
  would read badly in YAML). Field names are unique across sections, so a flat option always has one home.

``ExperimentConfig.from_yaml`` rejects unknown keys and wrong types with the list of valid ones before
anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from layerinf.errors import LayerinfError

PAPER_METHODS = ("tracin", "cosine", "datainf")
BUILTIN_METHODS = PAPER_METHODS + ("tracin_cp",)  # what layerinf.influence.registry registers (a test checks)
PAPER_AGGREGATORS = ("mean", "rank", "vote")
BASELINES = ("none", "random", "oracle")
MODEL_BASELINES, OOS_BASELINES = ("loss", "self_influence"), ("confident_learning",)  # OOS: cross-fitted models
RANKING_CHOICES = ("auto", "combined", "influence", "confidence", "embedding")  # layerinf.evaluation.rankings  # rankings by the model's own signals, no validation set
CLI_NAMES = {("model", "name"): "model"}  # the only option whose flat name differs from its field name


def opt(default: Any = dataclasses.MISSING, help: str = "", *, choices: Any = None, lo: float | None = None,
        hi: float | None = None, lo_open: bool = False, hi_open: bool = False, factory: Callable | None = None,
        hidden: bool = False, builtin: tuple = (), stages: tuple = ()) -> Any:
    """A config field with its help text and valid range (``choices`` may be a callable, for registries).

    ``builtin``: values a callable ``choices`` always contains (the registry's built-ins); they are accepted
    without calling it, so that checking a config does not import the registry (and torch) for them.
    ``stages``: for a runtime option, the stages whose work it changes (``runtime_options``)."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open,
            "hidden": hidden, "builtin": tuple(builtin), "stages": tuple(stages)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# The names a registry holds, for the options that name a method or an aggregator. config is a ground-floor module
# and imports no registry: layerinf.influence.registry installs its tables here when it is imported, and nothing can
# be registered before that, so until then the built-ins are all there is.
REGISTERED: dict[str, Callable[[], list[str]]] = {}


def _registered(kind: str, builtin: tuple[str, ...]) -> Callable[[], list[str]]:
    return lambda: REGISTERED[kind]() if kind in REGISTERED else list(builtin)


_method_names = _registered("method", BUILTIN_METHODS)
_aggregator_names = _registered("aggregator", PAPER_AGGREGATORS)


class Checked:
    """Mixin: type- and range-check every field on construction (one clear error per bad value)."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if dataclasses.is_dataclass(getattr(self, f.name)):
                continue
            value = _coerce(getattr(self, f.name), hints[f.name], self._where(f))
            _check_range(value, f, self._where(f))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Cross-field checks (override)."""

    @classmethod
    def section(cls) -> str:
        return getattr(cls, "SECTION", cls.__name__.replace("Config", "").lower())

    def _where(self, f: dataclasses.Field) -> str:
        return f"{self.section()}.{f.name}"


def option_name(section: str, name: str) -> str:
    """The flat (CLI / API) name of YAML key ``section.name``."""
    return CLI_NAMES.get((section, name), name)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (int, float, str, bool, list[str], X | None)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if isinstance(value, (str, dict)):  # "a,b" (the CLI); a mapping {k: v} is ["k:v", …] (data.noise_rates)
            value = ([v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str)
                     else [f"{k}:{v}" for k, v in value.items()])
        if not isinstance(value, (list, tuple)):
            raise LayerinfError(f"{where} must be a list, got {value!r}", f"e.g. {where.split('.')[-1]}: [a, b]")
        return [_coerce(v, args[0], where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise LayerinfError(f"{where} must be true or false, got {value!r}", f"set {where} to true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise LayerinfError(f"{where} must be a whole number, got {value!r}", f"set {where} to an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise LayerinfError(f"{where} must be a finite number, got {value!r}", f"set {where} to a number")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, Path)) or (isinstance(value, str) and not value.strip()):
            raise LayerinfError(f"{where} must be a non-empty text, got {value!r}", f"set {where} to a name or path")
        return str(value)
    return value


def _choices(f: dataclasses.Field) -> list[str] | None:
    c = f.metadata.get("choices")
    return list(c() if callable(c) else c) if c is not None else None


def _check_range(value: Any, f: dataclasses.Field, where: str) -> None:
    if value is None:
        return
    meta = f.metadata
    values = value if isinstance(value, list) else [value]
    builtin = meta.get("builtin") or ()
    needed = meta.get("choices") is not None and any(v not in builtin for v in values)
    choices = _choices(f) if needed else None
    for v in values:
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(str(v), choices, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise LayerinfError(f"{where}: unknown value '{v}'", f"{hint}use one of {', '.join(choices)}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = meta.get("lo"), meta.get("hi")
            bad_lo = lo is not None and (v <= lo if meta.get("lo_open") else v < lo)
            bad_hi = hi is not None and (v >= hi if meta.get("hi_open") else v > hi)
            if bad_lo or bad_hi:
                lb = "(" if meta.get("lo_open") else "["
                rb = ")" if meta.get("hi_open") else "]"
                rng = f"{lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}"
                raise LayerinfError(f"{where} = {v} is out of range {rng}", f"set {where} to a value in {rng}")


# ------------------------------------------------------------------------------------------------ sections


@dataclass(frozen=True)
class DataConfig(Checked):
    """Where the data come from and how it is split and corrupted (spec §9)."""

    source: str | None = opt(None, "Your data: a CSV/TSV/JSONL/Parquet file | a GLUE task folder | hf:NAME[/CONFIG]; "
                             "or demo (the built-in demo data). No default: the demo data are used only when named.")
    task: str | None = opt(None, "GLUE task name when SOURCE is the GLUE root folder.")
    text_column: str | None = opt(None, "Text column (CSV/TSV/JSONL/hf).")
    text_pair_column: str | None = opt(None, "Second text column for pair tasks.")
    label_column: str | None = opt(None, "Label column.")
    dev_source: str | None = opt(None, "Separate labelled dev file (else a stratified dev part is carved out).")
    label_names: list[str] | None = opt(None, "Label names in class order (default: sorted labels).")
    max_train: int | None = opt(4500, "Cap on training examples (stratified); none = no cap.", lo=1)
    max_dev: int | None = opt(1000, "Cap on dev examples, split 50/50 into influence and test sets.", lo=2)
    noise_rate: float = opt(0.2, "Fraction of training labels to flip, in [0, 1).", lo=0.0, hi=1.0, hi_open=True)
    seed: int = opt(0, "Seed for sampling, splitting and noise (and training, unless train_seed is set).", lo=0)
    task_type: str = opt("auto", "classification | sft (instruction data: prompt/response or chat messages) | auto "
                         "(sft for demo-sft, with --prompt/--response/--messages-column, or for a file with a "
                         "response/output/completion/answer or messages/conversations column and no label column).",
                         choices=("auto", "classification", "sft"))
    prompt_column: str | None = opt(None, "SFT: prompt column (default prompt, or instruction plus input).")
    response_column: str | None = opt(None, "SFT: response column (default response, or output).")
    messages_column: str | None = opt(None, "SFT: chat messages column (the last turn, an assistant's, is the response).")
    noise_kind: str = opt("auto", "uniform (auto) | class_conditional | ambiguous; SFT: label | swap (layerinf.data).",
                          choices=("auto", "uniform", "class_conditional", "ambiguous", "label", "swap"))
    noise_rates: list[str] | None = opt(None, "class_conditional: CLASS:RATE,… (0:0.35,1:0.05) or FROM>TO:RATE (0>1:0.3).")

    def require_source(self, yaml: bool = False) -> None:
        """Error when no source is given: layerinf never falls back to the demo data on its own."""
        if self.source is None:
            raise LayerinfError("no data source given (there is no default data)",
                                ("set data.source in the config" if yaml else "add --source YOUR_DATA (Python: source=)")
                                + ": a CSV/TSV/JSONL/Parquet file, a GLUE task folder or hf:NAME[/CONFIG]; "
                                "demo for the built-in demo data")


@dataclass(frozen=True)
class ModelConfig(Checked):
    """Which model, its precision and LoRA settings (paper: r=4, alpha=4, dropout 0.05 on query/value)."""

    name: str = opt("minilm", "minilm | smollm2-135m | shape:<paper model> | a local folder | a Hub id.")
    lora_r: int = opt(4, "LoRA rank.", lo=1)
    lora_alpha: int = opt(4, "LoRA alpha.", lo=1)
    lora_dropout: float = opt(0.05, "LoRA dropout.", lo=0.0, hi=1.0, hi_open=True)
    lora_targets: list[str] | None = opt(None, "LoRA target modules (default: the query/value projections).")
    max_length: int = opt(128, "Truncation length in tokens (SFT: of the prompt, whose start is cut).", lo=1)
    max_response_length: int = opt(128, "SFT: truncation length of the response in tokens (its end is cut).", lo=1)
    chat_template: str = opt("auto", "SFT: format prompts with the tokenizer's chat template: auto (when it has one) "
                             "| on | off (plain text).", choices=("auto", "on", "off"))
    precision: str = opt("fp32", "Frozen base weights: fp32 | bf16 | fp16 (LoRA and head stay fp32).",
                         choices=("fp32", "bf16", "fp16"))
    trust_remote_code: bool = opt(False, "Allow custom model code from the Hub.")
    quantization: str = opt("none", "Frozen base weights quantised by bitsandbytes (CUDA; pip install "
                            "'layerinf[quant]'): none | 8bit | 4bit.", choices=("none", "8bit", "4bit"))


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Fine-tuning recipe. ``lr=None`` picks a per-model default (``layerinf.model.default_lr``)."""

    epochs: int = opt(10, "Epochs (paper: 10).", lo=1)
    batch_size: int = opt(32, "Training batch size (paper: 32).", lo=1)
    lr: float | None = opt(None, "Learning rate (default: per built-in, else the paper's 3e-4).", lo=0.0, lo_open=True)
    weight_decay: float = opt(0.01, "AdamW weight decay.", lo=0.0)
    warmup: float = opt(0.1, "Warm-up fraction of the steps (cosine schedule).", lo=0.0, hi=1.0, hi_open=True)
    train_seed: int | None = opt(None, "Training seed (default: the data seed).", lo=0)
    loss_reduction: str = opt("mean", "SFT: an example's loss is the mean (or sum) of its response tokens' losses.",
                              choices=("mean", "sum"))
    min_steps: int | None = opt(None, "Train for at least this many optimiser steps: on small data the epochs grow "
                                "to max(epochs, ceil(min_steps / steps per epoch)), and a fit whose model did not "
                                "learn is retried once with twice the steps; none = exactly --epochs (the paper; "
                                "suspects and advise default to 300).", lo=1)


@dataclass(frozen=True)
class GradsConfig(Checked):
    """Per-sample gradient collection."""

    checkpoint: str = opt("best", "init | best (lowest influence loss) | last.", choices=("init", "best", "last"))
    grad_dtype: str = opt("float32", "Gradient storage dtype: float32 | float16 | bfloat16.",
                          choices=("float32", "float16", "bfloat16"))
    include_we: bool = opt(True, "Also store row-sparse word-embedding gradients.")
    tracin_checkpoints: list[str] | None = opt(None, "TracInCP: also collect gradients at these checkpoints (e.g. "
                                               "init best last) for the tracin_cp method; none = off.")


@dataclass(frozen=True)
class ScoreConfig(Checked):
    """Which influence methods, layer groups and aggregators to evaluate (default: the paper's grid)."""

    methods: list[str] = opt(help="Influence methods.", factory=lambda: list(PAPER_METHODS), choices=_method_names,
                             builtin=PAPER_METHODS)
    groups: list[str] | None = opt(None, "Layer groups (default: WE, the 4 attention groups, CL, all); also "
                                   "query_A…value_B, L03, module names, globs.")
    aggregators: list[str] = opt(help="Aggregators over voters (module × validation sample).",
                                 factory=lambda: list(PAPER_AGGREGATORS), choices=_aggregator_names,
                                 builtin=PAPER_AGGREGATORS)
    vote_kappa: float = opt(0.30, "Vote's κ: the bottom fraction of n each voter votes against, in (0, 1].",
                            lo=0.0, hi=1.0, lo_open=True)
    use_correct: bool | None = opt(None, "Validation filter: only correctly predicted samples (default: Mean all, "
                                   "Rank/Vote correct only).")
    tie_method: str = opt("min", "Rank ties: min | average | ordinal.", choices=("min", "average", "ordinal"))
    datainf_threshold: int = opt(100_000, "Skip DataInf on modules with at least this many parameters.", lo=1)
    group_mode: str = opt("per_module", "per_module (paper) | concat (TracIn/Cosine on concatenated gradients).",
                          choices=("per_module", "concat"))
    compute_dtype: str = opt("float32", "float32 | bfloat16 (faster, ~1e-3 rel. error) | float64 | tf32 (CUDA: "
                             "TF32 GEMMs; float32 elsewhere).", choices=("float32", "bfloat16", "float64", "tf32"))
    cancellation_norm: str = opt("l1", "l1 | l2 | l1_l2.", choices=("l1", "l2", "l1_l2"))
    model_baselines: list[str] = opt(help="The model's own rankings, scored like a configuration: loss | self_influence "
                                     "(‖g‖²) | confident_learning (p(label), 2 cross-fitted models; classification).",
                                     factory=lambda: list(MODEL_BASELINES), choices=MODEL_BASELINES + OOS_BASELINES)


@dataclass(frozen=True)
class FilterConfig(Checked):
    """Filter-and-retrain evaluation (spec §6)."""

    fraction: float = opt(0.30, "Fraction of the training set removed (the lowest scores), in (0, 1).",
                          lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    retrain: bool = opt(True, "Retrain after filtering (the expensive part).")
    configs: list[str] | None = opt(None, "method/group/aggregator keys to retrain (default: every scored one).")
    baselines: list[str] = opt(help="Baselines to retrain.", factory=lambda: list(BASELINES), choices=BASELINES)
    repeats: int = opt(1, "Retrain each kept subset with this many training seeds (train_seed, +1, …); the "
                       "report shows the mean ± 95 % CI.", lo=1)

    def check(self) -> None:
        bad = [c for c in self.configs or [] if c.count("/") != 2]
        if bad:
            raise LayerinfError(f"filter.configs entry '{bad[0]}' is not method/group/aggregator",
                                "write e.g. datainf/02-03/vote")


@dataclass(frozen=True)
class RankConfig(Checked):
    """One influence configuration that ranks a user's training examples (``layerinf suspects``)."""

    SECTION = "rank"
    method: str = opt("datainf", "Influence method.", choices=_method_names, builtin=PAPER_METHODS)
    group: str | None = opt(None, "Layer group (default: the second attention group, the paper's pick).")
    aggregator: str = opt("vote", "Aggregator (Vote's κ: vote_kappa, of the score section).",
                          choices=_aggregator_names, builtin=PAPER_AGGREGATORS)
    top: float | None = opt(None, "Fraction of the rows flagged as suspects, in (0, 1); none = as many as "
                            "confident learning calls mislabelled (on out-of-sample probabilities).",
                            lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    ranking: str = opt("auto", "Which ranking orders the rows: auto (the one that best finds labels flipped on "
                       "purpose inside the cross-fit: the probe) | combined (rank average of the three below) | "
                       "influence (--method/--group/--aggregator) | confidence (out-of-sample p(given label) of the "
                       "fine-tuned folds) | embedding (out-of-sample p(given label) of a logistic regression on the "
                       "base model's sentence embeddings).", choices=RANKING_CHOICES)
    probe_rate: float = opt(0.05, "Cross-fitting: fraction of each fold's training rows whose label is flipped on "
                            "purpose to score the rankings (0 = no probe; --ranking auto then uses combined).",
                            lo=0.0, hi=0.5, hi_open=True)
    folds: int = opt(3, "Cross-fitting: the rows are cut into this many folds; each fold is once the validation set "
                     "of a model fine-tuned on the others, so every row is ranked (1 = one carved-out dev set, "
                     "whose rows are not ranked). Ignored with --dev-source, --run, --adapter, or a source "
                     "with its own dev part (demo, GLUE, hf: with a validation split).", lo=1)


@dataclass(frozen=True)
class RuntimeConfig(Checked):
    """Where and how fast to compute. Not part of any stage's identity (cache key): a stage made on a GPU, or with
    other batch or chunk sizes, is reused. The batch and chunk sizes change the speed and the memory, and at most
    the floating-point rounding (a batch's padding, the order of a sum), not what is computed."""

    device: str = opt("auto", "auto (cuda when available, else cpu) | cpu | cuda | cuda:N | mps.",
                      stages=("finetune", "grads", "score", "retrain"))
    executor: str = opt("local", "Where retrainings, sweep units and gradient shards run: local | ray.",
                        choices=("local", "ray"), stages=("grads", "retrain"))
    ray_address: str | None = opt(None, "Ray cluster to join (default: RAY_ADDRESS, else a local Ray instance).",
                                  stages=("grads", "retrain"))
    num_cpus: float | None = opt(None, "CPUs per Ray task (default 1).", lo=0.0, lo_open=True,
                                 stages=("grads", "retrain"))
    num_gpus: float | None = opt(None, "GPUs per Ray task; a fraction lets tasks share a GPU (0.25: four).", lo=0.0,
                                 stages=("grads", "retrain"))
    max_retries: int = opt(2, "Retries of a Ray task whose worker died.", lo=0, stages=("grads", "retrain"))
    grad_shards: int = opt(1, "Split gradient collection of the training set into this many tasks.", lo=1,
                           stages=("grads",))
    gradient_checkpointing: bool = opt(False, "Recompute activations in the backward pass: less memory for large "
                                       "models, slower, same results.", stages=("finetune", "grads", "retrain"))
    grad_batch_size: int = opt(32, "Samples per forward/backward when collecting gradients.", lo=1, stages=("grads",))
    chunk_size: int = opt(2048, "Training samples per streamed chunk when scoring.", lo=1, stages=("score",))
    eval_batch_size: int = opt(64, "Batch size of the evaluation passes (after each training epoch).", lo=1,
                               stages=("finetune", "retrain"))

    def check(self) -> None:
        """The device's spelling (whether it is there is checked when it is resolved, by torch)."""
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device.strip().lower()):
            close = difflib.get_close_matches(self.device.strip().lower(), ["auto", "cpu", "cuda", "mps"], n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise LayerinfError(f"unknown device '{self.device}'", f"{hint}use one of auto, cpu, cuda, cuda:N, mps")


SCALE_OUT = frozenset({"executor", "ray_address", "num_cpus", "num_gpus", "max_retries", "grad_shards"})  # Ray tasks
MOVED = {"grads.grad_batch_size": "runtime.grad_batch_size", "score.chunk_size": "runtime.chunk_size",
         "train.eval_batch_size": "runtime.eval_batch_size"}  # YAML keys of older versions → their home now


def runtime_options(*stages: str) -> frozenset[str]:
    """The runtime options that change the work of any of ``stages`` (a command takes those of its stages)."""
    return frozenset(f.name for f in fields(RuntimeConfig) if set(f.metadata["stages"]) & set(stages))


def runtime_options_except(*stages: str) -> frozenset[str]:
    """The runtime options a command made of ``stages`` does not take (``exclude=`` of ``split_options``)."""
    return frozenset(f.name for f in fields(RuntimeConfig)) - runtime_options(*stages)


def _moved(section: str, keys) -> str:
    """``grads.grad_batch_size moved to runtime.grad_batch_size; `` for keys that have a new home, else ''."""
    moved = [f"{section}.{k} moved to {MOVED[f'{section}.{k}']}" for k in keys if f"{section}.{k}" in MOVED]
    return "; ".join(moved) + "; " if moved else ""


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "grads": GradsConfig,
                             "score": ScoreConfig, "filter": FilterConfig, "runtime": RuntimeConfig}


@dataclass(frozen=True)
class ExperimentConfig:
    """One model × task × seed experiment (``layerinf run``): a name plus one section per stage."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grads: GradsConfig = field(default_factory=GradsConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self):
        import re

        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", self.name):
            raise LayerinfError(f"config name {self.name!r} is not a plain folder name",
                                "use letters, digits, '.', '_' and '-' only (it names runs/<name>)")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ExperimentConfig":
        raw = raw or {}
        if not isinstance(raw, dict):
            raise LayerinfError(f"the config must be a mapping of sections, got {type(raw).__name__}",
                                "see examples/*.yaml")
        unknown = sorted(set(raw) - {"name", *SECTIONS})
        if unknown:
            raise LayerinfError(f"unknown key(s) {', '.join(unknown)} in 'config'",
                                f"valid keys: name, {', '.join(SECTIONS)}")
        kwargs: dict[str, Any] = {}
        if "name" in raw:
            kwargs["name"] = raw["name"]
        for section, sub in SECTIONS.items():
            if section in raw:
                kwargs[section] = build_section(sub, raw[section] or {}, f"config.{section}", section)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ExperimentConfig":
        path = Path(path)
        if not path.is_file():
            raise LayerinfError(f"config file {path} does not exist", "check the path (see examples/*.yaml)")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise LayerinfError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})",
                                "fix its syntax") from None
        if raw is not None and not isinstance(raw, dict):
            raise LayerinfError(f"config file {path} must be a mapping of sections", "see examples/*.yaml")
        return cls.from_dict(raw or {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> "ExperimentConfig":
        """A copy with dotted-key overrides applied, e.g. ``{"data.seed": 3, "model.name": "smollm2-135m"}``."""
        raw = self.to_dict()
        for key, value in overrides.items():
            node = raw
            parts = key.split(".")
            for part in parts[:-1]:
                if part not in node or not isinstance(node[part], dict):
                    raise LayerinfError(f"unknown config field '{key}'", f"valid sections: {', '.join(SECTIONS)}")
                node = node[part]
            if parts[-1] not in node:
                close = difflib.get_close_matches(parts[-1], list(node), n=1)
                hint = _moved(parts[0], parts[-1:]) if len(parts) == 2 else ""
                hint = hint or (f"did you mean '{close[0]}'? " if close else "")
                raise LayerinfError(f"unknown config field '{key}'", f"{hint}valid fields here: {', '.join(node)}")
            node[parts[-1]] = value
        return ExperimentConfig.from_dict(raw)


def build_section(cls, raw: Any, where: str, section: str = ""):
    """A section dataclass from a mapping, with unknown keys named (and where a moved key lives now) and the
    valid ones listed."""
    if not isinstance(raw, dict):
        raise LayerinfError(f"'{where}' must be a mapping, got {type(raw).__name__}", "see examples/*.yaml")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = _moved(section, unknown) or (f"did you mean '{close[0]}'? " if close else "")
        raise LayerinfError(f"unknown key(s) {', '.join(unknown)} in '{where}'",
                            f"{hint}valid keys: {', '.join(sorted(known))}")
    return cls(**raw)


def split_options(options: dict[str, Any], *classes: type, where: str = "options",
                  exclude: "set[str] | frozenset[str]" = frozenset()) -> list[Any]:
    """Distribute flat API/CLI options over section dataclasses (``lora_r`` → ModelConfig.lora_r, ...).

    Every option must belong to one of ``classes`` and not be in ``exclude`` (fields of those sections the
    command does not take: they keep their defaults); the result is one constructed (checked) section each.
    """
    rest = dict(options)
    out = []
    for cls in classes:
        section = cls.section()
        kwargs = {}
        for f in fields(cls):
            flat = option_name(section, f.name)
            if flat in rest and flat not in exclude:
                kwargs[f.name] = rest.pop(flat)
        out.append(cls(**kwargs))
    if rest:
        valid = sorted(n for n in (option_name(c.section(), f.name) for c in classes for f in fields(c))
                       if n not in exclude)
        close = difflib.get_close_matches(sorted(rest)[0], valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise LayerinfError(f"unknown option(s) {', '.join(sorted(rest))} for {where}",
                            f"{hint}valid: {', '.join(valid)}")
    return out
