"""The command lines that error messages name: what (re)makes each stage of a run directory, with the options a
user must add (``prepare`` has no default data: ``--source`` is always named)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from layerinf.store.layout import CONFIG_FILE, DATA, FINETUNE, GRADS, RETRAIN, SCORES, STAGE_FILE, SUSPECTS, RunLayout

SOURCE_NOTE = ("YOUR_DATA: a CSV/TSV/JSONL/Parquet file, a GLUE task folder or hf:NAME[/CONFIG]; "
               "`--source demo` for the built-in demo data")

# the CLI command that (re)makes each stage folder
_COMMAND = {DATA: "prepare", FINETUNE: "finetune", GRADS: "grads", SCORES: "score", RETRAIN: "retrain",
            SUSPECTS: "suspects"}


def recorded_source(root: "str | os.PathLike") -> str | None:
    """The ``--source`` the run's data stage was prepared from (None when unknown)."""
    try:
        info = json.loads((RunLayout(Path(root)).stage(DATA) / STAGE_FILE).read_text(encoding="utf-8"))
        src = info["config"]["data"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(src) if src else None


def redo_command(name: str, root: "str | os.PathLike", force: bool = True) -> str:
    """The command line that (re)makes stage ``name`` of run ``root``, in backquotes, for error messages."""
    cmd = _COMMAND.get(name, name)
    again = " --force" if force else ""
    if name == RETRAIN:  # with its filter options (those of a `layerinf run`: its config.json, YAML-readable)
        return (f"`layerinf retrain {root}` with its filter options, or `layerinf run {Path(root) / CONFIG_FILE} "
                f"--out {root}`")
    if name == SUSPECTS:
        return f"`layerinf suspects {root} --source DATA` or `--run RUN_DIR`" + (" with --force" if force else "")
    if name == DATA:
        src = recorded_source(root)
        line = f"`layerinf prepare {root} --source {src or 'YOUR_DATA'}{again}`"
        return line + (" with the other options it was prepared with" if src else f" ({SOURCE_NOTE})")
    return f"`layerinf {cmd} {root}{again}`"


def start_command(root: "str | os.PathLike") -> str:
    """How to start a run directory that does not exist yet."""
    return f"start it with {redo_command(DATA, root, force=False)}, or run a whole experiment: " \
           f"`layerinf run CONFIG --out {root}`"
