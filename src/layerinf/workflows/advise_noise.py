"""The advisor's noise-rate estimate (``layerinf advise``, docs/advisor.md): out-of-sample class probabilities of
every training example from cross-fitted models, and confident learning on them (``evaluation.noise_rate``).

Two ways to get the cross-fitted models:

- **shared with the probes** (the default, ``noise_folds=None`` with ``probes`` ≥ 2): the training set is cut into
  ``probes`` stratified folds and probe k fine-tunes on every fold but k (with its planted flips); fold k's rows
  are predicted by probe k's best checkpoint. No extra fine-tuning. The held-out rows' probabilities come from a
  model trained with ``probe_rate`` more wrong labels than your data have, which makes it a little less sure of
  itself than a model of your data alone; confident learning's per-class thresholds follow its confidence, so the
  count of issues is affected less than the probabilities are.
- **separate fold runs** (``noise_folds`` = K ≥ 2, or ``probes`` = 1): K more fine-tunings under
  ``OUT/probes/fold<k>/`` on your labels alone (the probes then train on the whole training set).

Either way ``OUT/noise/`` holds the probabilities (``probs.npy``), the fold ids and ``estimate.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from layerinf.config import DataConfig, ModelConfig, TrainConfig
from layerinf.evaluation.noise_rate import NoiseEstimate, estimate_noise_rate, softmax
from layerinf.stages.base import Inputs, StageBase
from layerinf.stages.data import DataStage
from layerinf.stages.finetune import FinetuneStage, encode_splits
from layerinf.store.layout import (DATA, FINETUNE, NOISE, NOISE_ESTIMATE_FILE, NOISE_FOLDS_FILE, NOISE_PROBS_FILE,
                                   PROBES_DIR, SOURCE_DIR)
from layerinf.store.rundir import RunDir, atomic_write_json
from layerinf.workflows.probe_data import source_config, write_source

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


def run_noise(out: RunDir, base, data: DataConfig, model: ModelConfig, train: TrainConfig, folds: int, *, device: str,
              progress: bool = True, force: bool = False, n_boot: int = N_BOOT, runtime=None,
              where: str = PROBES_DIR) -> NoiseEstimate:
    """Cross-fitting (one fold run per fold under OUT/<where>/fold<k>/, on ``base``'s training labels as they are)
    and the noise stage (OUT/noise: out-of-sample probabilities of ``base.train``, in its order, and the estimate).
    Used by ``advise`` (separate fold runs) and by ``run`` for the ``confident_learning`` model baseline."""
    src = out.root / where / SOURCE_DIR
    dev_file = write_source(base, None, src / "dev.jsonl", "dev")
    fold_of = fold_ids(base.train["label"].to_numpy(np.int64), folds, data.seed)
    fold_dirs = []
    for f in range(folds):
        train_file = write_source(base, np.flatnonzero(fold_of != f), src / f"fold{f}.jsonl")
        fold_dir = out.root / where / f"fold{f}"
        fr = RunDir(fold_dir)
        with fr.guard(), fr.locked():
            DataStage(fr).run(source_config(base, train_file, dev_file, noise_rate=0.0, seed=data.seed), force=force,
                              progress=progress)
            FinetuneStage(fr, runtime=runtime).run(model, train, force=force, progress=progress, device=device)
        fold_dirs.append(fold_dir)
    return NoiseStage(out, fold_dirs, fold_of).run(n_boot, force=force, progress=progress, device=device)


__all__ = ["N_BOOT", "NoiseStage", "fold_ids", "held_out_probs", "run_noise"]
