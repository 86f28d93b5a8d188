"""The model layer: sources (built-ins, shape models, the paper's models), loading with LoRA, devices and
precision, module inventory, and adapters. Import the public API from here (``from layerinf.model import ...``).

* ``sources`` — ``resolve_source``, the built-ins, ``shape:`` models, ``PAPER_MODELS``, ``default_lr``;
* ``loading`` — ``load_classifier`` → ``LoadedModel`` (tokenizer, base model cache, LoRA attach), ``import_adapter``;
* ``device`` — ``resolve_device``, ``base_dtype``, ``check_quantization``;
* ``inventory`` — ``inventory`` (``ModuleSpec`` per influence module), ``num_layers``, ``num_layers_of``;
* ``adapters`` — ``save_adapter`` / ``read_adapter`` / ``load_adapter``, ``adapter_fingerprint``.
"""

from layerinf.model.adapters import (
    ADAPTER_FORMAT,
    adapter_fingerprint,
    adapter_kind,
    adapter_metadata,
    layerinf_lora_settings,
    load_adapter,
    peft_head_saved,
    read_adapter,
    save_adapter,
    trainable_state,
)
from layerinf.model.device import PRECISIONS, QUANTIZATIONS, base_dtype, check_quantization, resolve_device
from layerinf.model.inventory import inventory, num_layers, num_layers_of
from layerinf.model.loading import (
    LoadedModel,
    attach_lora,
    clear_model_cache,
    eval_mode,
    find_lora_targets,
    head_module,
    import_adapter,
    load_base_model,
    load_classifier,
    load_tokenizer,
    place,
    reset_head,
    set_gradient_checkpointing,
)
from layerinf.model.sources import (
    BUILTINS,
    DEFAULT_LR,
    PAPER_LR,
    PAPER_MODELS,
    SHAPES,
    ModelSource,
    PaperModel,
    ShapeSpec,
    default_lora_targets,
    default_lr,
    known_names,
    paper_model,
    resolve_source,
)
from layerinf.spec import ModuleSpec

__all__ = [
    "ADAPTER_FORMAT", "BUILTINS", "DEFAULT_LR", "PAPER_LR", "PAPER_MODELS", "PRECISIONS", "QUANTIZATIONS", "SHAPES",
    "LoadedModel",
    "ModelSource", "ModuleSpec", "PaperModel", "ShapeSpec", "adapter_fingerprint", "adapter_kind",
    "adapter_metadata", "attach_lora", "base_dtype", "check_quantization", "clear_model_cache",
    "default_lora_targets", "default_lr",
    "eval_mode", "find_lora_targets", "head_module", "import_adapter", "inventory", "known_names",
    "layerinf_lora_settings", "load_adapter", "load_base_model", "load_classifier", "load_tokenizer", "num_layers",
    "num_layers_of", "paper_model", "peft_head_saved", "place", "read_adapter", "reset_head", "resolve_device",
    "resolve_source", "save_adapter", "set_gradient_checkpointing", "trainable_state",
]
