"""Your own data files: CSV/TSV/JSONL/JSON/Parquet with named columns (``load_table``).

Reading checks the file before trusting pandas: an empty, binary or non-UTF-8 file, a CSV/TSV line with the
wrong number of fields (pandas would silently take a ragged first row's extra field as an index and shift
every column) and a malformed JSONL line each give a ``LayerinfError`` that names the line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from layerinf.data.checks import column_arg, names_arg
from layerinf.data.labels import carve_dev, check_raw, encode_labels
from layerinf.data.raw import RawData, nonempty_rows, raw_frame, row_list
from layerinf.errors import LayerinfError

_TEXT_GUESSES = ("text", "sentence", "review", "content", "document", "sentence1", "question", "premise")
_LABEL_GUESSES = ("label", "labels", "class", "target", "y")
SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet")
_SUFFIXES = SUFFIXES  # old private name
_UTF8_FIX = ("save it as UTF-8 text (a spreadsheet can export 'CSV UTF-8'); "
             "binary files such as .xlsx need exporting first")


# ------------------------------------------------------------------------------------------------ file checks


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def utf8_error(path: Path) -> LayerinfError:
    """The error for a file that does not decode as UTF-8, naming the line and byte of the first bad byte."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        return LayerinfError(f"{path} is not UTF-8 text: line {line} holds byte 0x{data[start]:02x}", _UTF8_FIX)
    return LayerinfError(f"{path} is not UTF-8 text", _UTF8_FIX)


def check_text_file(path: Path, kind: str) -> None:
    """Refuse an empty file, a binary one (NUL bytes) and UTF-16 text before a text parser sees it."""
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if not head:
        rows = "one JSON object per line (or a JSON list of objects)" if kind == "JSON" else "a header line and data rows"
        raise LayerinfError(f"{path} is empty (0 bytes)", f"give a {kind} file with {rows}")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LayerinfError(f"{path} is UTF-16 text", _UTF8_FIX)
    if b"\x00" in head:
        raise LayerinfError(f"{path} looks like a binary file (it holds NUL bytes), not {kind} text",
                            f"give a {kind} file, or give the file its real extension ({', '.join(SUFFIXES)})")


def check_fields(path: Path, sep: str, quoting: int, *, header: bool = True) -> None:
    """Every non-blank line must have as many fields as the first (the header, when ``header``).

    Parsed with the csv module exactly as pandas splits fields (``quoting``); raises naming the lines.
    """
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # long texts are fine; pandas has no such limit
    width = first = None
    bad: list[int] = []
    widths: dict[int, int] = {}
    data_lines = 0
    reader = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=sep, quoting=quoting)
            for row in reader:
                if not row:  # blank line: pandas skips it
                    continue
                if width is None:
                    width, first = len(row), reader.line_num
                    continue
                data_lines += 1
                if len(row) != width:
                    bad.append(reader.line_num)
                    widths.setdefault(len(row), reader.line_num)
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except csv.Error as exc:
        line = reader.line_num if reader is not None else 1
        raise LayerinfError(f"cannot parse {path} near line {line}: {exc}",
                            "check the file format matches its extension") from None
    finally:
        csv.field_size_limit(limit)
    if not bad:
        return
    ref = "the header has" if header else f"line {first} has"
    counts = sorted(widths)
    what = "tab" if sep == "\t" else "comma"
    if len(bad) == data_lines and header:
        raise LayerinfError(f"every data line of {path} has {preview_counts(counts)} fields but the header has {width}",
                            f"fix the header line (one name per column) or the {what}s")
    fixes = []
    if counts[-1] > width:
        fixes.append("remove the stray tabs (a TSV field cannot hold a tab)" if sep == "\t" else
                     'quote the fields that hold commas ("a, b")')
    if counts[0] < width:
        fixes.append("add the missing fields (an empty one is fine) or delete those lines")
    lines = f"line {bad[0]}" if len(bad) == 1 else f"lines {row_list(bad)}"
    raise LayerinfError(
        f"{lines} of {path} {'has' if len(bad) == 1 else 'have'} the wrong number of fields "
        f"({preview_counts(counts)} where {ref} {width}; lines count from 1"
        f"{', the header is line 1' if header else ''})",
        "; ".join(fixes),
    )


def preview_counts(counts: Sequence[int]) -> str:
    return " or ".join(str(c) for c in counts)


def json_error(path: Path, exc: Exception) -> LayerinfError:
    """The error for a JSONL file pandas cannot read, naming the first line that is not a JSON object."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    return LayerinfError(f"line {number} of {path} is not valid JSON ({err.msg} at column {err.colno})",
                                         "fix that line: each line must be one JSON object such as "
                                         '{"text": "...", "label": "..."}')
                if not isinstance(obj, dict):
                    return LayerinfError(f"line {number} of {path} is a JSON {type(obj).__name__}, not an object",
                                         'each line must be one JSON object such as {"text": "...", "label": "..."}')
    except UnicodeDecodeError:
        return utf8_error(path)
    return LayerinfError(f"cannot parse {path}: {_first_line(exc)}", "check the file format matches its extension")


# ------------------------------------------------------------------------------------------------ reading


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/JSON/Parquet file as strings-where-possible (no NA guessing)."""
    path = Path(path)
    if path.is_dir():
        raise LayerinfError(f"{path} is a folder, not a data file",
                            f"give a file ({', '.join(SUFFIXES)}) or use the folder as the source")
    if not path.is_file():
        raise LayerinfError(f"data file {path} not found",
                            "check the path (relative paths start at the current folder)")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LayerinfError(f"unsupported file type {suffix or '(no extension)'!r} for {path}",
                            f"use one of {', '.join(SUFFIXES)}")
    kind = {".csv": "CSV", ".tsv": "TSV", ".tab": "TSV", ".parquet": "Parquet"}.get(suffix, "JSON")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        check_text_file(path, kind)
        if suffix == ".csv":
            check_fields(path, ",", csv.QUOTE_MINIMAL)
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if suffix in (".tsv", ".tab"):
            check_fields(path, "\t", csv.QUOTE_NONE)
            return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                               encoding="utf-8-sig")
        if suffix in (".jsonl", ".ndjson"):
            try:
                return pd.read_json(path, lines=True, dtype=False)
            except Exception as exc:  # noqa: BLE001 - find the line that is at fault
                raise json_error(path, exc) from None
        try:  # .json: JSON lines, else one JSON document
            return pd.read_json(path, lines=True, dtype=False)
        except ValueError:
            return pd.read_json(path, dtype=False)
    except LayerinfError:
        raise
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except Exception as exc:  # parser errors of every reader
        fix = ("check the file is a Parquet file (re-export it), or give it its real extension" if kind == "Parquet"
               else "check the file format matches its extension")
        raise LayerinfError(f"cannot parse {path} as {kind}: {_first_line(exc)}", fix) from None


def find_column(cols: Sequence[str], given: str | None, guesses: Sequence[str], what: str, flag: str,
                where: str) -> str | None:
    """The column named ``given`` (an error naming a near miss when absent), else the first of ``guesses``
    present (case-insensitive), else None."""
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
    return None


def _pick(df: pd.DataFrame, given: str | None, guesses: Sequence[str], what: str, flag: str, where: str) -> str:
    cols = [str(c) for c in df.columns]
    found = find_column(cols, given, guesses, what, flag, where)
    if found is not None:
        return found
    raise LayerinfError(f"no {what} column given and none of {list(guesses)} found in {where}; "
                        f"available columns: {', '.join(cols)}", f"name it with {flag}")


def table_files(folder: Path, stem: str = "train") -> list[Path]:
    """``folder/<stem><suffix>`` for each supported suffix that exists, in ``SUFFIXES`` order."""
    return [folder / f"{stem}{s}" for s in SUFFIXES if (folder / f"{stem}{s}").is_file()]


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
    Rows with an empty text are dropped with a warning (see ``layerinf.data.raw``).
    """
    text_column = column_arg("text_column", text_column)
    text_pair_column = column_arg("text_pair_column", text_pair_column)
    label_column = column_arg("label_column", label_column)
    label_names = names_arg(label_names)
    frames = {"train": read_table(path)}
    if dev_path is not None:
        frames["dev"] = read_table(dev_path)
    cols: dict[str, tuple[str, str | None, str]] = {}
    rows: dict[str, np.ndarray] = {}
    for part, df in frames.items():
        where = f"{path if part == 'train' else dev_path}"
        if len(df) == 0:
            raise LayerinfError(f"{where} has no rows (a header alone, or nothing)", "give a file with data rows")
        t = _pick(df, text_column, _TEXT_GUESSES, "text", "text_column (CLI --text-column)", where)
        p = (_pick(df, text_pair_column, (), "text pair", "text_pair_column (CLI --text-pair-column)", where)
             if text_pair_column is not None else None)
        lab = _pick(df, label_column, _LABEL_GUESSES, "label", "label_column (CLI --label-column)", where)
        if lab in (t, p):
            raise LayerinfError(f"label column {lab!r} is also used as a text column in {where}",
                                "name a separate label_column")
        if p == t:
            raise LayerinfError(f"text_pair_column {p!r} is the same column as the text column in {where}",
                                "name the second text of each pair, or leave text_pair_column out")
        cols[part] = (t, p, lab)
        keep = nonempty_rows(df[t], df[p] if p else None, where, column=t)
        rows[part] = np.flatnonzero(keep)
        if not keep.all():
            frames[part] = df[keep]
    labels = {k: frames[k][cols[k][2]].tolist() for k in frames}
    ids, names = encode_labels(labels, label_names, where=str(path), rows=rows)
    tables = {}
    for part, df in frames.items():
        t, p, _ = cols[part]
        tables[part] = raw_frame(rows[part], df[t], df[p] if p else None, ids[part])
    info: dict[str, Any] = {"columns": {"text": cols["train"][0], "text_pair": cols["train"][1],
                                        "label": cols["train"][2]}}
    if "dev" in tables:
        train, dev = tables["train"], tables["dev"]
        info["dev_origin"] = str(dev_path)
    else:
        train, dev = carve_dev(tables["train"], dev_fraction, seed)
        info["dev_origin"] = f"carved from train ({dev_fraction:.0%}, stratified, seed {seed})"
    return check_raw(RawData(train=train, dev=dev, label_names=names, task=None, source=f"file:{path}", info=info))
