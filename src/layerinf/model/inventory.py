"""Name a LoRA-wrapped model's influence modules (``ModuleSpec``) and count its transformer layers.

``inventory`` works on a live model (weights may sit on the meta device); ``num_layers_of`` answers from the
configuration alone — no weights are loaded — so layer-group names can be checked before any training.
"""

from __future__ import annotations

import re

from torch import nn

from layerinf.errors import LayerinfError
from layerinf.spec import ModuleSpec

QUERY_NAMES = ("query", "q_proj", "q", "query_proj")
VALUE_NAMES = ("value", "v_proj", "v", "value_proj")
_LAYER_RE = re.compile(r"\.(?:layer|layers|h|blocks|block)\.(\d+)\.")
_KIND_ORDER = {"query_A": 0, "query_B": 1, "value_A": 2, "value_B": 3}


def num_layers(model: nn.Module) -> int:
    """The number of transformer layers of a loaded model (its config's ``num_hidden_layers``)."""
    cfg = getattr(model, "config", None)
    n = _layers_from_config(cfg)
    if n is None:
        raise LayerinfError(f"cannot tell the number of layers of {type(model).__name__}", "use a standard HF config")
    return n


def _layers_from_config(cfg) -> int | None:
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text_cfg, "num_hidden_layers", None)
    return None if n is None else int(n)


def _gguf_block_count(path: str) -> int | None:
    """``<arch>.block_count`` from a GGUF file's metadata (memory-mapped; no tensor is de-quantised)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        return None
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    count = reader.fields.get(f"{arch}.block_count")
    return None if count is None else int(count.parts[count.data[0]][0])


def num_layers_of(cfg) -> int:
    """The number of transformer layers of ``cfg.name`` (a ``ModelConfig`` or a model name) WITHOUT loading
    weights: a shape's table, SmolLM2's known 30, a GGUF file's metadata, or the (Hub/local) ``config.json``."""
    from pathlib import Path

    from layerinf.model.sources import SHAPES, SMOLLM2_LAYERS, resolve_source, unknown_model_error

    name = cfg if isinstance(cfg, str) else cfg.name
    trust = False if isinstance(cfg, str) else bool(cfg.trust_remote_code)
    src = resolve_source(name)
    if src.shape is not None:
        return SHAPES[src.shape].num_layers
    if src.name == "smollm2-135m":
        return SMOLLM2_LAYERS
    n = None
    if src.gguf_file:
        n = _gguf_block_count(str(Path(src.path) / src.gguf_file))
    else:
        from transformers import AutoConfig

        try:
            n = _layers_from_config(AutoConfig.from_pretrained(src.path, trust_remote_code=trust))
        except (OSError, ValueError) as exc:
            raise unknown_model_error(src.name, f"its configuration could not be read: {type(exc).__name__}") from None
    if n is None:
        raise LayerinfError(f"cannot tell the number of layers of model '{name}'", "use a standard HF model")
    return n


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
            kind = "query" if proj in QUERY_NAMES else "value" if proj in VALUE_NAMES else proj
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
    lora_specs.sort(key=lambda s: (s.layer, _KIND_ORDER.get(s.kind, 9), s.name))
    specs: list[ModuleSpec] = []
    if include_we:
        emb = model.get_input_embeddings()
        emb_name = next(n for n, m in model.named_modules() if m is emb)
        specs.append(ModuleSpec("WE", f"{emb_name}.weight", emb_name, "weight", "we", None, tuple(emb.weight.shape)))
    return specs + lora_specs + cl_specs


__all__ = ["ModuleSpec", "QUERY_NAMES", "VALUE_NAMES", "inventory", "num_layers", "num_layers_of"]
