"""Layer groups (spec §2.2) and module sizes d_b (spec §2.1) on weightless (meta-device) paper-sized models."""

import pytest
import torch

from layerinf.errors import LayerinfError
from layerinf.influence.groups import attention_groups, extra_groups, layer_groups, match_modules
from layerinf.influence import registry as R
from layerinf.influence.registry import all_groups, resolve_groups


def _meta_model(config):
    """A LoRA-wrapped classifier with no weights in memory (meta device): inventory() still works."""
    from transformers import AutoModelForSequenceClassification

    from layerinf.model import attach_lora

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return attach_lora(model)  # default ModelConfig: r = 4, targets found by name


def _llama_like(cls_name, hidden, heads, kv_heads, layers):
    import transformers

    cls = getattr(transformers, cls_name)
    return cls(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads, num_hidden_layers=layers,
               intermediate_size=32, vocab_size=64, num_labels=2, pad_token_id=0)


def _roberta_large():
    from transformers import RobertaConfig

    return RobertaConfig(hidden_size=1024, num_attention_heads=16, num_hidden_layers=24, intermediate_size=32,
                         vocab_size=64, num_labels=2)


# name → (config factory, expected groups, expected d_b of query A, query B, value A, value B, CL module names)
PAPER_MODELS = {
    "roberta-large": (_roberta_large, ["00-05", "06-11", "12-17", "18-23"], (4096, 4096, 4096, 4096),
                      ["CL.classifier.dense.weight", "CL.classifier.dense.bias",
                       "CL.classifier.out_proj.weight", "CL.classifier.out_proj.bias"]),
    "llama-3.2-1b": (lambda: _llama_like("LlamaConfig", 2048, 32, 8, 16), ["00-03", "04-07", "08-11", "12-15"],
                     (8192, 8192, 8192, 2048), ["CL.score.weight"]),
    "qwen2.5-1.5b": (lambda: _llama_like("Qwen2Config", 1536, 12, 2, 28), ["00-06", "07-13", "14-20", "21-27"],
                     (6144, 6144, 6144, 1024), ["CL.score.weight"]),
    "mistral-7b": (lambda: _llama_like("MistralConfig", 4096, 32, 8, 32), ["00-07", "08-15", "16-23", "24-31"],
                   (16384, 16384, 16384, 4096), ["CL.score.weight"]),
    "smollm2-135m": (lambda: _llama_like("LlamaConfig", 576, 9, 3, 30), ["00-07", "08-15", "16-22", "23-29"],
                     (2304, 2304, 2304, 768), ["CL.score.weight"]),
}


@pytest.mark.parametrize("name", list(PAPER_MODELS))
def test_paper_model_groups_and_module_sizes(name):
    from layerinf.model import inventory

    make_config, expected_groups, d_b, cl_names = PAPER_MODELS[name]
    config = make_config()
    specs = inventory(_meta_model(config))
    layers = config.num_hidden_layers
    groups = layer_groups(specs, layers)
    assert list(groups) == ["WE", *expected_groups, "CL", "all"]
    assert groups["WE"] == ["WE"] and groups["CL"] == cl_names
    assert groups["all"] == [s.name for s in specs]
    for gname, glayers in attention_groups(layers):
        assert groups[gname] == [f"L{ly:02d}.{t}.{ab}" for ly in glayers for t in ("query", "value") for ab in "AB"]
    by_name = {s.name: s for s in specs}
    for layer in (0, layers - 1):
        sizes = tuple(by_name[f"L{layer:02d}.{k}"].numel for k in ("query.A", "query.B", "value.A", "value.B"))
        assert sizes == d_b
    assert sum(len(groups[g]) for g in expected_groups) == 4 * layers


def test_minilm_groups_from_its_config():
    from transformers import AutoConfig

    from layerinf.model import inventory, resolve_source

    config = AutoConfig.from_pretrained(resolve_source("minilm").path, num_labels=2)
    specs = inventory(_meta_model(config))
    groups = layer_groups(specs, config.num_hidden_layers)
    assert list(groups) == ["WE", "00-01", "02-03", "04-04", "05-05", "CL", "all"]
    assert groups["04-04"] == ["L04.query.A", "L04.query.B", "L04.value.A", "L04.value.B"]
    assert groups["CL"] == ["CL.classifier.weight", "CL.classifier.bias"]
    assert {s.name: s.numel for s in specs}["L00.value.B"] == 384 * 4


@pytest.mark.parametrize(
    "layers, expected",
    [
        (24, ["00-05", "06-11", "12-17", "18-23"]),
        (16, ["00-03", "04-07", "08-11", "12-15"]),
        (28, ["00-06", "07-13", "14-20", "21-27"]),
        (32, ["00-07", "08-15", "16-23", "24-31"]),
        (6, ["00-01", "02-03", "04-04", "05-05"]),
        (30, ["00-07", "08-15", "16-22", "23-29"]),
        (4, ["00-00", "01-01", "02-02", "03-03"]),
        (2, ["00-00", "01-01"]),
        (120, ["000-029", "030-059", "060-089", "090-119"]),
    ],
)
def test_attention_group_names(layers, expected):
    groups = attention_groups(layers)
    assert [g for g, _ in groups] == expected
    assert [ly for _, members in groups for ly in members] == list(range(layers))


def _specs(layers=6):
    from layerinf.spec import ModuleSpec

    out = [ModuleSpec("WE", "w", "w", "weight", "we", None, (100, 8))]
    for ly in range(layers):
        for t in ("query", "value"):
            out.append(ModuleSpec(f"L{ly:02d}.{t}.A", "", "", "weight", f"{t}_A", ly, (4, 8)))
            out.append(ModuleSpec(f"L{ly:02d}.{t}.B", "", "", "weight", f"{t}_B", ly, (8, 4)))
    out += [ModuleSpec("CL.classifier.weight", "", "", "weight", "cl", None, (2, 8)),
            ModuleSpec("CL.classifier.bias", "", "", "bias", "cl", None, (2,))]
    return out


def test_extra_groups_types_layers_halves_and_patterns():
    specs = _specs(6)
    extra = extra_groups(specs, patterns={"late_vB": "L0[45].value.B", "heads": "re:CL\\..*"})
    assert extra["query_A"] == [f"L{ly:02d}.query.A" for ly in range(6)]
    assert list(extra)[:4] == ["query_A", "query_B", "value_A", "value_B"]
    assert extra["L03"] == ["L03.query.A", "L03.query.B", "L03.value.A", "L03.value.B"]
    assert extra["00-01.A"] == ["L00.query.A", "L00.value.A", "L01.query.A", "L01.value.A"]
    assert extra["05-05.B"] == ["L05.query.B", "L05.value.B"]
    assert extra["late_vB"] == ["L04.value.B", "L05.value.B"]
    assert extra["heads"] == ["CL.classifier.weight", "CL.classifier.bias"]
    only_layers = extra_groups(specs, kinds=False, halves=False)
    assert list(only_layers) == [f"L{ly:02d}" for ly in range(6)]
    with pytest.raises(LayerinfError, match="clashes"):
        extra_groups(specs, patterns={"CL": "CL.*"})
    with pytest.raises(LayerinfError, match="matches no module"):
        extra_groups(specs, patterns={"x": "L99.*"})
    with pytest.raises(LayerinfError, match="regular expression"):
        match_modules("re:(", ["a"])


def test_resolve_groups():
    specs = _specs(6)
    assert resolve_groups(None, specs, 6) == layer_groups(specs, 6)
    got = resolve_groups(["WE", "02-03", "value_B", "L01", "00-01.B", "L02.value.B", "L0[12].query.A", ""], specs, 6)
    assert got["WE"] == ["WE"] and got["02-03"][0] == "L02.query.A" and len(got["02-03"]) == 8
    assert got["L02.value.B"] == ["L02.value.B"]
    assert got["L0[12].query.A"] == ["L01.query.A", "L02.query.A"]
    assert got["all"] == [s.name for s in specs]
    assert list(resolve_groups("WE,CL", specs, 6)) == ["WE", "CL"]
    assert resolve_groups(["mine"], specs, 6, patterns={"mine": "re:L00\\..*"})["mine"][0] == "L00.query.A"
    with pytest.raises(LayerinfError, match=r"unknown layer group 'first'.*valid groups: WE, 00-01, 02-03"):
        resolve_groups(["first"], specs, 6)
    with pytest.raises(LayerinfError, match="matches no module"):
        resolve_groups(["L9*"], specs, 6)


def test_groups_without_we_drop_empty_groups():
    specs = [s for s in _specs(2) if s.kind != "we"]
    assert list(layer_groups(specs, 2)) == ["00-00", "01-01", "CL", "all"]


# ------------------------------------------------------------------------------------------------- registry


def test_group_schemes_registry_and_all_groups():
    specs = _specs(6)
    assert list(R.GROUP_SCHEMES) == ["paper", "types", "layers", "halves"]
    assert R.GROUP_SCHEMES["paper"](specs, 6) == layer_groups(specs, 6)
    assert list(R.GROUP_SCHEMES["types"](specs, 6)) == ["query_A", "query_B", "value_A", "value_B"]
    assert list(R.GROUP_SCHEMES["layers"](specs, 6)) == [f"L{ly:02d}" for ly in range(6)]
    assert R.GROUP_SCHEMES["halves"](specs, 6) == extra_groups(specs, num_layers=6, kinds=False, layers=False)
    pats = {"late_vB": "L0[45].value.B"}
    got = all_groups(specs, 6, pats)
    want = {**layer_groups(specs, 6), **extra_groups(specs, num_layers=6, patterns=pats)}
    assert got == want and list(got) == list(want)
    with pytest.raises(LayerinfError, match="clashes"):
        all_groups(specs, 6, {"L03": "L03.*"})
    with pytest.raises(LayerinfError) as err:
        R.group_scheme("papr")
    assert "did you mean 'paper'" in err.value.fix


def test_a_registered_group_scheme_is_resolvable_on_duck_typed_specs():
    from collections import namedtuple


    Spec = namedtuple("Spec", "name kind layer")
    specs = [Spec("WE", "we", None)] + [Spec(f"L{ly}.{t}", t, ly) for ly in range(4) for t in ("query_A", "value_B")]
    specs.append(Spec("CL.w", "cl", None))
    R.register_group_scheme("odd", lambda sp, L: {"odd": [s.name for s in sp if s.layer is not None and s.layer % 2]})
    try:
        assert resolve_groups(["odd", "CL"], specs, 4) == {"odd": ["L1.query_A", "L1.value_B", "L3.query_A",
                                                                   "L3.value_B"], "CL": ["CL.w"]}
        with pytest.raises(LayerinfError, match="already registered"):
            R.register_group_scheme("odd", lambda sp, L: {})
    finally:
        R.GROUP_SCHEMES.pop("odd", None)
    with pytest.raises(LayerinfError, match="unknown layer group 'odd'"):
        resolve_groups(["odd"], specs, 4)
