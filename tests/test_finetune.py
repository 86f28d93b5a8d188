"""Fine-tuning through the public API on real data: learns, is deterministic, reuses finished stages."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import layerinf as li
from layerinf.store.rundir import RunDir

pytestmark = pytest.mark.slow  # real MiniLM weights, fine-tuning on GLUE


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, glue_dir):
    run = tmp_path_factory.mktemp("sst2")
    li.prepare(run, source=str(glue_dir / "SST-2"), max_train=400, max_dev=200, noise_rate=0.0, seed=0)
    out = li.finetune(run, model="minilm", epochs=3, max_length=64, progress=False)
    return run, out


def test_minilm_on_clean_sst2_beats_chance(sst2_run):
    run, out = sst2_run
    hist = out.history
    assert list(hist["epoch"]) == [1, 2, 3]
    assert out.accuracy_at_best_epoch > 0.65, hist  # chance is ~0.5 on the balanced SST-2 dev split
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    best = hist.loc[hist["infl_loss"] == hist["infl_loss"].min(), "epoch"].max()
    assert out.best_epoch == best  # lowest influence loss, ties → later epoch
    folder = run / "finetune"
    for name in ("init.safetensors", "best.safetensors", "last.safetensors", "infl_logits.npy", "history.csv"):
        assert (folder / name).exists()
    logits = np.load(folder / "infl_logits.npy")
    assert logits.shape == (100, 2)
    man = json.loads((run / "manifest.json").read_text())
    assert {"data", "finetune"} <= set(man["stages"])
    assert man["stages"]["finetune"]["files"]["best.safetensors"]


def test_rerun_reuses_and_corruption_redoes(sst2_run):
    run, out = sst2_run
    rd = RunDir(run)
    stamp = rd.stage_info("finetune")["started"]
    again = li.finetune(run, model="minilm", epochs=3, max_length=64, progress=False)
    assert rd.stage_info("finetune")["started"] == stamp  # reused, not recomputed
    assert again.best_epoch == out.best_epoch
    assert not rd.is_finished("finetune", {"different": True})


def test_training_is_deterministic(tmp_path, glue_dir):
    results = []
    for k in range(2):
        run = tmp_path / f"r{k}"
        li.prepare(run, source=str(glue_dir / "SST-2"), max_train=64, max_dev=40, noise_rate=0.2, seed=1)
        results.append(li.finetune(run, model="minilm", epochs=1, max_length=32, progress=False).history)
    assert np.allclose(results[0]["infl_loss"], results[1]["infl_loss"], rtol=0, atol=1e-6)
    # bit-identical tensors (the files' metadata order is not fixed by safetensors, so compare tensors)
    a = load_file(tmp_path / "r0" / "finetune" / "best.safetensors")
    b = load_file(tmp_path / "r1" / "finetune" / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("init.safetensors", "best.safetensors", "last.safetensors"):  # byte-identical files too
        assert (tmp_path / "r0" / "finetune" / name).read_bytes() == (tmp_path / "r1" / "finetune" / name).read_bytes()
