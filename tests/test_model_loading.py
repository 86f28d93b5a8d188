"""Loading with precision and shape models: bf16 frozen base + fp32 LoRA/head, tiny random-init shapes."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from layerinf.config import ModelConfig
from layerinf.engine.batching import encode_split, model_inputs
from layerinf.model import clear_model_cache, inventory, load_classifier, num_layers_of, trainable_state

TEXTS = ["a wonderful film", "awful, boring and long", "i loved it", "not worth it at all"]
PAIRS = ["yes indeed", None, "it is", None]


def _batch(tokenizer, pairs=False):
    df = pd.DataFrame({"idx": range(4), "text": TEXTS, "text_pair": PAIRS if pairs else [None] * 4,
                       "label": [1, 0, 1, 0]})
    enc = encode_split(df, tokenizer, 32)
    return next(enc.batches(4))


def _per_sample(lm, batch):
    out = lm.model(**model_inputs(batch))
    loss = F.cross_entropy(out.logits, batch["labels"], reduction="none")
    return out.logits, loss


@pytest.mark.parametrize("name", [pytest.param("minilm", marks=pytest.mark.slow),  # real weights
                                  "shape:tiny-bert", "shape:tiny-llama"])
def test_bf16_base_with_fp32_lora_forward_backward(name):
    lm = load_classifier(ModelConfig(name=name, precision="bf16"), 2, seed=0)
    trainable = {n: p for n, p in lm.model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in lm.model.named_parameters() if not p.requires_grad and "original_module" not in n}
    assert all(p.dtype == torch.float32 for p in trainable.values())  # LoRA + head: fp32 master weights
    assert {p.dtype for p in frozen.values()} == {torch.bfloat16}
    batch = _batch(lm.tokenizer, pairs=not lm.source.is_decoder)
    logits, loss = _per_sample(lm, batch)
    assert logits.dtype == torch.float32 and loss.shape == (4,)
    assert torch.isfinite(logits).all() and torch.isfinite(loss).all()
    loss.sum().backward()
    lora = {n: p.grad for n, p in trainable.items() if ".lora_" in n}
    assert lora and all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in lora.values())
    assert any(g.abs().sum() > 0 for n, g in lora.items() if ".lora_A." in n or ".lora_B." in n)
    head = [p.grad for n, p in trainable.items() if ".lora_" not in n]
    assert head and all(g.dtype == torch.float32 and g.abs().sum() > 0 for g in head)

    ref = load_classifier(ModelConfig(name=name), 2, seed=0)  # fp32: same seed, close logits
    with torch.no_grad():
        lm.model.eval(), ref.model.eval()
        torch.testing.assert_close(_per_sample(lm, batch)[0], _per_sample(ref, batch)[0], atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name, decoder", [("shape:tiny-bert", False), ("shape:tiny-llama", True)])
def test_tiny_shape_models(name, decoder):
    lm = load_classifier(ModelConfig(name=name), 3, seed=1)
    assert lm.source.shape is not None and lm.source.is_decoder is decoder
    assert lm.num_layers == num_layers_of(ModelConfig(name=name)) == 2
    specs = inventory(lm.model)
    assert specs[0].name == "WE" and specs[0].shape == (30522, 64)
    assert sum(s.layer is not None for s in specs) == 2 * 4
    batch = _batch(lm.tokenizer, pairs=True)
    assert ("token_type_ids" in batch) is (not decoder)
    logits, loss = _per_sample(lm, batch)
    assert logits.shape == (4, 3) and torch.isfinite(loss).all()
    if decoder:
        assert lm.model.config.pad_token_id == lm.tokenizer.pad_token_id


def test_shape_models_are_seeded_and_rebuilt_identically():
    cfg = ModelConfig(name="shape:tiny-llama")
    a = load_classifier(cfg, 2, seed=4)
    frozen = lambda lm: {n: p for n, p in lm.model.named_parameters()  # noqa: E731 (the head's frozen copy aside)
                         if not p.requires_grad and "original_module" not in n}
    base_a = {n: p.detach().clone() for n, p in frozen(a).items()}
    clear_model_cache()  # a rebuild from scratch gives the same random "pretrained" weights
    b = load_classifier(cfg, 2, seed=4)
    c = load_classifier(cfg, 2, seed=5)
    sa, sb, sc = trainable_state(a.model), trainable_state(b.model), trainable_state(c.model)
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert all(torch.equal(base_a[n], p) for n, p in frozen(b).items())
    assert all(torch.equal(base_a[n], p) for n, p in frozen(c).items())


def test_loaded_model_records_config_and_device():
    cfg = ModelConfig(name="shape:tiny-bert", lora_r=2, lora_alpha=8)
    lm = load_classifier(cfg, 2, seed=0, device="cpu")
    assert lm.config is cfg and lm.device == torch.device("cpu")
    a = next(s for s in inventory(lm.model) if s.name == "L01.value.A")
    assert a.shape == (2, 64)
    assert np.isclose(lm.model.peft_config["default"].lora_alpha, 8)


# --------------------------------------------------------------------------------------- quantisation (bnb)


def test_quantization_is_refused_off_cuda_and_without_bitsandbytes(monkeypatch):
    """8bit / 4bit need CUDA and bitsandbytes: one clear error naming the fix, before any weights are read."""
    import importlib.util

    from layerinf.errors import LayerinfError
    from layerinf.model import check_quantization

    assert check_quantization("none", "cpu") == "none" and check_quantization(None, "cpu") == "none"
    for q in ("8bit", "4bit"):
        with pytest.raises(LayerinfError) as err:
            check_quantization(q, "cpu")
        assert "needs a CUDA GPU" in err.value.problem and "--device cuda" in err.value.fix
        assert "layerinf[quant]" in err.value.fix
        with pytest.raises(LayerinfError, match="needs a CUDA GPU"):
            load_classifier(ModelConfig(name="minilm", quantization=q), 2, device="cpu")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(LayerinfError) as err:
        check_quantization("8bit", torch.device("cuda"))  # a CUDA device named, bitsandbytes missing
    assert "bitsandbytes" in err.value.problem and "pip install 'layerinf[quant]'" in err.value.fix
    with pytest.raises(LayerinfError, match="unknown quantization"):
        check_quantization("2bit", "cpu")


def test_bitsandbytes_configs():
    """8bit: LLM.int8; 4bit: NF4 with bfloat16 compute; the head is never quantised (no GPU needed to build)."""
    from layerinf.model.loading import _bnb_config, is_quantized

    c8, c4 = _bnb_config("8bit"), _bnb_config("4bit")
    assert c8.load_in_8bit and not c8.load_in_4bit
    assert c4.load_in_4bit and c4.bnb_4bit_quant_type == "nf4" and c4.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(c8.llm_int8_skip_modules) == set(c4.llm_int8_skip_modules) == {"classifier", "score"}
    assert not is_quantized(load_classifier(ModelConfig(name="shape:tiny-bert"), 2).model)


def test_quantized_shape_model_is_refused():
    from layerinf.errors import LayerinfError
    from layerinf.model.loading import load_base_model

    with pytest.raises(LayerinfError, match="shape model"):
        load_base_model("shape:tiny-bert", 2, quantization="8bit", device="cpu")
