"""Score sets: scores are never silently replaced. A score run with other options keeps the finished set as
``score_sets/<hash>/`` (verifiable, bitwise the same), a rerun with the options of a kept set restores it
without recomputing, downstream freshness follows the current set, and a corrupted kept set is never used."""

from __future__ import annotations

import json
import shutil

import pytest

import layerinf as li
from layerinf import api
from layerinf.errors import LayerinfError
from layerinf.stages.score import ScoreStage
from layerinf.store.layout import RETRAIN, SCORE_SETS_DIR, SCORES, STAGE_FILE, RunLayout
from layerinf.store.rundir import RunDir
from layerinf.store.score_sets import list_sets, problem
from helpers import flip_byte, run_cli, snapshot

pytestmark = pytest.mark.slow

DATA = {"source": "demo", "max_train": 40, "max_dev": 20, "noise_rate": 0.2, "seed": 0}
MODEL = {"model": "minilm", "max_length": 24}
TRAIN = {"epochs": 1, "batch_size": 16}
FULL = {"groups": ["02-03", "CL"], "aggregators": ["mean", "vote"]}  # every method
SUBSET = {**FULL, "methods": ["datainf"]}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny run with its gradients and the full score set (the reference every test copies)."""
    run = tmp_path_factory.mktemp("score_sets") / "run"
    li.prepare(run, progress=False, **DATA)
    li.finetune(run, progress=False, **MODEL, **TRAIN)
    li.grads(run, include_we=False, progress=False)
    li.score(run, progress=False, echo=None, **FULL)
    return run


@pytest.fixture
def run(scored, tmp_path):
    return shutil.copytree(scored, tmp_path / "run")


def _no_compute(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the score stage recomputed")

    monkeypatch.setattr(ScoreStage, "compute", refuse)


def _fake_eval(run):
    """A downstream stage made from the current scores (as retrain records it), without retraining anything."""
    rd = RunDir(run)
    with rd.stage(RETRAIN, {"fake": True}, inputs={SCORES: rd.fingerprint(SCORES)}) as st:
        if not st.done:
            st.out("x.json").write_text("{}")


def test_a_subset_keeps_the_full_set_bitwise(run):
    full = snapshot(run / SCORES)
    full_hash = json.loads((run / SCORES / STAGE_FILE).read_text())["config_hash"]
    notes = []
    table = li.score(run, progress=False, echo=notes.append, **SUBSET)
    assert set(table["method"]) - {"loss", "self_influence"} == {"datainf"}
    assert table.attrs["score_set"] != full_hash
    kept = RunLayout(run).score_set(full_hash)
    assert snapshot(kept) == full  # every file, stage.json included, bitwise
    assert problem(kept) is None
    assert any(str(kept) in n for n in notes)
    sets = api.score_sets(run)
    assert [(s["hash"], s["current"], s["methods"]) for s in sets] == [
        (table.attrs["score_set"], True, ["datainf"]), (full_hash, False, ["tracin", "cosine", "datainf"])]
    assert all(s["fresh"] for s in sets) and sets[1]["groups"] == ["02-03", "CL"]
    assert notes[-1].startswith(f"current score set: {table.attrs['score_set']} (methods datainf;")
    assert f"; kept: {full_hash} (methods tracin,cosine,datainf;" in notes[-1]
    RunDir(run).require(SCORES)  # the current set is intact and up to date


def test_switching_back_restores_without_recomputing(run, monkeypatch):
    full_json = (run / SCORES / STAGE_FILE).read_bytes()
    full_fp = RunDir(run).fingerprint(SCORES)
    full = snapshot(run / SCORES)
    subset_hash = li.score(run, progress=False, echo=None, **SUBSET).attrs["score_set"]
    subset = snapshot(run / SCORES)
    _no_compute(monkeypatch)
    notes = []
    li.score(run, progress=False, echo=notes.append, **FULL)
    assert (run / SCORES / STAGE_FILE).read_bytes() == full_json  # the very same stage, not a recompute
    assert snapshot(run / SCORES) == full and RunDir(run).fingerprint(SCORES) == full_fp
    assert any("restored" in n for n in notes)
    assert RunDir(run).manifest()["stages"][SCORES]["files"] == json.loads(full_json)["files"]
    assert snapshot(RunLayout(run).score_set(subset_hash)) == subset  # and the subset is kept in turn
    li.score(run, progress=False, echo=None, **SUBSET)  # back again: no recompute either
    assert snapshot(run / SCORES) == subset
    assert [s["hash"] for s in api.score_sets(run)][0] == subset_hash
    RunDir(run).require(SCORES)


def test_downstream_follows_the_current_set(run):
    _fake_eval(run)
    rd = RunDir(run)
    rd.check_fresh(RETRAIN)
    li.score(run, progress=False, echo=None, **SUBSET)
    with pytest.raises(LayerinfError, match="made from an older 'scores' stage"):
        rd.check_fresh(RETRAIN)
    li.score(run, progress=False, echo=None, **FULL)  # the set retrain was made from: retrain is up to date again
    rd.check_fresh(RETRAIN)


def test_a_corrupted_kept_set_is_detected_and_not_used(run, scored):
    full_hash = json.loads((run / SCORES / STAGE_FILE).read_text())["config_hash"]
    li.score(run, progress=False, echo=None, **SUBSET)
    kept = RunLayout(run).score_set(full_hash)
    flip_byte(kept / "table.parquet")
    assert "table.parquet is corrupted" in problem(kept)
    listed = {s["hash"]: s for s in api.score_sets(run, verify=True)}
    assert listed[full_hash]["intact"] is False and all(s["intact"] for h, s in listed.items() if h != full_hash)
    notes = []
    li.score(run, progress=False, echo=notes.append, **FULL)
    assert any("corrupted" in n and "recomputing" in n for n in notes)
    RunDir(run).require(SCORES)  # recomputed: intact, and the same numbers as the original
    for rel in ("table.parquet", "aggregated.parquet", "table.csv"):
        assert (run / SCORES / rel).read_bytes() == (scored / SCORES / rel).read_bytes(), rel
    assert not kept.exists() or problem(kept) is None


def test_force_recomputes_and_a_failed_run_loses_nothing(run, monkeypatch):
    full = snapshot(run / SCORES)
    full_hash = json.loads((run / SCORES / STAGE_FILE).read_text())["config_hash"]
    full_files = json.loads((run / SCORES / STAGE_FILE).read_text())["files"]

    def boom(*args, **kwargs):
        raise LayerinfError("boom", "nothing")

    monkeypatch.setattr(ScoreStage, "compute", boom)
    with pytest.raises(LayerinfError, match="boom"):
        li.score(run, progress=False, echo=None, **SUBSET)
    assert snapshot(run / SCORES) == full  # the current set is still current, and the guard kept score_sets/
    assert (run / SCORE_SETS_DIR).is_dir() and [s.hash for s in list_sets(RunDir(run))] == [full_hash]
    monkeypatch.undo()
    li.score(run, progress=False, echo=None, **SUBSET)
    started = json.loads((RunLayout(run).score_set(full_hash) / STAGE_FILE).read_text())["started"]
    li.score(run, progress=False, echo=None, force=True, **FULL)  # --force: recomputed, not restored
    info = json.loads((run / SCORES / STAGE_FILE).read_text())
    assert info["config_hash"] == full_hash and info["files"] == full_files and info["started"] >= started
    assert not RunLayout(run).score_set(full_hash).exists()  # the kept copy of the current set is gone
    assert [s["current"] for s in api.score_sets(run)] == [True, False]  # current full + kept subset


def test_a_set_made_from_older_gradients_is_not_kept(run):
    notes = []
    li.grads(run, include_we=False, grad_dtype="bfloat16", progress=False)  # a grads option (batch size: runtime)
    li.score(run, progress=False, echo=notes.append, **SUBSET)
    assert any("older data or gradients: not kept" in n for n in notes)
    assert [s["current"] for s in api.score_sets(run)] == [True]


def test_cli_prints_the_current_and_kept_sets(run):
    full_hash = json.loads((run / SCORES / STAGE_FILE).read_text())["config_hash"]
    res = run_cli("score", run, "--methods", "datainf", "--groups", "02-03,CL", "--aggregators", "mean,vote",
                  cwd=run.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    current = json.loads((run / SCORES / STAGE_FILE).read_text())["config_hash"]
    lines = [line for line in res.stdout.splitlines() if line.startswith("current score set:")]
    assert len(lines) == 1, res.stdout
    assert lines[0].startswith(f"current score set: {current} (methods datainf;")
    assert f"kept: {full_hash} (methods tracin,cosine,datainf;" in lines[0]
