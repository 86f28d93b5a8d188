"""Adapters: byte-deterministic saving, fingerprints, importing layerinf files and PEFT folders."""

import hashlib
import subprocess
import sys

import pandas as pd
import pytest
import torch

from layerinf.config import ModelConfig
from layerinf.engine.batching import encode_split, model_inputs
from layerinf.errors import LayerinfError
from layerinf.model import (
    adapter_fingerprint,
    adapter_metadata,
    import_adapter,
    load_classifier,
    read_adapter,
    save_adapter,
    trainable_state,
)

META = {"model": "minilm", "lora_r": "4", "epoch": "3", "zeta": "z", "alpha": "a", "note": "ü"}


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {"b.weight": torch.randn(3, 4, generator=gen), "a.bias": torch.randn(5, generator=gen).double(),
            "c.lora_A.default.weight": torch.randn(2, 4, generator=gen).bfloat16()}


def test_save_adapter_is_byte_deterministic(tmp_path):
    tensors = _tensors()
    save_adapter(tensors, tmp_path / "one.safetensors", META)
    reordered = dict(reversed(list(tensors.items())))
    save_adapter(reordered, tmp_path / "two.safetensors", dict(reversed(list(META.items()))))
    one = (tmp_path / "one.safetensors").read_bytes()
    assert one == (tmp_path / "two.safetensors").read_bytes()
    assert (8 + int.from_bytes(one[:8], "little")) % 8 == 0
    back = read_adapter(tmp_path / "one.safetensors")
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    assert adapter_metadata(tmp_path / "one.safetensors") == {"format": "layerinf-adapter-v1", **META}
    # safetensors orders metadata by a per-process hash map: another process must still write the same bytes
    code = ("import sys, torch; sys.path[:0] = [sys.argv[1]]; import test_model_adapters as t; "
            "from layerinf.model import save_adapter; save_adapter(t._tensors(), sys.argv[2], t.META)")
    for i in range(2):
        subprocess.run([sys.executable, "-c", code, str(__import__("pathlib").Path(__file__).parent),
                        str(tmp_path / f"p{i}.safetensors")], check=True)
        assert (tmp_path / f"p{i}.safetensors").read_bytes() == one


def test_adapter_fingerprint(tmp_path):
    save_adapter(_tensors(), tmp_path / "a.safetensors")
    data = (tmp_path / "a.safetensors").read_bytes()
    assert adapter_fingerprint(tmp_path / "a.safetensors") == hashlib.sha256(data).hexdigest()
    folder = tmp_path / "peft"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "sub" / "x.bin").write_bytes(b"x")
    fp = adapter_fingerprint(folder)
    assert len(fp) == 16 and fp == adapter_fingerprint(folder)
    (folder / "sub" / "x.bin").write_bytes(b"y")
    assert adapter_fingerprint(folder) != fp
    with pytest.raises(LayerinfError, match="does not exist"):
        adapter_fingerprint(tmp_path / "missing")
    with pytest.raises(LayerinfError, match="no adapter_config.json"):
        adapter_fingerprint(folder / "sub")


def _logits(lm):
    df = pd.DataFrame({"idx": range(3), "text": ["good", "bad movie", "fine"], "text_pair": [None] * 3,
                       "label": [1, 0, 1]})
    batch = next(encode_split(df, lm.tokenizer, 16).batches(3))
    lm.model.eval()
    with torch.no_grad():
        return lm.model(**model_inputs(batch)).logits


def test_import_layerinf_adapter_reads_rank_and_targets(tmp_path):
    trained = load_classifier(ModelConfig(name="shape:tiny-bert", lora_r=8, lora_targets=["value"]), 2, seed=3)
    with torch.no_grad():
        for n, p in trained.model.named_parameters():
            if p.requires_grad:
                p.add_(0.01)
    save_adapter(trained.model, tmp_path / "r8.safetensors", {"lora_alpha": "4"})
    lm = import_adapter(ModelConfig(name="shape:tiny-bert"), tmp_path / "r8.safetensors", 2, seed=0)
    assert lm.config.lora_r == 8 and lm.config.lora_targets == ["value"] and lm.config.name == "shape:tiny-bert"
    torch.testing.assert_close(_logits(lm), _logits(trained), rtol=0, atol=0)


def test_import_peft_folder_carries_lora_settings(tmp_path):
    trained = load_classifier(ModelConfig(name="shape:tiny-llama", lora_r=2, lora_alpha=8), 2, seed=3)
    with torch.no_grad():
        for p in trained.model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    trained.model.save_pretrained(tmp_path / "peft")
    lm = import_adapter(ModelConfig(name="shape:tiny-llama"), tmp_path / "peft", 2, seed=0)
    assert (lm.config.lora_r, lm.config.lora_alpha, sorted(lm.config.lora_targets)) == (2, 8, ["q_proj", "v_proj"])
    torch.testing.assert_close(_logits(lm), _logits(trained))
    state = trainable_state(lm.model)
    assert set(state) == set(trainable_state(trained.model))


def test_import_peft_folder_without_head_warns(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from layerinf.model.sources import SHAPES

    base = AutoModelForSequenceClassification.from_config(SHAPES["tiny-bert"].make_config(2))
    get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"])).save_pretrained(tmp_path / "nohead")
    with pytest.warns(UserWarning, match="no trained classification head"):
        lm = import_adapter(ModelConfig(name="shape:tiny-bert"), tmp_path / "nohead", 2)
    assert lm.config.lora_r == 4
