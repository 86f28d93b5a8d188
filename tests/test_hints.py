"""Advice that does what it says: `prepare` needs a source (the demo data only when named), a "run X first" hint
names the options to add, and `report` on a folder that is not a run or sweep says what it is and what to run."""

import pandas as pd
import pytest

import layerinf as li
from helpers import run_main
from layerinf.errors import LayerinfError
from layerinf.store.rundir import RunDir


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_prepare_without_a_source_is_refused_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_main(["prepare", run], capsys)
    line = _one_line(err)
    assert code == 2 and "no data source" in line and "--source YOUR_DATA" in line and "demo" in line
    assert not run.exists()
    with pytest.raises(LayerinfError, match="no data source"):
        li.prepare(run, max_train=40)
    assert not run.exists()


def test_a_config_without_data_source_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\nmodel: {name: 'shape:tiny-bert'}\n")
    code, _, err = run_main(["run", cfg, "--out", tmp_path / "out"], capsys)
    line = _one_line(err)
    assert code == 2 and "set data.source" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["score", "finetune", "grads"])
def test_a_missing_run_folder_names_the_source_to_add(tmp_path, capsys, command):
    code, _, err = run_main([command, tmp_path / "nothere"], capsys)
    line = _one_line(err)
    assert code == 2 and "does not exist" in line
    assert f"layerinf prepare {tmp_path / 'nothere'} --source YOUR_DATA" in line and "--source demo" in line
    assert not (tmp_path / "nothere").exists()


def test_an_empty_run_folder_names_the_source_to_add(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["finetune", tmp_path / "empty"], capsys)
    assert code == 2 and "--source YOUR_DATA" in _one_line(err)


def test_a_redo_hint_repeats_the_recorded_source(tmp_path):
    from layerinf.store.hints import redo_command

    run = tmp_path / "run"
    li.prepare(run, source="demo", max_train=40, max_dev=20, progress=False)
    assert "--source demo --force" in redo_command("data", run)


def test_report_on_a_run_that_is_not_scored_or_a_stage_folder(tmp_path, capsys):
    run = tmp_path / "run"
    li.prepare(run, source="demo", max_train=40, max_dev=20, progress=False)
    code, _, err = run_main(["report", run], capsys)
    line = _one_line(err)
    assert code == 2 and "not been scored yet" in line and f"layerinf finetune {run}" in line
    code, _, err = run_main(["report", run / "data"], capsys)
    line = _one_line(err)
    assert code == 2 and "stage folder" in line and f"layerinf report {run}`" in line
    assert not (run / "report").exists()


@pytest.mark.slow  # fine-tunes a tiny random model three times (cross-fitting)
def test_report_on_a_suspects_folder_says_what_it_is(tmp_path, capsys):
    data = tmp_path / "mine.csv"
    pd.DataFrame({"review": [f"{'good great' if i % 2 else 'bad awful'} item {i}" for i in range(60)],
                  "sentiment": ["pos" if i % 2 else "neg" for i in range(60)]}).to_csv(data, index=False)
    out = tmp_path / "sus"
    li.suspects(out, source=str(data), text_column="review", label_column="sentiment", model="shape:tiny-bert",
                epochs=1, max_length=16, folds=2, progress=False)
    RunDir(out).require("suspects")  # its folds' stages are found (no "was redone since")
    for folder in (out, out / "suspects"):
        code, _, err = run_main(["report", folder], capsys)
        line = _one_line(err)
        assert code == 2 and "`layerinf suspects`" in line and "redone" not in line, line
        assert str(out / "suspects" / "index.html") in line and "layerinf run CONFIG" in line
    assert not (out / "report").exists()
