"""Load a Hugging Face sequence classifier with its tokenizer, attach LoRA, place it on a device.

Works for encoders (BERT, RoBERTa, MiniLM) and decoders (Llama, Qwen2, Mistral; last-token pooling as
transformers does, pad token set when missing). Sources (built-ins, ``shape:`` models, folders, Hub ids) are
resolved by ``layerinf.model.sources``; ``trust_remote_code`` is off unless ``ModelConfig`` asks for it.
``import_adapter`` loads a model with an adapter trained elsewhere (a layerinf ``.safetensors`` file or a PEFT
adapter folder, read by ``layerinf.model.adapters``).

Precision (``ModelConfig.precision``): only the FROZEN base weights take ``fp32 | bf16 | fp16``. The LoRA
matrices and the classification head — everything that is trained and whose per-sample gradients are
collected — stay float32 ("fp32 master weights"): AdamW updates of size lr·g would vanish under bf16
rounding, and influence scores are dot products of these gradients. PEFT casts each LoRA layer's input to
the LoRA weights' dtype (float32) and its output back to the base dtype; a forward pre-hook casts the head's
input to float32, so logits and losses are float32. PEFT draws the seeded LoRA init in float32 and passes it
through the base dtype once (bf16-rounded values, stored in float32); fp32 runs are unchanged bit for bit.
fp16 on a CPU is refused (``device.base_dtype``).

Quantisation (``ModelConfig.quantization``, the ``layerinf[quant]`` extra; CUDA only, checked by
``device.check_quantization``): ``8bit`` (LLM.int8) or ``4bit`` (NF4, bfloat16 compute) frozen base weights
loaded by bitsandbytes straight onto the GPU (``device_map``), the head never quantised, then peft's
``prepare_model_for_kbit_training`` (the remaining half-precision weights to float32; its own gradient
checkpointing left off: ``gradient_checkpointing`` decides). LoRA and head stay float32 as always. Untested on
a GPU in this repository (no bitsandbytes here). Quantised bases are not cached (each load reads the weights).

Determinism: the pretrained weights are loaded once per process and deep-copied afterwards (GGUF
de-quantisation alone takes seconds); the head is always re-initialised from ``seed`` and the LoRA init is
seeded, on the CPU, before the model moves to its device — a cached copy equals a fresh load.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerinf.config import ModelConfig
from layerinf.errors import LayerinfError
from layerinf.model.adapters import (adapter_kind, copy_lora, layerinf_lora_settings, load_adapter, peft_head_saved,
                                     peft_lora_settings, read_peft_lora_config)
from layerinf.model.device import base_dtype, check_quantization, resolve_device
from layerinf.model.inventory import QUERY_NAMES, VALUE_NAMES, num_layers
from layerinf.model.sources import SHAPES, ModelSource, default_lora_targets, resolve_source, unknown_model_error

# peft calls a transformers API that transformers 5 deprecates; not actionable for our users
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

log = logging.getLogger("layerinf")

SHAPE_BASE_SEED = 0  # a shape model's random "pretrained" weights are the same whatever the run's seed


def _hub_error(src: ModelSource, exc: Exception) -> LayerinfError:
    return unknown_model_error(src.name, "not a built-in, shape model or local folder, and the Hugging Face Hub "
                                         f"could not provide it: {type(exc).__name__}")


def load_tokenizer(src: ModelSource | str, *, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token set when missing (decoders: EOS).

    ``shape:`` models use the offline MiniLM tokenizer; decoder shapes and RoBERTa (one token type) get no
    ``token_type_ids``.
    """
    from transformers import AutoTokenizer

    src = resolve_source(src) if isinstance(src, str) else src
    if src.shape is not None:
        tok = AutoTokenizer.from_pretrained(resolve_source("minilm").path)
        if src.is_decoder or SHAPES[src.shape].kwargs.get("type_vocab_size", 2) < 2:
            tok.model_input_names = [n for n in tok.model_input_names if n != "token_type_ids"]
        return tok
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error(src, exc) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


_BASE_CACHE: dict[tuple, nn.Module] = {}
_BASE_CACHE_SIZE = 1


def clear_model_cache() -> None:
    """Drop the in-process cache of loaded base models."""
    _BASE_CACHE.clear()


def _build_shape(src: ModelSource, num_labels: int, pad_token_id: int | None, dtype: torch.dtype) -> nn.Module:
    """A random-init classifier with a shape model's architecture (seeded; no weights are downloaded)."""
    from transformers import AutoModelForSequenceClassification

    config = SHAPES[src.shape].make_config(num_labels, 0 if pad_token_id is None else pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SHAPE_BASE_SEED)
        return AutoModelForSequenceClassification.from_config(config, dtype=dtype)


def _bnb_config(quantization: str):
    """The ``BitsAndBytesConfig`` of ``8bit`` / ``4bit`` (NF4, bfloat16 compute); the head is never quantised."""
    from transformers import BitsAndBytesConfig

    skip = ["classifier", "score"]
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                              llm_int8_skip_modules=skip)


def load_base_model(
    src: ModelSource | str,
    num_labels: int,
    *,
    seed: int = 0,
    trust_remote_code: bool = False,
    pad_token_id: int | None = None,
    dtype: torch.dtype = torch.float32,
    quantization: str = "none",
    device: str | torch.device | None = None,
):
    """An ``AutoModelForSequenceClassification`` with base weights in ``dtype`` and a float32 head freshly
    (seeded) initialised. Cached per process (see the module docstring). ``quantization`` ``8bit | 4bit``:
    bitsandbytes weights loaded onto CUDA ``device`` (not cached; see the module docstring)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    src = resolve_source(src) if isinstance(src, str) else src
    quantization = str(quantization or "none").lower()
    quantized = quantization != "none"
    if quantized and src.shape is not None:
        raise LayerinfError(f"--quantization {quantization} needs pretrained weights; '{src.name}' is a shape model "
                            "with random weights", "use --quantization none with shape models")
    key = (src.path, src.gguf_file, num_labels, trust_remote_code, dtype)
    if quantized or key not in _BASE_CACHE:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected, not news
        try:
            if src.shape is not None:
                model = _build_shape(src, num_labels, pad_token_id, dtype)
            else:
                kwargs: dict[str, Any] = {"num_labels": num_labels, "trust_remote_code": trust_remote_code}
                if src.gguf_file:
                    kwargs["gguf_file"] = src.gguf_file
                if quantized:
                    dev = check_quantization_device(quantization, device)
                    kwargs["quantization_config"] = _bnb_config(quantization)
                    kwargs["device_map"] = {"": dev.index if dev.index is not None else torch.cuda.current_device()}
                model = AutoModelForSequenceClassification.from_pretrained(src.path, dtype=dtype, **kwargs)
        except (OSError, ValueError) as exc:
            raise _hub_error(src, exc) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        if quantized:
            return _finish_base(model, seed, pad_token_id)
        while len(_BASE_CACHE) >= _BASE_CACHE_SIZE:
            _BASE_CACHE.pop(next(iter(_BASE_CACHE)))
        _BASE_CACHE[key] = model
    return _finish_base(copy.deepcopy(_BASE_CACHE[key]), seed, pad_token_id)


def check_quantization_device(quantization: str, device: str | torch.device | None) -> torch.device:
    """The CUDA device a quantised base is loaded onto (``check_quantization``'s errors otherwise)."""
    dev = resolve_device("cuda" if device is None else device)
    check_quantization(quantization, dev)
    return dev


def _finish_base(model, seed: int, pad_token_id: int | None):
    head_module(model).float()
    reset_head(model, seed)
    if pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    return model


def is_quantized(model: nn.Module) -> bool:
    """Whether the (possibly PEFT-wrapped) model's base weights are bitsandbytes-quantised."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(inner, "is_loaded_in_8bit", False) or getattr(inner, "is_loaded_in_4bit", False)
                or type(getattr(inner, "hf_quantizer", None)).__name__.startswith("Bnb"))


def head_module(model: nn.Module) -> nn.Module:
    """The classification head of a HF sequence classifier (``classifier`` or ``score``)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise LayerinfError(f"cannot find the classification head of {type(model).__name__}",
                        "use a standard HF classifier")


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
    found = [n for n in QUERY_NAMES if n in leaves][:1] + [n for n in VALUE_NAMES if n in leaves][:1]
    if len(found) != 2:
        raise LayerinfError(
            f"could not find query/value projections in {type(model).__name__}",
            "pass LoRA targets explicitly (--lora-targets q_proj,v_proj)",
        )
    return found


def attach_lora(model: nn.Module, cfg: ModelConfig | None = None, *, seed: int = 0):
    """Wrap ``model`` with PEFT LoRA (task SEQ_CLS): LoRA on query/value, head trainable, rest frozen.

    Targets: ``cfg.lora_targets``, else the registry's for a paper/shape model, else found by name.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = cfg or ModelConfig()
    targets = list(cfg.lora_targets or default_lora_targets(cfg.name) or find_lora_targets(model))
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
    )
    torch.manual_seed(seed)
    return get_peft_model(model, config)


def set_gradient_checkpointing(model: nn.Module, enable: bool = True) -> nn.Module:
    """Turn Hugging Face gradient (activation) checkpointing of the base model's layers on or off.

    Non-reentrant (``use_reentrant=False``): the frozen base needs no input that requires grad, and RNG
    states are replayed, so dropout masks and results are those of the plain run; only memory and time
    change (each layer's forward runs again in the backward pass). The KV cache is turned off (decoders).
    Layers are checkpointed in training mode; ``engine.collect`` also recomputes them in eval mode.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not enable:
        disable = getattr(inner, "activation_checkpointing_disable", None) or getattr(
            inner, "gradient_checkpointing_disable", None)
        if disable is not None and getattr(inner, "is_gradient_checkpointing", False):
            disable()
        return model
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise LayerinfError(f"{type(inner).__name__} does not support gradient checkpointing",
                            "turn gradient checkpointing off, or use --precision bf16 / a smaller --max-length")
    kwargs = {"use_reentrant": False}
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers ≥ 5
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(inner.config, "use_cache", None):
        inner.config.use_cache = False
    return model


def _head_input_to_fp32(module, args, kwargs):
    cast = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() and a.dtype != torch.float32 else a
                 for a in args)
    return cast, kwargs


def place(model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Move a LoRA-wrapped model to ``device``; a non-fp32 or quantised base gets the float32 head-input cast
    (a quantised model is already on its device: bitsandbytes weights are not moved)."""
    quantized = is_quantized(model)
    if dtype != torch.float32 or quantized:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        head_module(inner).register_forward_pre_hook(_head_input_to_fp32, with_kwargs=True)
    if device.type != "cpu" and not quantized:
        model.to(device)
    return model


@dataclass
class LoadedModel:
    """A LoRA-wrapped classifier with its tokenizer, where it came from, its settings and its device."""

    model: Any
    tokenizer: Any
    source: ModelSource
    config: ModelConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def num_layers(self) -> int:
        return num_layers(self.model)


def load_classifier(
    cfg: ModelConfig | str,
    num_labels: int,
    *,
    seed: int = 0,
    adapter=None,
    device: str | torch.device = "cpu",
    gradient_checkpointing: bool | None = None,
) -> LoadedModel:
    """Load base model + tokenizer, attach LoRA (seeded init), optionally load a saved layerinf adapter, and
    move the model to ``device`` (``auto | cpu | cuda | cuda:N | mps``). A plain string is ``ModelConfig(name=...)``.

    ``gradient_checkpointing`` (default: ``cfg.gradient_checkpointing`` when the config has that field, else
    off) recomputes each layer's activations in the backward pass: less memory, same results, more time
    (:func:`set_gradient_checkpointing`). ``cfg.quantization`` 8bit / 4bit: see the module docstring (CUDA only).
    """
    cfg = ModelConfig(name=cfg) if isinstance(cfg, str) else cfg
    dev = resolve_device(device)
    dtype = base_dtype(cfg.precision, dev)
    quantization = check_quantization(getattr(cfg, "quantization", "none"), dev)
    src = resolve_source(cfg.name)
    tok = load_tokenizer(src, trust_remote_code=cfg.trust_remote_code)
    base = load_base_model(src, num_labels, seed=seed, trust_remote_code=cfg.trust_remote_code,
                           pad_token_id=tok.pad_token_id, dtype=dtype, quantization=quantization, device=dev)
    if gradient_checkpointing is None:
        gradient_checkpointing = bool(getattr(cfg, "gradient_checkpointing", False))
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        # layer norms etc. to float32, base frozen; its reentrant checkpointing stays off (ours is set below)
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    peft_model = attach_lora(base, cfg, seed=seed)
    if adapter is not None:
        load_adapter(peft_model, adapter)
    if gradient_checkpointing:  # after PEFT: non-reentrant checkpointing needs no input-requires-grad hook
        set_gradient_checkpointing(peft_model, True)
    return LoadedModel(place(peft_model, dev, dtype), tok, src, cfg, dev)


def import_adapter(cfg: ModelConfig | str, adapter: str | os.PathLike, num_labels: int, *, seed: int = 0,
                   device: str | torch.device = "cpu"):
    """``cfg``'s base model with a trained adapter: a layerinf ``.safetensors`` file or a PEFT adapter folder.

    Returns a ``LoadedModel`` whose ``config`` is ``cfg`` with the adapter's LoRA rank and targets (and, for
    PEFT, alpha and dropout). A PEFT adapter without head weights leaves the classification head randomly
    initialised: that is warned about, since the predictions and the CL gradients are then meaningless.
    """
    cfg = ModelConfig(name=cfg) if isinstance(cfg, str) else cfg
    adapter = Path(adapter).expanduser()
    if adapter_kind(adapter) == "layerinf":
        mc = dataclasses.replace(cfg, **layerinf_lora_settings(adapter))
        return load_classifier(mc, num_labels, seed=seed, adapter=adapter, device=device)
    from peft import PeftModel

    dev = resolve_device(device)
    dtype = base_dtype(cfg.precision, dev)
    src = resolve_source(cfg.name)
    tok = load_tokenizer(src, trust_remote_code=cfg.trust_remote_code)
    base = load_base_model(src, num_labels, seed=seed, trust_remote_code=cfg.trust_remote_code,
                           pad_token_id=tok.pad_token_id, dtype=dtype)
    read_peft_lora_config(adapter)
    try:
        peft_model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise LayerinfError(
            f"PEFT adapter {adapter} does not fit model '{cfg.name}' with {num_labels} labels "
            f"({str(exc).splitlines()[0][:120]})",
            "pass the base model the adapter was trained on (--model) and data with the same label set",
        ) from None
    mc = peft_lora_settings(peft_model.peft_config.get("default"), cfg)
    if peft_head_saved(adapter):
        return LoadedModel(place(peft_model, dev, dtype), tok, src, mc, dev)
    msg = (f"PEFT adapter {adapter} has no trained classification head: the head is randomly initialised "
           "(untrained), so predictions and scores are unreliable; save the adapter with task_type=SEQ_CLS "
           "or fine-tune with layerinf instead")
    warnings.warn(msg, UserWarning, stacklevel=2)
    log.warning(msg)
    # layerinf's own layout (LoRA + a trainable, seeded head) with the adapter's LoRA tensors copied in
    lora = {n: p.detach().cpu() for n, p in peft_model.named_parameters() if "lora_" in n}
    del peft_model, base  # one base model in memory at a time
    loaded = load_classifier(mc, num_labels, seed=seed, device=dev)
    copy_lora(lora, loaded.model, adapter, cfg.name)
    return loaded


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Temporarily switch to eval mode (no dropout), restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


__all__ = [
    "LoadedModel", "attach_lora", "clear_model_cache", "eval_mode", "find_lora_targets", "head_module", "import_adapter",
    "is_quantized",
    "load_base_model", "load_classifier", "load_tokenizer", "place", "reset_head", "set_gradient_checkpointing",
]
