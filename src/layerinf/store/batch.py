"""One batch of per-sample gradients: what ``engine.collect`` makes and the gradient store's writer takes.

Defined in the store (which imports nothing of the engine) so that the engine depends on the store, never the
reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch


class WERows(NamedTuple):
    """Row-sparse word-embedding gradients of consecutive samples: sample ``i`` owns ``indptr[i]:indptr[i+1]``."""

    indptr: Any  # (b + 1,) int64, starts at 0
    tokens: Any  # (nnz,) int64 token ids, sorted within a sample
    rows: Any  # (nnz, h) gradient rows (summed over repeated tokens)


@dataclass
class GradBatch:
    """Per-sample results of one batch; row ``k`` of every tensor belongs to split position ``rows[k]``."""

    rows: np.ndarray  # (b,) int64 positions in the EncodedSplit
    grads: dict[str, torch.Tensor]  # module name → (b, numel)
    we: WERows | None  # torch tensors, batch order
    loss: torch.Tensor  # (b,) each sample's own loss (classification: cross-entropy on its label)
    logits: torch.Tensor  # (b, C): the objective's summary (classification: the logits)
    labels: torch.Tensor  # (b,)

    def __len__(self) -> int:
        return len(self.rows)
