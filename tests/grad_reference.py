"""What batched per-sample gradients are checked against: a batch-of-one autograd loop, tiny random BERT/Llama
classifiers with LoRA and synthetic token splits (used by test_collect.py, test_engine.py and test_precision.py)."""

import numpy as np
import torch
import torch.nn.functional as F

from layerinf.engine.batching import EncodedSplit, model_inputs
from layerinf.engine.collect import collect_gradients
from layerinf.model import attach_lora

VOCAB = 100


def randomise_trainable(model, seed=1, scale=0.1):
    """LoRA B starts at zero (so every A gradient would be 0): give all trainable tensors random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale)


def tiny_classifier(arch):
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    if arch == "bert":
        model = BertForSequenceClassification(BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, num_labels=3))
    else:
        model = LlamaForSequenceClassification(LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=64, pad_token_id=0, num_labels=3))
    model = attach_lora(model.double())
    randomise_trainable(model)
    return model


def synthetic_split(lengths, padding_side, seed=0, token_high=20):
    """Token ids in [1, token_high) (0 is the pad id; few distinct ids so tokens repeat within a sample)."""
    rng = np.random.default_rng(seed)
    feats = [{"input_ids": rng.integers(1, token_high, n).tolist(), "attention_mask": [1] * n} for n in lengths]
    return EncodedSplit(feats, rng.integers(0, 3, len(lengths)), np.arange(len(lengths)), 0, padding_side)


def reference_loop(model, encoded, specs):
    """Batch of one, unpadded, torch.autograd.grad; the embedding weight is made to require grad here."""
    params = dict(model.named_parameters())
    emb = model.get_input_embeddings()
    emb.weight.requires_grad_(True)
    grads = {s.name: [] for s in specs}
    losses, logits_all = [], []
    model.eval()
    try:
        for i in range(len(encoded)):
            batch = encoded.collate(np.array([i]))
            logits = model(**model_inputs(batch)).logits
            loss = F.cross_entropy(logits, batch["labels"])
            got = torch.autograd.grad(loss, [params[s.param_name] for s in specs])
            for s, g in zip(specs, got):
                if s.kind == "we":  # keep only the non-zero rows of the dense vocab × h gradient
                    nonzero = torch.nonzero(g.abs().sum(1)).flatten()
                    grads[s.name].append((nonzero, g[nonzero]))
                else:
                    grads[s.name].append(g.reshape(-1))
            losses.append(loss.detach())
            logits_all.append(logits.detach()[0])
    finally:
        emb.weight.requires_grad_(False)
    dense = {k: torch.stack(v) for k, v in grads.items() if k != "WE"}
    return dense, grads.get("WE"), torch.stack(losses), torch.stack(logits_all)


def gather(model, encoded, specs, **kwargs):
    """Run collect_gradients and put every result back in split order."""
    n = len(encoded)
    dense, we, loss, logits = {}, [None] * n, None, None
    for gb in collect_gradients(model, encoded, specs, progress=False, **kwargs):
        for name, g in gb.grads.items():
            dense.setdefault(name, torch.zeros((n, g.shape[1]), dtype=g.dtype))[gb.rows] = g
        if loss is None:
            loss = torch.zeros(n, dtype=gb.loss.dtype)
            logits = torch.zeros((n, gb.logits.shape[1]), dtype=gb.logits.dtype)
        loss[gb.rows], logits[gb.rows] = gb.loss, gb.logits
        if gb.we is not None:
            for j, r in enumerate(gb.rows):
                lo, hi = gb.we.indptr[j], gb.we.indptr[j + 1]
                we[r] = (gb.we.tokens[lo:hi], gb.we.rows[lo:hi])
    return dense, we, loss, logits


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def assert_matches_loop(model, encoded, specs, ref, tol, **kwargs):
    ref_dense, ref_we, ref_loss, ref_logits = ref
    dense, we, loss, logits = gather(model, encoded, specs, **kwargs)
    assert set(dense) == set(ref_dense)
    errors = {name: rel_err(dense[name], ref_dense[name]) for name in ref_dense}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, f"{worst}: relative error {errors[worst]:.2e}"
    assert all(ref_dense[name].norm() > 0 for name in ref_dense)  # no vacuous comparison (LoRA B ≠ 0)
    assert rel_err(loss, ref_loss) <= tol and rel_err(logits, ref_logits) <= tol
    if ref_we is not None:
        got_rows, ref_rows = [], []
        for i, (nonzero, dense_rows) in enumerate(ref_we):
            tokens, rows = we[i]
            assert torch.equal(tokens.cpu(), nonzero)  # sorted unique tokens of the sample, nothing from padding
            assert torch.equal(tokens, torch.unique(torch.tensor(encoded.features[i]["input_ids"])))
            got_rows.append(rows)
            ref_rows.append(dense_rows)
        assert rel_err(torch.cat(got_rows), torch.cat(ref_rows)) <= tol
    return errors
