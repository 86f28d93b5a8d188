"""Score sets: a run's ``scores/`` folder is never silently replaced by scores made with other options.

``scores/`` is always the *current* score set (what eval, the report and suspects read). Before a score run
with another key (other options, or other inputs) replaces a finished ``scores/`` that is up to date with the
run's data and gradients, that folder is kept as ``score_sets/<hash>/`` — ``<hash>`` is its stage's
``config_hash`` (options and input fingerprints), so one key has one folder. Keeping is hard links (a copy
where the file system has none) into a hidden temporary folder renamed into place: atomic, cheap, and the
kept folder has the same ``stage.json`` (config, inputs, SHA-256 of every file) as the stage it was, so it
stays verifiable. A later score run whose key is a kept set's restores that set (verified first, then renamed
back to ``scores/`` and recorded in the manifest) instead of recomputing it; its fingerprint is the one it had,
so an eval made from it is up to date again, and one made from another set is stale, as for any redone stage.
A kept set whose files no longer match its checksums is never restored: it is removed and recomputed, and
the caller is told. The caller holds the run's writer lock for every function here that writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from layerinf.store.layout import SCORES, STAGE_FILE
from layerinf.store.rundir import RunDir, _publish, checksums, config_hash

Echo = Callable[[str], None]


def set_hash(config: dict, inputs: dict | None) -> str:
    """The ``config_hash`` a score stage run with ``config`` (its key) and ``inputs`` records (as ``RunDir.stage``)."""
    return config_hash({**config, "inputs": inputs} if inputs else config)


def stage_json(folder: Path) -> dict | None:
    """A stage folder's ``stage.json`` (None when missing or not a finished stage's)."""
    try:
        info = json.loads((Path(folder) / STAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(info, dict) and isinstance(info.get("files"), dict) and isinstance(info.get("config_hash"), str)
    return info if ok else None


def problem(folder: Path, info: dict | None = None) -> str | None:
    """What is wrong with a finished stage folder (a missing, changed or added file), or None when intact."""
    info = info if info is not None else stage_json(folder)
    if info is None:
        return f"{Path(folder) / STAGE_FILE} is missing or not valid"
    try:
        have = checksums(Path(folder))
    except OSError as exc:
        return f"cannot read {folder} ({exc.strerror or exc})"
    want = info["files"]
    for rel in sorted(set(want) | set(have)):
        if rel not in have:
            return f"{rel} is missing"
        if rel not in want:
            return f"{rel} was added after it finished"
        if have[rel] != want[rel]:
            return f"{rel} is corrupted (checksum mismatch)"
    return None


@dataclass(frozen=True)
class ScoreSet:
    """One score set of a run: the current one (``scores/``) or a kept one (``score_sets/<hash>/``)."""

    hash: str
    path: Path
    current: bool
    config: dict  # the score stage's key: {"score": ScoreConfig as a dict}
    started: str  # when it was computed
    fresh: bool  # made from the run's current data and gradients (only a fresh set can become current again)
    intact: bool | None = None  # its files match their checksums (None: not checked)

    def option(self, name: str):
        return (self.config.get("score") or {}).get(name)

    @property
    def methods(self) -> list[str]:
        return list(self.option("methods") or [])

    @property
    def groups(self) -> list[str] | None:
        return self.option("groups")

    @property
    def aggregators(self) -> list[str]:
        return list(self.option("aggregators") or [])

    def describe(self, others: "list[ScoreSet] | None" = None) -> str:
        """``<hash> (methods …; groups …; aggregators …[; other options])``; with ``others``, the options that
        differ from theirs are named too."""
        parts = [f"methods {','.join(self.methods) or '-'}", f"groups {','.join(self.groups or ['default'])}",
                 f"aggregators {','.join(self.aggregators) or '-'}"]
        mine = self.config.get("score") or {}
        shown = {"methods", "groups", "aggregators"}
        for other in others or []:
            theirs = other.config.get("score") or {}
            for k in sorted(set(mine) | set(theirs)):
                if k not in shown and mine.get(k) != theirs.get(k):
                    parts.append(f"{k} {mine.get(k)}")
                    shown.add(k)
        if not self.fresh:
            parts.append("made from older data or gradients")
        if self.intact is False:
            parts.append("CORRUPTED")
        return f"{self.hash} ({'; '.join(parts)})"

    def as_dict(self) -> dict:
        return {"hash": self.hash, "path": str(self.path), "current": self.current, "methods": self.methods,
                "groups": self.groups, "aggregators": self.aggregators, "started": self.started,
                "fresh": self.fresh, "intact": self.intact, "config": self.config}


def _fresh(rd: RunDir, info: dict) -> bool:
    for up, fp in (info.get("inputs") or {}).items():
        root, name = rd.layout.input_stage(up)
        owner = RunDir(root)
        if stage_json(owner.stage_path(name)) is None or owner.fingerprint(name) != fp:
            return False
    return True


def _entry(rd: RunDir, folder: Path, info: dict, current: bool, verify: bool) -> ScoreSet:
    return ScoreSet(hash=info["config_hash"], path=folder, current=current, config=info.get("config") or {},
                    started=str(info.get("started", "")), fresh=_fresh(rd, info),
                    intact=(problem(folder, info) is None) if verify else None)


def current_hash(rd: RunDir) -> str | None:
    info = stage_json(rd.stage_path(SCORES))
    return info["config_hash"] if info else None


def list_sets(rd: RunDir, *, verify: bool = False) -> list[ScoreSet]:
    """The current score set first (if any), then the kept ones, newest first. ``verify``: check every file's
    checksum (reads every matrix: slow on big runs)."""
    rd = RunDir(rd)
    out: list[ScoreSet] = []
    info = stage_json(rd.stage_path(SCORES))
    if info is not None:
        out.append(_entry(rd, rd.stage_path(SCORES), info, True, verify))
    kept = []
    folder = rd.layout.score_sets
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        info = stage_json(sub)
        if info is None or info["config_hash"] != sub.name:
            kept.append(ScoreSet(sub.name, sub, False, {}, "", False, False))  # unreadable: listed, never restored
        elif not out or sub.name != out[0].hash:  # a duplicate of the current set (a failed rerun) is not listed
            kept.append(_entry(rd, sub, info, False, verify))
    return out + sorted(kept, key=lambda s: s.started, reverse=True)


def summary_line(sets: list[ScoreSet]) -> str:
    """``current score set: <hash> (…); kept: <hash> (…), …`` (one line, for the API and the CLI)."""
    current = [s for s in sets if s.current]
    kept = [s for s in sets if not s.current]
    head = f"current score set: {current[0].describe(kept)}" if current else "no current score set"
    tail = ", ".join(s.describe(current) for s in kept) if kept else "none"
    return f"{head}; kept: {tail}"


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` (new) with every file of ``src`` hard-linked (copied where links are not possible)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def keep_current(rd: RunDir, inputs: dict | None, echo: Echo) -> str | None:
    """Keep the finished ``scores/`` as ``score_sets/<hash>/`` before it is replaced; returns its hash (None when
    there is nothing to keep: no finished stage, or one made from older inputs, which can never be current again)."""
    folder = rd.stage_path(SCORES)
    info = stage_json(folder)
    if info is None:
        return None
    if (info.get("inputs") or {}) != (inputs or {}):
        echo(f"the previous score set {info['config_hash']} was made from older data or gradients: not kept")
        return None
    key = info["config_hash"]
    final = rd.layout.score_set(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp"))
    try:
        _link_tree(folder, tmp)
        _publish(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    echo(f"kept the previous score set as {final}")
    return key


def restore(rd: RunDir, key: str, echo: Echo) -> bool:
    """Make the kept set ``key`` current again (verified first; no recompute). False when there is no such set,
    or it is corrupted — then it is removed (the caller recomputes it) and ``echo`` says so."""
    src = rd.layout.score_set(key)
    if not src.is_dir():
        return False
    info = stage_json(src)
    wrong = problem(src, info) if info is not None and info["config_hash"] == key else "its stage.json is not valid"
    if wrong:
        echo(f"the kept score set {key} is corrupted ({wrong}): not used, recomputing it")
        drop(rd, key)
        return False
    _publish(src, rd.stage_path(SCORES))
    rd._record(SCORES, info)
    echo(f"restored the kept score set {key} (no recompute)")
    return True


def drop(rd: RunDir, key: str) -> None:
    """Remove the kept set ``key`` (if any), atomically: renamed aside first, then deleted."""
    folder = rd.layout.score_set(key)
    if not folder.exists():
        return
    trash = folder.with_name(f".{key}.{os.getpid()}.old")
    with contextlib.suppress(OSError):
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
