"""Load a labelled text-classification source into raw train/dev tables.

Sources (``load_source`` dispatches on the string): a GLUE task folder (or the GLUE root plus ``task``), a
CSV/TSV/JSONL/Parquet file with named columns, a Hugging Face dataset ``hf:NAME[/CONFIG]``, or ``demo``.
Every raw table has columns ``source_idx`` (row in the source file/split), ``text``, ``text_pair`` (None for
single-text tasks) and ``label`` (int id into ``label_names``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from layerinf.errors import LayerinfError

COLUMNS = ["source_idx", "text", "text_pair", "label"]
SOURCE_HELP = "give 'demo', a GLUE task folder, a .csv/.tsv/.jsonl/.parquet file, or hf:NAME[/CONFIG]"


@dataclass
class RawData:
    """A loaded source before splitting: ``train`` and ``dev`` tables (columns ``COLUMNS``) and label names.

    Unpacks as ``train, dev, label_names = raw``.
    """

    train: pd.DataFrame
    dev: pd.DataFrame
    label_names: list[str]
    task: str | None = None
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.train, self.dev, self.label_names))

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


# ------------------------------------------------------------------------------------------------ helpers


def _frame(source_idx, text, text_pair, label) -> pd.DataFrame:
    text = pd.Series(text, dtype=object).reset_index(drop=True).fillna("").astype(str)
    n = len(text)
    if text_pair is None:
        pair = pd.Series([None] * n, dtype=object)
    else:
        pair = pd.Series(text_pair, dtype=object).reset_index(drop=True).fillna("").astype(str)
    return pd.DataFrame(
        {
            "source_idx": np.asarray(source_idx, dtype=np.int64),
            "text": text,
            "text_pair": pair,
            "label": np.asarray(label, dtype=np.int64),
        }
    )


def _clean(values: Sequence[Any]) -> list[str]:
    """Raw label values as strings; integral floats (1.0) become "1", missing values ""."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append("")
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(str(int(v)))
        elif isinstance(v, (bool, np.bool_)):
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


def _is_int(s: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", s) is not None


def _preview(values, k: int = 5) -> str:
    vals = sorted({repr(v) for v in values})
    return ", ".join(vals[:k]) + (f" … ({len(vals)} distinct)" if len(vals) > k else "")


def encode_labels(
    parts: dict[str, Sequence[Any]], label_names: Sequence[str] | None = None, where: str = "the data"
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map raw label values (strings or ints) of several parts (e.g. train, dev) to shared int ids.

    With ``label_names``, a value matching a name gets that name's position, and an integer value is taken as
    an id that must lie in ``range(len(label_names))``. Without, integers 0..K-1 keep their ids (names
    ``"0"``…), other values are sorted and numbered. Unknown or empty labels raise ``LayerinfError``.
    """
    cleaned = {k: _clean(list(v)) for k, v in parts.items()}
    for k, vals in cleaned.items():
        empty = [i for i, v in enumerate(vals) if v == ""]
        if empty:
            raise LayerinfError(
                f"{len(empty)} row(s) of {where} ({k}) have an empty label (first rows: {empty[:5]})",
                "fill in or drop those rows, or point label_column at the right column",
            )
    values = sorted({v for vals in cleaned.values() for v in vals})
    if label_names is not None:
        names = [str(n) for n in label_names]
        if len(set(names)) != len(names) or len(names) < 2:
            raise LayerinfError(f"label_names {names} must list at least 2 distinct names", "fix label_names")
        lookup = {n: i for i, n in enumerate(names)}
        if all(v in lookup for v in values):
            mapping = lookup
        elif all(_is_int(v) for v in values):
            bad = [v for v in values if not 0 <= int(v) < len(names)]
            if bad:
                raise LayerinfError(
                    f"label id(s) {_preview(bad)} in {where} are outside 0..{len(names) - 1} for label_names {names}",
                    "give one name per label id, or use the label strings as names",
                )
            mapping = {v: int(v) for v in values}
        else:
            bad = [v for v in values if v not in lookup]
            raise LayerinfError(
                f"label(s) {_preview(bad)} in {where} are not in label_names {names}",
                "add them to label_names (or leave label_names out to take the labels found in the data)",
            )
    elif all(_is_int(v) for v in values):
        ints = sorted({int(v) for v in values})
        if ints == list(range(len(ints))):
            names = [str(i) for i in ints]
            mapping = {v: int(v) for v in values}
        else:
            names = [str(i) for i in ints]
            mapping = {v: names.index(str(int(v))) for v in values}
    else:
        names = values
        mapping = {v: i for i, v in enumerate(names)}
    if len(values) < 2 and label_names is None:
        raise LayerinfError(
            f"{where} has only one label value ({_preview(values)})",
            "a classifier needs at least 2 classes; check label_column",
        )
    return {k: np.array([mapping[v] for v in vals], dtype=np.int64) for k, vals in cleaned.items()}, names


def carve_dev(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table into (train, dev) with a stratified, seeded ``fraction`` going to dev."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise LayerinfError(f"dev fraction {fraction} is not in (0, 1)", "use e.g. 0.2")
    counts = df["label"].value_counts()
    if len(df) < 4 or counts.min() < 2:
        raise LayerinfError(
            f"cannot carve a stratified dev set from {len(df)} rows (class counts {counts.to_dict()})",
            "give a separate dev file (dev_source) or more rows per class (at least 2 each)",
        )
    state = int(np.random.default_rng([seed, 7]).integers(2**31 - 1))
    try:
        tr, dv = train_test_split(np.arange(len(df)), test_size=fraction, stratify=df["label"].to_numpy(),
                                  random_state=state)
    except ValueError as exc:
        raise LayerinfError(f"cannot carve a dev set: {exc}", "give a separate dev file (dev_source)") from None
    return (df.iloc[np.sort(tr)].reset_index(drop=True), df.iloc[np.sort(dv)].reset_index(drop=True))


# ------------------------------------------------------------------------------------------------ GLUE


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


def glue_task_key(name: str | None) -> str | None:
    """The canonical key (``sst2``, ``mrpc``…) of a GLUE task name or folder name, or None if unknown."""
    if not name:
        return None
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    key = _ALIASES.get(key, key)
    return key if key in GLUE_TASKS else None


def read_glue_tsv(path: str | Path, task: str) -> pd.DataFrame:
    """Parse one GLUE TSV into a raw table (``COLUMNS``) using the task's layout; drops MNLI contradictions."""
    key = glue_task_key(task)
    if key is None:
        raise LayerinfError(f"unknown GLUE task {task!r}",
                            f"use one of {', '.join(t.name for t in GLUE_TASKS.values())}")
    spec = GLUE_TASKS[key]
    path = Path(path)
    if not path.is_file():
        raise LayerinfError(f"GLUE file {path} not found", "check the folder; see the GLUE README for the layout")
    kw: dict[str, Any] = dict(sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig", keep_default_na=False,
                              dtype=str, header=0 if spec.header else None)
    if spec.lenient:
        width = len(pd.read_csv(path, nrows=0, **kw).columns)

        def fix(fields: list[str]) -> list[str]:  # stray tabs: keep the leading fields and the last (label)
            return fields[: width - 1] + fields[-1:]

        kw.update(engine="python", on_bad_lines=fix)
    try:
        df = pd.read_csv(path, **kw)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise LayerinfError(f"cannot parse {path} as GLUE {spec.name}: {str(exc).splitlines()[0]}",
                            "check that the file is the original tab-separated GLUE file") from None
    cols = [spec.text, spec.label] + ([spec.pair] if spec.pair is not None else [])
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise LayerinfError(
            f"{path} lacks column(s) {missing} expected for GLUE {spec.name} (found {list(df.columns)})",
            "check the task name or the file",
        )
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
            raise LayerinfError(f"{path}: unexpected label(s) {_preview(bad.unique())} for GLUE {spec.name}",
                                f"labels must be one of {list(spec.label_names)}")
        labels = raw.map(lookup).fillna(0).astype(np.int64).to_numpy()
    else:  # score
        score = pd.to_numeric(raw, errors="coerce").to_numpy()
        ok = ~np.isnan(score)
        labels = (np.nan_to_num(score) >= 3.0).astype(np.int64)
    if spec.kind == "int" and not ok.all() and not spec.lenient:
        raise LayerinfError(f"{path}: unexpected label(s) {_preview(raw[~ok].unique())} for GLUE {spec.name}",
                            "labels must be 0 or 1")
    keep = np.asarray(ok, dtype=bool)
    pair = df[spec.pair][keep] if spec.pair is not None else None
    return _frame(idx[keep], df[spec.text][keep], pair, labels[keep])


def load_glue(path: str | Path, task: str | None = None) -> RawData:
    """Load a GLUE task from its folder, or from the GLUE root folder plus ``task``.

    The task comes from ``task`` or from the folder name (case-insensitive; ``sst2``, ``SST-2``…). MNLI keeps
    entailment (0) vs neutral (1) and uses ``dev_matched.tsv``; STS-B maps score ≥ 3 to 1.
    """
    path = Path(path)
    key = glue_task_key(task)
    if task is not None and key is None:
        raise LayerinfError(f"unknown GLUE task {task!r}",
                            f"use one of {', '.join(t.name for t in GLUE_TASKS.values())}")
    folder = None
    if key is not None:
        subs = [p for p in path.iterdir() if p.is_dir() and glue_task_key(p.name) == key] if path.is_dir() else []
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
            raise LayerinfError(
                f"cannot tell which GLUE task folder {path} is (known: "
                f"{', '.join(t.name for t in GLUE_TASKS.values())})",
                "pass task=..., or for your own data pass a file with text_column and label_column",
            )
    spec = GLUE_TASKS[key]
    train_file, dev_file = folder / "train.tsv", folder / spec.dev_file
    if not train_file.is_file():
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise LayerinfError(
            f"GLUE {spec.name} folder {folder} has no train.tsv (it holds: {', '.join(have) or 'nothing'})",
            "put the task's train.tsv there (download the full GLUE task), or use another source",
        )
    if not dev_file.is_file():
        raise LayerinfError(f"GLUE {spec.name} folder {folder} has no {spec.dev_file}",
                            f"put the task's {spec.dev_file} there")
    return RawData(
        train=read_glue_tsv(train_file, key),
        dev=read_glue_tsv(dev_file, key),
        label_names=list(spec.label_names),
        task=spec.name,
        source=f"glue:{folder}",
        info={"dev_origin": spec.dev_file},
    )


# ------------------------------------------------------------------------------------------------ files


_TEXT_GUESSES = ("text", "sentence", "review", "content", "document", "sentence1", "question", "premise")
_LABEL_GUESSES = ("label", "labels", "class", "target", "y")
_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/JSON/Parquet file as strings-where-possible (no NA guessing)."""
    path = Path(path)
    if not path.is_file():
        raise LayerinfError(f"data file {path} not found",
                            "check the path (relative paths start at the current folder)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if suffix in (".tsv", ".tab"):
            return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                               encoding="utf-8-sig")
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False)
        if suffix == ".json":
            try:
                return pd.read_json(path, lines=True, dtype=False)
            except ValueError:
                return pd.read_json(path, dtype=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except LayerinfError:
        raise
    except Exception as exc:  # parser errors of every reader
        raise LayerinfError(f"cannot parse {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                            "check the file format matches its extension") from None
    raise LayerinfError(f"unsupported file type {suffix!r} for {path}", f"use one of {', '.join(_SUFFIXES)}")


def _pick(df: pd.DataFrame, given: str | None, guesses: Sequence[str], what: str, flag: str, where: str) -> str:
    cols = [str(c) for c in df.columns]
    if given is not None:
        if given in cols:
            return given
        close = [c for c in cols if c.lower() == given.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise LayerinfError(f"{what} column {given!r} not found in {where}{hint}; available columns: {', '.join(cols)}",
                            f"pass the right name with {flag}")
    for g in guesses:
        for c in cols:
            if c.lower() == g:
                return c
    raise LayerinfError(f"no {what} column given and none of {list(guesses)} found in {where}; "
                        f"available columns: {', '.join(cols)}", f"name it with {flag}")


def load_table(
    path: str | Path,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    dev_path: str | Path | None = None,
    label_names: Sequence[str] | None = None,
    seed: int = 0,
    dev_fraction: float = 0.2,
) -> RawData:
    """Load a CSV/TSV/JSONL/Parquet file with named columns (+ optional dev file, else a stratified dev carve).

    Without ``text_column``/``label_column`` common names (``text``, ``sentence``…, ``label``) are tried.
    """
    frames = {"train": read_table(path)}
    if dev_path is not None:
        frames["dev"] = read_table(dev_path)
    cols: dict[str, tuple[str, str | None, str]] = {}
    for part, df in frames.items():
        where = f"{path if part == 'train' else dev_path}"
        if len(df) == 0:
            raise LayerinfError(f"{where} has no rows", "give a file with data rows")
        t = _pick(df, text_column, _TEXT_GUESSES, "text", "text_column (CLI --text-column)", where)
        p = (_pick(df, text_pair_column, (), "text pair", "text_pair_column (CLI --text-pair-column)", where)
             if text_pair_column is not None else None)
        lab = _pick(df, label_column, _LABEL_GUESSES, "label", "label_column (CLI --label-column)", where)
        if lab in (t, p):
            raise LayerinfError(f"label column {lab!r} is also used as a text column in {where}",
                                "name a separate label_column")
        cols[part] = (t, p, lab)
    ids, names = encode_labels({k: frames[k][cols[k][2]].tolist() for k in frames}, label_names, where=str(path))
    tables = {}
    for part, df in frames.items():
        t, p, _ = cols[part]
        tables[part] = _frame(np.arange(len(df)), df[t], df[p] if p else None, ids[part])
    info: dict[str, Any] = {"columns": {"text": cols["train"][0], "text_pair": cols["train"][1],
                                        "label": cols["train"][2]}}
    if "dev" in tables:
        train, dev = tables["train"], tables["dev"]
        info["dev_origin"] = str(dev_path)
    else:
        train, dev = carve_dev(tables["train"], dev_fraction, seed)
        info["dev_origin"] = f"carved from train ({dev_fraction:.0%}, stratified, seed {seed})"
    return RawData(train=train, dev=dev, label_names=names, task=None, source=f"file:{path}", info=info)


# ------------------------------------------------------------------------------------------------ Hugging Face

# default (text, pair, label) columns of the GLUE configs on the Hub
_HF_GLUE = {
    "sst2": ("sentence", None, "label"),
    "cola": ("sentence", None, "label"),
    "mrpc": ("sentence1", "sentence2", "label"),
    "rte": ("sentence1", "sentence2", "label"),
    "wnli": ("sentence1", "sentence2", "label"),
    "qnli": ("question", "sentence", "label"),
    "qqp": ("question1", "question2", "label"),
    "mnli": ("premise", "hypothesis", "label"),
    "stsb": ("sentence1", "sentence2", "label"),
}
_HF_WITH_CONFIGS = {"glue", "nyu-mll/glue", "super_glue", "aps/super_glue", "tweet_eval", "cardiffnlp/tweet_eval"}
_DEV_SPLITS = ("validation", "validation_matched", "valid", "dev", "test")


def parse_hf(spec: str) -> tuple[str, str | None]:
    """``hf:NAME``, ``hf:NAME/CONFIG``, ``hf:ORG/NAME/CONFIG`` or ``hf:NAME:CONFIG`` → (name, config).

    ``a/b`` is NAME/CONFIG when ``a`` is a known multi-config dataset (``glue``…), else the Hub id ``a/b``.
    """
    body = spec[3:] if spec.lower().startswith("hf:") else spec
    body = body.strip().strip("/")
    if not body:
        raise LayerinfError(f"empty Hugging Face dataset name in {spec!r}", "write hf:NAME or hf:NAME/CONFIG")
    if ":" in body:
        name, config = body.split(":", 1)
        return name, config or None
    parts = body.split("/")
    if len(parts) == 1:
        return body, None
    if len(parts) == 2:
        return (parts[0], parts[1]) if parts[0].lower() in _HF_WITH_CONFIGS else (body, None)
    return "/".join(parts[:2]), "/".join(parts[2:])


def _hf_frame(ds, text: str, pair: str | None, label: str, where: str) -> pd.DataFrame:
    cols = list(ds.column_names)
    for c, flag in ((text, "text_column"), (pair, "text_pair_column"), (label, "label_column")):
        if c is not None and c not in cols:
            raise LayerinfError(f"column {c!r} not found in {where}; available columns: {', '.join(cols)}",
                                f"pass the right name with {flag}")
    return ds.to_pandas()


def from_hf_dataset(
    dsd,
    *,
    name: str = "dataset",
    config: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    seed: int = 0,
    dev_fraction: float = 0.2,
) -> RawData:
    """Turn a ``datasets.DatasetDict`` into ``RawData`` (train + validation/test split, else a dev carve)."""
    where = f"hf:{name}" + (f"/{config}" if config else "")
    splits = list(dsd.keys())
    if "train" not in splits:
        raise LayerinfError(f"{where} has no 'train' split (splits: {', '.join(splits)})",
                            "use a dataset with a train split")
    glue_key = glue_task_key(config) if name.lower() in ("glue", "nyu-mll/glue") else None
    defaults = _HF_GLUE.get(glue_key or "", (None, None, None))
    train_ds = dsd["train"]
    empty = pd.DataFrame(columns=list(train_ds.column_names))
    text = text_column or defaults[0] or _pick(empty, None, _TEXT_GUESSES, "text", "text_column", where)
    pair = text_pair_column or defaults[1]
    label = label_column or defaults[2] or _pick(empty, None, _LABEL_GUESSES, "label", "label_column", where)
    dev_split = None
    for s in _DEV_SPLITS:
        if s in splits:
            labs = dsd[s][label] if label in dsd[s].column_names else []
            if len(labs) and not all(v == -1 for v in labs):  # GLUE test splits carry label -1
                dev_split = s
                break
    frames = {"train": _hf_frame(train_ds, text, pair, label, f"{where} (train)")}
    if dev_split:
        frames["dev"] = _hf_frame(dsd[dev_split], text, pair, label, f"{where} ({dev_split})")
    feature = train_ds.features.get(label)
    feature_names = list(getattr(feature, "names", None) or []) or None
    keep_rows = {k: np.arange(len(df)) for k, df in frames.items()}
    raw_labels: dict[str, list] = {}
    names_in = label_names if label_names is not None else feature_names
    for k, df in frames.items():
        lab = df[label]
        if glue_key == "stsb":  # similarity score: >= 3 is "similar"
            raw_labels[k] = (lab.to_numpy(dtype=float) >= 3.0).astype(int).tolist()
            names_in = label_names or ["dissimilar", "similar"]
            continue
        if pd.api.types.is_float_dtype(lab) and not np.all(np.mod(lab.to_numpy(), 1) == 0):
            raise LayerinfError(f"{where} has a continuous label column {label!r}",
                                "use a classification dataset (integer or string labels) or another label_column")
        keep = lab.to_numpy() != -1 if pd.api.types.is_numeric_dtype(lab) else np.ones(len(lab), bool)
        if glue_key == "mnli":
            keep &= lab.to_numpy() != 2  # drop contradiction
            names_in = label_names or ["entailment", "neutral"]
        keep_rows[k] = keep_rows[k][keep]
        raw_labels[k] = lab[keep].tolist()
    ids, names = encode_labels(raw_labels, names_in, where=where)
    tables = {}
    for k, df in frames.items():
        rows = keep_rows[k]
        tables[k] = _frame(rows, df[text].iloc[rows], df[pair].iloc[rows] if pair else None, ids[k])
    info: dict[str, Any] = {"columns": {"text": text, "text_pair": pair, "label": label}}
    if "dev" in tables:
        train, dev = tables["train"], tables["dev"]
        info["dev_origin"] = dev_split
    else:
        train, dev = carve_dev(tables["train"], dev_fraction, seed)
        info["dev_origin"] = f"carved from train ({dev_fraction:.0%}, stratified, seed {seed})"
    task = GLUE_TASKS[glue_key].name if glue_key in GLUE_TASKS else (config or name)
    return RawData(train=train, dev=dev, label_names=names, task=task, source=where, info=info)


def load_hf(spec: str, **options) -> RawData:
    """Load ``hf:NAME[/CONFIG]`` with ``datasets.load_dataset`` (needs the network or a warm cache)."""
    name, config = parse_hf(spec)
    try:
        import datasets
    except ImportError:
        raise LayerinfError("the `datasets` package is not installed", "pip install datasets") from None
    try:
        dsd = datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
    except Exception as exc:  # noqa: BLE001 - anything from the Hub/cache becomes one clear line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LayerinfError(
            f"cannot load Hugging Face dataset {spec!r}: {msg}",
            "check the name/config, that you are online (HF_DATASETS_OFFLINE unset) or the dataset is cached",
        ) from None
    if not hasattr(dsd, "keys"):
        raise LayerinfError(f"{spec!r} did not return named splits", "use a dataset with train/validation splits")
    return from_hf_dataset(dsd, name=name, config=config, **options)


# ------------------------------------------------------------------------------------------------ dispatch


def load_source(
    source: str,
    *,
    task: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    dev_source: str | None = None,
    label_names: Sequence[str] | None = None,
    seed: int = 0,
    dev_fraction: float = 0.2,
) -> RawData:
    """Load any supported source: ``demo``, ``hf:NAME[/CONFIG]``, a GLUE folder, or a data file.

    ``seed``/``dev_fraction`` only matter when a file or HF dataset has no dev part and one is carved.
    """
    if source is None or not str(source).strip():
        raise LayerinfError("no data source given", SOURCE_HELP)
    source = str(source).strip()
    file_opts = dict(text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                     label_names=label_names, seed=seed, dev_fraction=dev_fraction)
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
        files = [path / f"train{s}" for s in _SUFFIXES if (path / f"train{s}").is_file()]
        if files and (text_column or label_column) and glue_task_key(task) is None:
            dev = dev_source or next((str(path / f"{d}{s}") for d in ("dev", "validation", "valid")
                                      for s in _SUFFIXES if (path / f"{d}{s}").is_file()), None)
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
