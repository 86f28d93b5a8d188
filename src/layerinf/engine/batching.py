"""Tokenise a split once and serve padded batches (with each sample's split index) for training and collection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from layerinf.errors import LayerinfError


IGNORE_INDEX = -100  # token_labels of prompt and padding positions: no loss there (PyTorch's ignore_index)

@dataclass
class EncodedSplit:
    """Token ids of one split (ragged), its labels and split indices; padding happens per batch."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray  # int64, the labels the loss uses (noisy in train)
    index: np.ndarray  # int64, the split's `idx` column
    pad_token_id: int
    padding_side: str

    def __len__(self) -> int:
        return len(self.features)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(f["input_ids"]) for f in self.features), dtype=np.int64, count=len(self))

    def collate(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Pad the given rows (positions in this split) into one batch."""
        feats = [self.features[i] for i in rows]
        width = max(len(f["input_ids"]) for f in feats)
        batch: dict[str, torch.Tensor] = {}
        for key in feats[0]:
            fill = self.pad_token_id if key == "input_ids" else IGNORE_INDEX if key == "token_labels" else 0
            out = np.full((len(feats), width), fill, dtype=np.int64)
            for r, f in enumerate(feats):  # a batch-sized loop of array copies, not per-sample math
                seq = f[key]
                if self.padding_side == "left":
                    out[r, width - len(seq) :] = seq
                else:
                    out[r, : len(seq)] = seq
            batch[key] = torch.from_numpy(out)
        batch["labels"] = torch.from_numpy(self.labels[rows])
        batch["index"] = torch.from_numpy(self.index[rows])
        return batch

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: np.random.Generator | None = None,
        sort_by_length: bool = False,
        rows: np.ndarray | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield padded batches. ``sort_by_length`` groups similar lengths (less padding) for inference."""
        order = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        if shuffle:
            order = (generator or np.random.default_rng()).permutation(order)
        elif sort_by_length:
            order = order[np.argsort(self.lengths[order], kind="stable")]
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start : start + batch_size])

    def num_batches(self, batch_size: int, rows: np.ndarray | None = None) -> int:
        n = len(self) if rows is None else len(rows)
        return (n + batch_size - 1) // batch_size


def encode_split(df: pd.DataFrame, tokenizer, max_length: int = 128, label_column: str = "label") -> EncodedSplit:
    """Tokenise ``text`` (and ``text_pair`` when present) with truncation to ``max_length``."""
    if len(df) == 0:
        raise LayerinfError("cannot encode an empty split", "check the data source and the split sizes")
    texts = df["text"].astype(str).tolist()
    pairs = None
    if "text_pair" in df.columns and df["text_pair"].notna().any():
        pairs = df["text_pair"].fillna("").astype(str).tolist()
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
    index = df["idx"].to_numpy(dtype=np.int64) if "idx" in df.columns else np.arange(len(df), dtype=np.int64)
    return EncodedSplit(
        features=features,
        labels=df[label_column].to_numpy(dtype=np.int64),
        index=index,
        pad_token_id=int(tokenizer.pad_token_id),
        padding_side=getattr(tokenizer, "padding_side", "right"),
    )


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys a HF model's forward takes (drops labels and index)."""
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
