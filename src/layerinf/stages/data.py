"""The ``data`` stage (``layerinf prepare``): load a source, split train / influence / test, flip labels."""

from __future__ import annotations

import functools

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
SFT_SOURCES = ("demo-sft", "demo_sft")


@functools.lru_cache(maxsize=8)
def _column_names(path: str, mtime_ns: int, size: int) -> frozenset[str] | None:
    """A table file's column names, lower-cased (None when it cannot be read: the loader reports why); read once
    per file version however often ``task_type`` asks."""
    from layerinf.data.tables import read_table
    from layerinf.errors import LayerinfError

    try:
        return frozenset(str(c).lower() for c in read_table(Path(path)).columns)
    except LayerinfError:
        return None


def task_type(cfg: DataConfig) -> str:
    """``classification`` or ``sft``: ``data.task_type``, or for ``auto`` from the source — ``demo-sft``, an SFT
    column option, or a local file with a response/messages column and no label column."""
    if cfg.task_type != "auto":
        return cfg.task_type
    if cfg.source in SFT_SOURCES or cfg.prompt_column or cfg.response_column or cfg.messages_column:
        return "sft"
    if cfg.label_column or cfg.text_column or cfg.source is None:
        return "classification"
    path = Path(cfg.source).expanduser()
    if path.is_dir():
        from layerinf.data.tables import table_files

        files = table_files(path)
        path = files[0] if files else path
    if path.is_file():
        from layerinf.data.sft_rows import MESSAGES_GUESSES, RESPONSE_GUESSES
        from layerinf.data.tables import _LABEL_GUESSES

        st = path.stat()
        columns = _column_names(str(path.resolve()), st.st_mtime_ns, st.st_size)
        if columns is not None and not columns & set(_LABEL_GUESSES) and columns & {*RESPONSE_GUESSES,
                                                                                   *MESSAGES_GUESSES}:
            return "sft"
    return "classification"


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

    def compute(self, st, cfg: DataConfig, *, progress: bool = True, device: str = "cpu") -> dict:
        from layerinf import data as data_mod

        if task_type(cfg) == "sft":
            from layerinf.data.sft_prepared import prepare_sft, save_sft_prepared

            source = "demo-sft" if cfg.source in SFT_SOURCES else cfg.source
            prepared = prepare_sft(source, prompt_column=cfg.prompt_column, response_column=cfg.response_column,
                                   messages_column=cfg.messages_column, dev_source=cfg.dev_source,
                                   max_train=cfg.max_train, max_dev=cfg.max_dev, noise_rate=cfg.noise_rate,
                                   noise_kind=cfg.noise_kind, seed=cfg.seed)
            save_sft_prepared(prepared, st.tmp)
            return {"train": len(prepared.train), "infl": len(prepared.infl), "test": len(prepared.test),
                    "noisy": int(prepared.train["noisy"].sum()), "labels": list(prepared.label_names),
                    "task_type": "sft", "noise_kind": prepared.meta.get("noise_kind")}
        prepared = data_mod.prepare(
            cfg.source, task=cfg.task, text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
            label_column=cfg.label_column, dev_source=cfg.dev_source, label_names=cfg.label_names,
            max_train=cfg.max_train, max_dev=cfg.max_dev, noise_rate=cfg.noise_rate, seed=cfg.seed,
            noise_kind=cfg.noise_kind, noise_rates=cfg.noise_rates,
        )
        data_mod.save_prepared(prepared, st.tmp)
        return {"train": len(prepared.train), "infl": len(prepared.infl), "test": len(prepared.test),
                "noisy": int(prepared.train["noisy"].sum()), "labels": list(prepared.label_names)}

    def load(self):
        from layerinf import data as data_mod
        from layerinf.data.sft_prepared import is_sft_folder, load_sft_prepared

        if is_sft_folder(self.path):
            return load_sft_prepared(self.path)
        return data_mod.load_prepared(self.path)


def load_data(run_dir):
    """The prepared splits of a run (``prepare`` must have finished; checksums are verified)."""
    stage = DataStage(run_dir)
    stage.run_dir.require(DATA)
    return stage.load()
