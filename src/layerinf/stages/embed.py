"""The ``embed`` stage of ``suspects``: the ranked rows' sentence embeddings from the frozen base model, and the
out-of-sample class probabilities of a logistic regression on them (``evaluation.rankings.embedding_probs``, 5-fold
cross-validation): the ``embedding`` ranking, which needs no fine-tuned model (the cleanlab text tutorial's recipe,
computed in-house so that layerinf's answer can be compared with it and combined with it).

Writes ``embeddings.npy`` (n × hidden, L2-normalised, rows in the ranked rows' order) and ``pred_probs.npy``
(n × classes). Classification data only.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from layerinf.config import ModelConfig
from layerinf.stages.base import StageBase
from layerinf.store.layout import EMBED, EMBEDDINGS_FILE, PRED_PROBS_FILE

CV_FOLDS = 5


def rows_fingerprint(rows: pd.DataFrame) -> str:
    """sha256 of the rows' texts and labels, in order (what the embeddings and probabilities are of)."""
    h = hashlib.sha256()
    for col in ("text", "text_pair", "label"):
        h.update(pd.util.hash_pandas_object(rows[col].astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()


class EmbedStage(StageBase):
    """Embeddings and embedding-classifier probabilities of ``rows`` (``text``, ``text_pair``, ``label``)."""

    name = EMBED
    artifacts = (EMBEDDINGS_FILE, PRED_PROBS_FILE)

    def __init__(self, run_dir, rows: pd.DataFrame, num_labels: int):
        super().__init__(run_dir)
        self.rows, self.num_labels = rows.reset_index(drop=True), int(num_labels)

    def key(self, model: ModelConfig, seed: int = 0) -> dict:
        return {"model": model.name, "max_length": model.max_length, "precision": model.precision,
                "rows": rows_fingerprint(self.rows), "n": len(self.rows), "cv_folds": CV_FOLDS, "seed": int(seed)}

    def seed(self, model: ModelConfig, seed: int = 0) -> int:
        return int(seed)

    def compute(self, st, model: ModelConfig, seed: int = 0, *, inputs=None, progress=True, device="cpu") -> dict:
        from layerinf.engine.batching import encode_split
        from layerinf.engine.embed import sentence_embeddings
        from layerinf.evaluation.rankings import embedding_probs
        from layerinf.model import load_classifier

        loaded = load_classifier(model, self.num_labels, seed=int(seed), device=device)
        encoded = encode_split(self.rows, loaded.tokenizer, model.max_length)
        emb = sentence_embeddings(loaded.model, encoded)
        probs = embedding_probs(emb, self.rows["label"].to_numpy(np.int64), num_classes=self.num_labels,
                                folds=CV_FOLDS, seed=int(seed))
        np.save(st.out(EMBEDDINGS_FILE), emb)
        np.save(st.out(PRED_PROBS_FILE), probs)
        return {"n": len(self.rows), "dims": int(emb.shape[1]), "cv_folds": CV_FOLDS}

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, out-of-sample class probabilities)."""
        return np.load(self.path / EMBEDDINGS_FILE), np.load(self.path / PRED_PROBS_FILE)


__all__ = ["EmbedStage", "rows_fingerprint"]
