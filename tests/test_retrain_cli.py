"""`layerinf retrain RUN` / `li.retrain`: filter-and-retrain as a stage like the others (its options made from
FilterConfig and the runtime section), its records, an older run's `eval/` stage, and the runtime options of the
other stage commands. A random tiny BERT (`shape:tiny-bert`) on 40 demo rows keeps every retraining cheap."""

import json
import shutil

import pandas as pd
import pytest

import layerinf as li
from helpers import run_cli, run_main
from layerinf.engine import train as train_mod
from layerinf.errors import LayerinfError
from layerinf.store.layout import LEGACY_EVAL, RETRAIN, STAGE_FILE, RunLayout
from layerinf.store.rundir import RunDir

MODEL = {"model": "shape:tiny-bert", "max_length": 16}
TRAIN = {"epochs": 1, "batch_size": 16}
CONFIG = "tracin/CL/mean"


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A run scored by the stage commands' API (data → finetune → grads → score), not retrained."""
    run = tmp_path_factory.mktemp("retrain") / "scored"
    li.prepare(run, source="demo", max_train=40, max_dev=20, noise_rate=0.2, seed=0, progress=False)
    li.finetune(run, **MODEL, **TRAIN, device="cpu", progress=False)
    li.grads(run, include_we=False, device="cpu", progress=False)
    li.score(run, methods=["tracin"], groups=["CL"], aggregators=["mean"], model_baselines=["loss"],
             progress=False, echo=None)
    return run


@pytest.fixture
def run(scored, tmp_path):
    return shutil.copytree(scored, tmp_path / "run")


@pytest.fixture
def fits(monkeypatch):
    """Counts the retrainings (calls of engine.train.fit) made in this process."""
    calls = []
    real = train_mod.fit

    def counting(*args, **kwargs):
        calls.append(kwargs.get("rows"))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fit", counting)
    return calls


def test_retrain_is_a_command_and_a_function(capsys):
    code, out, _ = run_main(["retrain", "--help"], capsys)
    assert code == 0 and "Filter and retrain" in out
    for flag in ("--fraction", "--configs", "--baselines", "--repeats", "--force", "--device", "--eval-batch-size",
                 "--gradient-checkpointing", "--executor", "--num-gpus"):
        assert flag in out, flag
    for flag in ("--retrain", "--chunk-size", "--grad-batch-size", "--grad-shards"):  # not this stage's
        assert flag + " " not in out and flag + "\n" not in out, flag
    assert callable(li.retrain) and "retrain" in li.__all__


def test_retrain_before_score_or_with_bad_options_writes_nothing(tmp_path, run, capsys):
    bare = tmp_path / "bare"
    code, _, err = run_main(["retrain", bare], capsys)
    assert code == 2 and "has not finished" in _one_error_line(err)
    for args, match in ((["--fraction", "1.5"], "fraction = 1.5 is out of range"),
                        (["--configs", "datainf/02-03/vote"], "unscored configuration"),
                        (["--baselines", "oracel"], "did you mean 'oracle'"),
                        (["--chunk-size", "8"], "no such option")):
        code, _, err = run_main(["retrain", run, *args], capsys)
        assert code == 2 and match in _one_error_line(err).lower(), err
        assert not (run / RETRAIN).exists()
    with pytest.raises(LayerinfError, match="unknown option.*retrain"):
        li.retrain(run, retrain=False)  # the run workflow's switch: this command always retrains


def test_retrain_writes_results_and_records_and_reuses_them(run, capsys, fits):
    code, out, _ = run_main(["retrain", run, "--configs", CONFIG, "--baselines", "none"], capsys)
    assert code == 0, out
    assert "after removing the bottom" in out and "next: layerinf report" in out
    results = pd.read_csv(RunLayout(run).results("csv"))
    assert sorted(results["method"]) == ["none", "tracin"] and len(fits) == 2
    records = sorted(RunLayout(run).records.glob("*.json"))
    assert len(records) == 2
    rd = RunDir(run)
    rd.require(RETRAIN)  # checksummed, records included, and up to date with its inputs
    assert {f"records/{p.name}" for p in records} <= set(rd.stage_info(RETRAIN)["files"])
    started = rd.stage_info(RETRAIN)["started"]

    res = li.retrain(run, configs=[CONFIG], baselines=["none"], progress=False, echo=None)  # the same: reused
    assert len(fits) == 2 and rd.stage_info(RETRAIN)["started"] == started and len(res) == 2
    li.retrain(run, configs=[CONFIG], baselines=["none", "random"], eval_batch_size=7, progress=False, echo=None)
    assert len(fits) == 3  # only the new baseline; eval_batch_size is a runtime option: no new key
    assert set(records) < set(RunLayout(run).records.glob("*.json"))  # the earlier records are kept
    li.retrain(run, configs=[CONFIG], baselines=["none"], progress=False, echo=None)
    assert len(fits) == 3  # back to the first options: nothing retrained

    records[0].unlink()  # a missing record: the stage redoes itself and exactly that retraining
    li.retrain(run, configs=[CONFIG], baselines=["none"], progress=False, echo=None)
    assert len(fits) == 4 and records[0].is_file()
    rd.require(RETRAIN)


def test_retrain_repeats_the_fine_tuning_recipe(run):
    """`layerinf retrain RUN` keys its stage and records as `layerinf run` does with the same recipe."""
    from layerinf.config import FilterConfig, ModelConfig, TrainConfig
    from layerinf.stages.retrain import RetrainStage, finetuned_recipe

    model, train = finetuned_recipe(run)
    stage = RetrainStage(run)
    asked = ModelConfig(name=MODEL["model"], max_length=16), TrainConfig(**TRAIN)
    assert stage.key(FilterConfig(), model, train) == stage.key(FilterConfig(), *asked)
    assert model.name == "shape:tiny-bert" and train.epochs == 1


def test_a_run_with_an_imported_model_cannot_be_retrained(run):
    info = json.loads((run / "finetune" / STAGE_FILE).read_text())
    info["summary"]["imported"] = True
    info["config"].pop("train")
    (run / "finetune" / STAGE_FILE).write_text(json.dumps(info))
    with pytest.raises(LayerinfError, match="imported"):
        li.retrain(run, progress=False, echo=None)
    assert not (run / RETRAIN).exists()


def test_an_older_eval_stage_is_reported_with_the_command_that_redoes_it(run, capsys):
    legacy = run / LEGACY_EVAL
    legacy.mkdir()
    (legacy / STAGE_FILE).write_text(json.dumps({"stage": "eval", "files": {}, "config": {
        "filter": {"fraction": 0.2, "retrain": True, "configs": [CONFIG], "baselines": ["none", "random", "oracle"]},
        "train": {}}}))
    code, _, err = run_main(["report", run], capsys)
    line = _one_error_line(err)
    assert code == 2 and "was made by an older layerinf version" in line
    assert f"rerun `layerinf retrain {run} --fraction 0.2 --configs {CONFIG}`" in line
    assert not (run / "report").exists()


def test_score_takes_its_runtime_options(run, capsys):
    """`layerinf score` has --device and --chunk-size (how fast, not what: the same score set is reused)."""
    before = li.score_sets(run)[0]["hash"]
    code, out, err = run_main(["score", run, "--methods", "tracin", "--groups", "CL", "--aggregators", "mean",
                           "--model-baselines", "loss", "--device", "cpu", "--chunk-size", "7"], capsys)
    assert code == 0, err
    assert li.score_sets(run)[0]["hash"] == before and len(li.score_sets(run)) == 1
    code, _, err = run_main(["score", run, "--device", "gpu"], capsys)
    assert code == 2 and "unknown device 'gpu'" in _one_error_line(err)


@pytest.mark.slow
def test_the_console_script_retrains_and_the_report_reads_it(run):

    res = run_cli("retrain", run, "--configs", CONFIG, "--baselines", "none,random", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "results →" in res.stdout and len(pd.read_csv(RunLayout(run).results("csv"))) == 3
    res = run_cli("report", run, "--bootstrap", "0", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "No retraining" not in (run / "report" / "index.html").read_text()
