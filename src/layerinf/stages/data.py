"""The ``data`` stage (``layerinf prepare``): load a source, split train / influence / test, inject noise (the
run's task, ``stages.task``, does each; the summary records ``task_type`` for instruction data)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from layerinf.config import DataConfig
from layerinf.stages.base import StageBase
from layerinf.stages.task import SFT_SOURCES, task_for, task_in_folder, task_type  # noqa: F401 (task_type re-exported)
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
        if src in ("demo", *SFT_SOURCES):  # demo-sft is built from the same shipped file
            from importlib import resources

            parts[src] = sha256_file(str(resources.files("layerinf") / "data" / "demo.jsonl"))
            continue
        path = Path(src).expanduser()
        if path.is_file():
            parts[src] = sha256_file(path)
        elif path.is_dir():
            parts[src] = {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return config_hash(parts) if parts else None


SFT_FIELDS = ("task_type", "prompt_column", "response_column", "messages_column", "noise_kind", "noise_rates")


def data_key(cfg: DataConfig) -> dict:
    """The data section as it keys the stage; the SFT fields are left out at their defaults (older runs match)."""
    key = asdict(cfg)
    defaults = asdict(DataConfig())
    for name in SFT_FIELDS:
        if key.get(name) == defaults[name]:
            key.pop(name)
    return key


class DataStage(StageBase):
    """Splits as parquet (columns: docs/internals.md) and ``meta.json``; returns ``PreparedData``."""

    name = DATA
    artifacts = (*(split_file(s) for s in SPLITS), DATA_META_FILE)

    def key(self, cfg: DataConfig) -> dict:
        cfg.require_source()
        return {"data": data_key(cfg), "fingerprint": source_fingerprint(cfg.source, cfg.dev_source)}

    def seed(self, cfg: DataConfig) -> int:
        return cfg.seed

    def compute(self, st, cfg: DataConfig, *, inputs=None, progress: bool = True, device: str = "cpu") -> dict:
        task = task_for(cfg)
        prepared = task.prepare(cfg)
        task.save(prepared, st.tmp)
        return task.data_summary(prepared)

    def load(self):
        return task_in_folder(self.path).load(self.path)


def load_data(run_dir):
    """The prepared splits of a run (``prepare`` must have finished; checksums are verified)."""
    stage = DataStage(run_dir)
    stage.run_dir.require(DATA)
    return stage.load()
