"""One name and one default per option: the YAML keys, the Python API keywords and the CLI options are the
same fields of the config dataclasses (layerinf.config), checked here option by option."""

import dataclasses
import inspect

import pytest
import typer

import layerinf as li
from layerinf import cli
from layerinf.config import (SECTIONS, ExperimentConfig, RankConfig, RuntimeConfig, option_name, runtime_options,
                             runtime_options_except, split_options)
from layerinf.errors import LayerinfError
from layerinf.workflows.advise import advise_options
from layerinf.workflows.suspects import SUSPECTS_DEFAULTS, suspects_options

# which CLI commands / API functions expose which config sections
COMMANDS = {
    "prepare": ("data",),
    "finetune": ("model", "train", "runtime"),
    "grads": ("grads", "runtime"),
    "score": ("score", "runtime"),
    "suspects": ("data", "model", "train", "rank", "score", "runtime"),
    "run": ("runtime",),
    "sweep": ("runtime",),
}
# the options of those sections a command does not take: a stage command takes the runtime options of its stage
NOT_TAKEN = {
    "finetune": runtime_options_except("finetune"),
    "grads": runtime_options_except("grads"),
    "score": runtime_options_except("score"),
    "suspects": cli.WORKFLOW_EXCLUDE | cli.NOT_KAPPA,
}
ALL_SECTIONS = {**SECTIONS, "rank": RankConfig}


def _click_options(command: str) -> dict:
    group = typer.main.get_command(cli.app)
    return {p.name: p for p in group.commands[command].params}


def _every_option():
    for section, cls in ALL_SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield section, cls, f


def _default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@pytest.mark.parametrize("section, cls, f", list(_every_option()),
                         ids=[f"{s}.{f.name}" for s, _, f in _every_option()])
def test_option_has_one_name_and_default_everywhere(section, cls, f):
    flat = option_name(section, f.name)
    default = _default(f)
    assert f.metadata.get("help"), f"{section}.{f.name} has no help text"
    # YAML: the section key holds the same default
    if section in SECTIONS:
        assert getattr(getattr(ExperimentConfig(), section), f.name) == default
        assert ExperimentConfig.from_dict({section: {f.name: default}}) == ExperimentConfig()
    # Python API: the flat keyword lands in the field
    (built,) = split_options({flat: default}, cls)
    assert getattr(built, f.name) == default
    # CLI: every command that exposes the section has --flat with the same default (suspects: its presets)
    for command, sections in COMMANDS.items():
        if section not in sections:
            continue
        opts = _click_options(command)
        if flat in NOT_TAKEN.get(command, ()):
            assert flat not in opts, f"`layerinf {command}` takes --{flat.replace('_', '-')}, which does not apply"
            continue
        assert flat in opts, f"`layerinf {command}` lacks --{flat.replace('_', '-')}"
        param = opts[flat]
        assert f"--{flat.replace('_', '-')}" in param.opts
        want = SUSPECTS_DEFAULTS.get(flat, default) if command == "suspects" else default
        if command == "suspects" and flat == "source":
            want = None
        want = ",".join(want) if isinstance(want, list) else want
        assert param.default == want, f"`layerinf {command} --{flat}` default {param.default!r} != {want!r}"


def test_flat_names_are_unique():
    """An option has one home: no two sections (the rank section included) declare the same flat name."""
    seen = {}
    for section, cls, f in _every_option():
        flat = option_name(section, f.name)
        assert flat not in seen, f"{flat} is declared in both {seen[flat]} and {section}"
        seen[flat] = section


def test_every_runtime_option_names_the_stages_it_applies_to():
    for f in dataclasses.fields(RuntimeConfig):
        assert f.metadata["stages"] and set(f.metadata["stages"]) <= {"finetune", "grads", "score", "retrain"}, f.name
    assert runtime_options("score") == {"device", "chunk_size"}
    assert {"grad_batch_size", "chunk_size", "eval_batch_size"} <= set(RuntimeConfig.__dataclass_fields__)


@pytest.mark.parametrize("command, option", [("finetune", "chunk_size"), ("grads", "eval_batch_size"),
                                             ("score", "grad_batch_size"), ("score", "executor")])
def test_a_stage_function_refuses_a_runtime_option_of_another_stage(tmp_path, command, option):
    with pytest.raises(LayerinfError, match=f"unknown option.*{option}.*for {command}"):
        getattr(li, command)(tmp_path / "run", **{option: 1})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("old, new", [("grads.grad_batch_size", "runtime.grad_batch_size"),
                                      ("score.chunk_size", "runtime.chunk_size"),
                                      ("train.eval_batch_size", "runtime.eval_batch_size")])
def test_a_speed_option_in_its_old_section_names_its_new_home(old, new):
    section, key = old.split(".")
    for call in (lambda: ExperimentConfig.from_dict({section: {key: 8}}),
                 lambda: ExperimentConfig().with_overrides({old: 8})):
        with pytest.raises(LayerinfError, match=f"{old} moved to {new}"):
            call()
    assert getattr(ExperimentConfig().with_overrides({new: 8}).runtime, key) == 8


def test_speed_options_are_no_part_of_any_stage_key(tmp_path):
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.score import ScoreStage

    grads = GradsStage(tmp_path, runtime=RuntimeConfig(grad_batch_size=3)).key(SECTIONS["grads"]())
    score = ScoreStage(tmp_path, runtime=RuntimeConfig(chunk_size=3)).key(SECTIONS["score"]())
    assert "grad_batch_size" not in grads["grads"] and "chunk_size" not in score["score"]
    assert "eval_batch_size" not in {f.name for f in dataclasses.fields(SECTIONS["train"])}  # nor in the recipe


@pytest.mark.parametrize("command, typo, fix", [
    ("prepare", "noise_rte", "noise_rate"), ("finetune", "epocs", "epochs"), ("grads", "grad_dtyp", "grad_dtype"),
    ("score", "vote_kapa", "vote_kappa"), ("suspects", "vote_kapa", "vote_kappa"),
])
def test_api_functions_refuse_a_mistyped_option_and_write_nothing(tmp_path, command, typo, fix):
    fn = getattr(li, command)
    assert "options" in inspect.signature(fn).parameters  # flat options, checked by split_options
    kwargs = {"source": "demo"} if command == "suspects" else {}
    with pytest.raises(LayerinfError, match=f"did you mean '{fix}'"):
        fn(tmp_path / "run", **kwargs, **{typo: 1})
    assert not (tmp_path / "run").exists()


def test_suspects_takes_every_option_but_noise_rate():
    names = {option_name(c.section(), f.name) for c, f in suspects_options()}
    assert "noise_rate" not in names and {"vote_kappa", "max_length", "lr", "batch_size", "device", "top"} <= names
    assert not names & {"methods", "executor", "grad_shards"}  # of the score section only κ; no Ray options
    assert set(SUSPECTS_DEFAULTS) <= names


@pytest.mark.parametrize("command, listed", [("suspects", suspects_options), ("advise", advise_options)])
def test_workflow_commands_take_exactly_their_workflows_options(command, listed):
    names = {option_name(c.section(), f.name) for c, f in listed()}
    fixed = {"out", "run", "adapter", "force", "probe_rate", "probes", "noise_folds", "kappa_factor", "criterion"}
    assert set(_click_options(command)) - (fixed - names) == names  # suspects: probe_rate is a rank option


@pytest.mark.parametrize("raw, match", [
    ({"train": {"epochs": "abc"}}, "train.epochs must be a whole number"),
    ({"train": {"epochs": 0}}, "out of range"),
    ({"score": {"vote_kappa": 1.5}}, "out of range"),
    ({"filter": {"fraction": 0}}, "out of range"),
    ({"model": {"max_length": 0}}, "out of range"),
    ({"score": {"methods": ["tracn"]}}, "did you mean 'tracin'"),
    ({"grads": {"checkpoint": "final"}}, "use one of init, best, last"),
    ({"name": "../../x"}, "not a plain folder name"),
    ({"data": {"noise_rate": True}}, "must be a finite number"),
    ({"filter": {"configs": ["datainf-02-03-vote"]}}, "method/group/aggregator"),
])
def test_bad_values_are_refused_before_anything_runs(raw, match):
    with pytest.raises(LayerinfError, match=match):
        ExperimentConfig.from_dict(raw)


def test_public_functions_exist():
    for name in ("prepare", "finetune", "grads", "score", "run", "sweep", "report", "suspects"):
        assert callable(getattr(li, name))


def test_report_is_still_the_api_function_after_it_ran(tmp_path):
    """Running `li.report` imports the report subpackage (`layerinf.reporting`): `li.report` stays the function."""
    from layerinf.errors import LayerinfError

    bad = tmp_path / "results.parquet"
    bad.write_bytes(b"not parquet")
    for _ in range(2):
        with pytest.raises(LayerinfError, match="cannot read"):
            li.report(bad)
        assert callable(li.report)
