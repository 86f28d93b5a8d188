"""Instruction-tuning (SFT) data: load prompt/response or chat ``messages`` sources into raw train/dev tables.

``load_sft`` reads a CSV/TSV/JSONL/JSON/Parquet file (or a folder holding ``train.<ext>`` and optionally
``dev.<ext>``), a Hugging Face dataset ``hf:NAME[/CONFIG]``, or ``demo-sft`` (the built-in reviews as
instructions). Splitting, noise and storage live in ``layerinf.data.sft_prepared``.

Columns, in this order of preference:

* ``messages_column`` given, or no prompt/response column found and a ``messages`` (``conversations``,
  ``conversation``, ``chat``) column present: each cell is a list of ``{"role", "content"}`` turns (a JSON
  string in CSV/TSV; ShareGPT's ``{"from": "human"|"gpt"|"system", "value"}`` is accepted too). The LAST turn
  must be an assistant turn: it is the response; the earlier turns are the prompt.
* otherwise a prompt column (``prompt``, ``instruction``, ``question``; or ``prompt_column``) and a response
  column (``response``, ``output``, ``completion``, ``answer``; or ``response_column``). Alpaca style: when the
  prompt column is named ``instruction`` and an ``input`` column exists, a non-empty ``input`` is appended to
  the instruction after a blank line.

Every raw table has columns ``RAW_COLUMNS``: ``source_idx`` (row number in the file / dataset split, from 0),
``messages`` (the prompt's turns as a JSON string; ``[{"role": "user", "content": prompt}]`` for
prompt/response data), ``prompt`` (display text: the last user turn) and ``response`` (text, kept exactly as
given). Numbers are turned into text; a missing, empty or whitespace-only prompt or response is an error
that names the rows (nothing is dropped silently).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from layerinf.data.checks import column_arg, count_arg, fraction_arg
from layerinf.data.sft_rows import RAW_COLUMNS, normalise_sft
from layerinf.data.tables import SUFFIXES, read_table, table_files
from layerinf.errors import LayerinfError

DEMO_SFT = "demo-sft"
DEMO_SFT_PROMPT = "Review: {text}\n\nIs the sentiment of this review positive or negative? Answer with one word."
MIN_ROWS = 4  # fewer usable rows cannot make a train part and a dev part of 2 (influence + test)
SFT_SOURCE_HELP = ("give 'demo-sft', a .csv/.tsv/.jsonl/.parquet file (or a folder with train.<ext>), "
                   "or hf:NAME[/CONFIG]")

@dataclass
class SFTRaw:
    """A loaded SFT source before splitting: ``train`` and ``dev`` tables (columns ``RAW_COLUMNS``).

    ``info`` records the columns used (``columns``), the layout (``layout``: ``"prompt_response"`` or
    ``"messages"``) and where the dev part came from (``dev_origin``). Unpacks as ``train, dev = raw``.
    """

    train: pd.DataFrame
    dev: pd.DataFrame
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.train, self.dev))


# ------------------------------------------------------------------------------------------------ dev part


def carve_sft_dev(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a raw table into (train, dev), seeded, not stratified: ``round(fraction·n)`` rows, at least 2, to dev
    (rows keep their file order)."""
    fraction = fraction_arg("dev_fraction", fraction, lo_open=True, hi_open=True, example="0.2")
    seed = count_arg("seed", seed, minimum=0, allow_none=False, example="0")
    n = len(df)
    if n < MIN_ROWS:
        raise LayerinfError(f"cannot carve a dev set from {n} row(s)", f"give at least {MIN_ROWS} usable rows, "
                            "or a separate dev file (dev_source)")
    n_dev = min(max(2, int(round(fraction * n))), n - 2)
    order = np.random.default_rng([seed, 7]).permutation(n)
    dev, train = np.sort(order[:n_dev]), np.sort(order[n_dev:])
    return df.iloc[train].reset_index(drop=True), df.iloc[dev].reset_index(drop=True)


def check_sft_raw(raw: SFTRaw) -> SFTRaw:
    """Columns present, at least 2 training rows and 2 dev rows (an influence and a test row)."""
    for part in ("train", "dev"):
        df = getattr(raw, part)
        if not isinstance(df, pd.DataFrame) or [c for c in RAW_COLUMNS if c not in df.columns]:
            raise LayerinfError(f"the {part} part of {raw.source or 'the SFT data'} lacks columns {RAW_COLUMNS}",
                                "build it with layerinf.data.sft.load_sft")
    if len(raw.train) < 2:
        raise LayerinfError(f"{raw.source or 'the SFT data'} has {len(raw.train)} usable training row(s)",
                            f"give at least {MIN_ROWS} rows (more for a useful run)")
    if len(raw.dev) < 2:
        raise LayerinfError(f"the dev part of {raw.source or 'the SFT data'} has {len(raw.dev)} row(s); it is "
                            "halved into an influence and a test set", "give a dev part with at least 2 rows")
    return raw


# ------------------------------------------------------------------------------------------------ sources


def demo_sft_rows() -> list[dict]:
    """The built-in reviews as instructions: ``{"prompt", "response", "split"}`` per line of demo.jsonl."""
    from layerinf.data.demo import demo_rows

    return [{"prompt": DEMO_SFT_PROMPT.format(text=r["text"]), "response": r["label"], "split": r["split"]}
            for r in demo_rows()]


def load_demo_sft() -> SFTRaw:
    """``demo-sft``: its own train/dev parts as in demo.jsonl; ``source_idx`` = line number in the file."""
    rows = demo_sft_rows()
    table, _ = normalise_sft(pd.DataFrame(rows), where="the demo-sft data")
    parts = {s: table[[r["split"] == s for r in rows]].reset_index(drop=True) for s in ("train", "dev")}
    return check_sft_raw(SFTRaw(train=parts["train"], dev=parts["dev"], source=DEMO_SFT,
                                info={"layout": "prompt_response", "columns": {"prompt": "prompt",
                                      "response": "response"}, "dev_origin": "demo dev part"}))


def _load_frames(frames: dict[str, tuple[pd.DataFrame, str]], options: dict, source: str, seed: int,
                 dev_fraction: float, dev_origin: str | None) -> SFTRaw:
    tables, used = {}, {}
    for part, (df, where) in frames.items():
        tables[part], used[part] = normalise_sft(df, where=where, **options)
    if "dev" not in tables and len(tables["train"]) < MIN_ROWS:
        raise LayerinfError(f"{frames['train'][1]} has {len(tables['train'])} usable row(s)",
                            f"give at least {MIN_ROWS} rows (more for a useful run)")
    info: dict[str, Any] = {"layout": used["train"]["layout"],
                            "columns": {k: v for k, v in used["train"].items() if k != "layout"}}
    if "dev" in tables:
        train, dev = tables["train"], tables["dev"]
        info["dev_origin"] = dev_origin
    else:
        train, dev = carve_sft_dev(tables["train"], dev_fraction, seed)
        info["dev_origin"] = f"carved from train ({dev_fraction:.0%}, seed {seed})"
    return check_sft_raw(SFTRaw(train=train, dev=dev, source=source, info=info))


def _load_hf(spec: str, options: dict, seed: int, dev_fraction: float) -> SFTRaw:
    from layerinf.data.hub import fetch_hf

    name, config, dsd = fetch_hf(spec)
    return from_hf_sft(dsd, name=name, config=config, seed=seed, dev_fraction=dev_fraction, **options)


def from_hf_sft(dsd, *, name: str = "dataset", config: str | None = None, prompt_column: str | None = None,
                response_column: str | None = None, messages_column: str | None = None, seed: int = 0,
                dev_fraction: float = 0.2) -> SFTRaw:
    """A ``datasets.DatasetDict`` (train split + validation/test split, else a carved dev part) as ``SFTRaw``."""
    from layerinf.data.hub import _DEV_SPLITS

    where = f"hf:{name}" + (f"/{config}" if config else "")
    if not hasattr(dsd, "keys"):
        raise LayerinfError(f"{where} did not return named splits", "use a dataset with a train split")
    splits = list(dsd.keys())
    if "train" not in splits:
        raise LayerinfError(f"{where} has no 'train' split (splits: {', '.join(splits)})",
                            "use a dataset with a train split")
    frames = {"train": (dsd["train"].to_pandas(), f"{where} (train)")}
    dev_split = next((s for s in _DEV_SPLITS if s in splits and len(dsd[s]) > 0), None)
    if dev_split is not None:
        frames["dev"] = (dsd[dev_split].to_pandas(), f"{where} ({dev_split})")
    options = dict(prompt_column=prompt_column, response_column=response_column, messages_column=messages_column)
    return _load_frames(frames, options, where, seed, dev_fraction, dev_split)


def load_sft(
    source: str | os.PathLike,
    *,
    prompt_column: str | None = None,
    response_column: str | None = None,
    messages_column: str | None = None,
    dev_source: str | os.PathLike | None = None,
    seed: int = 0,
    dev_fraction: float = 0.2,
) -> SFTRaw:
    """Load an SFT source: ``demo-sft``, ``hf:NAME[/CONFIG]``, a data file, or a folder with ``train.<ext>``.

    A file's dev part is ``dev_source`` when given, else ``dev_fraction`` of its rows (seeded by ``seed``).
    """
    if source is None or not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        got = "" if source is None or isinstance(source, str) else f" (got {type(source).__name__} {source!r})"
        raise LayerinfError(f"no SFT data source given{got}", SFT_SOURCE_HELP)
    options = dict(prompt_column=column_arg("prompt_column", prompt_column),
                   response_column=column_arg("response_column", response_column),
                   messages_column=column_arg("messages_column", messages_column))
    seed = count_arg("seed", seed, minimum=0, allow_none=False, example="0")
    dev_fraction = fraction_arg("dev_fraction", dev_fraction, lo_open=True, hi_open=True, example="0.2")
    source = str(source).strip()
    dev_source = None if dev_source is None else str(dev_source)
    if source.lower() in (DEMO_SFT, "demo_sft"):
        return load_demo_sft()
    if source.lower().startswith("hf:"):
        if dev_source is not None:
            raise LayerinfError("dev_source cannot be combined with an hf: source",
                                "the dataset's validation split is used; drop dev_source")
        return _load_hf(source, options, seed, dev_fraction)
    path = Path(source).expanduser()
    if path.is_dir():
        files = table_files(path)
        if not files:
            raise LayerinfError(f"folder {path} holds no train file",
                                f"put the data in {path}/train<ext> ({', '.join(SUFFIXES)}) or give the file")
        dev_source = dev_source or next((str(f) for d in ("dev", "validation", "valid") for f in table_files(path, d)),
                                        None)
        path = files[0]
    if not path.is_file():
        hint = " (the built-in instruction data is 'demo-sft')" if source.lower() == "demo" else ""
        raise LayerinfError(f"SFT data source {source!r} not found{hint}", SFT_SOURCE_HELP)
    frames = {"train": (read_table(path), str(path))}
    if dev_source is not None:
        frames["dev"] = (read_table(dev_source), str(dev_source))
    return _load_frames(frames, options, f"file:{path}", seed, dev_fraction, dev_source)


__all__ = [
    "DEMO_SFT",
    "DEMO_SFT_PROMPT",
    "RAW_COLUMNS",
    "SFTRaw",
    "carve_sft_dev",
    "check_sft_raw",
    "demo_sft_rows",
    "from_hf_sft",
    "load_demo_sft",
    "load_sft",
    "normalise_sft",
]
