"""Run directories: one folder per stage, atomic writes, manifests, checksums, a writer lock.

A stage writes into a hidden temporary folder; only when it finishes is that folder renamed into place and
recorded in ``manifest.json`` (run level) and ``<stage>/stage.json`` (stage level: config, inputs, versions,
seed, device, SHA-256 of every file). A rerun with the same configuration and inputs reuses a finished stage
whose checksums still match, and redoes one that is missing, half-written, corrupted or made from other
inputs. Reading a stage (``require``) verifies its checksums and that it was made from the current version
of the stages it read. One process writes a run at a time (``RUN/.lock``); temporary folders left by a
killed process are swept when the next writer takes the lock. Only JSON, safetensors, numpy and parquet
files are written; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import errno
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

from layerinf.errors import LayerinfError, raise_if_interrupted
from layerinf.store.hints import redo_command, start_command
from layerinf.store.layout import MANIFEST, RETRAIN, SCORE_SETS_DIR, STAGE_FILE, RunLayout

_VERSIONED = ("layerinf", "torch", "transformers", "peft", "numpy", "scipy", "pandas", "datasets", "safetensors")
WALL_CLOCK_FIELDS = ("started", "seconds", "updated")  # the only fields that differ between identical runs


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


def _existing_parent(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path.cwd()


def _disk_error(exc: OSError, path: Path) -> LayerinfError:
    """One clear error for an OS error while writing ``path`` (disk full, no permission, a file in the way)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(_existing_parent(path)).free
            room = f" ({free / 2**20:.1f} MiB free)"
        except OSError:
            room = ""
        return LayerinfError(f"disk full while writing {path}{room}",
                             "free some space or choose another output directory, then rerun "
                             "(finished stages are reused)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LayerinfError(f"cannot write {path} ({os.strerror(exc.errno)})",
                             "choose a writable output directory")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return LayerinfError(f"cannot write {path}: {blocker} is a file, not a folder",
                                 "choose an output directory that is not inside a file")
    return LayerinfError(f"cannot write {path} ({exc.strerror or exc})", "check the output directory")


def _os_error(exc: OSError, root: Path, path: Path) -> LayerinfError:
    """An OS error inside a stage: reading an input outside the run (a data file, a model) or writing the run."""
    name = getattr(exc, "filename", None)
    if name and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        try:
            inside = Path(name).resolve().is_relative_to(root.resolve())
        except (OSError, ValueError):
            inside = True
        if not inside:
            return LayerinfError(f"cannot read {name} ({exc.strerror or exc})", "check the path and its permissions")
    return _disk_error(exc, Path(name) if name else path)


def check_writable_dir(root: "str | os.PathLike", what: str = "run directory") -> Path:
    """Error (nothing written) when ``root`` cannot become a folder: it is a file, or lies inside a file or an
    unwritable folder."""
    root = Path(root)
    if root.exists():
        if not root.is_dir():
            raise LayerinfError(f"{root} is a file, not a {what}", f"choose another path for the {what}")
        probe = root
    else:
        blocker = next((p for p in root.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise LayerinfError(f"cannot create the {what} {root}: {blocker} is a file, not a folder",
                                f"choose a {what} that is not inside a file")
        probe = _existing_parent(root)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LayerinfError(f"cannot write the {what} {root} ({probe} is not writable)",
                            f"choose a writable {what}")
    return root


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _disk_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _disk_error(exc, path) from None
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise LayerinfError(f"missing file {path}", "run the stage that writes it first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayerinfError(f"{path} is not valid JSON ({type(exc).__name__})", "delete it and rerun the stage") from None
    except IsADirectoryError:
        raise LayerinfError(f"{path} is a folder, not a JSON file", "remove it and rerun the stage") from None


def checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` except its ``stage.json``."""
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


_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): the lock is re-entrant within a process


class RunDir:
    """A run directory: ``manifest.json`` plus one sub-folder per stage (names in ``store.layout``)."""

    def __init__(self, root: "str | os.PathLike | RunDir"):
        self.root = Path(root.root if isinstance(root, RunDir) else root)
        self.layout = RunLayout(self.root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # ---------------------------------------------------------------------------------------- reading

    def manifest(self) -> dict:
        if not self.layout.manifest.exists():
            return {"stages": {}}
        return read_json(self.layout.manifest)

    def stage_path(self, name: str) -> Path:
        return self.layout.stage(name)

    def _info(self, name: str) -> dict | None:
        path = self.stage_path(name) / STAGE_FILE
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) and isinstance(info.get("files"), dict) else None

    def is_finished(self, name: str, config: Any | None = None, verify: bool = True) -> bool:
        """True when stage ``name`` finished (with this config, if given) and its files still match."""
        info = self._info(name)
        if info is None:
            return False
        if config is not None and info.get("config_hash") != config_hash(config):
            return False
        if verify:
            try:
                return checksums(self.stage_path(name)) == info.get("files")
            except OSError:
                return False
        return True

    def stage_info(self, name: str) -> dict:
        info = self._info(name)
        if info is None:
            raise LayerinfError(f"stage '{name}' in {self.root} has no valid {STAGE_FILE}",
                                f"redo it: {redo_command(name, self.root)}")
        return info

    def fingerprint(self, name: str) -> str:
        """Identity of a finished stage's content: its config hash and its files' checksums."""
        info = self.stage_info(name)
        return config_hash({"config_hash": info.get("config_hash"), "files": info.get("files")})

    def verify(self, name: str) -> None:
        """Raise a clear error naming the first file of stage ``name`` whose checksum does not match."""
        info = self.stage_info(name)
        folder = self.stage_path(name)
        want = info["files"]
        for rel, sha in sorted(want.items()):
            path = folder / rel
            try:
                ok = path.is_file() and sha256_file(path) == sha
            except OSError:
                ok = False
            if not ok:
                raise LayerinfError(
                    f"{path} is {'missing' if not path.exists() else 'corrupted (checksum mismatch)'}",
                    f"redo the stage: {redo_command(name, self.root)}",
                )
        extra = sorted(set(checksums(folder)) - set(want))
        if extra:
            raise LayerinfError(f"{folder / extra[0]} was added after stage '{name}' finished",
                                f"remove it, or redo the stage: {redo_command(name, self.root)}")

    def require(self, name: str, hint: str | None = None, *, verify: bool = True) -> Path:
        """The folder of a finished, intact, up-to-date stage, or a clear error naming the command to run."""
        if self._info(name) is None:
            if not self.root.is_dir():
                raise LayerinfError(f"stage '{name}' has not finished in {self.root}: the folder does not exist",
                                    hint or start_command(self.root))
            raise LayerinfError(f"stage '{name}' has not finished in {self.root}",
                                hint or f"first run {redo_command(name, self.root, force=False)}")
        if verify:
            self.verify(name)
        self.check_fresh(name)
        return self.stage_path(name)

    def check_fresh(self, name: str) -> None:
        """Error when stage ``name`` was made from an older version of a stage it reads."""
        for up, fp in (self.stage_info(name).get("inputs") or {}).items():
            root, up = self.layout.input_stage(up)
            owner = RunDir(root)
            if owner._info(up) is None or owner.fingerprint(up) != fp:
                raise LayerinfError(
                    f"stage '{name}' in {self.root} was made from an older '{up}' stage (it was redone since)",
                    f"redo it: {redo_command(name, self.root, force=False)}",
                )

    # ---------------------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``RUN/.lock`` (re-entrant in this process); another writer gets a clear error at once."""
        import fcntl

        key = str(self.layout.lock.resolve())
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            try:
                yield
            finally:
                fd, depth = _HELD[key]
                _HELD[key] = (fd, depth - 1)
            return
        if self.root.exists() and not self.root.is_dir():
            raise LayerinfError(f"{self.root} is a file, not a run directory", "choose another output path")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _disk_error(exc, self.layout.lock) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LayerinfError(f"another layerinf process (pid {holder}) is writing {self.root}",
                                "wait for it to finish, then rerun (finished stages are reused)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = (fd, 1)
        try:
            self.sweep_temporaries()
            yield
        finally:
            _HELD.pop(key, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """On failure, remove what this command created, except what a rerun resumes from (finished stages,
        retraining records, the manifest that lists them). A directory it created with nothing finished goes.

        Nothing is removed while another process holds the writer lock: what appeared meanwhile is its work
        (two commands started together on one run: the one refused by the lock must not touch the other's)."""
        existed = self.root.exists()
        before = set(os.listdir(self.root)) if existed and self.root.is_dir() else set()
        absent = [p for p in (self.root, *self.root.parents) if not p.exists()]  # the folders this may create
        try:
            yield
        except BaseException:
            if self.root.is_dir():
                with self._cleanup_lock() as mine:
                    if mine:
                        self._undo(existed, before)
            for folder in absent[1:]:  # parents made for a run directory that is gone again (runs/ of runs/NAME)
                if self.root.exists():
                    break
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
            raise

    @contextlib.contextmanager
    def _cleanup_lock(self) -> Iterator[bool]:
        """True (holding the writer lock) when no other process holds it; never creates the lock file."""
        import fcntl

        key = str(self.layout.lock.resolve())
        if key in _HELD:
            yield True
            return
        try:
            fd = os.open(self.layout.lock, os.O_RDWR)
        except FileNotFoundError:
            yield True
            return
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _undo(self, existed: bool, before: set[str]) -> None:
        keep = {n for n in os.listdir(self.root) if self._info(n) is not None}
        if not existed and not keep:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        keep |= {MANIFEST, RETRAIN, SCORE_SETS_DIR} if keep else set()  # retrain/: its records; score sets: kept
        for name in set(os.listdir(self.root)) - before - keep:
            path = self.root / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def sweep_temporaries(self) -> list[Path]:
        """Remove ``.<name>.*.tmp`` / ``.old`` leftovers of killed writers anywhere in the run (call only while
        holding the lock)."""
        gone = []
        for p in _leftovers(self.root, depth=3):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            gone.append(p)
        return gone

    @contextlib.contextmanager
    def stage(self, name: str, config: Any, *, seed: int | None = None, force: bool = False,
              inputs: dict[str, str] | None = None, device: str | None = None) -> Iterator[Stage]:
        """Run a stage atomically, or reuse it when it already finished with the same config and inputs.

        Usage::

            with run.stage("finetune", cfg, seed=cfg["seed"]) as st:
                if not st.done:
                    save(st.out("best.safetensors"))
        """
        final = self.stage_path(name)
        key = {**config, "inputs": inputs} if inputs else config
        with self.locked():
            if not force and self.is_finished(name, key):
                yield Stage(name, final, final, True, self.stage_info(name))
                return
            try:
                tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}.", suffix=".tmp"))
            except OSError as exc:
                raise _disk_error(exc, self.root / name) from None
            started = time.time()
            try:
                st = Stage(name, final, tmp, False, {})
                yield st
                raise_if_interrupted()  # an interrupt swallowed inside the stage must not publish it
                info = {
                    "stage": name,
                    "config": config,
                    "config_hash": config_hash(key),
                    "inputs": inputs or {},
                    "seed": seed,
                    "device": device or "cpu",
                    "versions": package_versions(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                    "seconds": round(time.time() - started, 3),
                    "files": checksums(tmp),
                    **st.info,
                }
                atomic_write_json(tmp / STAGE_FILE, info)
                _publish(tmp, final)
                st.tmp, st.info = final, info
                self._record(name, info)
            except OSError as exc:
                raise _os_error(exc, self.root, final) from None
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)

    def _record(self, name: str, info: dict) -> None:
        man = self.manifest()
        man.setdefault("stages", {})[name] = {
            k: info[k] for k in ("config", "config_hash", "inputs", "seed", "device", "versions", "started",
                                 "seconds", "files")
        }
        man["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(self.layout.manifest, man)


def _leftovers(folder: Path, depth: int) -> list[Path]:
    """Hidden ``*.tmp`` / ``*.old`` entries up to ``depth`` levels below ``folder`` (not inside one another)."""
    out: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith((".tmp", ".old")):
            out.append(Path(entry.path))
        elif depth > 1 and entry.is_dir(follow_symlinks=False):
            out += _leftovers(Path(entry.path), depth - 1)
    return out


def _publish(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp``: the old folder is first moved aside, so a crash never leaves neither."""
    if final.exists():
        trash = final.with_name(f".{final.name}.{os.getpid()}.old")
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
