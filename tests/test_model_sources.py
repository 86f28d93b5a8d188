"""Model sources without loading weights: built-ins, shapes, the paper registry, offline fail-fast, layer counts,
devices and precision checks. Nothing here downloads (the Hub is offline, see conftest)."""

import json

import pytest
import torch

from layerinf.config import ModelConfig
from layerinf.errors import LayerinfError
from layerinf.model import (
    PAPER_MODELS,
    SHAPES,
    attach_lora,
    base_dtype,
    default_lora_targets,
    default_lr,
    inventory,
    load_classifier,
    num_layers_of,
    resolve_device,
    resolve_source,
)
from layerinf.model.sources import SMOLLM2_LAYERS


def test_builtins_and_aliases_resolve_offline():
    src = resolve_source(" MiniLM ")
    assert src.name == "minilm" and src.is_decoder is False and src.gguf_file is None
    smol = resolve_source("smollm2")
    assert smol.name == "smollm2-135m" and smol.gguf_file.endswith(".gguf") and smol.is_decoder


@pytest.fixture
def no_fetching(monkeypatch) -> list:
    """Fail fast = without going anywhere: every network connection (or name lookup) and every model or tokenizer
    load through transformers is refused and recorded in the returned list (so a caught refusal still shows)."""
    import socket

    import transformers

    attempts = []

    def refuse(what):
        def refused(*args, **kwargs):
            attempts.append((what, args[1:2] if what.startswith("socket.socket") else args[:1]))
            raise OSError(f"this test allows no {what}")

        return refused

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse(f"socket.socket.{name}"))
    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse(f"socket.{name}"))
    for cls in ("AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification", "AutoModelForCausalLM"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", refuse(f"{cls}.from_pretrained"))
    return attempts


@pytest.mark.parametrize("name", ["minlm", "smolm2-135m", "shape:tiny-lama", "shape:robrta-large"])
def test_unknown_name_fails_fast_with_a_suggestion(name, no_fetching):
    with pytest.raises(LayerinfError) as err:
        resolve_source(name)
    assert no_fetching == []  # no network, nothing loaded: decided from the names alone
    msg = str(err.value)
    assert f"unknown model '{name}'" in msg and "did you mean" in msg


def test_minlm_offline_fails_fast_through_load_classifier(no_fetching):
    with pytest.raises(LayerinfError) as err:
        load_classifier(ModelConfig(name="minlm"), 2)
    assert no_fetching == []  # refused before any tokenizer or weights are read, with no network attempt
    msg = str(err.value)
    assert "unknown model 'minlm' (offline: HF_HUB_OFFLINE is set)" in msg
    assert "did you mean 'minilm'?" in msg


def test_paper_model_offline_points_at_its_shape(monkeypatch):
    from layerinf.model import sources

    monkeypatch.setattr(sources, "_in_hub_cache", lambda repo_id: False)  # whatever this machine's cache holds
    with pytest.raises(LayerinfError, match="not available offline.*shape:llama-3.2-1b"):
        resolve_source("meta-llama/Llama-3.2-1B")
    monkeypatch.setattr(sources, "_in_hub_cache", lambda repo_id: True)  # cached: loads offline from the cache
    assert resolve_source("Meta-Llama/Llama-3.2-1b").path == "meta-llama/Llama-3.2-1B"


def test_missing_path_and_folder_without_config(tmp_path):
    with pytest.raises(LayerinfError, match="does not exist"):
        resolve_source("./not/here")
    with pytest.raises(LayerinfError, match="no config.json"):
        resolve_source(str(tmp_path))


def test_paper_registry_and_default_lr():
    assert set(PAPER_MODELS) == {"roberta-large", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B",
                                 "mistralai/Mistral-7B-v0.3"}
    assert default_lora_targets("roberta-large") == ("query", "value")
    for hub in ("meta-llama/Llama-3.2-1B", "qwen/qwen2.5-1.5b", "mistralai/Mistral-7B-v0.3"):
        assert default_lora_targets(hub) == ("q_proj", "v_proj")
    assert default_lora_targets("shape:tiny-bert") == ("query", "value")
    assert default_lora_targets("minilm") is None
    assert all(p.max_length == 128 and p.lr == 3e-4 for p in PAPER_MODELS.values())
    assert default_lr("minilm") == 5e-3 and default_lr("smollm2-135m") == 1e-3 and default_lr("smollm2") == 1e-3
    assert default_lr("MiniLM") == 5e-3
    for name in ("roberta-large", "mistralai/Mistral-7B-v0.3", "shape:tiny-bert", "/some/folder", "org/model"):
        assert default_lr(name) == 3e-4


@pytest.mark.parametrize("name, layers", [("minilm", 6), ("smollm2-135m", 30), ("shape:roberta-large", 24),
                                          ("shape:llama-3.2-1b", 16), ("shape:qwen2.5-1.5b", 28),
                                          ("shape:mistral-7b", 32), ("shape:tiny-bert", 2), ("shape:tiny-llama", 2)])
def test_num_layers_of_without_weights(name, layers):
    assert num_layers_of(ModelConfig(name=name)) == layers


def test_num_layers_of_local_folder_and_gguf_metadata(tmp_path):
    from transformers import BertConfig

    config = BertConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    config.save_pretrained(tmp_path)
    assert num_layers_of(ModelConfig(name=str(tmp_path))) == 3
    src = resolve_source("smollm2-135m")  # the known constant agrees with the GGUF file's own metadata
    assert num_layers_of(f"{src.path}/{src.gguf_file}") == SMOLLM2_LAYERS


# (config class, hidden, WE rows, query B out, value B out, head tensors) — /work/shared/model-shapes.md
SHAPE_TABLE = {
    "roberta-large": ("RobertaConfig", 1024, 50265, 1024, 1024, ["CL.classifier.dense.weight",
                      "CL.classifier.dense.bias", "CL.classifier.out_proj.weight", "CL.classifier.out_proj.bias"]),
    "llama-3.2-1b": ("LlamaConfig", 2048, 128256, 2048, 512, ["CL.score.weight"]),
    "qwen2.5-1.5b": ("Qwen2Config", 1536, 151936, 1536, 256, ["CL.score.weight"]),
    "mistral-7b": ("MistralConfig", 4096, 32768, 4096, 1024, ["CL.score.weight"]),
    "tiny-bert": ("BertConfig", 64, 30522, 64, 64, ["CL.classifier.weight", "CL.classifier.bias"]),
    "tiny-llama": ("LlamaConfig", 64, 30522, 64, 32, ["CL.score.weight"]),
}


@pytest.mark.parametrize("shape", list(SHAPE_TABLE))
def test_shape_models_have_the_paper_shapes(shape):
    """Built on the meta device (no memory): module shapes of every shape model, including 7B."""
    from transformers import AutoModelForSequenceClassification

    cls_name, hidden, vocab, q_out, v_out, head = SHAPE_TABLE[shape]
    spec = SHAPES[shape]
    config = spec.make_config(2, pad_token_id=0)
    assert type(config).__name__ == cls_name and config.num_hidden_layers == spec.num_layers
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    specs = inventory(attach_lora(model, ModelConfig(name=f"shape:{shape}")))
    by = {s.name: s for s in specs}
    assert by["WE"].shape == (vocab, hidden)
    last = spec.num_layers - 1
    assert by[f"L{last:02d}.query.A"].shape == (4, hidden) and by[f"L{last:02d}.query.B"].shape == (q_out, 4)
    assert by[f"L{last:02d}.value.B"].shape == (v_out, 4)
    assert [s.name for s in specs if s.kind == "cl"] == head
    assert sum(s.layer is not None for s in specs) == 4 * spec.num_layers
    if spec.is_decoder:
        assert config.pad_token_id == 0
    if shape == "qwen2.5-1.5b":
        assert model.model.layers[0].self_attn.q_proj.bias is not None


def test_resolve_device_forms(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(" CPU ").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(LayerinfError) as err:
            resolve_device(name)
        assert str(err.value) == ("no CUDA GPU is available (torch.cuda.is_available() is False) — "
                                  "use --device cpu (or auto)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(LayerinfError, match=r"cuda:2 does not exist: 2 CUDA GPU\(s\)"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(LayerinfError, match="no Apple MPS device"):
        resolve_device("mps")
    for junk in ("gpu", "cuda:x", "cuda1", ""):
        with pytest.raises(LayerinfError, match="use one of auto, cpu, cuda, cuda:N, mps"):
            resolve_device(junk)


def test_precision_dtypes_and_fp16_on_cpu():
    assert base_dtype("fp32") == torch.float32 and base_dtype("bf16") == torch.bfloat16
    assert base_dtype("fp16", torch.device("cuda")) == torch.float16
    with pytest.raises(LayerinfError) as err:
        base_dtype("fp16", "cpu")
    assert str(err.value).startswith("fp16 is not supported on CPU")
    assert "use --precision bf16 or fp32" in str(err.value)
    with pytest.raises(LayerinfError, match="fp16 is not supported on CPU"):
        load_classifier(ModelConfig(name="shape:tiny-bert", precision="fp16"), 2, device="cpu")


def test_spec_module_is_torch_free():
    import subprocess
    import sys

    code = ("import sys; from layerinf.spec import ModuleSpec; "
            "s = ModuleSpec('L00.query.A', 'p', 'm', 'weight', 'query_A', 0, (4, 8)); "
            "assert ModuleSpec.from_dict(s.to_dict()) == s and s.to_dict()['numel'] == 32; "
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
