import pytest

from layerinf.config import ExperimentConfig
from layerinf.model import default_lr
from layerinf.errors import LayerinfError


def test_yaml_round_trip_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndata: {source: demo, max_train: 100}\nscore: {methods: [tracin]}\n")
    cfg = ExperimentConfig.from_yaml(p)
    assert cfg.data.max_train == 100 and cfg.score.methods == ["tracin"] and cfg.model.name == "minilm"
    cfg2 = cfg.with_overrides({"data.seed": 4, "model.name": "smollm2-135m"})
    assert cfg2.data.seed == 4 and cfg2.model.name == "smollm2-135m" and cfg.data.seed == 0


@pytest.mark.parametrize(
    "text, match",
    [("data: {sorce: demo}\n", "unknown key"), ("bogus: 1\n", "unknown key"), ("data: [1, 2]\n", "must be a mapping"),
     ("data: {a: [\n", "not valid YAML")],
)
def test_bad_config_is_a_clear_error(tmp_path, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(LayerinfError, match=match):
        ExperimentConfig.from_yaml(p)


def test_unknown_override_and_missing_file(tmp_path):
    with pytest.raises(LayerinfError, match="unknown config field"):
        ExperimentConfig().with_overrides({"data.nope": 1})
    with pytest.raises(LayerinfError, match="does not exist"):
        ExperimentConfig.from_yaml(tmp_path / "none.yaml")


def test_learning_rate_defaults():
    assert default_lr("minilm") == 5e-3 and default_lr("smollm2-135m") == 1e-3
    assert default_lr("roberta-large") == 3e-4 and default_lr("shape:llama-3.2-1b") == 3e-4


@pytest.mark.parametrize("name", ["demo.yaml", "demo-sft.yaml", "sst2-minilm.yaml"])
def test_shipped_example_configs_pass_the_pre_run_checks(name):
    """What `layerinf demo` (and the README) run must get past `check_config` (model baselines such as
    loss/-/- in filter.configs included)."""
    from importlib import resources

    from layerinf.config import ExperimentConfig
    from layerinf.workflows.run import check_config

    cfg = ExperimentConfig.from_yaml(str(resources.files("layerinf") / "examples" / name))
    check_config(cfg)
    assert any(k.startswith("loss/") for k in cfg.filter.configs or []) or name == "sst2-minilm.yaml"
