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


import numpy as np

from layerinf.config import DataConfig, ModelConfig, TrainConfig
from layerinf.evaluation.noise_rate import NoiseEstimate
from layerinf.stages.data import DataStage
from layerinf.stages.finetune import FinetuneStage
from layerinf.stages.noise import N_BOOT, NoiseStage, fold_ids, held_out_probs
from layerinf.store.layout import PROBES_DIR, SOURCE_DIR
from layerinf.store.rundir import RunDir
from layerinf.workflows.probe_data import source_config, write_source



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
