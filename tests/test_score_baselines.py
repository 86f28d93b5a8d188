"""The model's own rankings (loss, self-influence) against loop references, and as rows of the score table."""

import numpy as np
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
