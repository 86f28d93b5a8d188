"""The noise-probe advisor (issue #15): planted-flip metrics, the noise-rate estimate, the κ rule, input checks,
the advice from per-probe tables, and one tiny end-to-end run on the demo data (slow)."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from layerinf.errors import LayerinfError
from layerinf.evaluation import detection
from layerinf.evaluation.noise_rate import (adaptive_kappa, confident_joint, estimate_noise_rate, mean_ci,
                                            planted_metrics, softmax)
from layerinf.workflows.advise_page import AdviceConfig, recommend, render_heatmap, render_page, summarize
from layerinf.workflows.advise import (advise, check_probe_args, min_train_size, noise_plan, probe_train_size,
                                      recommended_rank_config)
from helpers import chromium_driver

# ------------------------------------------------------------------------------------- planted metrics


def test_planted_metrics_count_only_the_planted_flips():
    """Real (unknown) noise at the very bottom takes slots but is never counted as found."""
    n = 20
    real = np.arange(0, 4)  # already wrong in the user's data: the lowest scores
    planted = np.zeros(n, bool)
    planted[4:8] = True  # the probe's flips: next lowest
    s = np.arange(n, dtype=float) - 10.0  # idx 0 lowest
    m = planted_metrics(s, planted)
    assert m["n_planted"] == 4 and m["n"] == 20
    # bottom ⌊0.3·20⌋ = 6 examples: the 4 real-noise ones + 2 planted → 2 of 4 planted found
    assert m["ndr_30"] == pytest.approx(0.5)
    assert m["ndr_10"] == pytest.approx(0.0)  # bottom 2 are real noise only
    # ROC-AUC: each planted example is below the 12 clean ones and above the 4 real-noise (clean-counted) ones
    assert m["roc_auc"] == pytest.approx(12 / 16)
    assert m["auc_ndr"] == pytest.approx(detection.auc_ndr(s, planted))
    # counting the real noise too would be a different (higher) number: the mask alone decides
    both = planted.copy()
    both[real] = True
    assert detection.ndr_at(s, both, 0.30) == pytest.approx(6 / 8)


def test_planted_metrics_bad_masks():
    with pytest.raises(LayerinfError, match="entries for"):
        planted_metrics(np.zeros(5), np.zeros(4, bool))
    with pytest.raises(LayerinfError, match="some, but not all"):
        planted_metrics(np.zeros(5), np.zeros(5, bool))


# ------------------------------------------------------------------------------------- noise-rate estimate


def _synthetic(n, k, rate, seed, margin=5.0):
    """Well-separated classes (logit margin), then exactly ⌊rate·n⌋ given labels flipped to another class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += margin
    given = y.copy()
    flip = rng.choice(n, int(rate * n), replace=False)
    given[flip] = (y[flip] + rng.integers(1, k, flip.size)) % k
    return softmax(logits), given


@pytest.mark.parametrize("k,rate", [(2, 0.05), (2, 0.2), (2, 0.4), (3, 0.1), (3, 0.3)])
def test_noise_rate_within_3pp_at_5000(k, rate):
    probs, given = _synthetic(5000, k, rate, seed=int(rate * 100) + k)
    est = estimate_noise_rate(probs, given, n_boot=200, seed=0)
    assert abs(est.rate - rate) <= 0.03, est
    assert est.low <= est.rate <= est.high and est.high - est.low < 0.05
    assert len(est.per_class) == k and abs(sum(map(sum, est.joint)) - 1) < 1e-9


def test_confident_joint_by_hand():
    # labelled 0: p0 = .9, .8, .2 → t0 = .633; labelled 1: p1 = .7, .9 → t1 = .8
    probs = np.array([[.9, .1], [.8, .2], [.2, .8], [.3, .7], [.1, .9]])
    given = np.array([0, 0, 0, 1, 1])
    joint, t = confident_joint(probs, given)
    np.testing.assert_allclose(t, [(0.9 + 0.8 + 0.2) / 3, 0.8])
    # row 3 (label 1, p1 = .7 < t1, p0 = .3 < t0) is not counted; row 2 (label 0, p1 = .8 ≥ t1) is off-diagonal
    np.testing.assert_array_equal(joint, [[2, 1], [0, 1]])
    est = estimate_noise_rate(probs, given, n_boot=0)
    assert est.rate == pytest.approx(1 / 5)  # row 0 calibrated to 3 examples: 1 off-diagonal of 5


def test_noise_rate_bad_input():
    with pytest.raises(LayerinfError, match="rows sum to 1"):
        estimate_noise_rate(np.array([[2.0, 1.0]]), np.array([0]))
    with pytest.raises(LayerinfError, match="one label per row"):
        estimate_noise_rate(np.array([[0.5, 0.5]]), np.array([0, 1]))
    with pytest.raises(LayerinfError, match="lie in 0..1"):
        estimate_noise_rate(np.array([[0.5, 0.5]]), np.array([2]))


# --------------------------------------------------------------------------------------------- κ rule


def test_kappa_rule_and_its_bounds():
    assert adaptive_kappa(0.2) == pytest.approx(0.30)  # the paper's κ at its 20 % noise
    assert adaptive_kappa(0.0) == 0.05 and adaptive_kappa(0.01) == 0.05  # lower bound
    assert adaptive_kappa(1 / 3 + 0.01) == 0.5 and adaptive_kappa(0.9) == 0.5 and adaptive_kappa(1.0) == 0.5
    assert adaptive_kappa(0.1, factor=2.0) == pytest.approx(0.2)
    assert adaptive_kappa(0.9, bounds=(0.1, 0.3)) == 0.3
    for rate in np.linspace(0, 1, 41):
        assert 0.05 <= adaptive_kappa(float(rate)) <= 0.5
    for bad in (float("nan"), -0.1, 1.5, True):
        with pytest.raises(LayerinfError):
            adaptive_kappa(bad)
    with pytest.raises(LayerinfError):
        adaptive_kappa(0.2, factor=0)


# ------------------------------------------------------------------------------- advice from the probes


def _per_probe():
    rng = np.random.default_rng(0)
    rows = []
    configs = [("datainf", "02-03", "vote", 0.60), ("tracin", "04-04", "mean", 0.80), ("tracin", "WE", "rank", 0.70),
               ("loss", "-", "-", 0.95)]
    for seed in (1, 2, 3):
        for m, g, a, base in configs:
            v = base + rng.normal(0, 0.02)
            rows.append({"seed": seed, "method": m, "group": g, "aggregator": a, "ndr_10": v / 2, "ndr_30": v,
                         "auc_ndr": v, "roc_auc": v, "n": 100, "n_planted": 10})
    return pd.DataFrame(rows)


def test_summary_and_recommendation():
    per = _per_probe()
    table = summarize(per)
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert table.loc[0, "method"] == "loss" and table.loc[0, "kind"] == "baseline"
    row = table[table["group"] == "04-04"].iloc[0]
    vals = per[per["group"] == "04-04"]["ndr_30"].to_numpy()
    mean, low, high = mean_ci(vals)
    assert row["ndr_30_mean"] == pytest.approx(vals.mean()) and row["ndr_30_low"] == pytest.approx(low)
    half = 4.302652729911275 * vals.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 dof)
    assert high - mean == pytest.approx(half)
    cfg = AdviceConfig(probe_rate=0.1, seeds=(1, 2, 3), default_key="datainf/02-03/vote")
    rec = recommend(table, per, cfg, None)
    assert rec["best"]["key"] == "tracin/04-04/mean"  # the baseline is shown but never recommended
    assert rec["runner_up"]["key"] == "tracin/WE/rank"
    assert rec["default"]["key"] == "datainf/02-03/vote"
    diff = per[per["group"] == "04-04"]["ndr_30"].to_numpy() - per[per["group"] == "02-03"]["ndr_30"].to_numpy()
    assert rec["margin_over_default"]["ndr_30"]["mean"] == pytest.approx(diff.mean())
    assert rec["margin_over_default"]["ndr_30"]["low"] > 0  # a clear win
    assert rec["vote_kappa"] == 0.30 and rec["rank_config"] == {"method": "tracin", "group": "04-04",
                                                                 "aggregator": "mean", "vote_kappa": 0.30}
    assert "loss/-/-" in rec["baselines"]
    # κ from a noise estimate: only when the cross-fitted models learned something
    est = estimate_noise_rate(*_synthetic(2000, 2, 0.1, seed=1), n_boot=0)
    est.extra = {"accuracy_vs_given_labels": 0.88, "majority_share": 0.5}
    good = recommend(table, per, cfg, est)
    assert good["noise_trusted"] and good["vote_kappa"] == pytest.approx(adaptive_kappa(est.rate))
    est.extra = {"accuracy_vs_given_labels": 0.53, "majority_share": 0.5}
    weak = recommend(table, per, cfg, est)
    assert not weak["noise_trusted"] and weak["vote_kappa"] == 0.30 and "not used" in weak["kappa_rule"]
    png = render_heatmap(table, best=rec["best"]["key"], default=cfg.default_key)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = render_page({**rec, "source": "<b>x</b>", "model": "m", "n_train": 100}, table, per, png)
    assert "<script" not in page.lower() and "&lt;b&gt;x&lt;/b&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,match", [
    (dict(probe_rate=0), r"probe_rate=0 is outside \(0, 0.5\]"),
    (dict(probe_rate=0.6), r"probe_rate=0.6 is outside \(0, 0.5\]"),
    (dict(probes=0), r"probes=0 must be a whole number ≥ 1"),
    (dict(max_train=40, noise_folds=0), r"40 examples: a probe at probe_rate 0.1 plants only 4 flip"),
    (dict(max_train=120), r"each probe trains on 80 of the 120 training examples \(2 of 3 folds\): a probe at "
                          r"probe_rate 0.1 plants only 8 flip"),
    (dict(noise_folds=-1), r"noise_folds=-1"),
    (dict(noise_rate=0.2), r"advise does not take noise_rate"),
    (dict(noise_folds=1), r"noise_folds=1"),
])
def test_bad_input_writes_nothing(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(LayerinfError, match=match) as err:
        advise(out, source="demo", echo=None, progress=False, **kwargs)
    assert not out.exists(), "nothing may be written for bad input"
    if kwargs.get("max_train") == 40:
        assert f"at least {min_train_size(0.1)} training examples" in str(err.value) and min_train_size(0.1) == 100
    elif "max_train" in kwargs:  # cross-fitted probes: a third of the rows is held out of each
        assert "at least 150 training examples" in str(err.value) and "noise_folds=2" in str(err.value)


def test_min_train_size_and_args():
    assert min_train_size(0.1) == 100 and min_train_size(0.5) == 20 and min_train_size(0.3) == 34
    assert min_train_size(0.1, folds=3) == 150 and min_train_size(0.1, folds=2) == 200
    assert check_probe_args(0.1, 3) == (0.1, 3, None, 1.5)


def test_noise_plan():
    """Default: the probes are the noise estimate's folds; one probe or an explicit K: separate runs; 0: none."""
    assert noise_plan(None, 3) == (3, True) and noise_plan(None, 2) == (2, True)
    assert noise_plan(None, 1) == (2, False) and noise_plan(4, 3) == (4, False) and noise_plan(0, 3) == (0, False)
    assert [probe_train_size(n, k) for n, k in ((10, 0), (10, 2), (10, 3), (11, 3))] == [10, 5, 6, 7]
    assert check_probe_args(0.5, 1, 0) == (0.5, 1, 0, 1.5)
    with pytest.raises(LayerinfError, match="criterion"):
        check_probe_args(0.1, 1, criterion="accuracy")


def test_recommended_rank_config_missing(tmp_path):
    with pytest.raises(LayerinfError, match="no advisor recommendation"):
        recommended_rank_config(tmp_path)


# --------------------------------------------------------------------------------------- end to end


TINY_ADVISE = dict(max_train=50, max_dev=24, max_length=24, epochs=1, min_steps=None, methods=["tracin", "datainf"],
                   groups=["WE", "02-03", "CL"], probe_rate=0.2, probes=1, noise_folds=2, progress=False)


@pytest.fixture(scope="module")
def tiny_advice(tmp_path_factory):
    out = tmp_path_factory.mktemp("advise")
    return out, advise(out, source="demo", echo=None, **TINY_ADVISE)


@pytest.mark.slow
def test_tiny_end_to_end(tiny_advice):
    from layerinf.stages.data import load_data

    out, res = tiny_advice
    folder = out / "advise"
    for name in ("table.csv", "table.parquet", "probes.csv", "heatmap.png", "index.html", "recommendation.json"):
        assert (folder / name).is_file(), name
    assert (folder / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(folder / "table.csv")
    assert {"method", "group", "aggregator", "ndr_30_mean", "ndr_30_low", "ndr_30_high", "auc_ndr_mean"} <= set(table)
    rec = json.loads((folder / "recommendation.json").read_text())
    best = rec["best"]
    assert best["method"] in ("tracin", "datainf") and best["group"] in ("WE", "02-03", "CL")
    assert best["aggregator"] in ("mean", "rank", "vote") and best["key"] == res.best["key"]
    assert rec["default_key"] == "datainf/02-03/vote" and rec["noise"] is not None
    assert 0.05 <= rec["vote_kappa"] <= 0.5
    assert recommended_rank_config(out) == recommended_rank_config(folder) == res.rank_config
    page = (folder / "index.html").read_text()
    assert "<script" not in page.lower() and "data:image/png;base64," in page and best["group"] in page
    # the probe's noisy mask is exactly its planted flips; every other label is the user's own
    base, probe = load_data(out).train, load_data(res.probe_dirs[0]).train
    changed = base["label"].to_numpy() != probe["label"].to_numpy()
    np.testing.assert_array_equal(changed, probe["noisy"].to_numpy())
    assert changed.sum() == 10 and list(probe["text"]) == list(base["text"])


@pytest.mark.slow
def test_tiny_rerun_reuses_every_stage(tiny_advice):
    out, res = tiny_advice
    before = json.loads((out / "advise" / "stage.json").read_text())["started"]
    again = advise(out, source="demo", echo=None, **TINY_ADVISE)
    assert again.best["key"] == res.best["key"]
    assert json.loads((out / "advise" / "stage.json").read_text())["started"] == before


@pytest.mark.slow
def test_page_in_chromium(tiny_advice):
    out, _ = tiny_advice
    driver = chromium_driver()
    try:
        driver.set_page_load_timeout(60)
        driver.get((out / "advise" / "index.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        title = driver.title
        tables = driver.execute_script("return document.querySelectorAll('table').length;")
    finally:
        driver.quit()
    assert images and all(ok and w > 0 for ok, w in images)
    assert title.startswith("layerinf advise") and tables >= 2


SHARED_ADVISE = dict(TINY_ADVISE, probes=2, noise_folds=None, probe_rate=0.4)


@pytest.mark.slow
def test_probes_share_their_fits_with_the_noise_estimate(tmp_path):
    """Default: probe k trains on every fold but k (plus its planted flips), and fold k's out-of-sample
    probabilities are probe k's best checkpoint's — checked row by row against an unbatched forward pass."""
    import torch

    from layerinf.stages.data import load_data
    from layerinf.stages.finetune import FinetuneStage
    from layerinf.store.rundir import RunDir

    out = tmp_path / "out"
    res = advise(out, source="demo", echo=None, **SHARED_ADVISE)
    assert not list((out / "probes").glob("fold*")), "no separate fold runs"
    assert res.noise is not None and res.recommendation["probe_folds"] == 2
    base = load_data(out)
    fold_of = np.load(out / "noise" / "folds.npy")
    probs = np.load(out / "noise" / "probs.npy")
    assert sorted(np.bincount(fold_of)) == [25, 25] and probs.shape == (50, 2) and not np.isnan(probs).any()
    for k, pdir in enumerate(res.probe_dirs):
        probe = load_data(pdir)
        rows = base.train[fold_of != k]
        assert list(probe.train["text"]) == list(rows["text"]), "probe k trains on the other folds, in order"
        changed = probe.train["label"].to_numpy() != rows["label"].to_numpy()
        np.testing.assert_array_equal(changed, probe.train["noisy"].to_numpy())
        assert changed.sum() == 10
        loaded, cfg = FinetuneStage(RunDir(pdir)).model(probe, "best", "cpu")
        model = loaded.model.eval()
        for i in np.flatnonzero(fold_of == k)[:6]:
            enc = loaded.tokenizer(base.train["text"].iloc[i], truncation=True, max_length=cfg.max_length,
                                   return_tensors="pt")
            with torch.no_grad():
                want = torch.softmax(model(**enc).logits.double(), -1)[0].numpy()
            np.testing.assert_allclose(probs[i], want, atol=1e-5)
    page = (out / "advise" / "index.html").read_text()
    assert "cross-fitted: each trained on 1 of 2 folds, at least 25 examples" in page


def test_check_size_names_the_option_that_sets_the_folds():
    """A small class: with cross-fitted probes the error names the probes (the user set no noise_folds)."""
    from types import SimpleNamespace

    from layerinf.workflows.advise import check_size

    labels = np.array([0] * 295 + [1] * 5)
    prepared = SimpleNamespace(train=pd.DataFrame({"label": labels}), num_classes=2, label_names=["neg", "pos"])
    with pytest.raises(LayerinfError, match=r"class 'pos' has 5 training example\(s\): too few for 3 cross-fitted "
                                            r"probes") as err:
        check_size(prepared, 0.1, 3, probe_folds=3)
    assert "fewer probes" in str(err.value)
    with pytest.raises(LayerinfError, match=r"too few for noise_folds=4"):
        check_size(prepared, 0.1, 4)
    check_size(prepared, 0.1, 2, probe_folds=2)  # 5 ≥ 2 × 2: fine
