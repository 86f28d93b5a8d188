"""Model loading, LoRA attachment, adapters, and the decoder path (real SmolLM2-135M weights)."""

import numpy as np
import pandas as pd
import pytest
import torch

from layerinf.engine.batching import encode_split, model_inputs
from layerinf.errors import LayerinfError
from layerinf.config import ModelConfig, TrainConfig
from layerinf.model import (
    inventory,
    load_adapter,
    load_classifier,
    resolve_source,
    save_adapter,
    trainable_state,
)
from layerinf.engine.train import fit


def _df(texts, labels):
    return pd.DataFrame({"idx": range(len(texts)), "text": texts, "text_pair": [None] * len(texts), "label": labels})


@pytest.fixture(scope="module")
def minilm():
    return load_classifier(ModelConfig(name="minilm"), 2, seed=0)


@pytest.mark.slow
def test_minilm_lora_setup(minilm):
    model = minilm.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or "classifier" in n for n in trainable)
    assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    assert not any("key" in n or "word_embeddings" in n for n in trainable)
    specs = inventory(model)
    assert specs[0].name == "WE" and specs[0].shape == (30522, 384)
    lora = [s for s in specs if s.layer is not None]
    assert len(lora) == 6 * 4 and {s.kind for s in lora} == {"query_A", "query_B", "value_A", "value_B"}
    assert [s.name for s in specs if s.kind == "cl"] == ["CL.classifier.weight", "CL.classifier.bias"]
    a = next(s for s in specs if s.name == "L02.value.A")
    assert a.shape == (4, 384) and a.layer == 2 and a.numel == 1536


@pytest.mark.slow
def test_seeded_init_is_deterministic():
    a = trainable_state(load_classifier(ModelConfig(name="minilm"), 2, seed=5).model)
    b = trainable_state(load_classifier(ModelConfig(name="minilm"), 2, seed=5).model)
    c = trainable_state(load_classifier(ModelConfig(name="minilm"), 2, seed=6).model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_adapter_round_trip_and_corruption(minilm, tmp_path):
    path = tmp_path / "a.safetensors"
    state = trainable_state(minilm.model)
    save_adapter(minilm.model, path, {"note": "x"})
    other = load_classifier(ModelConfig(name="minilm"), 2, seed=1)
    load_adapter(other.model, path)
    after = trainable_state(other.model)
    assert all(torch.equal(state[k], after[k]) for k in state)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LayerinfError, match="corrupted"):
        load_adapter(other.model, path)
    with pytest.raises(LayerinfError, match="does not exist"):
        load_adapter(other.model, tmp_path / "missing.safetensors")
    bigger = load_classifier(ModelConfig(lora_r=8), 2, seed=0)
    save_adapter(bigger.model, tmp_path / "r8.safetensors")
    with pytest.raises(LayerinfError, match="shape"):
        load_adapter(other.model, tmp_path / "r8.safetensors")


@pytest.mark.parametrize("name", ["no-such-model-xyz", "./not/here"])
def test_unknown_model_is_a_clear_error(name):
    with pytest.raises(LayerinfError, match="unknown model|does not exist"):
        load_classifier(ModelConfig(name=name), 2)


def test_folder_without_config(tmp_path):
    with pytest.raises(LayerinfError, match="no config.json"):
        resolve_source(str(tmp_path))


@pytest.mark.slow
def test_decoder_smollm2_trains_a_step_and_round_trips_adapter(tmp_path):
    lm = load_classifier(ModelConfig(name="smollm2-135m"), 2, seed=0)
    specs = inventory(lm.model)
    assert lm.num_layers == 30
    assert sum(s.layer is not None for s in specs) == 30 * 4
    vb = next(s for s in specs if s.name == "L00.value.B")
    assert vb.shape == (192, 4)  # GQA: 3 kv heads × 64
    assert [s.name for s in specs if s.kind == "cl"] == ["CL.score.weight"]
    texts = ["a wonderful film", "awful, boring and long", "i loved it", "not worth it at all"]
    enc = encode_split(_df(texts, [1, 0, 1, 0]), lm.tokenizer, 32)
    before = trainable_state(lm.model)
    res = fit(lm.model, enc, enc, enc, TrainConfig(epochs=1, batch_size=4), lr=1e-3, seed=0, progress=False)
    after = trainable_state(lm.model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any("score" in k for k in changed)
    assert np.isfinite(res.history["train_loss"]).all()
    save_adapter(lm.model, tmp_path / "dec.safetensors")
    fresh = load_classifier(ModelConfig(name="smollm2-135m"), 2, seed=1, adapter=tmp_path / "dec.safetensors")
    batch = next(enc.batches(4))
    lm.model.eval(), fresh.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(lm.model(**model_inputs(batch)).logits, fresh.model(**model_inputs(batch)).logits)


@pytest.mark.slow
def test_decoder_pools_last_real_token_with_padding():
    lm = load_classifier(ModelConfig(name="smollm2-135m"), 2, seed=0)
    lm.model.eval()
    texts = ["short", "a much longer sentence with many more tokens in it"]
    enc = encode_split(_df(texts, [0, 1]), lm.tokenizer, 32)
    batch = next(enc.batches(2))
    with torch.no_grad():
        together = lm.model(**model_inputs(batch)).logits
        alone = lm.model(**model_inputs(enc.collate(np.array([0])))).logits
    torch.testing.assert_close(together[0:1], alone, atol=1e-4, rtol=1e-4)
