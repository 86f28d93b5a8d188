"""The claims table (layerinf.reporting.claims): produced end to end by ``sweep`` → ``report`` on a tiny config,
its verdicts follow from its own intervals by the stated rule, and changing the numbers changes the verdict."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import layerinf as li
from layerinf.config import ExperimentConfig
from layerinf.reporting.claims import (CLAIM_COLUMNS, HOLDS, INCONCLUSIVE, NOT_HOLDS, NOT_MEASURED, claims_from_dir,
                                       claims_table, make_study)
from layerinf.reporting.claims_page import _figures, write_claims_md

GROUPS = ["WE", "00-01", "02-03", "04-04", "05-05", "CL"]
CLAIMS = ["1", "2a", "2b", "3a", "3b", "4", "5", "6", "7a", "7b", "7c", "8"]


def _expected(row) -> str:
    """The rule, written out again from the ``rule`` text's numbers: the verdict must follow from the interval."""
    lo, hi = row.ci_low, row.ci_high
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return NOT_MEASURED
    nums = [float(x) for x in __import__("re").findall(r"-?\d+(?:\.\d+)?", row.rule.split("(")[0])]
    if "⊂" in row.rule:
        a, b = nums[-2], nums[-1]
        return HOLDS if a <= lo and hi <= b else NOT_HOLDS if hi < a or lo > b else INCONCLUSIVE
    t, t_margin = nums[0], nums[1]
    return HOLDS if lo > t else NOT_HOLDS if hi < t_margin else INCONCLUSIVE


def synthetic(vote_gain: float, seeds=(0, 1, 2), tasks=("sst2", "mrpc"), noise=0.004, rng_seed=0) -> pd.DataFrame:
    """A results table as ``load_results`` returns it: Vote's accuracy is Mean's + ``vote_gain``; the middle
    groups do best and CL worst; NDR@30 tracks accuracy; loss is weaker than influence."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    quality = {"WE": 0.0, "00-01": 0.02, "02-03": 0.04, "04-04": 0.03, "05-05": 0.01, "CL": -0.03}
    for task, seed in itertools.product(tasks, seeds):
        base = dict(model="minilm", task=task, seed=seed, unit=f"task={task},seed={seed}")
        for method, group, agg in itertools.product(["tracin", "datainf"], GROUPS, ["mean", "vote"]):
            q = quality[group] + (vote_gain if agg == "vote" else 0.0)
            acc = 0.80 + q + rng.normal(0, noise)
            rows.append({**base, "method": method, "group": group, "aggregator": agg, "kind": "influence",
                         "best_accuracy": acc, "ndr_30": 0.5 + 2 * q + rng.normal(0, noise),
                         "cancellation": rng.normal(0, 1)})
        for b, acc, ndr in (("none", 0.78, np.nan), ("random", 0.775, 0.2), ("oracle", 0.9, 1.0),
                            ("loss", 0.79, 0.45)):
            rows.append({**base, "method": b, "group": "-", "aggregator": "-",
                         "kind": "baseline" if b != "loss" else "model", "best_accuracy": acc + rng.normal(0, 1e-3),
                         "ndr_30": ndr, "cancellation": np.nan})
    return pd.DataFrame(rows)


def test_the_verdict_follows_the_numbers_and_flips_with_them(tmp_path):
    wins = claims_table(make_study(synthetic(+0.05)), B=300).set_index("claim")
    loses = claims_table(make_study(synthetic(-0.05)), B=300).set_index("claim")
    assert list(wins.index) == CLAIMS and list(wins.reset_index().columns) == CLAIM_COLUMNS
    assert wins.loc["1", "verdict"] == HOLDS and wins.loc["1", "ci_low"] > 0
    assert loses.loc["1", "verdict"] == NOT_HOLDS and loses.loc["1", "ci_high"] < 0
    assert wins.loc["2a", "verdict"] == HOLDS and wins.loc["2b", "verdict"] == HOLDS
    assert wins.loc["6", "verdict"] == HOLDS and wins.loc["7a", "verdict"] == HOLDS
    assert wins.loc["3a", "verdict"] == HOLDS  # NDR@30 tracks accuracy by construction
    assert wins.loc["1", "n"] == "2 tasks × 3 seeds = 6 runs"
    for table in (wins, loses):
        for row in table.reset_index().itertuples():
            assert row.verdict == _expected(row), row
    # absent inputs: not measured, with the reason
    for key in ("5", "7c", "8"):
        assert wins.loc[key, "verdict"] == NOT_MEASURED and wins.loc[key, "detail"]
    # layer-wise NDR: Value-B best (or worst) on every run → claim 5 follows; the three figures are drawn
    for vb, verdict in ((0.6, HOLDS), (0.2, NOT_HOLDS)):
        runs = sorted(synthetic(0.0)["unit"].unique())
        kinds = ("we", "query_A", "query_B", "value_A", "value_B", "cl")
        mods = pd.DataFrame([{"_run": r, "kind": k, "ndr_30": (vb if k == "value_B" else 0.4) + 0.01 * i}
                             for i, r in enumerate(runs) for k in kinds])
        study = make_study(synthetic(+0.05), modules=mods)
        assert claims_table(study, B=200).set_index("claim").loc["5", "verdict"] == verdict
    figs = _figures(study, tmp_path)
    assert sorted(f.name for f in figs) == ["claims_layerwise.png", "claims_ndr_vs_accuracy.png", "claims_winrate.png"]
    # advise's picks on held-out seeds turn claim 8 on
    picks = pd.DataFrame({"task": ["sst2", "mrpc"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                          "config": ["tracin/02-03/vote"] * 6})
    with_advise = claims_table(make_study(synthetic(+0.05), advise=picks), B=200).set_index("claim")
    assert with_advise.loc["8", "verdict"] != NOT_MEASURED and with_advise.loc["8", "n_runs"] == 6


def test_a_tie_is_inconclusive_or_rules_the_effect_out():
    tie = claims_table(make_study(synthetic(0.0, noise=0.02, rng_seed=3)), B=300).set_index("claim")
    assert tie.loc["1", "verdict"] in (INCONCLUSIVE, NOT_HOLDS)
    assert tie.loc["1", "ci_low"] <= 0


def test_runs_that_did_not_learn_are_left_out_and_counted():
    df = synthetic(+0.05)
    df["collapsed"] = (df["task"] == "mrpc") & (df["seed"] == 1)
    study = make_study(df)
    assert len(study.runs) == 5 and study.excluded == ["task=mrpc,seed=1"]
    assert claims_table(study, B=100).set_index("claim").loc["1", "n"] == "2 tasks × 3 seeds = 5 runs"


@pytest.mark.slow
def test_end_to_end_sweep_report_and_claims_md(tmp_path):
    raw = {"name": "tiny", "data": {"source": "demo", "max_train": 60, "max_dev": 40, "noise_rate": 0.2},
           "model": {"name": "shape:tiny-bert", "max_length": 16}, "train": {"epochs": 1, "batch_size": 16},
           "score": {"methods": ["tracin", "datainf"], "aggregators": ["mean", "vote"]},
           "filter": {"fraction": 0.3, "baselines": ["none", "random", "oracle"]}}
    out = tmp_path / "sweep"
    li.sweep(ExperimentConfig.from_dict(raw), {"data.seed": [0, 1, 2]}, out, workers=1, echo=None)
    page = li.report(out, bootstrap=0)
    report = page.parent
    assert (report / "claims.html").exists() and 'href="claims.html"' in page.read_text()
    table = pd.read_csv(report / "tables" / "claims_verdicts.csv")
    assert list(table["claim"].astype(str)) == CLAIMS
    for row in table.itertuples():
        assert row.verdict == _expected(row), row
    # the random tiny model never learns: every run is left out, and the page says so
    assert "3 run(s) left out" in (report / "claims.html").read_text()
    # the same code on the same runs, health check off: numbers, and verdicts from them
    from layerinf.reporting.results import load_results

    results = load_results(out)
    study, measured = claims_from_dir(out, results=results, B=200)
    measured = measured.set_index("claim")
    assert len(study.runs) == 3 and study.modules  # layer-wise NDR read from the runs' score frames
    assert measured.loc["5", "verdict"] != NOT_MEASURED and measured.loc["1", "n_runs"] == 3
    for row in measured.reset_index().itertuples():
        assert row.verdict == _expected(row), row
    # the committed form of the same runs (the study across sessions): the same numbers and verdicts from it
    from layerinf.reporting.claims_inputs import export_study_inputs, inputs_manifest, read_study_inputs

    inputs = export_study_inputs(out, tmp_path / "inputs" / "tiny", seconds=12.5)
    kept, _ = read_study_inputs(inputs)
    study_k, from_kept = claims_from_dir(inputs, results=kept.drop(columns="collapsed"), B=200)
    pd.testing.assert_frame_equal(from_kept.set_index("claim"), measured)
    assert study_k.runs == study.runs and study_k.modules.keys() == study.modules.keys()
    pd.testing.assert_frame_equal(claims_from_dir(inputs, B=200)[1], claims_from_dir(out, B=200)[1])
    assert sorted(inputs_manifest(inputs)["units"]) == sorted(study.runs)
    assert inputs_manifest(inputs)["units"]["seed=0"]["seconds"] == 12.5
    export_study_inputs(out, inputs)  # again: its runs are replaced, not added twice
    assert len(read_study_inputs(inputs)[0]) == len(kept)
    with pytest.raises(ValueError, match="3 runs"):
        export_study_inputs(out, inputs, unit="seed=9")
    # change the inputs: Vote clearly better (or worse) on every run → the verdict of claim 1 follows
    for gain, verdict in ((+0.2, HOLDS), (-0.2, NOT_HOLDS)):
        changed = results.copy()
        jitter = np.random.default_rng(0).normal(0, 0.01, len(changed))
        changed["best_accuracy"] = 0.6 + jitter + np.where(changed["aggregator"] == "vote", gain, 0.0)
        v = claims_table(make_study(changed), B=200).set_index("claim").loc["1", "verdict"]
        assert v == verdict, (gain, v)
    md = write_claims_md({"Tiny BERT": [out, out.parent / "sweep-2"], "Not run": [tmp_path / "none"]},
                         tmp_path / "docs" / "claims.md", command="make claims", elapsed="1 min", B=100)
    text = md.read_text()
    assert text.splitlines()[0].startswith("# ") and "`make claims`" in text and "time: 1 min" in text
    assert "| 1 |" in text and "3 run(s) left out" in text and "## Not run" in text
    assert (tmp_path / "docs" / "claims" / "tiny-bert" / "tables" / "claims_verdicts.csv").exists()
    # two sweeps pooled: their runs are named by sweep, so that nothing is merged by accident
    import shutil

    shutil.copytree(out, out.parent / "sweep-2")
    study2, _ = claims_from_dir([out, out.parent / "sweep-2"], B=50)
    assert len(study2.excluded) == 6 and study2.excluded[0].startswith("sweep-2/")


def _study_script():
    """scripts/claims_study.py as a module (skips where ../shared/data/glue/SST-2, which its configs name, is absent)."""
    import importlib.util

    if not (Path(__file__).parents[2] / "shared" / "data" / "glue" / "SST-2").is_dir():
        pytest.skip("the study's configs name ../shared/data/glue/SST-2, which is absent")
    spec = importlib.util.spec_from_file_location("claims_study", Path(__file__).parents[1] / "scripts" /
                                                  "claims_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


@pytest.mark.slow
def test_the_study_script_keeps_each_finished_run_and_does_not_run_it_again(glue_dir, tmp_path, capsys):
    """scripts/claims_study.py on a tiny stand-in of one sweep: the finished run lands in the inputs folder (what
    a later session finds committed), the page is written from it, and a second invocation runs nothing."""
    from layerinf.reporting.claims_inputs import inputs_manifest, read_study_inputs

    study = _study_script()
    inputs, md = tmp_path / "inputs", tmp_path / "claims.md"
    argv = ["--only", "minilm-sst2", "--seeds", "0", "--out", str(tmp_path / "runs"), "--inputs", str(inputs),
            "--md", str(md), "--set", "model.name=shape:tiny-bert", "--set", "data.max_train=40",
            "--set", "data.max_dev=30", "--set", "train.epochs=1", "--set", "train.min_steps=null"]
    assert study.main(argv) == 0
    units = inputs_manifest(inputs / "minilm-sst2")["units"]
    (unit, info), = units.items()  # one run: the sweep at seed 0
    assert unit.startswith("seed=0,") and "max_train=40" in unit
    assert info["seconds"] > 0 and "sweep" in info["command"]
    res, mods = read_study_inputs(inputs / "minilm-sst2")
    assert set(res["unit"]) == {unit} and {"none", "random", "oracle"} <= set(res["method"]) and len(mods)
    text = md.read_text()
    assert "## MiniLM, 20 % uniform flips, four GLUE tasks" in text and "| 1 |" in text
    assert "Not run yet" in text  # the other sweeps
    capsys.readouterr()
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    assert "not run again" in out and "+ " not in out  # nothing was run


@pytest.mark.slow
def test_the_study_script_records_advises_pick_for_the_held_out_seeds(tmp_path):
    """Claim 8's input: `layerinf advise` on seed 0's noisy data (the sweep's own data stage), its pick written for
    seeds 1 and 2 with the task name of the sweep's results; a second call runs nothing."""
    from layerinf.workflows.advise import recommended_rank_config

    study = _study_script()
    sets = ["model.name=shape:tiny-bert", "data.max_train=160", "data.max_dev=30", "train.epochs=1"]
    out, inputs = tmp_path / "runs", tmp_path / "inputs"
    study.advise_pick("minilm-sst2", out, inputs, ["0", "1", "2"], sets, None)
    picks = pd.read_csv(inputs / "minilm-sst2" / "advise_picks.csv", dtype=str)
    (folder,) = (out / "minilm-sst2").glob("advise-seed=0,*")
    rc = recommended_rank_config(folder / "advise")
    assert list(picks["seed"]) == ["1", "2"] and set(picks["task"]) == {"SST-2"}
    assert set(picks["config"]) == {f"{rc['method']}/{rc['group']}/{rc['aggregator']}"}
    assert set(picks["chosen_on"]) == {folder.name.removeprefix("advise-")}
    user = pd.read_json(folder / "user" / "train.jsonl", lines=True)
    assert len(user) == 160 and set(user.columns) == {"text", "label"}  # the mask is not handed to advise
    before = (inputs / "minilm-sst2" / "advise_picks.csv").read_bytes()
    study.advise_pick("minilm-sst2", out, inputs, ["0", "1", "2"], sets, None)
    assert (inputs / "minilm-sst2" / "advise_picks.csv").read_bytes() == before


@pytest.mark.slow
def test_the_health_script_fine_tunes_each_sweep_once_and_says_whether_it_learned(tmp_path):
    import importlib.util

    _study_script()  # skips where ../shared/data/glue is absent
    spec = importlib.util.spec_from_file_location("claims_health", Path(__file__).parents[1] / "scripts" /
                                                  "claims_health.py")
    health = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(health)
    assert health.main(["--only", "minilm-sst2", "--out", str(tmp_path), "--set", "model.name=shape:tiny-bert",
                        "--set", "data.max_train=40", "--set", "data.max_dev=30", "--set", "train.epochs=1",
                        "--set", "train.min_steps=null"]) == 0
    table = pd.read_csv(tmp_path / "health.csv")
    row = table.iloc[0]
    assert list(table["sweep"]) == ["minilm-sst2"] and row["model"] == "shape:tiny-bert"
    assert row["majority"] > 0 and 0 <= row["accuracy"] <= 1 and isinstance(row["learned"], (bool, np.bool_))
    assert row["learned"] == (row["ci_low"] > row["majority"])
