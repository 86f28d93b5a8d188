"""Out-of-memory back-off shared by training (``train.fit``) and gradient collection (``collect``).

When a forward/backward pass runs out of device memory (``torch.cuda.OutOfMemoryError``, or a
``RuntimeError`` whose message says "out of memory"), the caller frees what it holds, calls
:func:`free_memory` and :func:`halve` — which logs ``out of memory at batch size 32 on cuda:0: retrying with
16`` on the ``layerinf`` logger — and retries the same batch (collection: the same samples, in smaller
batches; training: the same batch as micro-batches whose gradients are accumulated, so the optimisation step
is unchanged). The smaller size is kept for the rest of the call. At batch size 1 there is nothing left to
halve: :func:`halve` raises a :class:`LayerinfError` naming the remedies.
"""

from __future__ import annotations

import gc
import logging

import torch

from layerinf.errors import LayerinfError

log = logging.getLogger("layerinf")

OOM_PROBLEM = "out of memory even at batch size 1"
OOM_FIX = "use --precision bf16, gradient checkpointing, or a smaller --max-length"
_OOM_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory error (CUDA, MPS, or an allocator's RuntimeError)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, (oom_type, torch.cuda.OutOfMemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return any(m in msg for m in _OOM_MESSAGES)
    return False


def device_label(device: torch.device | str) -> str:
    """``cuda:0`` for a bare ``cuda`` (the current device), else the device as written."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and dev.index is None:
        try:
            return f"cuda:{torch.cuda.current_device()}"
        except Exception:  # noqa: BLE001 — a label only; no CUDA context to ask
            return "cuda:0"
    return str(dev)


def free_memory(device: torch.device | str) -> None:
    """Collect garbage and return cached blocks to the device (after the failed pass's tensors are dropped)."""
    gc.collect()
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif dev.type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "empty_cache"):
            mps.empty_cache()


def halve(size: int, device: torch.device | str, note: str = "") -> int:
    """The next batch size after an out-of-memory error at ``size`` (logged), or the final LayerinfError."""
    size = int(size)
    if size <= 1:
        raise LayerinfError(OOM_PROBLEM, OOM_FIX)
    new = size // 2
    log.warning("out of memory at batch size %d on %s: retrying with %d%s", size, device_label(device), new, note)
    return new


__all__ = ["OOM_FIX", "OOM_PROBLEM", "device_label", "free_memory", "halve", "is_oom"]
