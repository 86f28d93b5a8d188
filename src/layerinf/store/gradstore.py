"""On-disk store of one split's per-sample gradients: one ``.npy`` memmap per module plus ``info.json``.

Layout (docs/internals.md, "Gradient store")::

    info.json                 n, dtype, modules [{name, kind, layer, shape, numel, file, ...}], sha256s, versions
    <module>.npy              n × numel, float32 | float16 | bfloat16 (stored as uint16 bit patterns)
    WE.indptr.npy             (n + 1,) int64  — sample i owns rows indptr[i]:indptr[i+1]
    WE.tokens.npy             (nnz,) int64    — token ids, sorted within a sample
    WE.rows.npy               (nnz, h)        — gradient rows (row-sparse WE; never vocab × h)
    loss.npy, logits.npy, labels.npy

``engine.collect.write_store`` streams ``collect_gradients`` batches straight into the memmaps of a hidden temporary
folder and renames it into place when complete, so memory stays about one batch and a half-written store is
never visible. ``GradStore`` reads it back, streaming float32 chunks of training samples.

A *sharded* store (``GradsStage(...).run(cfg, shards=N)``): complete stores of contiguous sample ranges in
``shard-000/`` … and an ``info.json`` with the totals and ``"shards": [{"path", "start", "stop", "nnz"}]``;
``GradStore`` reads it as one store across shard boundaries, without copying (the same bytes as unsharded).
A full disk is a clear error, not a SIGBUS in a memmap: the writer checks the free space against the known
size first and preallocates every memmap file (an ``OSError(ENOSPC)`` when it is created).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from numpy.lib.format import open_memmap

from layerinf.store.batch import GradBatch, WERows
from layerinf.store.rundir import atomic_write_json
from layerinf.errors import LayerinfError
from layerinf.spec import ModuleSpec
from layerinf.version import __version__

STORE_FORMAT = "layerinf-gradstore-v1"
INFO = "info.json"
SHARD_DIR = "shard-{:03d}"  # the folder of shard k inside a sharded store
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
_NP_STORAGE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def _file_for(name: str) -> str:
    return f"{name}.npy"


def to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    """A torch tensor as a numpy array in storage dtype (bfloat16 → its uint16 bit pattern)."""
    t = t.detach().cpu()
    if dtype == "bfloat16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return t.to(torch.float32 if dtype == "float32" else torch.float16).numpy()


def from_storage(a: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values as float32 (bfloat16 bit patterns are widened exactly)."""
    if dtype == "bfloat16":
        return (np.asarray(a, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(a, dtype=np.float32)


def store_nbytes(n: int, specs: Sequence[ModuleSpec], dtype: str, we_nnz: int = 0, num_labels: int = 2) -> int:
    """Bytes a store of ``n`` samples takes on disk (dense modules, WE rows and tokens, loss/logits/labels)."""
    item = np.dtype(_NP_STORAGE[dtype]).itemsize
    total = sum(n * int(s.numel) * item for s in specs if s.kind != "we")
    we = next((s for s in specs if s.kind == "we"), None)
    total += we_nnz * (8 + int(we.shape[1]) * item) + (n + 1) * 8 if we is not None else 0
    return total + n * (12 + 4 * max(2, int(num_labels or 2))) + 128 * (len(specs) + 6)  # + .npy headers


def check_free_space(path: str | os.PathLike, needed: int) -> None:
    """A clear ``LayerinfError`` before anything is written when ``path``'s disk has less than ``needed`` free."""
    probe = next((p for p in (Path(path), *Path(path).parents) if p.exists()), Path.cwd())
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # unknown: preallocation still turns a full disk into an OSError
    if needed > free:
        raise LayerinfError(f"disk full: {needed / 2**30:.3g} GiB needed for the gradients, {free / 2**30:.3g} GiB "
                            f"free at {path}", "free space or choose another run directory")


def _allocated_memmap(path: Path, dtype, shape: tuple) -> np.memmap:
    """A new ``.npy`` memmap with its blocks reserved on disk: a full disk is ``OSError(ENOSPC)`` here, not a
    SIGBUS on a later write (``posix_fallocate``; where unsupported, the zeros are written)."""
    arr = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    size, fd = path.stat().st_size, os.open(path, os.O_RDWR)
    try:
        try:
            os.posix_fallocate(fd, 0, size) if size else None
            return arr
        except AttributeError:  # no posix_fallocate (macOS)
            pass
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                raise
        for off in range(0, size, 1 << 20):
            os.pwrite(fd, bytes(min(1 << 20, size - off)), off)
        return arr
    finally:
        os.close(fd)


class StoreWriter:
    """Writes batches of per-sample gradients (any sample order) into a temporary folder; ``finish`` publishes it.

    Use as a context manager: an exception removes the temporary folder and leaves ``folder`` untouched.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        n: int,
        specs: Sequence[ModuleSpec],
        *,
        dtype: str = "float32",
        we_counts: np.ndarray | None = None,
        num_labels: int | None = None,
    ):
        if dtype not in STORAGE_DTYPES:
            raise LayerinfError(f"unknown gradient storage dtype '{dtype}'", f"use one of {', '.join(STORAGE_DTYPES)}")
        self.folder = Path(folder)
        self.n = int(n)
        self.dtype = dtype
        self.specs = list(specs)
        self.dense = [s for s in self.specs if s.kind != "we"]
        self.we_spec = next((s for s in self.specs if s.kind == "we"), None)
        if self.we_spec is not None and we_counts is None:
            raise LayerinfError("a WE spec needs per-sample token counts", "pass we_counts=we_token_counts(...)")
        counts = None
        if self.we_spec is not None:
            counts = np.asarray(we_counts, dtype=np.int64)
            if counts.shape != (self.n,):
                raise LayerinfError("we_counts must have one entry per sample", "use we_token_counts(encoded, vocab)")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        nnz = int(counts.sum()) if counts is not None else 0
        check_free_space(self.folder.parent, store_nbytes(self.n, self.specs, dtype, nnz))
        self.tmp = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}.", suffix=".tmp"))
        try:
            self._open_files(counts)
        except BaseException:
            self.abort()
            raise

    def _open_files(self, counts: np.ndarray | None) -> None:
        store_dtype = _NP_STORAGE[self.dtype]
        self._arrays = {s.name: _allocated_memmap(self.tmp / _file_for(s.name), store_dtype, (self.n, s.numel))
                        for s in self.dense}
        self._loss = np.zeros(self.n, dtype=np.float32)
        self._labels = np.zeros(self.n, dtype=np.int64)
        self._logits: np.ndarray | None = None
        self._written = np.zeros(self.n, dtype=bool)
        self._we = None
        if self.we_spec is not None:
            indptr = np.zeros(self.n + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
            nnz, hidden = int(indptr[-1]), int(self.we_spec.shape[1])
            np.save(self.tmp / "WE.indptr.npy", indptr)
            self._we = {
                "indptr": indptr,
                "hidden": hidden,
                "tokens": _allocated_memmap(self.tmp / "WE.tokens.npy", np.int64, (nnz,)),
                "rows": _allocated_memmap(self.tmp / "WE.rows.npy", store_dtype, (nnz, hidden)),
            }

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, batch: GradBatch) -> None:
        """Write one batch at the split positions ``batch.rows``."""
        rows = np.asarray(batch.rows, dtype=np.int64)
        for spec in self.dense:
            g = batch.grads.get(spec.name)
            if g is None:
                raise LayerinfError(f"batch has no gradient for module {spec.name}", "collect with the same specs")
            self._arrays[spec.name][rows] = to_storage(g, self.dtype).reshape(len(rows), spec.numel)
        if self._we is not None:
            self._add_we(rows, batch.we)
        self._loss[rows] = batch.loss.detach().float().cpu().numpy()
        self._labels[rows] = batch.labels.detach().cpu().numpy()
        logits = batch.logits.detach().float().cpu().numpy()
        if self._logits is None:
            self._logits = np.zeros((self.n, logits.shape[1]), dtype=np.float32)
        self._logits[rows] = logits
        self._written[rows] = True

    def _add_we(self, rows: np.ndarray, we: WERows | None) -> None:
        if we is None:
            raise LayerinfError("batch has no word-embedding gradients", "collect with include_we=True")
        local_ptr = we.indptr.cpu().numpy() if isinstance(we.indptr, torch.Tensor) else np.asarray(we.indptr)
        counts = np.diff(local_ptr)
        store_ptr = self._we["indptr"]
        if not np.array_equal(counts, store_ptr[rows + 1] - store_ptr[rows]):
            raise LayerinfError("word-embedding rows do not match the split's token counts",
                                "collect from the same encoded split the store was sized for")
        owner = np.repeat(np.arange(len(rows)), counts)
        dest = store_ptr[rows][owner] + (np.arange(local_ptr[-1]) - local_ptr[:-1][owner])
        tokens = we.tokens.cpu().numpy() if isinstance(we.tokens, torch.Tensor) else np.asarray(we.tokens)
        self._we["tokens"][dest] = tokens
        grad_rows = we.rows if isinstance(we.rows, torch.Tensor) else torch.from_numpy(np.asarray(we.rows))
        self._we["rows"][dest] = to_storage(grad_rows, self.dtype)

    def abort(self) -> None:
        getattr(self, "_arrays", {}).clear()
        self._we = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self, *, checkpoint_sha256: str = "", data_sha256: str = "", extra: dict | None = None) -> "GradStore":
        """Check every sample was written, write ``info.json`` and move the store into place (atomically)."""
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            self.abort()
            raise LayerinfError(f"{len(missing)} samples were never written (e.g. {missing[:5].tolist()})",
                                "feed every sample of the split to the writer")
        for arr in self._arrays.values():
            arr.flush()
        np.save(self.tmp / "loss.npy", self._loss)
        np.save(self.tmp / "labels.npy", self._labels)
        np.save(self.tmp / "logits.npy", self._logits if self._logits is not None else np.zeros((self.n, 0), np.float32))
        modules = []
        for spec in self.specs:
            entry = spec.to_dict()
            entry["file"] = "WE.rows.npy" if spec.kind == "we" else _file_for(spec.name)
            entry["dtype"] = self.dtype
            modules.append(entry)
        we_info = None
        if self._we is not None:
            self._we["tokens"].flush()
            self._we["rows"].flush()
            we_info = {"hidden": self._we["hidden"], "vocab": int(self.we_spec.shape[0]),
                       "nnz": int(self._we["indptr"][-1]), "dtype": self.dtype,
                       "files": {"indptr": "WE.indptr.npy", "tokens": "WE.tokens.npy", "rows": "WE.rows.npy"}}
        info = {
            "format": STORE_FORMAT,
            "n": self.n,
            "dtype": self.dtype,
            "modules": modules,
            "we": we_info,
            "num_labels": None if self._logits is None else int(self._logits.shape[1]),
            "checkpoint_sha256": checkpoint_sha256,
            "data_sha256": data_sha256,
            "layerinf_version": __version__,
            "torch_version": torch.__version__,
            **(extra or {}),
        }
        self._arrays.clear()
        self._we = None
        atomic_write_json(self.tmp / INFO, info)
        _replace_folder(self.tmp, self.folder)
        return GradStore(self.folder)


def _replace_folder(src: Path, dst: Path) -> None:
    if dst.exists():
        trash = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".old"))
        os.replace(dst, trash / "old")
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


class GradStore:
    """Read a gradient store: per-module memmaps, float32 chunks over training samples, row-sparse WE."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / INFO
        fix = "delete the folder and collect the gradients again (`layerinf grads`)"
        if not path.exists():
            raise LayerinfError(f"gradient store {self.folder} has no {INFO} (missing or half-written)", fix)
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LayerinfError(f"{path} is corrupted ({type(exc).__name__})", fix) from None
        if not isinstance(info, dict) or info.get("format") != STORE_FORMAT or not {"n", "dtype", "modules"} <= set(info):
            raise LayerinfError(f"{path} is not a layerinf gradient store description", fix)
        if info["dtype"] not in STORAGE_DTYPES:
            raise LayerinfError(f"{path} names an unknown dtype {info['dtype']!r}", fix)
        self.info: dict = info
        self.n: int = int(info["n"])
        self.dtype: str = info["dtype"]
        self._entries = {m["name"]: m for m in info["modules"]}
        self._cache: dict[str, np.ndarray] = {}
        self._fix = fix
        self.shards: list[tuple[int, int, GradStore]] = []  # sharded: (first sample, stop, the shard's store)
        for e in info.get("shards") or ():
            at = self.shards[-1][1] if self.shards else 0
            sub = GradStore(self.folder / str(e.get("path")).replace("/", "_"))
            same = (sub.dtype, sub.modules) == (self.dtype, self.modules)
            if (e.get("start"), e.get("stop")) != (at, at + sub.n) or not same:
                raise LayerinfError(f"{path}: shard {e.get('path')} does not continue at sample {at} with the same "
                                    "dtype and modules", fix)
            self.shards.append((at, at + sub.n, sub))
        if self.shards and self.shards[-1][1] != self.n:
            raise LayerinfError(f"{path}: the shards hold {self.shards[-1][1]} samples, not {self.n}", fix)

    @property
    def sharded(self) -> bool:
        return bool(self.shards)

    def _pieces(self, start: int, stop: int) -> list[tuple["GradStore", int, int]]:
        """``(shard, local start, local stop)`` covering samples ``start:stop`` of a sharded store (≥ 1 piece)."""
        out = [(sub, max(start, lo) - lo, min(stop, hi) - lo) for lo, hi, sub in self.shards
               if max(start, lo) < min(stop, hi)]
        return out or [(self.shards[0][2], 0, 0)]

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Stored rows ``start:stop`` of a dense module: a memmap slice (across shards: joined in memory)."""
        if not self.shards:
            return self.raw(name)[start:stop]
        parts = [sub.raw(name)[a:b] for sub, a, b in self._pieces(start, stop)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __repr__(self) -> str:
        shards = f", shards={len(self.shards)}" if self.shards else ""
        return f"GradStore({str(self.folder)!r}, n={self.n}, modules={len(self.modules)}, dtype={self.dtype}{shards})"

    @property
    def modules(self) -> list[str]:
        """Module names in inventory order (``WE`` included when stored)."""
        return list(self._entries)

    @property
    def dense_modules(self) -> list[str]:
        return [n for n, m in self._entries.items() if m["kind"] != "we"]

    @property
    def has_we(self) -> bool:
        return bool(self.info.get("we"))

    @property
    def specs(self) -> list[ModuleSpec]:
        return [ModuleSpec(m["name"], m.get("param_name", ""), m.get("module_name", ""), m.get("attr", ""),
                           m["kind"], m.get("layer"), tuple(m["shape"])) for m in self.info["modules"]]

    def numel(self, name: str) -> int:
        return int(self._entry(name)["numel"])

    def _entry(self, name: str) -> dict:
        if name not in self._entries:
            raise LayerinfError(f"module '{name}' is not in gradient store {self.folder}",
                                f"stored modules: {', '.join(list(self._entries)[:8])}…")
        return self._entries[name]

    def _open(self, file: str, shape: tuple | None = None) -> np.ndarray:
        if file not in self._cache:
            path = self.folder / file
            try:
                arr = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise LayerinfError(f"gradient store file {path} is missing", self._fix) from None
            except (ValueError, OSError) as exc:
                raise LayerinfError(f"gradient store file {path} is corrupted ({exc})", self._fix) from None
            if shape is not None and tuple(arr.shape) != tuple(shape):
                raise LayerinfError(f"{path} has shape {arr.shape}, info.json says {tuple(shape)}", self._fix)
            self._cache[file] = arr
        return self._cache[file]

    def raw(self, name: str) -> np.ndarray:
        """The stored memmap of a dense module (n × numel, storage dtype; bfloat16 as uint16 bit patterns);
        of a sharded store, the shards joined in memory (stream with ``iter_chunks`` instead)."""
        entry = self._entry(name)
        if entry["kind"] == "we":
            raise LayerinfError("WE is stored row-sparse", "use we_chunk(start, stop) or iter_we_chunks()")
        if self.shards:
            return np.concatenate([sub.raw(name) for _, _, sub in self.shards])
        return self._open(entry["file"], (self.n, int(entry["numel"])))

    def module(self, name: str) -> np.ndarray:
        """n × numel gradients of a dense module: a read-only memmap (float32/float16), float32 for bfloat16."""
        arr = self.raw(name)
        return from_storage(arr, "bfloat16") if self.dtype == "bfloat16" else arr

    def iter_chunks(self, name: str, chunk_size: int = 2048, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first sample, float32 chunk)`` over samples ``start:stop``; one chunk in memory at a time."""
        stop = self.n if stop is None else min(stop, self.n)
        for lo in range(start, stop, max(1, int(chunk_size))):
            yield lo, from_storage(self._rows(name, lo, min(lo + chunk_size, stop)), self.dtype)

    def concat_chunks(self, names: Sequence[str], chunk_size: int = 2048) -> Iterator[tuple[int, np.ndarray]]:
        """``(first sample, chunk × Σ numel)``: the named dense modules' gradients side by side, streamed."""
        widths = [self.numel(n) for n in names]
        for lo in range(0, self.n, max(1, int(chunk_size))):
            hi = min(lo + chunk_size, self.n)
            out = np.empty((hi - lo, sum(widths)), dtype=np.float32)
            col = 0
            for name, w in zip(names, widths):
                out[:, col : col + w] = from_storage(self._rows(name, lo, hi), self.dtype)
                col += w
            yield lo, out

    def _we_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        we = self.info.get("we")
        if not we:
            raise LayerinfError(f"gradient store {self.folder} has no word-embedding gradients",
                                "collect with include_we=True")
        indptr = self._open(we["files"]["indptr"], (self.n + 1,))
        tokens = self._open(we["files"]["tokens"], (int(we["nnz"]),))
        rows = self._open(we["files"]["rows"], (int(we["nnz"]), int(we["hidden"])))
        return indptr, tokens, rows

    def we_chunk(self, start: int, stop: int) -> WERows:
        """Row-sparse WE gradients of samples ``start:stop`` (indptr rebased to 0, rows float32)."""
        stop = min(stop, self.n)
        if self.shards:
            parts = [sub.we_chunk(a, b) for sub, a, b in self._pieces(start, stop)]
            if len(parts) == 1:
                return parts[0]
            offsets = np.cumsum([0] + [int(p.indptr[-1]) for p in parts])
            indptr = np.concatenate([p.indptr[:-1] + off for p, off in zip(parts, offsets)] + [offsets[-1:]])
            return WERows(indptr.astype(np.int64), np.concatenate([p.tokens for p in parts]),
                          np.concatenate([p.rows for p in parts]))
        indptr, tokens, rows = self._we_arrays()
        ptr = np.asarray(indptr[start : stop + 1], dtype=np.int64)
        lo, hi = int(ptr[0]), int(ptr[-1])
        return WERows(ptr - lo, np.asarray(tokens[lo:hi]), from_storage(rows[lo:hi], self.dtype))

    def iter_we_chunks(self, chunk_size: int = 2048) -> Iterator[WERows]:
        """``WERows`` of consecutive sample chunks (sample order; the chunk's first sample = running count)."""
        for lo in range(0, self.n, max(1, int(chunk_size))):
            yield self.we_chunk(lo, lo + chunk_size)

    def we_all(self) -> WERows:
        return self.we_chunk(0, self.n)

    def _small(self, name: str, shape: tuple | None) -> np.ndarray:
        if self.shards:
            return np.concatenate([getattr(sub, name) for _, _, sub in self.shards])
        return np.asarray(self._open(f"{name}.npy", shape))

    @property
    def loss(self) -> np.ndarray:
        return self._small("loss", (self.n,))

    @property
    def logits(self) -> np.ndarray:
        return self._small("logits", None)

    @property
    def labels(self) -> np.ndarray:
        return self._small("labels", (self.n,))

    def verify(self) -> None:
        """Open every file and check its shape against info.json (raises ``LayerinfError``)."""
        for _, _, sub in self.shards:
            sub.verify()
        for name in [] if self.shards else self.dense_modules:
            self.raw(name)
        if self.has_we and not self.shards:
            self._we_arrays()
        self.loss, self.labels, self.logits  # noqa: B018


def is_valid(folder: str | os.PathLike, checkpoint_sha256: str | None = None, data_sha256: str | None = None) -> bool:
    """True when ``folder`` holds a complete store made from this checkpoint and data (reuse it)."""
    try:
        store = GradStore(folder)
        store.verify()
    except LayerinfError:
        return False
    if checkpoint_sha256 is not None and store.info.get("checkpoint_sha256") != checkpoint_sha256:
        return False
    if data_sha256 is not None and store.info.get("data_sha256") != data_sha256:
        return False
    return True


__all__ = ["GradStore", "StoreWriter", "is_valid", "to_storage", "from_storage", "STORAGE_DTYPES", "SHARD_DIR",
           "store_nbytes", "check_free_space"]
