"""Run directories: one folder per stage, atomic writes, manifests with config, versions and checksums.

A stage writes into a hidden temporary folder; only when it finishes is that folder renamed into place and
recorded in ``manifest.json`` (run level) and ``<stage>/stage.json`` (stage level). A rerun with the same
configuration reuses a finished stage when its checksums still match, and redoes a stage that is missing,
half-written or corrupted. Only JSON, safetensors, numpy and parquet files are written; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from layerinf.errors import LayerinfError

MANIFEST = "manifest.json"
STAGE_FILE = "stage.json"
_VERSIONED = ("layerinf", "torch", "transformers", "peft", "numpy", "scipy", "pandas", "datasets", "safetensors")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results (missing ones are left out)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_hash(config: Any) -> str:
    """Stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise LayerinfError(f"missing file {path}", "run the stage that writes it first") from None
    except json.JSONDecodeError as exc:
        raise LayerinfError(f"{path} is not valid JSON ({exc.msg})", "delete it and rerun the stage") from None


def _checksums(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STAGE_FILE
    }


@dataclass
class Stage:
    """A stage in progress. Write outputs under ``tmp``; ``done`` is True when a finished copy was reused."""

    name: str
    path: Path  # final location
    tmp: Path  # where to write while running (== path when reused)
    done: bool
    info: dict

    def out(self, rel: str) -> Path:
        """Path to write output ``rel`` to (inside the temporary folder while running)."""
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class RunDir:
    """A run directory: ``manifest.json`` plus one sub-folder per stage."""

    def __init__(self, root: "str | os.PathLike | RunDir"):
        self.root = Path(root.root if isinstance(root, RunDir) else root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"stages": {}}
        return read_json(self.manifest_path)

    def stage_path(self, name: str) -> Path:
        return self.root / name

    def is_finished(self, name: str, config: Any | None = None, verify: bool = True) -> bool:
        """True when stage ``name`` finished (with this config, if given) and its files still match."""
        folder = self.stage_path(name)
        info_path = folder / STAGE_FILE
        if not info_path.exists():
            return False
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if config is not None and info.get("config_hash") != config_hash(config):
            return False
        if verify:
            try:
                return _checksums(folder) == info.get("files")
            except OSError:
                return False
        return True

    def stage_info(self, name: str) -> dict:
        return read_json(self.stage_path(name) / STAGE_FILE)

    def require(self, name: str, hint: str | None = None) -> Path:
        """The folder of a finished stage, or a clear error naming the command that makes it."""
        if not self.is_finished(name, verify=False):
            raise LayerinfError(
                f"stage '{name}' has not finished in {self.root}",
                hint or f"run `layerinf {name} {self.root}` first",
            )
        return self.stage_path(name)

    @contextlib.contextmanager
    def stage(self, name: str, config: Any, *, seed: int | None = None, force: bool = False) -> Iterator[Stage]:
        """Run a stage atomically, or reuse it when it already finished with the same config.

        Usage::

            with run.stage("finetune", cfg, seed=cfg["seed"]) as st:
                if not st.done:
                    save(st.out("best.safetensors"))
        """
        final = self.stage_path(name)
        if not force and self.is_finished(name, config):
            yield Stage(name, final, final, True, self.stage_info(name))
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}.", suffix=".tmp"))
        started = time.time()
        try:
            st = Stage(name, final, tmp, False, {})
            yield st
            info = {
                "stage": name,
                "config": config,
                "config_hash": config_hash(config),
                "seed": seed,
                "versions": package_versions(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "seconds": round(time.time() - started, 3),
                "files": _checksums(tmp),
                **st.info,
            }
            atomic_write_json(tmp / STAGE_FILE, info)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            st.tmp, st.info = final, info
            self._record(name, info)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _record(self, name: str, info: dict) -> None:
        man = self.manifest()
        man.setdefault("stages", {})[name] = {
            k: info[k] for k in ("config", "config_hash", "seed", "versions", "started", "seconds", "files")
        }
        man["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(self.manifest_path, man)

    def invalidate(self, name: str) -> None:
        """Forget a stage (its folder is removed), e.g. after an upstream stage changed."""
        shutil.rmtree(self.stage_path(name), ignore_errors=True)
        man = self.manifest()
        if man.get("stages", {}).pop(name, None) is not None:
            atomic_write_json(self.manifest_path, man)
