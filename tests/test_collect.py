"""Batched per-sample gradients (hooks) against a batch-of-one autograd loop, and the on-disk gradient store.

Tiny random BERT/Llama models run in float64 (agreement to ~1e-15); the real built-ins run in float32, where
the batched and the batch-of-one results differ only by float32 rounding (both are ~3–6e-6 away from a
float64 reference on SmolLM2, whose 30 layers accumulate it), well inside the 1e-5 bound.
"""

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch

from layerinf.engine.batching import EncodedSplit, encode_split
from layerinf.engine.collect import collect_gradients, predictions, row_sparse_rows
from layerinf.errors import LayerinfError
from layerinf.engine.collect import we_token_counts, write_store
from layerinf.store.batch import GradBatch
from layerinf.store.gradstore import GradStore, StoreWriter, is_valid
from layerinf.model import attach_lora, inventory, load_classifier
from layerinf.spec import ModuleSpec

from grad_reference import (VOCAB, assert_matches_loop, gather, randomise_trainable, reference_loop, rel_err,
                            synthetic_split, tiny_classifier)


# ------------------------------------------------------------------------------------------------ tiny models


@pytest.mark.parametrize("arch, side", [("bert", "right"), ("llama", "right"), ("llama", "left")])
def test_tiny_models_match_batch_of_one_loop(arch, side):
    model = tiny_classifier(arch)
    encoded = synthetic_split([3, 11, 5, 16, 1, 8, 2], side)
    specs = inventory(model)
    kinds = {s.kind for s in specs}
    assert kinds == {"we", "query_A", "query_B", "value_A", "value_B", "cl"}
    ref = reference_loop(model, encoded, specs)
    for sort in (True, False):  # both batchings mix lengths (padding inside every batch)
        assert_matches_loop(model, encoded, specs, ref, 1e-10, batch_size=4, dtype=torch.float64, sort_by_length=sort)
    assert all(p.grad is None for p in model.parameters())  # parameter .grad untouched
    assert not model.get_input_embeddings().weight.requires_grad
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_roberta_style_head_two_linears():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=80, pad_token_id=1, num_labels=2))
    model = attach_lora(model.double())
    randomise_trainable(model)
    specs = inventory(model)
    assert [s.name for s in specs if s.kind == "cl"] == [
        "CL.classifier.dense.weight", "CL.classifier.dense.bias", "CL.classifier.out_proj.weight",
        "CL.classifier.out_proj.bias"]
    rng = np.random.default_rng(3)
    feats = [{"input_ids": rng.integers(3, 30, n).tolist(), "attention_mask": [1] * n} for n in (4, 9, 6)]
    encoded = EncodedSplit(feats, np.array([0, 1, 1]), np.arange(3), 1, "right")
    ref = reference_loop(model, encoded, specs)
    assert_matches_loop(model, encoded, specs, ref, 1e-10, batch_size=3, dtype=torch.float64)


def test_non_finite_gradients_are_an_error():
    model = tiny_classifier("bert")
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    encoded = synthetic_split([3, 5], "right")
    with pytest.raises(LayerinfError, match="non-finite"):
        list(collect_gradients(model, encoded, progress=False))


def test_subset_rows_predictions_and_no_we():
    model = tiny_classifier("llama")
    encoded = synthetic_split([3, 7, 5, 9, 4], "left")
    batches = list(collect_gradients(model, encoded, batch_size=2, include_we=False, rows=np.array([4, 1, 3]),
                                     progress=False))
    assert sorted(np.concatenate([b.rows for b in batches]).tolist()) == [1, 3, 4]
    assert all(b.we is None and "WE" not in b.grads for b in batches)
    logits = predictions(model, encoded, batch_size=2)
    for b in batches:
        np.testing.assert_allclose(logits[b.rows], b.logits.float().numpy(), rtol=1e-6, atol=1e-7)


def test_row_sparse_scatter_sums_repeated_tokens_and_skips_padding():
    ids = torch.tensor([[5, 3, 5, 0], [7, 7, 7, 7]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    grad = torch.arange(2 * 4 * 2, dtype=torch.float64).reshape(2, 4, 2)
    we = row_sparse_rows(ids, mask, grad, vocab=10)
    assert we.indptr.tolist() == [0, 2, 3] and we.tokens.tolist() == [3, 5, 7]
    assert we.rows.tolist() == [[2, 3], [0 + 4, 1 + 5], [8 + 10 + 12 + 14, 9 + 11 + 13 + 15]]


# ------------------------------------------------------------------------------------------------ real built-ins

TEXTS = ["a gripping, funny and moving film", "dull.", "the plot makes no sense at all and the actors look bored",
         "I loved it", "not my cup of tea, but well made and often clever"]


@pytest.fixture(scope="module", params=["minilm", "smollm2-135m"])
def real(request):
    loaded = load_classifier(request.param, 2, seed=0)
    model = loaded.model
    randomise_trainable(model, scale=0.02)
    df = pd.DataFrame({"idx": range(len(TEXTS)), "text": TEXTS, "text_pair": [None] * len(TEXTS),
                       "label": [1, 0, 0, 1, 1]})
    encoded = encode_split(df, loaded.tokenizer, max_length=24)
    specs = inventory(model)
    return request.param, model, encoded, specs, reference_loop(model, encoded, specs)


@pytest.mark.slow
def test_real_models_match_batch_of_one_loop(real):
    name, model, encoded, specs, ref = real
    sides = ["right", "left"] if name == "smollm2-135m" else ["right"]  # BERT: absolute positions, right padding
    original = encoded.padding_side
    try:
        for side in sides:
            encoded.padding_side = side
            assert_matches_loop(model, encoded, specs, ref, 1e-5, batch_size=8)
    finally:
        encoded.padding_side = original


# ------------------------------------------------------------------------------------------------ gradient store


def test_store_round_trip_equals_in_memory(tmp_path):
    model = tiny_classifier("bert").float()
    encoded = synthetic_split([3, 11, 5, 16, 1, 8, 2], "right", seed=4)
    specs = inventory(model)
    dense, we, loss, logits = gather(model, encoded, specs, batch_size=3)
    store = write_store(model, encoded, tmp_path / "grads", batch_size=3, checkpoint_sha256="ck", progress=False)
    assert store.n == 7 and store.modules == [s.name for s in specs] and store.has_we
    assert store.info["we"]["nnz"] == sum(len(t) for t, _ in we)
    for name in dense:
        assert np.array_equal(store.module(name), dense[name].numpy())
        chunks = list(store.iter_chunks(name, chunk_size=3))
        assert [c[0] for c in chunks] == [0, 3, 6]
        assert np.array_equal(np.concatenate([c for _, c in chunks]), dense[name].numpy())
    names = store.dense_modules[:3]
    cat = np.concatenate([c for _, c in store.concat_chunks(names, chunk_size=2)])
    assert np.array_equal(cat, np.hstack([dense[n].numpy() for n in names]))
    np.testing.assert_array_equal(store.loss, loss.numpy())
    np.testing.assert_array_equal(store.logits, logits.numpy())
    np.testing.assert_array_equal(store.labels, encoded.labels)
    full = store.we_all()
    parts = list(store.iter_we_chunks(chunk_size=2))
    assert np.array_equal(np.concatenate([p.tokens for p in parts]), full.tokens)
    assert np.array_equal(np.concatenate([p.rows for p in parts]), full.rows)
    for i in range(7):
        part = store.we_chunk(i, i + 1)
        assert part.indptr.tolist() == [0, len(we[i][0])]
        assert np.array_equal(part.tokens, we[i][0].numpy()) and np.array_equal(part.rows, we[i][1].numpy())
    # reuse detection
    assert is_valid(store.folder, "ck", store.info["data_sha256"])
    assert not is_valid(store.folder, "other", None)
    assert not is_valid(store.folder, "ck", "other-data")


@pytest.mark.parametrize("dtype, tol", [("float16", 1e-3), ("bfloat16", 1e-2)])
def test_store_half_precision(tmp_path, dtype, tol):
    model = tiny_classifier("llama").float()
    encoded = synthetic_split([4, 9, 6], "left", seed=2)
    dense, we, _, _ = gather(model, encoded, inventory(model), batch_size=2)
    store = write_store(model, encoded, tmp_path / dtype, batch_size=2, dtype=dtype, progress=False)
    assert store.info["dtype"] == dtype and all(m["dtype"] == dtype for m in store.info["modules"])
    for name in dense:
        got = np.concatenate([c for _, c in store.iter_chunks(name, 2)])
        assert got.dtype == np.float32 and rel_err(torch.from_numpy(got), dense[name]) < tol
        assert np.array_equal(store.module(name), got)
    assert rel_err(torch.from_numpy(store.we_all().rows), torch.cat([r for _, r in we])) < tol


def test_store_corruption_and_missing_files(tmp_path):
    model = tiny_classifier("bert").float()
    encoded = synthetic_split([3, 4], "right")
    store = write_store(model, encoded, tmp_path / "g", progress=False)
    folder = store.folder
    info = folder / "info.json"
    text = info.read_text()
    info.write_text(text[:50])
    with pytest.raises(LayerinfError, match="corrupted"):
        GradStore(folder)
    assert not is_valid(folder)
    info.write_text(json.dumps({"hello": 1}))
    with pytest.raises(LayerinfError, match="not a layerinf gradient store"):
        GradStore(folder)
    info.unlink()
    with pytest.raises(LayerinfError, match="no info.json"):
        GradStore(folder)
    info.write_text(text)
    name = GradStore(folder).dense_modules[0]
    (folder / f"{name}.npy").unlink()
    assert not is_valid(folder)
    with pytest.raises(LayerinfError, match="missing"):
        GradStore(folder).module(name)
    with pytest.raises(LayerinfError, match="not in gradient store"):
        GradStore(folder).module("L99.query.A")


def test_failed_write_leaves_the_old_store_and_no_temporary_folder(tmp_path):
    specs = [ModuleSpec("m", "", "", "weight", "query_A", 0, (2, 3))]

    def batch(rows, value):
        return GradBatch(np.array(rows), {"m": torch.full((len(rows), 6), value)}, None,
                         torch.zeros(len(rows)), torch.zeros(len(rows), 2), torch.zeros(len(rows), dtype=torch.long))

    with StoreWriter(tmp_path / "s", 2, specs) as w:
        w.add(batch([1, 0], 1.0))
        w.finish(checkpoint_sha256="a")
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "s", 2, specs) as w:
        w.add(batch([0], 2.0))
        raise RuntimeError("interrupted")
    with pytest.raises(LayerinfError, match="never written"), StoreWriter(tmp_path / "s", 2, specs) as w:
        w.add(batch([0], 3.0))
        w.finish()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    assert np.all(GradStore(tmp_path / "s").module("m") == 1.0)


def test_ten_thousand_samples_stream_with_bounded_memory(tmp_path):
    n, batch_size, chunk = 10_000, 200, 500
    specs = [ModuleSpec("WE", "", "", "weight", "we", None, (50, 16)),
             ModuleSpec("L00.query.A", "", "", "weight", "query_A", 0, (4, 256)),
             ModuleSpec("L00.query.B", "", "", "weight", "query_B", 0, (256, 4))]
    d = 2 * 1024
    rng = np.random.default_rng(0)
    feats = [{"input_ids": rng.integers(0, 50, 6).tolist(), "attention_mask": [1] * 6} for _ in range(n)]
    encoded = EncodedSplit(feats, np.zeros(n, dtype=np.int64), np.arange(n), 0, "right")
    counts = we_token_counts(encoded, 50)
    order = rng.permutation(n)  # arbitrary arrival order, as with length-sorted batches
    total = np.zeros(d)

    tracemalloc.start()
    with StoreWriter(tmp_path / "big", n, specs, we_counts=counts) as writer:
        for lo in range(0, n, batch_size):
            rows = order[lo : lo + batch_size]
            ids = torch.tensor([feats[r]["input_ids"] for r in rows])
            we = row_sparse_rows(ids, torch.ones_like(ids), torch.ones(len(rows), 6, 16), 50)
            grads = {s.name: torch.from_numpy(np.repeat(rows[:, None], s.numel, 1).astype(np.float32))
                     for s in specs[1:]}
            writer.add(GradBatch(rows, grads, we, torch.zeros(len(rows)), torch.zeros(len(rows), 2),
                                 torch.zeros(len(rows), dtype=torch.long)))
        store = writer.finish()
    _, write_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _, block in store.concat_chunks(store.dense_modules, chunk):
        total += block.sum(0)
    we_rows = sum(int(part.rows.shape[0]) for part in store.iter_we_chunks(chunk))
    _, read_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    full_bytes, chunk_bytes = n * d * 4, chunk * d * 4
    assert write_peak < full_bytes / 10, (write_peak, full_bytes)
    assert read_peak < 3 * chunk_bytes < full_bytes / 5, (read_peak, chunk_bytes)  # ≤ 2 chunks alive, not n
    assert np.allclose(total, n * (n - 1) / 2)  # every row i holds the value i
    assert we_rows == counts.sum() == store.info["we"]["nnz"]
    assert np.array_equal(store.we_chunk(17, 18).tokens, np.unique(feats[17]["input_ids"]))
    assert store.we_chunk(17, 18).rows.tolist() == [[float(feats[17]["input_ids"].count(t))] * 16
                                                    for t in np.unique(feats[17]["input_ids"])]
