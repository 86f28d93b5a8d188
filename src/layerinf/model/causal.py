"""Load a causal language model with LoRA for instruction tuning (SFT): ``load_causal_lm`` → ``LoadedModel``.

The same sources as classifiers (built-ins such as ``smollm2-135m``, ``shape:`` models, folders, Hub ids;
``layerinf.model.sources``), loaded as ``AutoModelForCausalLM``; LoRA (PEFT task ``CAUSAL_LM``) goes on the
query/value projections unless ``ModelConfig.lora_targets`` names others. Everything else is frozen.

Influence modules (``model.inventory``): the LoRA A/B of every layer and the word embeddings (WE, row-sparse
over the tokens an example holds). The LM head is frozen by default, so the ``CL`` group is empty; with
``train_lm_head=True`` it is trained and its weight is an influence module (``CL.lm_head.weight``, vocab × h:
large). Models whose LM head is **tied** to the input embeddings (SmolLM2, many small decoders): the WE
gradient layerinf collects is the input side only (the gradient through the embedding lookup); the output
side, through the tied LM head, is dense over the whole vocabulary for every example and is not collected.
Training the head of a tied model unties it (PEFT keeps a separate trainable copy).

Precision as for classifiers: the frozen base in ``ModelConfig.precision``, LoRA (and a trained head) in
float32; logits are cast to float32 before the loss (``engine.objectives``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from layerinf.config import ModelConfig
from layerinf.model.device import base_dtype, resolve_device
from layerinf.model.loading import LoadedModel, _hub_error, find_lora_targets, load_tokenizer, set_gradient_checkpointing
from layerinf.model.sources import SHAPES, ModelSource, default_lora_targets, resolve_source

SHAPE_BASE_SEED = 0
_CACHE: dict[tuple, nn.Module] = {}


def check_causal_model(src: ModelSource | ModelConfig | str) -> ModelSource:
    """The model's source, refused in one line when it is known to be an encoder (``minilm``, ``shape:tiny-bert``,
    the paper's RoBERTa): instruction tuning needs a decoder. Hub ids of unknown kind pass (loading decides)."""
    if isinstance(src, ModelConfig):
        src = src.name
    src = resolve_source(src) if isinstance(src, str) else src
    if src.is_decoder is False:
        from layerinf.errors import LayerinfError

        raise LayerinfError(f"model '{src.name}' is an encoder; instruction (SFT) data need a decoder (a causal LM)",
                            "use a decoder, e.g. --model smollm2-135m or shape:llama-3.2-1b")
    return src


def load_causal_base(src: ModelSource | str, *, trust_remote_code: bool = False, pad_token_id: int | None = None,
                     dtype: torch.dtype = torch.float32) -> nn.Module:
    """An ``AutoModelForCausalLM`` with base weights in ``dtype`` (cached per process, deep-copied out)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    src = check_causal_model(src)
    key = (src.path, src.gguf_file, trust_remote_code, dtype)
    if key not in _CACHE:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            if src.shape is not None:
                config = SHAPES[src.shape].make_config(2, pad_token_id)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(SHAPE_BASE_SEED)
                    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
            else:
                kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
                if src.gguf_file:
                    kwargs["gguf_file"] = src.gguf_file
                model = AutoModelForCausalLM.from_pretrained(src.path, dtype=dtype, **kwargs)
        except (OSError, ValueError) as exc:
            raise _hub_error(src, exc) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        _CACHE.clear()
        _CACHE[key] = model
    model = copy.deepcopy(_CACHE[key])
    if pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    return model


def attach_causal_lora(model: nn.Module, cfg: ModelConfig | None = None, *, seed: int = 0,
                       train_lm_head: bool = False):
    """Wrap ``model`` with PEFT LoRA (task CAUSAL_LM) on query/value (or ``cfg.lora_targets``); the rest frozen,
    except the LM head with ``train_lm_head`` (kept in float32)."""
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = cfg or ModelConfig()
    targets = list(cfg.lora_targets or default_lora_targets(cfg.name) or find_lora_targets(model))
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                        lora_dropout=cfg.lora_dropout, target_modules=targets,
                        modules_to_save=["lm_head"] if train_lm_head else None)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    if train_lm_head:
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name and p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
                p.data = p.data.float()
    return peft_model


def load_causal_lm(cfg: ModelConfig | str, *, seed: int = 0, adapter=None, device: str | torch.device = "cpu",
                   gradient_checkpointing: bool | None = None, train_lm_head: bool = False) -> LoadedModel:
    """Tokenizer + causal LM + LoRA (seeded init), an optional saved layerinf adapter, on ``device``."""
    from layerinf.model.adapters import load_adapter

    cfg = ModelConfig(name=cfg) if isinstance(cfg, str) else cfg
    dev = resolve_device(device)
    dtype = base_dtype(cfg.precision, dev)
    src = resolve_source(cfg.name)
    tok = load_tokenizer(src, trust_remote_code=cfg.trust_remote_code)
    base = load_causal_base(src, trust_remote_code=cfg.trust_remote_code, pad_token_id=tok.pad_token_id, dtype=dtype)
    peft_model = attach_causal_lora(base, cfg, seed=seed, train_lm_head=train_lm_head)
    if adapter is not None:
        load_adapter(peft_model, adapter)
    if gradient_checkpointing:
        set_gradient_checkpointing(peft_model, True)
    if dev.type != "cpu":
        peft_model.to(dev)
    return LoadedModel(peft_model, tok, src, cfg, dev)


def check_causal_adapter(adapter):
    """A user's adapter for instruction data, checked before anything is written: a layerinf file passes; a PEFT
    folder must be LoRA-only (no ``modules_to_save``) with ``adapter_model.safetensors``. Returns the PEFT
    ``LoraConfig`` (None for a layerinf file)."""
    from pathlib import Path

    from layerinf.errors import LayerinfError
    from layerinf.model.adapters import adapter_kind

    adapter = Path(adapter).expanduser()
    if adapter_kind(adapter) == "layerinf":
        return None
    from layerinf.model.adapters import read_peft_lora_config

    saved = read_peft_lora_config(adapter)
    fix = "drop --adapter (suspects then fine-tunes the model on your data), or pass a LoRA-only PEFT adapter"
    if getattr(saved, "modules_to_save", None):
        raise LayerinfError(f"PEFT adapter {adapter} also trained {', '.join(saved.modules_to_save)} "
                            "(modules_to_save); layerinf imports LoRA-only adapters for instruction data", fix)
    if not (adapter / "adapter_model.safetensors").is_file():
        raise LayerinfError(f"PEFT adapter {adapter} has no adapter_model.safetensors",
                            "save it with save_pretrained(safe_serialization=True) (pickled weights are not read)")
    return saved


def import_causal_adapter(cfg: ModelConfig | str, adapter, *, seed: int = 0,
                          device: str | torch.device = "cpu") -> LoadedModel:
    """``cfg``'s causal LM with a user's trained adapter: a layerinf ``.safetensors`` file (from an SFT run's
    ``finetune/``) or a PEFT ``CAUSAL_LM`` adapter folder (``adapter_model.safetensors``). The adapter's LoRA
    rank, alpha, dropout and targets replace ``cfg``'s; the model has layerinf's layout, so every stage reads it
    as its own. PEFT adapters that also trained other modules (``modules_to_save``) are refused."""
    import dataclasses
    from pathlib import Path

    from layerinf.errors import LayerinfError
    from layerinf.model.adapters import adapter_kind, layerinf_lora_settings, peft_lora_settings

    cfg = ModelConfig(name=cfg) if isinstance(cfg, str) else cfg
    adapter = Path(adapter).expanduser()
    if adapter_kind(adapter) == "layerinf":
        return load_causal_lm(dataclasses.replace(cfg, **layerinf_lora_settings(adapter)), seed=seed,
                              adapter=adapter, device=device)
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = check_causal_adapter(adapter)
    weights = adapter / "adapter_model.safetensors"
    loaded = load_causal_lm(peft_lora_settings(saved, cfg), seed=seed, device=device)
    state = load_file(str(weights), device=str(loaded.device))
    lora = {n for n, _ in loaded.model.named_parameters() if "lora_" in n}
    try:
        result = set_peft_model_state_dict(loaded.model, state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise LayerinfError(f"PEFT adapter {adapter} does not fit model '{cfg.name}' "
                            f"({str(exc).splitlines()[0][:120]})", "pass the base model the adapter was trained on "
                            "(--model)") from None
    missing = lora & set(result.missing_keys)
    if missing or result.unexpected_keys:
        raise LayerinfError(f"PEFT adapter {adapter} does not fit model '{cfg.name}' ({len(missing)} LoRA tensors "
                            f"missing, {len(result.unexpected_keys)} unexpected)",
                            "pass the base model the adapter was trained on (--model)")
    return loaded


__all__ = ["attach_causal_lora", "check_causal_adapter", "check_causal_model", "import_causal_adapter", "load_causal_base", "load_causal_lm"]
