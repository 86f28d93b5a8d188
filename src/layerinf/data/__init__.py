"""Data layer: load a source, split it (train / influence / test), inject label noise, save and reload.

>>> from layerinf.data import prepare
>>> data = prepare("demo", noise_rate=0.2, seed=0)
>>> data.train.columns.tolist()
['idx', 'source_idx', 'text', 'text_pair', 'label', 'clean_label', 'noisy']

Modules: ``loaders`` (``load_source``, the dispatch), ``glue`` (GLUE TSV layouts), ``tables`` (CSV/TSV/JSONL/
Parquet files and column picking), ``hub`` (Hugging Face datasets), ``demo`` (the embedded set), ``raw``
(``RawData`` and the empty-text rule), ``labels`` (label encoding, class checks, dev carving), ``splits``,
``noise``, ``prepared`` (``prepare``, ``save_prepared``, ``load_prepared``) and ``checks`` (argument checks).
Bad input raises ``layerinf.errors.LayerinfError`` with one line: what is wrong — what to do.
"""

from __future__ import annotations

from layerinf.data.demo import DEMO_LABELS, load_demo
from layerinf.data.glue import GLUE_TASKS, glue_task_key, load_glue, read_glue_tsv
from layerinf.data.hub import from_hf_dataset, load_hf, parse_hf
from layerinf.data.labels import carve_dev, check_classes, encode_labels
from layerinf.data.loaders import load_source
from layerinf.data.noise import inject_noise, noise_count
from layerinf.data.prepared import FORMAT, SPLIT_COLUMNS, SPLITS, PreparedData, load_prepared, prepare, save_prepared
from layerinf.data.raw import RawData
from layerinf.data.splits import SplitIndices, make_splits, split_infl_test, stratified_subset
from layerinf.data.tables import load_table, read_table

__all__ = [
    "DEMO_LABELS",
    "FORMAT",
    "GLUE_TASKS",
    "PreparedData",
    "RawData",
    "SPLITS",
    "SPLIT_COLUMNS",
    "SplitIndices",
    "carve_dev",
    "check_classes",
    "encode_labels",
    "from_hf_dataset",
    "glue_task_key",
    "inject_noise",
    "load_demo",
    "load_glue",
    "load_hf",
    "load_prepared",
    "load_source",
    "load_table",
    "make_splits",
    "noise_count",
    "parse_hf",
    "prepare",
    "read_glue_tsv",
    "read_table",
    "save_prepared",
    "split_infl_test",
    "stratified_subset",
]
