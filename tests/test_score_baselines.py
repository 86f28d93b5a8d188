"""The model's own rankings (loss, self-influence) against loop references, and as rows of the score table."""

import numpy as np
import pytest
import torch

from layerinf.engine.batching import EncodedSplit
from layerinf.engine.collect import row_sparse_rows, we_token_counts
from layerinf.store.batch import GradBatch
from layerinf.spec import ModuleSpec
from layerinf.stages.score import model_baseline_scores
from layerinf.store.gradstore import StoreWriter


def _store(tmp_path, n=23, vocab=30, hidden=5, seed=0):
    rng = np.random.default_rng(seed)
    specs = [ModuleSpec("WE", "", "", "weight", "we", None, (vocab, hidden)),
             ModuleSpec("L00.query.A", "", "", "weight", "query_A", 0, (2, 7)),
             ModuleSpec("CL.w", "", "", "weight", "cl", None, (2, 3))]
    lengths = rng.integers(1, 6, n)
    feats = [{"input_ids": rng.integers(0, vocab, k).tolist(), "attention_mask": [1] * int(k)} for k in lengths]
    encoded = EncodedSplit(feats, np.zeros(n, dtype=np.int64), np.arange(n), 0, "right")
    dense = {s.name: rng.standard_normal((n, s.numel)).astype(np.float32) for s in specs[1:]}
    token_grads = [rng.standard_normal((len(f["input_ids"]), hidden)).astype(np.float32) for f in feats]
    loss = rng.random(n).astype(np.float32)
    with StoreWriter(tmp_path / "s", n, specs, we_counts=we_token_counts(encoded, vocab)) as w:
        for lo in range(0, n, 4):  # batches of up to 4, padded to the longest
            rows = np.arange(lo, min(lo + 4, n))
            T = max(len(feats[r]["input_ids"]) for r in rows)
            ids = torch.zeros(len(rows), T, dtype=torch.long)
            mask = torch.zeros(len(rows), T, dtype=torch.long)
            g = torch.zeros(len(rows), T, hidden)
            for k, r in enumerate(rows):
                L = len(feats[r]["input_ids"])
                ids[k, :L] = torch.tensor(feats[r]["input_ids"])
                mask[k, :L] = 1
                g[k, :L] = torch.from_numpy(token_grads[r])
            we = row_sparse_rows(ids, mask, g, vocab)
            w.add(GradBatch(rows, {k: torch.from_numpy(v[rows]) for k, v in dense.items()}, we,
                            torch.from_numpy(loss[rows]), torch.zeros(len(rows), 2), torch.zeros(len(rows), dtype=torch.long)))
        store = w.finish()
    return store, feats, dense, token_grads, loss, vocab, hidden


def test_self_influence_and_loss_match_loops(tmp_path):
    store, feats, dense, token_grads, loss, vocab, hidden = _store(tmp_path)
    want = []
    for i, f in enumerate(feats):  # the obvious way: the full (vocab × hidden) WE gradient, then every norm
        we = np.zeros((vocab, hidden))
        for t, row in zip(f["input_ids"], token_grads[i]):
            we[t] += row
        want.append(-(np.sum(we ** 2) + sum(np.sum(v[i].astype(np.float64) ** 2) for v in dense.values())))
    for chunk in (1, 5, 100):
        got = model_baseline_scores("self_influence", store, chunk_size=chunk)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(model_baseline_scores("loss", store), -loss.astype(np.float64))


# ------------------------------------------------------------------------- confident learning, out of sample


@pytest.mark.slow
def test_confident_learning_baseline_is_out_of_sample_self_confidence(tmp_path):
    """``score.model_baselines: [..., confident_learning]``: 2 fold models fine-tuned on the other half of the
    (noisy) training labels; each row's score is p(given label) under the model that did not train on it —
    checked against an unbatched forward pass per row — and it is scored, curved and retrained like the others."""
    import pandas as pd

    import layerinf as li
    from layerinf.config import ExperimentConfig
    from layerinf.stages.data import load_data
    from layerinf.stages.finetune import FinetuneStage
    from layerinf.stages.score import ScoreStage
    from layerinf.store.rundir import RunDir

    from helpers import SMALL

    raw = {**SMALL, "score": {**SMALL["score"], "model_baselines": ["loss", "confident_learning"]},
           "filter": {**SMALL["filter"], "configs": ["tracin/CL/mean", "confident_learning/-/-"]}}
    out = tmp_path / "run"
    results = li.run(ExperimentConfig.from_dict(raw), out, progress=False, echo=None)
    assert "confident_learning" in set(results["method"])
    data = load_data(out)
    fold_of = np.load(out / "noise" / "folds.npy")
    scores = ScoreStage(RunDir(out)).aggregated()["confident_learning/-/-"].to_numpy()
    labels = data.train["label"].to_numpy()
    for k in (0, 1):
        fold = RunDir(out / "crossfit" / f"fold{k}")
        fold_data = load_data(fold)
        held = np.flatnonzero(fold_of == k)
        assert not set(data.train["text"].iloc[held]) & set(fold_data.train["text"]), "fold k never saw its rows"
        loaded, cfg = FinetuneStage(fold).model(fold_data, "best", "cpu")
        model = loaded.model.eval()
        for i in held[:5]:
            enc = loaded.tokenizer(data.train["text"].iloc[i], truncation=True, max_length=cfg.max_length,
                                   return_tensors="pt")
            with torch.no_grad():
                p = torch.softmax(model(**enc).logits.double(), -1)[0].numpy()
            np.testing.assert_allclose(scores[i], p[labels[i]], atol=1e-5)
    table = pd.read_csv(out / "scores" / "table.csv")
    assert {"loss", "confident_learning"} <= set(table["method"])


def test_confident_learning_is_refused_for_instruction_data(tmp_path):
    from layerinf.config import ExperimentConfig
    from layerinf.errors import LayerinfError
    from layerinf.workflows.run import check_config

    cfg = ExperimentConfig.from_dict({"name": "x", "data": {"source": "demo-sft"},
                                      "model": {"name": "shape:tiny-llama"},
                                      "score": {"model_baselines": ["loss", "confident_learning"]}})
    with pytest.raises(LayerinfError, match="confident_learning needs class probabilities"):
        check_config(cfg)
