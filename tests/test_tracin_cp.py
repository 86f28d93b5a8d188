"""TracInCP end to end (grads.tracin_checkpoints → score method tracin_cp) on a tiny minilm run, and gradient
checkpointing as a runtime option (same gradients)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import layerinf as li
from layerinf.errors import LayerinfError
from layerinf.influence import methods as M

pytestmark = pytest.mark.slow

DATA = {"source": "demo", "max_train": 40, "max_dev": 16, "noise_rate": 0.2, "seed": 0}
MODEL = {"model": "minilm", "max_length": 24}
TRAIN = {"epochs": 1, "batch_size": 16}
SCORE = {"groups": ["02-03", "CL", "WE"], "aggregators": ["mean", "rank"], "model_baselines": []}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    run = tmp_path_factory.mktemp("tracin") / "run"
    li.prepare(run, progress=False, **DATA)
    li.finetune(run, progress=False, **MODEL, **TRAIN)
    return run


def _copy(finetuned, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    return run


def _lrs(run):
    return json.loads((run / "grads" / "stage.json").read_text())["summary"]["tracin"]["lrs"]


def test_lr_rule_follows_the_finetune_schedule(finetuned):
    from layerinf.engine.train import checkpoint_lr, schedule_lrs
    from layerinf.stages.data import load_data
    from layerinf.stages.finetune import FinetuneStage
    from layerinf.stages.grads import tracin_lrs

    lrs, rule = tracin_lrs(FinetuneStage(finetuned), len(load_data(finetuned).train), ["init", "best", "last"])
    summary = json.loads((finetuned / "finetune" / "stage.json").read_text())["summary"]
    steps = -(-40 // 16)  # ceil(n_train / batch_size): one epoch
    sched = schedule_lrs(summary["lr"], steps, 0.1)
    assert lrs["init"] == summary["lr"] and "peak" in rule
    assert lrs["best"] == pytest.approx(sched.mean()) and lrs["last"] == lrs["best"]  # one epoch: best = last
    # several epochs: the epoch that produced the checkpoint
    assert checkpoint_lr("best", lr=1.0, steps_per_epoch=4, epochs=3, warmup=0.1, best_epoch=2) == pytest.approx(
        schedule_lrs(1.0, 12, 0.1)[4:8].mean())
    assert checkpoint_lr("last", lr=1.0, steps_per_epoch=4, epochs=3, warmup=0.1, best_epoch=2) > 0


def test_one_checkpoint_is_tracin_times_its_lr(finetuned, tmp_path):
    run = _copy(finetuned, tmp_path)
    li.grads(run, progress=False, include_we=True, tracin_checkpoints=["best"])
    assert not (run / "grads" / "tracin").exists()  # the stage's own checkpoint is not collected twice
    table = li.score(run, progress=False, methods=["tracin", "tracin_cp"], **SCORE)
    assert set(table["method"]) == {"tracin", "tracin_cp"}
    eta = _lrs(run)["best"]
    for module in ("CL.classifier.weight", "L02.value.B", "WE"):
        cp = np.load(run / "scores" / "matrices" / "tracin_cp" / f"{module}.npy")
        tr = np.load(run / "scores" / "matrices" / "tracin" / f"{module}.npy")
        np.testing.assert_allclose(cp, np.float32(eta) * tr, rtol=1e-6, atol=1e-12)
    agg = pd.read_parquet(run / "scores" / "aggregated.parquet")
    # Mean is linear: η·tracin; Rank is scale-free: identical
    np.testing.assert_allclose(agg["tracin_cp/CL/mean"], eta * agg["tracin/CL/mean"], rtol=1e-5, atol=1e-12)
    np.testing.assert_array_equal(agg["tracin_cp/02-03/rank"], agg["tracin/02-03/rank"])


def test_two_checkpoints_are_the_sum_of_single_checkpoint_tracin(finetuned, tmp_path):
    from layerinf.stages.grads import GradsStage

    run = _copy(finetuned, tmp_path)
    li.grads(run, progress=False, include_we=False, tracin_checkpoints=["init", "best"])
    assert (run / "grads" / "tracin" / "init" / "train" / "info.json").is_file()
    stores = GradsStage(run).checkpoint_stores()
    assert [c for c, *_ in stores] == ["init", "best"]
    lrs = _lrs(run)
    assert [lr for *_, lr in stores] == [lrs["init"], lrs["best"]]
    (_, tr_init, in_init, _), (_, tr_best, in_best, _) = stores
    assert np.abs(tr_init.module("L00.query.A")).max() == 0  # LoRA B starts at 0: the A gradients are 0 at init
    assert np.abs(tr_best.module("L00.query.A")).max() > 0
    li.score(run, progress=False, methods=["tracin_cp"], groups=["all"], aggregators=["mean"], model_baselines=[])
    for module in ("CL.classifier.weight", "L01.query.A", "L03.value.B"):
        want = (lrs["init"] * M.tracin(in_init.module(module), tr_init.module(module)).astype(np.float64)
                + lrs["best"] * M.tracin(in_best.module(module), tr_best.module(module)).astype(np.float64))
        got = np.load(run / "scores" / "matrices" / "tracin_cp" / f"{module}.npy")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9 * np.abs(want).max())


def test_tracin_cp_without_checkpoints_is_refused_before_anything_is_written(finetuned, tmp_path):
    run = _copy(finetuned, tmp_path)
    li.grads(run, progress=False, include_we=False)
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    with pytest.raises(LayerinfError, match="tracin_checkpoints"):
        li.score(run, progress=False, methods=["tracin", "tracin_cp"])
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before
    with pytest.raises(LayerinfError, match="unknown checkpoint 'final'"):
        li.grads(run, progress=False, tracin_checkpoints=["best", "final"])
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before


def test_default_grads_key_has_no_tracin_field(finetuned):
    from layerinf.config import GradsConfig
    from layerinf.stages.grads import GradsStage

    assert "tracin_checkpoints" not in GradsStage(finetuned).key(GradsConfig())["grads"]
    assert GradsStage(finetuned).key(GradsConfig(tracin_checkpoints=["init"]))["grads"]["tracin_checkpoints"] == [
        "init"]


def test_gradient_checkpointing_gives_the_same_gradients(finetuned, tmp_path):
    """Runtime, not identity: grads with recomputed activations equal the plain ones (and the stage is reused)."""
    from layerinf.stages.finetune import load_finetuned
    from layerinf.engine.collect import write_store
    from layerinf.stages.finetune import encode_splits

    plain = tmp_path / "plain"
    ckpt = tmp_path / "ckpt"
    for folder, gc in ((plain, False), (ckpt, True)):
        loaded, prepared, cfg = load_finetuned(finetuned, "best", gradient_checkpointing=gc)
        assert bool(getattr(loaded.model.get_base_model(), "is_gradient_checkpointing", False)) is gc
        enc = encode_splits(prepared, loaded.tokenizer, cfg.max_length)["train"]
        write_store(loaded.model, enc, folder, batch_size=16, include_we=True, progress=False)
    from layerinf.store.gradstore import GradStore

    a, b = GradStore(plain), GradStore(ckpt)
    assert a.modules == b.modules
    for name in a.modules:
        if name != "WE":
            np.testing.assert_allclose(b.module(name), a.module(name), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.we_all().rows, a.we_all().rows, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-6, atol=1e-7)
    # through the API: the option is accepted and does not change the stage's identity (reused as it is)
    run = tmp_path / "run"
    shutil.copytree(finetuned, run)
    li.grads(run, progress=False, include_we=False)
    stamp = (run / "grads" / "stage.json").read_text()
    li.grads(run, progress=False, include_we=False, gradient_checkpointing=True)
    assert (run / "grads" / "stage.json").read_text() == stamp


def test_finetune_with_gradient_checkpointing_matches(finetuned, tmp_path):
    run = _copy(finetuned, tmp_path)
    out = li.finetune(run, progress=False, force=True, gradient_checkpointing=True, **MODEL, **TRAIN)
    want = pd.read_parquet(finetuned / "finetune" / "history.parquet")
    pd.testing.assert_frame_equal(out.history, want, check_exact=False, rtol=1e-5, atol=1e-6)
    from layerinf.model import read_adapter

    got, ref = read_adapter(run / "finetune" / "best.safetensors"), read_adapter(finetuned / "finetune" /
                                                                                 "best.safetensors")
    for k in ref:
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), rtol=1e-4, atol=1e-6)


def test_sharded_collection_of_checkpoints_gives_the_same_stores(finetuned, tmp_path):
    from layerinf.config import GradsConfig
    from layerinf.stages.grads import GradsStage

    cfg = GradsConfig(include_we=False, tracin_checkpoints=["init", "best"])
    plain, sharded = _copy(finetuned, tmp_path / "a"), _copy(finetuned, tmp_path / "b")
    GradsStage(plain).run(cfg, progress=False)
    GradsStage(sharded).run(cfg, shards=2, progress=False)
    assert GradsStage(sharded).summary()["tracin"] == GradsStage(plain).summary()["tracin"]
    for (c, tr_a, in_a, lr_a), (_, tr_b, in_b, lr_b) in zip(GradsStage(plain).checkpoint_stores(),
                                                            GradsStage(sharded).checkpoint_stores(), strict=True):
        assert lr_a == lr_b and tr_b.n == tr_a.n
        for name in tr_a.modules:
            np.testing.assert_array_equal(tr_b.module(name), tr_a.module(name))
            np.testing.assert_array_equal(in_b.module(name), in_a.module(name))
