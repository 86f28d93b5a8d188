"""GLUE tasks from their original tab-separated files: each task's layout (``GLUE_TASKS``) and loaders."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerinf.data.labels import check_raw
from layerinf.data.raw import RawData, nonempty_rows, preview, raw_frame
from layerinf.data.tables import SUFFIXES, check_fields, check_text_file, table_files, utf8_error
from layerinf.errors import LayerinfError


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task's TSV files are laid out."""

    name: str
    text: str | int
    pair: str | int | None
    label: str | int
    label_names: tuple[str, ...]
    kind: str = "int"  # int | names (string labels, binarised by ``keep``) | score (>= 3 → 1)
    header: bool = True
    dev_file: str = "dev.tsv"
    lenient: bool = False  # files known to contain a few malformed rows


GLUE_TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask("SST-2", "sentence", None, "label", ("negative", "positive")),
    "mrpc": GlueTask("MRPC", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent")),
    "rte": GlueTask("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), kind="names"),
    "cola": GlueTask("CoLA", 3, None, 1, ("unacceptable", "acceptable"), header=False),
    "qnli": GlueTask("QNLI", "question", "sentence", "label", ("entailment", "not_entailment"), kind="names"),
    "qqp": GlueTask("QQP", "question1", "question2", "is_duplicate", ("not_duplicate", "duplicate"), lenient=True),
    "mnli": GlueTask("MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral"), kind="names",
                     dev_file="dev_matched.tsv", lenient=True),
    "stsb": GlueTask("STS-B", "sentence1", "sentence2", "score", ("dissimilar", "similar"), kind="score",
                     lenient=True),
}
_ALIASES = {"sst": "sst2", "sts": "stsb", "mnlim": "mnli", "mnlimatched": "mnli", "colas": "cola"}


def _known() -> str:
    return ", ".join(t.name for t in GLUE_TASKS.values())


def glue_task_key(name: str | None) -> str | None:
    """The canonical key (``sst2``, ``mrpc``…) of a GLUE task name or folder name, or None if unknown."""
    if not name:
        return None
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    key = _ALIASES.get(key, key)
    return key if key in GLUE_TASKS else None


def _parse(path: Path, spec: GlueTask) -> pd.DataFrame:
    """The TSV as strings. Strict tasks: every line must have the header's field count. Lenient tasks (files
    with known stray tabs): a line with extra fields keeps its leading fields and its last one (the label)."""
    check_text_file(path, "TSV")
    kw: dict[str, Any] = dict(sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig", keep_default_na=False,
                              dtype=str, header=0 if spec.header else None)
    if spec.lenient:
        names = list(pd.read_csv(path, nrows=0, **kw).columns)
        width = len(names)

        def fix(fields: list[str]) -> list[str]:  # stray tabs: keep the leading fields and the last (label)
            return fields[: width - 1] + fields[-1:]

        # the header's own names, given explicitly, stop pandas from reading a ragged first row as an index
        kw.update(engine="python", on_bad_lines=fix, names=names)
    else:
        check_fields(path, "\t", csv.QUOTE_NONE, header=spec.header)
    return pd.read_csv(path, **kw)


def read_glue_tsv(path: str | Path, task: str) -> pd.DataFrame:
    """Parse one GLUE TSV into a raw table (``COLUMNS``) using the task's layout; drops MNLI contradictions.

    Rows with an empty text (or text pair) are dropped with a warning; a file with no usable row is an error.
    """
    key = glue_task_key(task)
    if key is None:
        raise LayerinfError(f"unknown GLUE task {task!r}", f"use one of {_known()}")
    spec = GLUE_TASKS[key]
    path = Path(path)
    if not path.is_file():
        raise LayerinfError(f"GLUE file {path} not found", "check the folder; see the GLUE README for the layout")
    try:
        df = _parse(path, spec)
    except LayerinfError:
        raise
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise LayerinfError(f"cannot parse {path} as GLUE {spec.name}: {str(exc).splitlines()[0]}",
                            "check that the file is the original tab-separated GLUE file") from None
    cols = [spec.text, spec.label] + ([spec.pair] if spec.pair is not None else [])
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise LayerinfError(
            f"{path} lacks column(s) {missing} expected for GLUE {spec.name} (found {list(df.columns)})",
            "check the task name or the file",
        )
    if len(df) == 0:
        raise LayerinfError(f"{path} has no data rows (only a header)", f"give the full GLUE {spec.name} file")
    df = df.fillna("")
    raw = df[spec.label].astype(str).str.strip()
    idx = np.arange(len(df))
    if spec.kind == "int":
        ok = raw.isin(["0", "1"]).to_numpy()
        labels = np.where(ok, raw.where(ok, "0"), "0").astype(np.int64)
    elif spec.kind == "names":
        lookup = {n: i for i, n in enumerate(spec.label_names)}
        drop = {"contradiction"} if key == "mnli" else set()
        ok = raw.isin(list(lookup)).to_numpy()
        bad = raw[~ok & ~raw.isin(list(drop)).to_numpy()]
        if len(bad) and not spec.lenient:
            raise LayerinfError(f"{path}: unexpected label(s) {preview(bad.unique())} for GLUE {spec.name}",
                                f"labels must be one of {list(spec.label_names)}")
        labels = raw.map(lookup).fillna(0).astype(np.int64).to_numpy()
    else:  # score
        score = pd.to_numeric(raw, errors="coerce").to_numpy()
        ok = ~np.isnan(score)
        labels = (np.nan_to_num(score) >= 3.0).astype(np.int64)
    if spec.kind == "int" and not ok.all() and not spec.lenient:
        raise LayerinfError(f"{path}: unexpected label(s) {preview(raw[~ok].unique())} for GLUE {spec.name}",
                            "labels must be 0 or 1")
    keep = np.array(ok, dtype=bool)
    if not keep.any():
        raise LayerinfError(f"{path} has no row with a usable GLUE {spec.name} label (of {len(df)} rows)",
                            f"labels must be one of {list(spec.label_names)}; check the file and the task name")
    text = df[spec.text][keep]
    pair = df[spec.pair][keep] if spec.pair is not None else None
    filled = nonempty_rows(text, pair, str(path), rows=idx[keep], column=str(spec.text))
    if not filled.all():
        keep[np.flatnonzero(keep)[~filled]] = False
        text = df[spec.text][keep]
        pair = df[spec.pair][keep] if spec.pair is not None else None
    return raw_frame(idx[keep], text, pair, labels[keep])


def _folder_files(folder: Path) -> str:
    have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return ", ".join(have[:12]) + (f" … ({len(have)} in all)" if len(have) > 12 else "") or "nothing"


def load_glue(path: str | Path, task: str | None = None) -> RawData:
    """Load a GLUE task from its folder, or from the GLUE root folder plus ``task``.

    The task comes from ``task`` or from the folder name (case-insensitive; ``sst2``, ``SST-2``…). MNLI keeps
    entailment (0) vs neutral (1) and uses ``dev_matched.tsv``; STS-B maps score ≥ 3 to 1.
    """
    path = Path(path)
    key = glue_task_key(task)
    if task is not None and key is None:
        raise LayerinfError(f"unknown GLUE task {task!r}", f"use one of {_known()}")
    if not path.is_dir():
        raise LayerinfError(f"GLUE folder {path} not found", "give the task folder (e.g. glue/SST-2) or the GLUE root")
    folder = None
    if key is not None:
        subs = [p for p in path.iterdir() if p.is_dir() and glue_task_key(p.name) == key]
        folder = subs[0] if subs else (path if glue_task_key(path.name) in (key, None) else None)
        if folder is None:
            raise LayerinfError(f"no {GLUE_TASKS[key].name} folder in {path} and {path.name!r} is a different task",
                                "point the source at the task folder or fix the task name")
    else:
        key = glue_task_key(path.name)
        folder = path
        if key is None:
            found = sorted(GLUE_TASKS[k].name for k in {glue_task_key(p.name) for p in path.iterdir() if p.is_dir()}
                           if k is not None)
            if found:
                raise LayerinfError(f"{path} holds several GLUE tasks ({', '.join(found)})",
                                    "name one with task=... (CLI --task) or point the source at its folder")
            if not table_files(path):
                raise LayerinfError(
                    f"cannot tell which GLUE task folder {path} is, and it holds no train file "
                    f"(train{'/'.join(SUFFIXES)}) either (it holds: {_folder_files(path)})",
                    "give a data file, a folder with train.csv (and dev.csv) plus text_column and label_column, "
                    f"or a GLUE task folder ({_known()})",
                )
            raise LayerinfError(
                f"cannot tell which GLUE task folder {path} is (known: {_known()})",
                "pass task=..., or for your own data pass a file with text_column and label_column",
            )
    spec = GLUE_TASKS[key]
    train_file, dev_file = folder / "train.tsv", folder / spec.dev_file
    if not train_file.is_file():
        raise LayerinfError(
            f"GLUE {spec.name} folder {folder} has no train.tsv (it holds: {_folder_files(folder)})",
            "put the task's train.tsv there (download the full GLUE task), or use another source",
        )
    if not dev_file.is_file():
        raise LayerinfError(f"GLUE {spec.name} folder {folder} has no {spec.dev_file}",
                            f"put the task's {spec.dev_file} there")
    return check_raw(RawData(
        train=read_glue_tsv(train_file, key),
        dev=read_glue_tsv(dev_file, key),
        label_names=list(spec.label_names),
        task=spec.name,
        source=f"glue:{folder}",
        info={"dev_origin": spec.dev_file},
    ))
