"""The noise stage (``OUT/noise``): out-of-sample class probabilities of a training set from cross-fitted fold
models, and confident learning's noise-rate estimate on them. The fold models are made by
``workflows.advise_noise.run_noise`` (separate fold runs) or are the advisor's cross-fitted probes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from layerinf.evaluation.noise_rate import NoiseEstimate, estimate_noise_rate, softmax
from layerinf.stages.base import Inputs, StageBase
from layerinf.stages.finetune import encode_splits
from layerinf.store.layout import DATA, FINETUNE, NOISE, NOISE_ESTIMATE_FILE, NOISE_FOLDS_FILE, NOISE_PROBS_FILE
from layerinf.store.rundir import RunDir, atomic_write_json

N_BOOT = 1000


def fold_ids(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold id (0..folds−1) of every training example, seeded."""
    from sklearn.model_selection import StratifiedKFold

    out = np.full(len(labels), -1, dtype=np.int64)
    for f, (_, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(labels, labels)):
        out[held] = f
    return out


def held_out_probs(finetuned, fold_data, prepared, rows: np.ndarray, device: str, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of ``prepared.train`` rows by the best checkpoint of a fold run (``finetuned``: its
    finished ``FinetuneStage``, ``fold_data``: its prepared data)."""
    import torch

    loaded, model_cfg = finetuned.model(fold_data, "best", device)
    enc = encode_splits(prepared, loaded.tokenizer, model_cfg.max_length)["train"]
    model = loaded.model.eval()
    dev = next(model.parameters()).device
    logits = []
    with torch.no_grad():
        for batch in enc.batches(batch_size, rows=rows):
            inputs = {k: batch[k].to(dev) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            logits.append(model(**inputs).logits.float().cpu().numpy())
    return softmax(np.concatenate(logits))


class NoiseStage(StageBase):
    """OUT/noise: out-of-sample probabilities of the training set (from the fold runs) and the estimate."""

    name = NOISE
    upstream = (DATA,)
    artifacts = (NOISE_PROBS_FILE, NOISE_FOLDS_FILE, NOISE_ESTIMATE_FILE)

    def __init__(self, run_dir, fold_dirs=(), fold_of: np.ndarray | None = None):
        super().__init__(run_dir)
        self.fold_dirs, self.fold_of = [Path(p) for p in fold_dirs], fold_of

    def check_upstream(self) -> dict[str, str]:
        inputs = super().check_upstream()
        for p in self.fold_dirs:
            inputs[self.run_dir.layout.input_key(RunDir(p).layout, FINETUNE)] = RunDir(p).fingerprint(FINETUNE)
        return inputs

    def key(self, n_boot: int) -> dict:
        return {"folds": len(self.fold_dirs), "n_boot": int(n_boot)}

    def inputs(self) -> Inputs:
        """This folder's data, and each fold run's data and fine-tuned model (``parts``)."""
        return Inputs(self.run_dir, self.upstream,
                      parts=[Inputs(p, (DATA, FINETUNE), verify=True) for p in self.fold_dirs])

    def compute(self, st, n_boot: int, *, inputs, progress=True, device="cpu") -> dict:
        prepared = inputs[DATA]
        labels = prepared.train["label"].to_numpy(np.int64)
        probs = np.full((len(labels), prepared.num_classes), np.nan)
        for f, fold in enumerate(inputs.parts):
            held = np.flatnonzero(self.fold_of == f)
            probs[held] = held_out_probs(fold.stage(FINETUNE), fold[DATA], prepared, held, device)
        est = estimate_noise_rate(probs, labels, n_boot=n_boot, seed=int(prepared.meta.get("seed", 0)))
        est.extra = {"folds": len(self.fold_dirs), "accuracy_vs_given_labels": float((probs.argmax(1) == labels).mean()),
                     "majority_share": float(np.bincount(labels).max() / len(labels))}
        np.save(st.out(NOISE_PROBS_FILE), probs.astype(np.float32))
        np.save(st.out(NOISE_FOLDS_FILE), self.fold_of)
        atomic_write_json(st.out(NOISE_ESTIMATE_FILE), est.to_dict())
        return {"rate": est.rate, "low": est.low, "high": est.high, "folds": len(self.fold_dirs)}

    def load(self) -> NoiseEstimate:
        return NoiseEstimate(**json.loads((self.path / NOISE_ESTIMATE_FILE).read_text(encoding="utf-8")))

    def probs(self) -> np.ndarray:
        """The out-of-sample class probabilities (rows in the training set's order)."""
        return np.load(self.path / NOISE_PROBS_FILE)


__all__ = ["N_BOOT", "NoiseStage", "fold_ids", "held_out_probs"]
