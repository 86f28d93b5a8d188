"""The suspects table: every training row ranked by ascending score (rank 1 = most suspicious), one builder per
task (``stages.task``: ``Task.suspects_table``; cross-fitting builds it from the folds' combined scores)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from layerinf.evaluation import metrics


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def build_table(train: pd.DataFrame, label_names: list[str], scores: np.ndarray, logits: np.ndarray | None,
                top: float | None, mask_known: bool, probs: np.ndarray | None = None, *, flagged: int | None = None,
                oos_probs: np.ndarray | None = None, rankings: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Every training example ranked by ascending score (stable; rank 1 = most suspicious). Class probabilities
    come from ``logits`` (softmax) or are given as ``probs``. The lowest ``flagged`` rows (else ``top`` × n) are
    suspects. Cross-fitting adds ``p_given_oos`` and ``p_oos:<class>`` (``oos_probs``: each row predicted by the
    model that held it out) and ``score:<ranking>`` for every ranking side by side."""
    n = len(train)
    order = metrics.filter_order(scores)
    k = metrics.removal_count(top, n) if flagged is None else int(flagged)
    given = train["label"].to_numpy(np.int64)
    probs = _softmax(np.asarray(logits, dtype=np.float64)) if probs is None else np.asarray(probs, np.float64)
    pred = probs.argmax(1)
    names = np.asarray(label_names, dtype=object)
    tp = train["text_pair"].to_numpy(object)
    out = pd.DataFrame({
        "rank": np.arange(1, n + 1, dtype=np.int64),
        "index": train["idx"].to_numpy(np.int64)[order],
        "source_idx": train["source_idx"].to_numpy(np.int64)[order],
        "text": train["text"].to_numpy(object)[order],
        "text_pair": [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in tp[order]],
        "given_label": names[given[order]],
        "predicted_label": names[pred[order]],
        "probability": probs[order, given[order]],
        "score": np.asarray(scores, dtype=np.float64)[order],
        "suspect": np.arange(n) < k,
    })
    if oos_probs is not None:
        oos = np.asarray(oos_probs, dtype=np.float64)
        out["predicted_oos"] = names[oos.argmax(1)[order]]
        out["p_given_oos"] = oos[order, given[order]]
        for j, name in enumerate(label_names):
            out[f"p_oos:{name}"] = oos[order, j]
    for name, values in (rankings or {}).items():
        out[f"score:{name}"] = np.asarray(values, dtype=np.float64)[order]
    if mask_known:
        out["noisy"] = train["noisy"].to_numpy(bool)[order]
    return out


def build_sft_table(train: pd.DataFrame, scores: np.ndarray, losses: np.ndarray, top: float,
                    mask_known: bool, extra: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Every instruction example (an SFT split: ``prompt``, ``response``) ranked by ascending score (stable; rank 1
    = most suspicious), with ``losses``: each row's response loss under the fine-tuned model, and ``extra`` columns
    (row order as ``train``)."""
    n = len(train)
    order = metrics.filter_order(scores)
    k = metrics.removal_count(top, n)
    out = pd.DataFrame({
        "rank": np.arange(1, n + 1, dtype=np.int64),
        "index": train["idx"].to_numpy(np.int64)[order],
        "source_idx": train["source_idx"].to_numpy(np.int64)[order],
        "prompt": train["prompt"].astype(str).to_numpy(object)[order],
        "response": train["response"].astype(str).to_numpy(object)[order],
        "response_loss": np.asarray(losses, dtype=np.float64)[order],
        "score": np.asarray(scores, dtype=np.float64)[order],
        "suspect": np.arange(n) < k,
    })
    for name, values in (extra or {}).items():
        out[name] = np.asarray(values, dtype=np.float64)[order]
    if mask_known:
        out["noisy"] = train["noisy"].to_numpy(bool)[order]
    return out
