"""Save, read and load trained adapters (LoRA + head tensors, safetensors only), and import a user's adapter.

``save_adapter`` writes byte-identical files for identical tensors and metadata: safetensors keeps its
metadata in a hash map whose order changes from process to process, so the header is rewritten canonically
(metadata keys sorted, tensors in data order, JSON without spaces, padded to 8 bytes) before the atomic rename.

What an adapter trained elsewhere holds (a layerinf ``.safetensors`` file: rank and targets read from its
tensors; a PEFT adapter folder from ``save_pretrained``: rank, alpha, dropout and targets read from its
``adapter_config.json``) is read here; ``loading.import_adapter`` loads a model with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from layerinf.config import ModelConfig
from layerinf.errors import LayerinfError

log = logging.getLogger("layerinf")

ADAPTER_FORMAT = "layerinf-adapter-v1"
_HEAD_NAMES = ("classifier", "score")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors (LoRA + head), detached and contiguous, keyed by parameter name."""
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with a canonical header (sorted metadata, tensors in data order)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = {}
    if meta:
        ordered["__metadata__"] = {k: meta[k] for k in sorted(meta)}
    for name in sorted(header, key=lambda k: (header[k]["data_offsets"][0], k)):
        ordered[name] = header[name]
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def save_adapter(state: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike,
                 metadata: dict[str, str] | None = None) -> None:
    """Save a model's trainable state (or a state dict) as safetensors, atomically and byte-deterministically."""
    from safetensors.torch import save

    tensors = trainable_state(state) if isinstance(state, nn.Module) else state
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": ADAPTER_FORMAT, **(metadata or {})}
    blob = _canonical_safetensors(save(tensors, metadata={str(k): str(meta[k]) for k in sorted(meta)}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _corrupted(path: Path, exc: Exception) -> LayerinfError:
    return LayerinfError(
        f"adapter file {path} is corrupted or not a safetensors file ({str(exc).splitlines()[0][:80]})",
        "delete it and rerun `layerinf finetune` (the stage will be redone)",
    )


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
        raise _corrupted(path, exc) from None


def adapter_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text metadata of a safetensors adapter file (``format``, ``model``, ``lora_r``, ...)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise LayerinfError(f"adapter file {path} does not exist", "check the path")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _corrupted(path, exc) from None


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


# --------------------------------------------------------------------------------------- user adapters


def adapter_kind(adapter: str | os.PathLike) -> str:
    """``"peft"`` for a PEFT adapter folder, ``"layerinf"`` for a file; a clear error otherwise."""
    adapter = Path(adapter).expanduser()
    if adapter.is_dir():
        if not (adapter / "adapter_config.json").is_file():
            raise LayerinfError(f"adapter folder {adapter} has no adapter_config.json",
                                "pass a PEFT adapter folder (save_pretrained) or a layerinf .safetensors adapter")
        return "peft"
    if adapter.is_file():
        return "layerinf"
    raise LayerinfError(f"adapter {adapter} does not exist", "check the path")


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def adapter_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of an adapter file (hex); for a folder, a hash over its files' relative paths and SHA-256s
    (16 hex digits, the value layerinf has always stored for PEFT folders)."""
    adapter = Path(path).expanduser()
    adapter_kind(adapter)
    if adapter.is_file():
        return _sha256_file(adapter)
    files = sorted(p for p in adapter.rglob("*") if p.is_file())
    listing = {p.relative_to(adapter).as_posix(): _sha256_file(p) for p in files}
    return hashlib.sha256(json.dumps(listing, sort_keys=True, default=str).encode()).hexdigest()[:16]


def layerinf_lora_settings(adapter: str | os.PathLike) -> dict:
    """``lora_r`` and ``lora_targets`` of a layerinf adapter file, read from its tensor names and shapes (plus
    ``lora_alpha`` / ``lora_dropout`` when its metadata records them)."""
    state = read_adapter(adapter)
    ranks, targets = set(), []
    for name, t in state.items():
        if ".lora_A." in name:
            ranks.add(int(t.shape[0]))
            proj = name.split(".lora_A.")[0].rsplit(".", 1)[-1]
            if proj not in targets:
                targets.append(proj)
    if not ranks:
        raise LayerinfError(f"adapter file {adapter} holds no LoRA tensors",
                            "pass an adapter saved by layerinf finetune")
    if len(ranks) > 1:
        raise LayerinfError(f"adapter file {adapter} mixes LoRA ranks {sorted(ranks)}", "use a single-rank adapter")
    out: dict = {"lora_r": ranks.pop(), "lora_targets": targets}
    meta = adapter_metadata(adapter)
    for key, cast in (("lora_alpha", int), ("lora_dropout", float)):
        if key in meta:
            try:
                out[key] = cast(float(meta[key])) if cast is int else cast(meta[key])
            except ValueError:
                pass
    if "lora_alpha" not in out:  # written before layerinf recorded it: the caller's alpha scales the update
        msg = (f"adapter file {adapter} does not record its lora_alpha: the model's --lora-alpha is used; pass the "
               "alpha it was trained with if that differs")
        warnings.warn(msg, UserWarning, stacklevel=2)
        log.warning(msg)
    return out


def peft_head_saved(adapter: str | os.PathLike) -> bool:
    """Whether a PEFT adapter folder carries classification-head weights (modules_to_save)."""
    adapter = Path(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    if cfg.get("modules_to_save"):
        return True
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            keys = list(fh.keys())
        return any("lora_" not in k and any(h in k.split(".") for h in _HEAD_NAMES) for k in keys)
    return False


def _peft_targets(targets) -> list[str] | None:
    if not targets:
        return None
    return [targets] if isinstance(targets, str) else sorted(targets)


def read_peft_lora_config(adapter: str | os.PathLike):
    """A PEFT adapter folder's ``LoraConfig``, refused in one line when layerinf's LoRA would not reproduce it:
    another PEFT method, DoRA, rsLoRA, per-module rank or alpha patterns, some layers only, trained biases,
    ``target_modules`` as a regular expression, or a fractional alpha. (Such an adapter would load with
    different scaling or modules: a different model, silently.)"""
    from peft import PeftConfig

    adapter = Path(adapter).expanduser()
    try:
        pc = PeftConfig.from_pretrained(str(adapter))
    except (OSError, ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise LayerinfError(f"{adapter / 'adapter_config.json'} is not a readable PEFT config "
                            f"({str(exc).splitlines()[0][:100] if str(exc).strip() else type(exc).__name__})",
                            "pass the folder save_pretrained wrote") from None
    fix = ("train it as plain LoRA (r, lora_alpha, lora_dropout, a list of target_modules), or drop --adapter: "
           "layerinf then fine-tunes")
    kind = str(getattr(pc, "peft_type", "LORA")).split(".")[-1].upper()
    if kind != "LORA":
        raise LayerinfError(f"PEFT adapter {adapter} is a {kind} adapter, not LoRA", fix)
    alpha = getattr(pc, "lora_alpha", 1)
    unsupported = [name for name, used in (
        ("use_dora", bool(getattr(pc, "use_dora", False))),
        ("use_rslora", bool(getattr(pc, "use_rslora", False))),
        ("rank_pattern", bool(getattr(pc, "rank_pattern", None))),
        ("alpha_pattern", bool(getattr(pc, "alpha_pattern", None))),
        ("layers_to_transform", getattr(pc, "layers_to_transform", None) is not None),
        ("bias", getattr(pc, "bias", "none") != "none"),
        ("lora_bias", bool(getattr(pc, "lora_bias", False))),
        ("target_modules as a regular expression", isinstance(getattr(pc, "target_modules", None), str)),
        (f"lora_alpha {alpha} (not a whole number)", float(alpha) != int(float(alpha))),
    ) if used]
    if unsupported:
        raise LayerinfError(f"PEFT adapter {adapter} uses {', '.join(unsupported)}, which layerinf's LoRA does not "
                            "reproduce", fix)
    return pc


def peft_lora_settings(pc, cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the LoRA rank, alpha, dropout and targets of a PEFT adapter's ``LoraConfig``."""
    return dataclasses.replace(cfg, lora_r=int(getattr(pc, "r", cfg.lora_r)),
                               lora_alpha=int(getattr(pc, "lora_alpha", cfg.lora_alpha)),
                               lora_dropout=float(getattr(pc, "lora_dropout", cfg.lora_dropout)),
                               lora_targets=_peft_targets(getattr(pc, "target_modules", None)))


def copy_lora(lora: dict[str, torch.Tensor], target: nn.Module, adapter, model_name: str) -> None:
    """Copy the LoRA tensors ``lora`` (by parameter name, from a loaded PEFT adapter) into ``target`` (layerinf's
    layout of the same base and LoRA settings); the names must match one to one."""
    names = {n for n, _ in target.named_parameters() if "lora_" in n}
    if names != set(lora):
        raise LayerinfError(f"PEFT adapter {adapter}: its LoRA tensors do not match layerinf's LoRA on model "
                            f"'{model_name}' ({len(set(lora) ^ names)} differ)",
                            "drop --adapter (layerinf then fine-tunes), or report the adapter's config as a bug")
    with torch.no_grad():
        for name, p in target.named_parameters():
            if name in lora:
                p.copy_(lora[name])


__all__ = [
    "ADAPTER_FORMAT", "adapter_fingerprint", "adapter_kind", "adapter_metadata", "copy_lora",
    "peft_lora_settings", "read_peft_lora_config",
    "layerinf_lora_settings",
    "load_adapter", "peft_head_saved", "read_adapter", "save_adapter", "trainable_state",
]
