"""Sharded gradient stores read as one (same bytes as unsharded), and a full disk is a clear error, not a SIGBUS."""

import contextlib
import errno
import os
import shutil
import subprocess
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest
import torch

from layerinf.errors import LayerinfError
from layerinf.spec import ModuleSpec
from layerinf.store import gradstore
from layerinf.store.batch import GradBatch
from layerinf.stages.grads import write_shard_index
from layerinf.store.gradstore import SHARD_DIR, GradStore, StoreWriter, WERows, is_valid

SPECS = [ModuleSpec("WE", "emb.weight", "emb", "weight", "we", None, (50, 4)),
         ModuleSpec("L00.query.A", "q.A", "q.A", "weight", "query_A", 0, (2, 6)),
         ModuleSpec("CL.head.weight", "h.w", "h", "weight", "cl", None, (3, 5)),
         ModuleSpec("CL.head.bias", "h.b", "h", "bias", "cl", None, (3,))]


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    dense = {s.name: rng.standard_normal((n, s.numel)).astype(np.float32) for s in SPECS if s.kind != "we"}
    counts = rng.integers(0, 5, n)  # some samples own no WE rows
    tokens = [np.sort(rng.choice(50, c, replace=False)) for c in counts]
    rows = [rng.standard_normal((c, 4)).astype(np.float32) for c in counts]
    return dense, counts, tokens, rows, rng.random(n).astype(np.float32), rng.standard_normal((n, 3)).astype(
        np.float32), rng.integers(0, 3, n)


def _batch(data, rows, offset=0):
    dense, counts, tokens, we_rows, loss, logits, labels = data
    rows = np.asarray(rows)
    indptr = np.concatenate([[0], np.cumsum([counts[r] for r in rows])]).astype(np.int64)
    we = WERows(torch.from_numpy(indptr), torch.from_numpy(np.concatenate([tokens[r] for r in rows]).astype(np.int64)),
                torch.from_numpy(np.concatenate([we_rows[r] for r in rows]).reshape(-1, 4)))
    return GradBatch(rows=rows - offset, grads={k: torch.from_numpy(v[rows]) for k, v in dense.items()}, we=we,
                     loss=torch.from_numpy(loss[rows]), logits=torch.from_numpy(logits[rows]),
                     labels=torch.from_numpy(labels[rows]))


def _write(folder, data, start, stop, dtype, batch=4):
    order = np.random.default_rng(start).permutation(np.arange(start, stop))  # any sample order
    with StoreWriter(folder, stop - start, SPECS, dtype=dtype, we_counts=data[1][start:stop]) as w:
        for lo in range(0, len(order), batch):
            w.add(_batch(data, order[lo:lo + batch], offset=start))
        return w.finish(checkpoint_sha256="ck", data_sha256="d")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sharded_store_reads_as_the_unsharded_one(tmp_path, dtype):
    n, bounds = 23, [0, 7, 8, 23]  # a one-sample shard too
    data = _data(n)
    full = _write(tmp_path / "full", data, 0, n, dtype)
    folder = tmp_path / "sharded"
    paths = [SHARD_DIR.format(k) for k in range(3)]
    for k, path in enumerate(paths):
        _write(folder / path, data, bounds[k], bounds[k + 1], dtype)
    sharded = write_shard_index(folder, paths, checkpoint_sha256="ck", data_sha256="d")
    assert sharded.sharded and len(sharded.shards) == 3 and sharded.n == n
    assert [(s, e) for s, e, _ in sharded.shards] == list(zip(bounds[:-1], bounds[1:]))
    assert sharded.modules == full.modules and sharded.has_we and sharded.info["we"]["nnz"] == full.info["we"]["nnz"]
    assert not (folder / "L00.query.A.npy").exists()  # the shards' files were not copied
    for name in full.dense_modules:
        assert full.raw(name).tobytes() == sharded.raw(name).tobytes()
        assert np.array_equal(full.module(name), sharded.module(name))
        for size in (1, 5, 7, 100):
            a, b = list(full.iter_chunks(name, size)), list(sharded.iter_chunks(name, size))
            assert [lo for lo, _ in a] == [lo for lo, _ in b]
            assert all(x.tobytes() == y.tobytes() for (_, x), (_, y) in zip(a, b))
        assert [lo for lo, _ in sharded.iter_chunks(name, 4, start=5, stop=19)] == [5, 9, 13, 17]
    names = full.dense_modules
    for (la, a), (lb, b) in zip(full.concat_chunks(names, 6), sharded.concat_chunks(names, 6)):
        assert la == lb and a.tobytes() == b.tobytes()
    for lo, hi in [(0, n), (5, 9), (7, 8), (6, 20), (8, 8)]:
        a, b = full.we_chunk(lo, hi), sharded.we_chunk(lo, hi)
        assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.tokens, b.tokens)
        assert a.rows.tobytes() == b.rows.tobytes()
    for a, b in zip(full.iter_we_chunks(5), sharded.iter_we_chunks(5)):
        assert np.array_equal(a.indptr, b.indptr) and a.rows.tobytes() == b.rows.tobytes()
    for attr in ("loss", "logits", "labels"):
        assert getattr(full, attr).tobytes() == getattr(sharded, attr).tobytes()
    sharded.verify()
    assert is_valid(folder, "ck", "d")
    os.remove(folder / paths[1] / "CL.head.bias.npy")  # a broken shard breaks the store
    assert not is_valid(folder)


def test_shard_index_rejects_gaps_and_mismatches(tmp_path):
    data = _data(10)
    folder = tmp_path / "s"
    _write(folder / "a", data, 0, 4, "float32")
    _write(folder / "b", data, 4, 10, "float16")
    with pytest.raises(LayerinfError, match="collected differently"):
        write_shard_index(folder, ["a", "b"])
    import json

    _write(folder / "b", data, 4, 10, "float32")
    write_shard_index(folder, ["a", "b"])
    info = json.loads((folder / "info.json").read_text())
    info["shards"][1]["start"] = 5
    (folder / "info.json").write_text(json.dumps(info))
    with pytest.raises(LayerinfError, match="does not continue at sample 4"):
        GradStore(folder)


Usage = namedtuple("Usage", "total used free")


def test_too_little_free_space_is_one_clear_error_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(gradstore.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    data = _data(30)
    with pytest.raises(LayerinfError) as err:
        _write(tmp_path / "g", data, 0, 30, "float32")
    msg = str(err.value)
    assert msg.startswith("disk full: ") and "GiB needed for the gradients" in msg and f"free at {tmp_path}" in msg
    assert "free space or choose another run directory" in msg
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_memmap_files_are_preallocated_not_sparse(tmp_path):
    data = _data(64)
    with StoreWriter(tmp_path / "g", 64, SPECS, we_counts=data[1]) as w:
        path = w.tmp / "L00.query.A.npy"
        assert os.stat(path).st_blocks * 512 >= os.path.getsize(path) - 4096  # blocks reserved up front
        w.abort()


@contextlib.contextmanager
def _tmpfs(path, size="2m"):
    path.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield path
    finally:
        import gc

        gc.collect()  # memmaps still open keep the mount busy
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=20).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def test_a_real_full_disk_is_an_error_not_a_sigbus(tmp_path, monkeypatch):
    specs = [ModuleSpec("L00.value.B", "v.B", "v.B", "weight", "value_B", 0, (256, 256))]  # 256 KiB per sample
    with _tmpfs(tmp_path / "small") as disk:
        # the up-front check: 3 MiB do not fit in 2 MiB
        with pytest.raises(LayerinfError, match="disk full: .* needed for the gradients"):
            StoreWriter(disk / "g", 12, specs)
        # a disk that filled up after the check (the check is fooled): preallocation fails with ENOSPC
        monkeypatch.setattr(gradstore.shutil, "disk_usage", lambda path: Usage(10**12, 0, 10**12))
        with pytest.raises(OSError) as err:
            StoreWriter(disk / "g", 12, specs)
        assert err.value.errno == errno.ENOSPC
        assert os.listdir(disk) == []  # the temporary folder is gone
        with StoreWriter(disk / "g", 4, specs) as w:  # what fits still works
            w.add(GradBatch(rows=np.arange(4), grads={"L00.value.B": torch.ones(4, 65536)}, we=None,
                            loss=torch.zeros(4), logits=torch.zeros(4, 2), labels=torch.zeros(4, dtype=torch.long)))
            store = w.finish()
        assert float(store.module("L00.value.B").sum()) == 4 * 65536
        del store, w


# ------------------------------------------------------------------------------------------ the grads stage


@pytest.mark.slow
def test_sharded_grads_stage_gives_the_same_bytes_and_scores(scored_small_run, tmp_path):
    from helpers import SMALL
    from layerinf.config import ExperimentConfig
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.score import ScoreStage
    from layerinf.store.rundir import RunDir

    cfg = ExperimentConfig.from_dict(SMALL)
    run = tmp_path / "run"
    shutil.copytree(scored_small_run, run)
    train, infl = GradsStage(run).run(cfg.grads, shards=3, force=True, progress=False)
    ref_train, ref_infl = GradsStage(scored_small_run).load()
    assert train.sharded and len(train.shards) == 3 and not ref_train.sharded and not infl.sharded
    assert sorted(p.name for p in (run / "grads" / "train").iterdir()) == ["info.json", "shard-000", "shard-001",
                                                                          "shard-002"]
    assert GradsStage(run).summary()["shards"] == 3
    for name in ref_train.dense_modules:
        assert ref_train.module(name).tobytes() == train.module(name).tobytes(), name
    a, b = ref_train.we_all(), train.we_all()
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.tokens, b.tokens)
    assert a.rows.tobytes() == b.rows.tobytes()
    for attr in ("loss", "logits", "labels"):
        assert getattr(ref_train, attr).tobytes() == getattr(train, attr).tobytes()
    assert train.info["data_sha256"] == ref_train.info["data_sha256"]
    stamp = RunDir(run).stage_info("grads")["started"]
    GradsStage(run).run(cfg.grads, progress=False)  # shards are not part of the identity: reused
    assert RunDir(run).stage_info("grads")["started"] == stamp

    ScoreStage(run).run(cfg.score, progress=False)
    assert (run / "scores" / "table.csv").read_bytes() == (scored_small_run / "scores" / "table.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(run / "scores" / "aggregated.parquet"),
                                  pd.read_parquet(scored_small_run / "scores" / "aggregated.parquet"), check_exact=True)
