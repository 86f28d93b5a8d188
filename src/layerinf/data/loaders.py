"""Load a labelled text-classification source into raw train/dev tables (``load_source`` dispatches).

Sources: a GLUE task folder (or the GLUE root plus ``task``; ``layerinf.data.glue``), a CSV/TSV/JSONL/Parquet
file with named columns or a folder holding ``train.<ext>`` (``layerinf.data.tables``), a Hugging Face dataset
``hf:NAME[/CONFIG]`` (``layerinf.data.hub``), or ``demo``. Every loader returns a checked ``RawData``
(``layerinf.data.raw``); labels are encoded by ``layerinf.data.labels``. The names that used to live here are
re-exported, so ``from layerinf.data.loaders import load_table`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from layerinf.data.checks import column_arg, count_arg, fraction_arg, names_arg
from layerinf.data.glue import GLUE_TASKS, GlueTask, glue_task_key, load_glue, read_glue_tsv
from layerinf.data.hub import from_hf_dataset, load_hf, parse_hf
from layerinf.data.labels import carve_dev, check_classes, check_raw, encode_labels
from layerinf.data.raw import COLUMNS, RawData, _frame, raw_frame  # noqa: F401 (_frame: old private name)
from layerinf.data.tables import SUFFIXES, load_table, read_table, table_files
from layerinf.errors import LayerinfError

SOURCE_HELP = "give 'demo', a GLUE task folder, a .csv/.tsv/.jsonl/.parquet file, or hf:NAME[/CONFIG]"


def load_source(
    source: str | os.PathLike,
    *,
    task: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    dev_source: str | os.PathLike | None = None,
    label_names: Sequence[str] | None = None,
    seed: int = 0,
    dev_fraction: float = 0.2,
) -> RawData:
    """Load any supported source: ``demo``, ``hf:NAME[/CONFIG]``, a GLUE folder, or a data file.

    ``seed``/``dev_fraction`` only matter when a file or HF dataset has no dev part and one is carved.
    """
    if source is None or not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        got = "" if source is None or isinstance(source, str) else f" (got {type(source).__name__} {source!r})"
        raise LayerinfError(f"no data source given{got}", SOURCE_HELP)
    if task is not None and not isinstance(task, str):
        raise LayerinfError(f"task={task!r} is not a task name",
                            "give a GLUE task name such as 'sst2', or leave it out")
    source = str(source).strip()
    dev_source = None if dev_source is None else str(dev_source)
    file_opts = dict(text_column=column_arg("text_column", text_column),
                     text_pair_column=column_arg("text_pair_column", text_pair_column),
                     label_column=column_arg("label_column", label_column), label_names=names_arg(label_names),
                     seed=count_arg("seed", seed, minimum=0, allow_none=False, example="0"),
                     dev_fraction=fraction_arg("dev_fraction", dev_fraction, lo_open=True, hi_open=True,
                                               example="0.2"))
    if source.lower() == "demo":
        from layerinf.data.demo import load_demo

        return load_demo()
    if source.lower().startswith("hf:"):
        if dev_source is not None:
            raise LayerinfError("dev_source cannot be combined with an hf: source",
                                "the dataset's validation split is used; drop dev_source")
        name, config = parse_hf(source)
        if config is None and task is not None and name.lower() in ("glue", "nyu-mll/glue"):
            source = f"hf:{name}/{task}"
        return load_hf(source, **file_opts)
    path = Path(source).expanduser()
    if path.is_dir():
        # a folder of your own files (train.csv + optional dev.csv …) when columns are named and no GLUE task is
        files = table_files(path)
        if files and (text_column or label_column) and glue_task_key(task) is None:
            dev = dev_source or next((str(f) for d in ("dev", "validation", "valid") for f in table_files(path, d)),
                                     None)
            return load_table(files[0], dev_path=dev, **file_opts)
        if dev_source is not None:
            raise LayerinfError("dev_source cannot be combined with a GLUE folder", "drop dev_source")
        return load_glue(path, task)
    if path.is_file():
        return load_table(path, dev_path=dev_source, **file_opts)
    hint = ""
    if glue_task_key(source) is not None:
        key = glue_task_key(source)
        hint = f" (for GLUE {GLUE_TASKS[key].name} give its folder, or hf:glue/{key})"
    raise LayerinfError(f"data source {source!r} not found{hint}", SOURCE_HELP)


__all__ = [
    "COLUMNS",
    "GLUE_TASKS",
    "GlueTask",
    "RawData",
    "SOURCE_HELP",
    "SUFFIXES",
    "carve_dev",
    "check_classes",
    "check_raw",
    "encode_labels",
    "from_hf_dataset",
    "glue_task_key",
    "load_glue",
    "load_hf",
    "load_source",
    "load_table",
    "parse_hf",
    "raw_frame",
    "read_glue_tsv",
    "read_table",
]
