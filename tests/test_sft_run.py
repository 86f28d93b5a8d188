"""Instruction tuning end to end: demo-sft on a tiny random decoder through data → finetune → grads → score →
retrain → report (the real SmolLM2 runs in the SFT demo and the slow gradient test)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import layerinf as li
from layerinf.store.layout import RunLayout

pytestmark = pytest.mark.slow  # a whole run: fine-tuning, gradients, scores and retrainings

TINY_SFT = {
    "name": "sft",
    "data": {"source": "demo-sft", "max_train": 40, "max_dev": 20, "noise_rate": 0.25, "seed": 1},
    "model": {"name": "shape:tiny-llama", "max_length": 40, "max_response_length": 6},
    "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3},
    "score": {"methods": ["tracin", "datainf"], "aggregators": ["mean", "vote"]},
    "filter": {"configs": ["tracin/all/mean", "loss/-/-"], "baselines": ["none", "oracle"]},
}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("sft") / "run"
    results = li.run(li.ExperimentConfig.from_dict(TINY_SFT), run, progress=False, echo=None)
    return run, results


def test_sft_run_end_to_end(sft_run):
    run, results = sft_run
    layout = RunLayout(run)
    data = json.loads((layout.split("train").parent / "stage.json").read_text())
    assert data["summary"]["task_type"] == "sft" and data["summary"]["noise_kind"] == "label"
    train = pd.read_parquet(layout.split("train"))
    flipped = train[train["noisy"]]
    assert len(flipped) == 10 and (flipped["response"] != flipped["clean_response"]).all()
    assert set(train["response"]) == {"negative", "positive"}
    table = pd.read_parquet(layout.scores())
    assert {"tracin", "datainf", "loss", "self_influence"} <= set(table["method"])
    assert "CL" not in set(table["group"])  # the LM head is frozen: no CL modules
    assert table["ndr_30"].between(0, 1).all()
    # filter & retrain: accuracy = exact match, and the test response loss
    assert set(results["method"]) == {"none", "oracle", "tracin", "loss"}
    assert results[["best_accuracy", "test_loss_at_best_epoch", "best_test_loss"]].notna().all().all()
    assert (results["best_test_loss"] <= results["test_loss_at_best_epoch"] + 1e-12).all()
    # the store's per-example summaries: [response loss, greedy match]
    from layerinf.stages.grads import GradsStage

    tr, infl = GradsStage(run).load()
    assert np.asarray(infl.logits).shape == (10, 2) and set(np.unique(np.asarray(infl.logits)[:, 1])) <= {0.0, 1.0}
    np.testing.assert_allclose(np.asarray(tr.logits)[:, 0], np.asarray(tr.loss), rtol=1e-6)


def test_sft_report_shows_prompts_and_responses_of_the_top_suspects(sft_run):
    run, _ = sft_run
    page = li.report(run, bootstrap=20).read_text()
    assert 'id="top_suspects"' in page and "Is the sentiment of this review positive or negative?" in page
    top = pd.read_csv(run / "report" / "tables" / "top_suspects.csv")
    assert list(top.columns) == ["rank", "source_idx", "prompt", "response", "original response", "score", "noisy"]
    train = pd.read_parquet(RunLayout(run).split("train")).set_index("source_idx")
    for row in top.itertuples(index=False):
        assert train.loc[row.source_idx, "response"] == row.response
