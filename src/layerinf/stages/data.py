"""The ``data`` stage (``layerinf prepare``): load a source, split train / influence / test, flip labels."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from layerinf.config import DataConfig
from layerinf.stages.base import StageBase
from layerinf.store.layout import DATA, DATA_META_FILE, SPLITS, split_file
from layerinf.store.rundir import config_hash, sha256_file


def source_fingerprint(*sources: str | None) -> str | None:
    """A content hash of local data sources, so that an edited file redoes ``prepare`` and what follows.

    Files are hashed whole; folders (GLUE tasks) by their files; ``demo`` by the shipped file; hub names
    (``hf:``) are not hashed (their revision is the hub's business).
    """
    parts = {}
    for src in sources:
        if not src:
            continue
        if src == "demo":
            from importlib import resources

            parts[src] = sha256_file(str(resources.files("layerinf") / "data" / "demo.jsonl"))
            continue
        path = Path(src).expanduser()
        if path.is_file():
            parts[src] = sha256_file(path)
        elif path.is_dir():
            parts[src] = {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return config_hash(parts) if parts else None


class DataStage(StageBase):
    """Splits as parquet (columns: docs/internals.md) and ``meta.json``; returns ``PreparedData``."""

    name = DATA
    artifacts = (*(split_file(s) for s in SPLITS), DATA_META_FILE)

    def key(self, cfg: DataConfig) -> dict:
        return {"data": asdict(cfg), "fingerprint": source_fingerprint(cfg.source, cfg.dev_source)}

    def seed(self, cfg: DataConfig) -> int:
        return cfg.seed

    def compute(self, st, cfg: DataConfig, *, progress: bool = True, device: str = "cpu") -> dict:
        from layerinf import data as data_mod

        prepared = data_mod.prepare(
            cfg.source, task=cfg.task, text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
            label_column=cfg.label_column, dev_source=cfg.dev_source, label_names=cfg.label_names,
            max_train=cfg.max_train, max_dev=cfg.max_dev, noise_rate=cfg.noise_rate, seed=cfg.seed,
        )
        data_mod.save_prepared(prepared, st.tmp)
        return {"train": len(prepared.train), "infl": len(prepared.infl), "test": len(prepared.test),
                "noisy": int(prepared.train["noisy"].sum()), "labels": list(prepared.label_names)}

    def load(self):
        from layerinf import data as data_mod

        return data_mod.load_prepared(self.path)


def load_data(run_dir):
    """The prepared splits of a run (``prepare`` must have finished; checksums are verified)."""
    stage = DataStage(run_dir)
    stage.run_dir.require(DATA)
    return stage.load()
