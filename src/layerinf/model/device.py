"""Where to compute, and in which precision the frozen base weights are held.

``resolve_device`` maps ``runtime.device`` (``auto | cpu | cuda | cuda:N | mps``) to a ``torch.device`` with
one clear error when the device is not there. ``base_dtype`` maps ``model.precision`` (``fp32 | bf16 |
fp16``) to a torch dtype and refuses fp16 on a CPU (half-precision matmuls there are missing or very slow).
``check_quantization`` refuses ``model.quantization`` 8bit / 4bit (bitsandbytes) off CUDA or without bitsandbytes.
"""

from __future__ import annotations

import re

import torch

from layerinf.errors import LayerinfError

DEVICE_FORMS = "auto, cpu, cuda, cuda:N, mps"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` checked."""
    if isinstance(name, torch.device):
        name = str(name)
    key = str(name).strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", key)
    if m:
        if not torch.cuda.is_available():
            raise LayerinfError("no CUDA GPU is available (torch.cuda.is_available() is False)",
                                "use --device cpu (or auto)")
        if m.group(1) is None:
            return torch.device("cuda")
        index, count = int(m.group(1)), torch.cuda.device_count()
        if index >= count:
            raise LayerinfError(f"device cuda:{index} does not exist: {count} CUDA GPU(s) visible "
                                f"(cuda:0{'' if count == 1 else f' … cuda:{count - 1}'})",
                                f"use --device cuda:0{'' if count == 1 else f' … cuda:{count - 1}'} (or auto)")
        return torch.device("cuda", index)
    if key == "mps":
        if not _mps_available():
            raise LayerinfError("no Apple MPS device is available (torch.backends.mps.is_available() is False)",
                                "use --device cpu (or auto)")
        return torch.device("mps")
    raise LayerinfError(f"unknown device '{name}'", f"use one of {DEVICE_FORMS}")


def base_dtype(precision: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The dtype of the frozen base weights for ``precision`` on ``device`` (fp16 is refused on a CPU)."""
    key = str(precision).strip().lower()
    if key not in PRECISIONS:
        raise LayerinfError(f"unknown precision '{precision}'", f"use one of {', '.join(PRECISIONS)}")
    dev = device if isinstance(device, torch.device) else torch.device(str(device))
    if key == "fp16" and dev.type == "cpu":
        raise LayerinfError("fp16 is not supported on CPU (half-precision kernels are missing or very slow there)",
                            "use --precision bf16 or fp32")
    return PRECISIONS[key]


QUANTIZATIONS = ("none", "8bit", "4bit")


def check_quantization(quantization: str | None, device: str | torch.device = "cpu") -> str:
    """``quantization`` (``none | 8bit | 4bit``) checked against ``device``: bitsandbytes quantises the frozen base
    on CUDA only, and must be installed (the ``quant`` extra). Returns the normalised name; raises a one-line
    ``LayerinfError`` naming the fix otherwise (called before anything is written)."""
    key = str(quantization or "none").strip().lower()
    if key not in QUANTIZATIONS:
        raise LayerinfError(f"unknown quantization '{quantization}'", f"use one of {', '.join(QUANTIZATIONS)}")
    if key == "none":
        return key
    dev = device if isinstance(device, torch.device) else torch.device(str(device))
    if dev.type != "cuda":
        raise LayerinfError(f"--quantization {key} needs a CUDA GPU (bitsandbytes), but the device is {dev.type}",
                            "use --device cuda (with pip install 'layerinf[quant]'), or --quantization none")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise LayerinfError(f"--quantization {key} needs bitsandbytes, which is not installed",
                            "pip install 'layerinf[quant]' (or use --quantization none)")
    return key


__all__ = ["DEVICE_FORMS", "PRECISIONS", "QUANTIZATIONS", "base_dtype", "check_quantization", "resolve_device"]
