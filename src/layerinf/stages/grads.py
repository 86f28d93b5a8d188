"""The ``grads`` stage (``layerinf grads``): per-sample gradients of every module, train and influence sets.

One forward and one backward per batch at the chosen checkpoint (default: best influence loss); LoRA A/B
and head gradients are dense, word-embedding gradients row-sparse. Each split is a gradient store
(``store.gradstore``) under ``grads/<split>/``.
"""

from __future__ import annotations

from dataclasses import asdict

from layerinf.config import GradsConfig
from layerinf.stages.base import StageBase
from layerinf.store.layout import DATA, FINETUNE, GRAD_SPLITS, GRADS, adapter_file


class GradsStage(StageBase):
    name = GRADS
    upstream = (DATA, FINETUNE)
    artifacts = tuple(f"{split}/info.json" for split in GRAD_SPLITS)

    def key(self, cfg: GradsConfig) -> dict:
        return {"grads": asdict(cfg)}

    def compute(self, st, cfg: GradsConfig, *, progress=True, device="cpu") -> dict:
        from layerinf.engine.collect import write_store
        from layerinf.stages.finetune import encode_splits, load_finetuned
        from layerinf.store.rundir import sha256_file

        loaded, prepared, model_cfg = load_finetuned(self.run_dir, cfg.checkpoint, device=device)
        enc = encode_splits(prepared, loaded.tokenizer, model_cfg.max_length)
        ckpt_sha = sha256_file(self.run_dir.stage_path(FINETUNE) / adapter_file(cfg.checkpoint))
        for split in GRAD_SPLITS:
            write_store(loaded.model, enc[split], st.tmp / split, batch_size=cfg.grad_batch_size,
                        include_we=cfg.include_we, dtype=cfg.grad_dtype, checkpoint_sha256=ckpt_sha,
                        progress=progress)
        return {"num_layers": loaded.num_layers, "checkpoint": cfg.checkpoint,
                "n_train": len(enc["train"]), "n_infl": len(enc["infl"])}

    def load(self):
        from layerinf.store.gradstore import GradStore

        return tuple(GradStore(self.path / split) for split in GRAD_SPLITS)

    @property
    def num_layers(self) -> int:
        return int(self.summary()["num_layers"])


def load_grads(run_dir):
    """The (train, infl) gradient stores of a finished, verified grads stage."""
    stage = GradsStage(run_dir)
    stage.run_dir.require(GRADS)
    return stage.load()
