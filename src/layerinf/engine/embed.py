"""Sentence embeddings of a split from the frozen base model: the mean of the last hidden layer over the real
tokens, L2-normalised (sentence-transformers' recipe for all-MiniLM-L6-v2). Batched, eval mode, no gradients.

A freshly loaded LoRA model (B = 0) computes exactly its base model's hidden states, so the run's model loader
serves; the head is not used.
"""

from __future__ import annotations

import numpy as np
import torch

from layerinf.engine.batching import EncodedSplit
from layerinf.engine.memory import free_memory, halve, is_oom
from layerinf.model import eval_mode


def sentence_embeddings(model, encoded: EncodedSplit, batch_size: int = 64) -> np.ndarray:
    """(n × hidden) float32, rows in split order."""
    from layerinf.engine.collect import forward_inputs

    device = next(model.parameters()).device
    order = np.argsort(encoded.lengths, kind="stable")  # similar lengths together: less padding
    out: np.ndarray | None = None
    start, size = 0, max(1, int(batch_size))
    with eval_mode(model), torch.no_grad():
        while start < len(order):
            rows = order[start : start + size]
            try:
                batch = encoded.collate(rows)
                inputs = forward_inputs(model, batch, device)
                hidden = model(**inputs, output_hidden_states=True).hidden_states[-1].float()
            except Exception as exc:  # noqa: BLE001 — only out-of-memory errors are handled
                if not is_oom(exc):
                    raise
                free_memory(device)
                size = halve(min(size, len(rows)), device)
                continue
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(encoded), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
            start += len(rows)
    return out


__all__ = ["sentence_embeddings"]
