"""Typed configuration for every stage, and the YAML experiment file that combines them.

Each dataclass holds one stage's settings (scikit-learn style: configuration in the constructor, no hidden
state). ``ExperimentConfig.from_yaml`` rejects unknown keys with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from layerinf.errors import LayerinfError

# Learning rates that make each built-in learn in a few epochs; hub models default to the paper's 3e-4.
DEFAULT_LR = {"minilm": 5e-3, "smollm2-135m": 1e-3}
PAPER_LR = 3e-4

PAPER_METHODS = ("tracin", "cosine", "datainf")
PAPER_AGGREGATORS = ("mean", "rank", "vote")


@dataclass
class DataConfig:
    """Where the data come from and how it is split and corrupted (spec §9)."""

    source: str = "demo"
    task: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    dev_source: str | None = None
    label_names: list[str] | None = None
    max_train: int = 4500
    max_dev: int = 1000
    noise_rate: float = 0.2
    seed: int = 0


@dataclass
class ModelConfig:
    """Which model and LoRA settings (paper: r=4, alpha=4, dropout 0.05 on query/value)."""

    name: str = "minilm"
    lora_r: int = 4
    lora_alpha: int = 4
    lora_dropout: float = 0.05
    lora_targets: list[str] | None = None
    max_length: int = 128
    trust_remote_code: bool = False


@dataclass
class TrainConfig:
    """Fine-tuning recipe. ``lr=None`` picks a per-model default (see ``DEFAULT_LR``)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1
    eval_batch_size: int = 64
    seed: int | None = None  # None: the data seed


@dataclass
class GradsConfig:
    """Per-sample gradient collection."""

    checkpoint: str = "best"  # best | last | init
    dtype: str = "float32"  # float32 | float16 | bfloat16 (storage)
    batch_size: int = 32
    include_we: bool = True


@dataclass
class ScoreConfig:
    """Which influence methods, layer groups and aggregators to evaluate (default: the paper's grid)."""

    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))
    groups: list[str] | None = None  # None: WE, the four attention groups, CL, all
    aggregators: list[str] = field(default_factory=lambda: list(PAPER_AGGREGATORS))
    vote_kappa: float = 0.30
    use_correct: bool | None = None  # None: Mean uses all, Rank/Vote the correctly predicted (paper)
    tie_method: str = "min"
    datainf_threshold: int = 100_000
    group_mode: str = "per_module"  # per_module (paper) | concat (TracIn/Cosine only)
    chunk_size: int = 2048
    compute_dtype: str = "float32"  # float32 | bfloat16
    cancellation_norm: str = "l1"


@dataclass
class FilterConfig:
    """Filter-and-retrain evaluation (spec §6)."""

    fraction: float = 0.30
    retrain: bool = True
    configs: list[str] | None = None  # "method/group/aggregator" to retrain; None: every scored configuration
    baselines: list[str] = field(default_factory=lambda: ["none", "random", "oracle"])


@dataclass
class ExperimentConfig:
    """One model × task × seed experiment (``layerinf run``)."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grads: GradsConfig = field(default_factory=GradsConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ExperimentConfig":
        return _build(cls, raw or {}, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ExperimentConfig":
        path = Path(path)
        if not path.exists():
            raise LayerinfError(f"config file {path} does not exist", "check the path (see examples/*.yaml)")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise LayerinfError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})", "fix its syntax") from None
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
                    raise LayerinfError(f"unknown config field '{key}'", f"valid sections: {', '.join(raw)}")
                node = node[part]
            if parts[-1] not in node:
                raise LayerinfError(f"unknown config field '{key}'", f"valid fields here: {', '.join(node)}")
            node[parts[-1]] = value
        return ExperimentConfig.from_dict(raw)


def _build(cls, raw: dict[str, Any], where: str):
    if not isinstance(raw, dict):
        raise LayerinfError(f"'{where}' must be a mapping, got {type(raw).__name__}", "see examples/*.yaml")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise LayerinfError(
            f"unknown key(s) {', '.join(unknown)} in '{where}'", f"valid keys: {', '.join(known)}"
        )
    kwargs = {}
    for name, value in raw.items():
        sub = _dataclass_type(known[name])
        kwargs[name] = _build(sub, value or {}, f"{where}.{name}") if sub is not None else value
    return cls(**kwargs)


def _dataclass_type(f: dataclasses.Field):
    default = f.default_factory if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
    if default is not None:
        obj = default()
        if dataclasses.is_dataclass(obj):
            return type(obj)
    return None


def resolve_lr(model_name: str, lr: float | None) -> float:
    """The learning rate to use: the user's, else the built-in's tuned default, else the paper's 3e-4."""
    if lr is not None:
        return float(lr)
    return DEFAULT_LR.get(model_name.lower(), PAPER_LR)
