"""`layerinf run` end to end on a tiny config, and resumption after a crash without redoing finished work."""

import json

import pandas as pd
import pytest

import layerinf as li
from layerinf.engine import train as train_mod
from layerinf.store.rundir import RunDir
from layerinf.config import ExperimentConfig

from helpers import SMALL, TINY


@pytest.mark.slow
def test_run_resumes_after_a_crash_without_redoing_work(tmp_path, monkeypatch):
    cfg = ExperimentConfig.from_dict(TINY)
    out = tmp_path / "run"
    real_fit = train_mod.fit
    calls = {"n": 0}

    def crashing_fit(*args, **kwargs):
        if kwargs.get("rows") is not None:  # a retraining
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("killed")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fit", crashing_fit)
    with pytest.raises(KeyboardInterrupt):
        li.run(cfg, out, progress=False, echo=None)
    rd = RunDir(out)
    assert all(rd.is_finished(s) for s in ("data", "finetune", "grads", "scores"))
    assert not rd.is_finished("retrain")
    done_units = sorted((out / "retrain" / "records").glob("*.json"))
    assert len(done_units) == 2
    stamps = {p: p.stat().st_mtime_ns for p in done_units}
    started = {s: rd.stage_info(s)["started"] for s in ("data", "finetune", "grads", "scores")}

    calls["n"] = -10_000  # no more crashes; count the retrainings of the rerun
    results = li.run(cfg, out, progress=False, echo=None)
    assert {s: rd.stage_info(s)["started"] for s in started} == started  # finished stages reused
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished retrainings reused
    reruns = calls["n"] + 10_000
    n_units = len(list((out / "retrain" / "records").glob("*.json")))
    assert reruns == n_units - 2

    # 2 methods × 3 groups × 2 aggregators (+ the model's own rankings, rows of the score table) + 3 baselines
    n_scored = len(pd.read_parquet(out / "scores" / "table.parquet"))
    assert n_scored >= 12 and len(results) == n_scored + 3
    assert set(results["kind"]) == {"influence", "baseline"}
    none = results[results["method"] == "none"].iloc[0]
    oracle = results[results["method"] == "oracle"].iloc[0]
    assert none["removed"] == 0 and oracle["removed"] == 24
    assert oracle["ndr_30"] == 1.0  # removes every flipped example first (16 noisy ≤ 24 removed)
    for col in ("ndr_30", "auc_ndr", "best_accuracy", "accuracy_at_best_epoch", "cancellation"):
        assert col in results.columns
    assert (results["best_accuracy"] >= results["accuracy_at_best_epoch"] - 1e-12).all()
    saved = pd.read_parquet(out / "retrain" / "results.parquet")
    assert len(saved) == len(results)
    assert json.loads((out / "config.json").read_text())["data"]["max_train"] == 80

    # a third run recomputes nothing at all
    calls["n"] = 0
    li.run(cfg, out, progress=False, echo=None)
    assert calls["n"] == 0

    html = li.report(out)
    assert html.exists() and (html.parent / "tables").is_dir()


def test_shipped_example_configs_parse():
    from importlib import resources

    folder = resources.files("layerinf") / "examples"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert "demo.yaml" in names and "sst2-minilm.yaml" in names
    for name in names:
        cfg = ExperimentConfig.from_yaml(str(folder / name))
        assert cfg.filter.fraction == 0.30


@pytest.mark.slow
def test_sweep_runs_units_in_worker_processes_and_collects_one_table(tmp_path):
    raw = {**TINY, "score": {"methods": ["tracin"], "groups": ["CL"], "aggregators": ["mean"]},
           "filter": {"fraction": 0.3, "configs": ["tracin/CL/mean"], "baselines": ["none"]}}
    cfg = ExperimentConfig.from_dict(raw)
    out = tmp_path / "sweep"
    results = li.sweep(cfg, {"data.seed": [0, 1]}, out, workers=2, echo=None)
    assert sorted(results["unit"].unique()) == ["seed=0", "seed=1"]
    assert set(results["seed"]) == {0, 1} and len(results) == 2 * 2
    assert (out / "results.parquet").exists() and (out / "results.csv").exists()
    stamp = RunDir(out / "units" / "seed=0").stage_info("retrain")["started"]
    again = li.sweep(cfg, {"data.seed": [0, 1]}, out, workers=1, echo=None)  # finished units are reused
    assert RunDir(out / "units" / "seed=0").stage_info("retrain")["started"] == stamp
    pd.testing.assert_frame_equal(again.sort_values(["unit", "method"]).reset_index(drop=True),
                                  results.sort_values(["unit", "method"]).reset_index(drop=True))
    assert li.report(out).exists()


@pytest.mark.slow
def test_changed_recipe_does_not_reuse_old_retrainings(tmp_path):
    raw = {**TINY, "score": {"methods": ["tracin"], "groups": ["CL"], "aggregators": ["mean"]},
           "filter": {"fraction": 0.3, "configs": ["tracin/CL/mean"], "baselines": ["none"]}}
    out = tmp_path / "run"
    li.run(ExperimentConfig.from_dict(raw), out, progress=False, echo=None)
    first = {p.name for p in (out / "retrain" / "records").glob("*.json")}
    assert len(first) == 2
    li.run(ExperimentConfig.from_dict(raw).with_overrides({"train.lr": 1e-3}), out, progress=False, echo=None)
    second = {p.name for p in (out / "retrain" / "records").glob("*.json")}
    assert len(second) == 4 and first < second  # new recipe → new retrainings, old ones untouched


@pytest.mark.slow
def test_repeats_retrain_each_subset_with_consecutive_seeds(tmp_path, scored_small_run, monkeypatch):
    """filter.repeats: 2 adds one retraining per kept subset with train_seed + 1; repeat 0 is the R = 1 result
    (its record reused), the table gets `repeat` / `train_seed` columns, and the report averages the repeats."""
    import shutil

    import numpy as np

    run = tmp_path / "run"
    shutil.copytree(scored_small_run, run)
    real_fit = train_mod.fit
    seeds = []

    def counting_fit(*args, **kwargs):
        if kwargs.get("rows") is not None:
            seeds.append(kwargs["seed"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fit", counting_fit)
    one = li.run(ExperimentConfig.from_dict(SMALL), run, progress=False, echo=None)
    assert len(one) == 4 and "repeat" not in one.columns and "train_seed" not in one.columns
    assert len(seeds) == 4 and len(set(seeds)) == 1
    seed0 = seeds[0]
    seeds.clear()
    two_cfg = ExperimentConfig.from_dict({**SMALL, "filter": {**SMALL["filter"], "repeats": 2}})
    two = li.run(two_cfg, run, progress=False, echo=None)
    assert seeds == [seed0 + 1] * 4  # only the new repeats are trained; repeat 0 reuses the R = 1 records
    assert len(two) == 8 and sorted(set(two["repeat"])) == [0, 1]
    assert set(two.loc[two["repeat"] == 1, "train_seed"]) == {seed0 + 1}
    first = two[two["repeat"] == 0].drop(columns=["repeat", "train_seed"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one, check_exact=True)
    assert len(list((run / "retrain" / "records").glob("*.json"))) == 8
    seeds.clear()
    li.run(two_cfg, run, progress=False, echo=None)
    assert seeds == []  # a rerun trains nothing

    import importlib

    rp = importlib.import_module("layerinf.reporting")  # the subpackage (``li.report`` is the API function)
    html = rp.report(run, bootstrap=200)
    conf = pd.read_csv(html.parent / "tables" / "configurations.csv")
    assert set(conf["retrainings"]) == {2} and set(conf["runs"]) == {1}
    for r in conf.itertuples():
        sel = two[(two["method"] == r.method) & (two["group"] == r.group) & (two["aggregator"] == r.aggregator)]
        if not r.collapsed:
            assert r.best_accuracy_mean == pytest.approx(sel["best_accuracy"].mean())
    infl = conf[conf["kind"] == "influence"].iloc[0]
    assert infl["ndr_30_lo"] <= infl["ndr_30_mean"] <= infl["ndr_30_hi"]
    assert np.isfinite(conf.loc[conf["method"] == "random", "ndr_30_lo"]).all()
    head = html.read_text().split("How to read this report")[0]
    assert "t-interval of the mean over 2 retraining seeds" in head and "bootstrap interval" in head


@pytest.mark.slow
def test_gradient_checkpointing_reaches_the_retrainings(tmp_path, scored_small_run, monkeypatch):
    import shutil

    from layerinf.stages.retrain import RetrainStage

    run = tmp_path / "run"
    shutil.copytree(scored_small_run, run)
    cfg = ExperimentConfig.from_dict(SMALL)
    stage = RetrainStage(run, gradient_checkpointing=True)
    plan, _, _ = stage.plan(cfg.filter, cfg.model, cfg.train)
    tasks = stage.retrain_tasks(plan, cfg.model, cfg.train, device="cpu")
    assert len(tasks) == 4 and all(t["args"][6] is True for t in tasks)  # retrain_task's gradient_checkpointing
    seen = {}

    def fake_fit(*args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt("stop")

    monkeypatch.setattr(train_mod, "fit", fake_fit)
    with pytest.raises(KeyboardInterrupt):
        tasks[0]["fn"](*tasks[0]["args"])
    assert seen["gradient_checkpointing"] is True
    assert RetrainStage(run).retrain_tasks(plan, cfg.model, cfg.train, device="cpu")[0]["args"][6] is False
