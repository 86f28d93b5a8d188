"""``suspects`` as a mislabel detector: bad detection options through the real console script (one line, exit 2,
nothing written), the out-of-sample probabilities a cleanlab user takes (``pred_probs.npy``), and the small-data
recipe learning real SST-2 rows (../shared/data/glue)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import one_error_line, run_cli

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def _csv(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = ["good", "fine", "great", "bad", "awful", "poor"]
    pd.DataFrame({"review": [" ".join(rng.choice(words, 4)) for _ in range(n)],
                  "stars": rng.choice(["pos", "neg"], n)}).to_csv(path, index=False)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("args, match", [
    (["--top", "1.5"], "top = 1.5 is out of range"),
    (["--top", "0"], "top = 0.0 is out of range"),
    (["--ranking", "cleanest"], "unknown value 'cleanest'"),
    (["--probe-rate", "0.7"], "probe_rate = 0.7 is out of range"),
    (["--ranking", "confidence", "--folds", "1"], "needs cross-fitted"),
])
def test_bad_detection_options_are_one_line_and_write_nothing(tmp_path, args, match):
    src = _csv(tmp_path / "mine.csv", 60)
    out = tmp_path / "out"
    res = run_cli("suspects", out, "--source", src, "--text-column", "review", "--label-column", "stars", *args)
    line = one_error_line(res)
    assert match in line, line
    assert not out.exists()


@pytest.mark.slow
def test_a_file_too_small_to_probe_is_one_line_naming_the_fix(tmp_path):
    src = _csv(tmp_path / "few.csv", 24)  # 16 training rows per fold: 5 % plants 1 label, 2 needed
    out = tmp_path / "out"
    res = run_cli("suspects", out, "--source", src, "--text-column", "review", "--label-column", "stars")
    line = one_error_line(res)
    assert "too few for the planted-flip probe" in line and "--probe-rate 0" in line
    assert not out.exists()


@pytest.mark.slow
def test_pred_probs_are_out_of_sample_and_cleanlab_takes_them(tmp_path):
    """Each row of pred_probs.npy is the held-out fold model's softmax of that row (its best checkpoint's test-split
    logits), in the table's `index` order, equal to the CSV's p_oos columns; cleanlab's find_label_issues takes it."""
    from layerinf.stages.data import load_data
    from layerinf.workflows.suspects import find_suspects

    src = _csv(tmp_path / "mine.csv", 72, seed=1)
    res = find_suspects(tmp_path / "out", source=str(src), text_column="review", label_column="stars", epochs=1,
                        batch_size=16, max_length=16, min_steps=None, progress=False)
    probs = np.load(res.folder / "pred_probs.npy")
    t = res.table.sort_values("index")
    assert probs.shape == (72, 2) and np.allclose(probs.sum(1), 1)
    assert np.allclose(probs, t[["p_oos:neg", "p_oos:pos"]].to_numpy(), atol=1e-6)
    for k in range(3):  # each fold's test split is its held-out rows, and their probabilities are its model's
        fold = tmp_path / "out" / "folds" / f"fold-{k}"
        held = load_data(fold).test["source_idx"].to_numpy()
        logits = np.load(fold / "finetune" / "test_logits.npy").astype(np.float64)
        want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        at = t.set_index("source_idx").loc[held, "index"].to_numpy()
        assert np.allclose(probs[at], want)
        assert not set(held) & set(load_data(fold).train["source_idx"])
    labels = (t["given_label"] == "pos").to_numpy(int)
    assert np.allclose(t["p_given_oos"], probs[np.arange(72), labels])
    summary = json.loads((res.folder / "summary.json").read_text())
    d = summary["detection"]
    assert d["ranking"] in ("combined", "influence", "confidence", "embedding") and d["why"]
    assert int(t["suspect"].sum()) == d["flagged"] == res.n_suspects
    cleanlab = pytest.importorskip("cleanlab.filter")
    issues = cleanlab.find_label_issues(labels, probs)
    assert issues.shape == (72,) and issues.dtype == bool


def _sst2_rows(n: int, seed: int = 0) -> pd.DataFrame:
    df = pd.read_csv(GLUE / "SST-2" / "train.tsv", sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
    return df.iloc[np.random.default_rng(seed).choice(len(df), n, replace=False)].reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").is_file(), reason="../shared/data/glue/SST-2 is absent")
def test_the_small_data_recipe_learns_a_fold_of_a_500_row_sst2_file(tmp_path):
    """One fold of a 500-row SST-2 file (333 training rows, 167 held out) fine-tuned with suspects' defaults
    (≥ 300 optimiser steps): the health check passes (its accuracy's 95 % interval clears the majority class). With
    the old default (3 epochs = 33 steps) it did not."""
    import layerinf as li
    from layerinf.workflows.defaults import SUSPECTS_DEFAULTS

    rows = _sst2_rows(500)
    rows.iloc[:333].to_csv(tmp_path / "train.csv", index=False)
    rows.iloc[333:].to_csv(tmp_path / "dev.csv", index=False)
    run = tmp_path / "run"
    li.prepare(run, source=str(tmp_path / "train.csv"), dev_source=str(tmp_path / "dev.csv"), text_column="sentence",
               label_column="label", noise_rate=0.0, max_train=None)
    li.finetune(run, epochs=SUSPECTS_DEFAULTS["epochs"], min_steps=SUSPECTS_DEFAULTS["min_steps"], progress=False)
    info = json.loads((run / "finetune" / "stage.json").read_text())["summary"]
    health = info["health"]
    assert info["epochs"] * -(-333 // 32) >= 300
    assert health["learned"], health
    assert health["infl"]["accuracy"] > 0.7
