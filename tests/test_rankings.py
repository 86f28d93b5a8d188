"""The rankings side by side, the planted probe that picks one, and the flagged count (layerinf.evaluation.rankings,
layerinf.stages.detect): each against a slow, obvious reference on fresh random inputs, and on constructed cases
whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from layerinf.config import RankConfig
from layerinf.errors import LayerinfError
from layerinf.evaluation.noise_rate import count_label_issues, estimate_noise_rate
from layerinf.evaluation.rankings import (RANKINGS, FitScores, choose_ranking, combine, embedding_probs, flag_count,
                                          percentile_ranks, plant_flips, probe_aucs, self_confidence, side_by_side)
from layerinf.stages.detect import detection_choice


def _probs(rng, n, c):
    z = rng.normal(size=(n, c))
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def test_percentile_ranks_and_self_confidence_match_loops():
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=40), 1)  # ties
    want = [(rankdata(s)[i] - 1) / (len(s) - 1) for i in range(len(s))]
    assert np.allclose(percentile_ranks(s), want)
    s[3] = np.nan
    p = percentile_ranks(s)
    assert np.isnan(p[3]) and np.nanmin(p) == 0 and np.nanmax(p) == 1
    probs, y = _probs(rng, 30, 4), rng.integers(0, 4, 30)
    assert np.array_equal(self_confidence(probs, y), np.array([probs[i, y[i]] for i in range(30)]))
    with pytest.raises(LayerinfError, match="outside"):
        self_confidence(probs, np.full(30, 4))


def test_combine_is_the_mean_percentile_rank():
    rng = np.random.default_rng(2)
    a, b, c = rng.normal(size=(3, 25))
    want = np.mean([percentile_ranks(a), percentile_ranks(b), percentile_ranks(c)], axis=0)
    assert np.allclose(combine([a, b, c]), want)
    assert np.allclose(combine([a, 10 * b + 3, c]), want)  # scale-free
    b[0] = np.nan  # a missing entry is left out of its row's mean
    assert np.isclose(combine([a, b, c])[0], (percentile_ranks(a)[0] + percentile_ranks(c)[0]) / 2)


def test_plant_flips_count_seed_and_labels():
    y = np.repeat([0, 1, 2], 20)
    eligible = np.arange(10, 60)
    at, new = plant_flips(y, eligible, 7, 3, seed=5)
    assert len(at) == len(set(at)) == 7 and set(at) <= set(eligible)
    assert np.all(new != y[at]) and np.all((0 <= new) & (new < 3))
    at2, new2 = plant_flips(y, eligible, 7, 3, seed=5)
    assert np.array_equal(at, at2) and np.array_equal(new, new2)
    assert not np.array_equal(plant_flips(y, eligible, 7, 3, seed=6)[0], at)
    with pytest.raises(LayerinfError):
        plant_flips(y, eligible, 51, 3, seed=0)


def test_probe_auc_is_sklearns_roc_auc_with_low_scores_suspicious():
    rng = np.random.default_rng(3)
    s, planted = rng.normal(size=50), rng.random(50) < 0.2
    assert np.isclose(probe_aucs({"x": s}, planted)["x"], roc_auc_score(planted, -s))
    s[:5] = np.nan  # rows a ranking cannot score are left out
    assert np.isclose(probe_aucs({"x": s}, planted)["x"], roc_auc_score(planted[5:], -s[5:]))


def test_choose_ranking_picks_the_best_and_breaks_ties_by_preference():
    pick, why = choose_ranking({"influence": [0.9, 0.8], "confidence": [0.6, 0.7], "combined": [0.7, 0.7]})
    assert pick == "influence" and "influence 0.850" in why
    pick, why = choose_ranking({"influence": [0.80], "confidence": [0.805], "combined": [0.799]})
    assert pick == "combined" and "tie" in why  # within 0.01 of the best: the first in RANKINGS order
    assert RANKINGS[0] == "combined"
    assert choose_ranking({})[0] == "combined"


def _constructed(n=600, classes=2, rate=0.2, seed=0, good="confidence"):
    """Three folds whose planted rows only the ``good`` ranking can see: its probabilities know the true class,
    the other signals are noise."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    labels = truth.copy()
    noisy = rng.random(n) < rate
    labels[noisy] = (truth[noisy] + 1) % classes
    sharp = np.full((n, classes), 0.1 / (classes - 1))
    sharp[np.arange(n), truth] = 0.9
    noise = _probs(rng, n, classes)
    oos, emb = (sharp, noise) if good == "confidence" else (noise, sharp)
    fold_of = np.arange(n) % 3
    fits = []
    for k in range(3):
        rows = np.flatnonzero(fold_of != k)
        at, new = plant_flips(labels, rows, 30, classes, seed=k)
        lab = labels[rows].copy()
        planted = np.isin(rows, at)
        lab[planted] = new
        fits.append(FitScores(rows=rows, scores=rng.normal(size=rows.size), labels=lab, planted=planted))
    return labels, noisy, fits, oos, emb


@pytest.mark.parametrize("good", ["confidence", "embedding"])
def test_the_probe_picks_the_ranking_that_finds_the_planted_rows(good):
    labels, noisy, fits, oos, emb = _constructed(good=good)
    rankings, aucs = side_by_side(labels, fits, oos, emb)
    # the real noise (20 %) is counted clean by the probe and scores as low as the planted rows: AUC ≈ 0.8, not 1
    assert np.mean(aucs[good]) > 0.75 and abs(np.mean(aucs["influence"]) - 0.5) < 0.15
    other = "embedding" if good == "confidence" else "confidence"
    assert np.mean(aucs[good]) > np.mean(aucs[other]) + 0.2
    d = detection_choice(labels, fits, oos, emb, RankConfig(), learned=True)
    assert d["ranking"] == good and good in d["why"]
    assert roc_auc_score(noisy, -rankings[good]) > 0.9  # and it finds the real noise too


def test_influence_ranking_leaves_out_the_fit_where_a_row_was_planted():
    labels, _, fits, oos, emb = _constructed()
    rankings, _ = side_by_side(labels, fits, oos, emb)
    total, count = np.zeros(len(labels)), np.zeros(len(labels))
    for f in fits:  # the obvious loop
        pct = (rankdata(f.scores) - 1) / (len(f.scores) - 1)
        for j, r in enumerate(f.rows):
            if not f.planted[j]:
                total[r] += pct[j]
                count[r] += 1
    with np.errstate(invalid="ignore"):  # a row planted in both of its fits has no influence score
        assert np.allclose(rankings["influence"], total / count, equal_nan=True)
    assert np.allclose(rankings["confidence"], oos[np.arange(len(labels)), labels])
    assert np.allclose(rankings["combined"], combine([rankings["influence"], rankings["confidence"],
                                                      rankings["embedding"]]))


def test_a_fold_that_did_not_learn_falls_back_to_the_embedding_ranking():
    labels, _, fits, oos, emb = _constructed(good="confidence")
    d = detection_choice(labels, fits, oos, emb, RankConfig(), learned=False)
    assert d["ranking"] == "embedding" and "did not learn" in d["why"]
    d = detection_choice(labels, fits, oos, emb, RankConfig(ranking="influence"), learned=True)
    assert d["ranking"] == "influence" and "asked for" in d["why"]


@pytest.mark.parametrize("rate", [0.1, 0.25])
def test_the_flagged_count_follows_the_estimated_noise_rate(rate):
    """Synthetic out-of-sample probabilities of a decent model on labels flipped at a known rate: the default flags
    about rate × n rows (confident learning's estimate), --top overrides it."""
    labels, noisy, fits, oos, emb = _constructed(n=3000, rate=rate, seed=7)
    rng = np.random.default_rng(8)
    oos = np.clip(oos + rng.normal(0, 0.05, oos.shape), 0.01, None)
    oos /= oos.sum(1, keepdims=True)
    d = detection_choice(labels, fits, oos, emb, RankConfig(), learned=True)
    true = int(noisy.sum())
    assert abs(d["flagged"] - true) <= 0.15 * true and d["flagged"] == d["noise"]["issues"]
    assert d["noise"]["low"] <= noisy.mean() <= d["noise"]["high"]
    assert d["noise"]["issues_low"] <= noisy.mean() <= d["noise"]["issues_high"]
    assert "confident learning calls mislabelled" in d["flagged_by"] and "calibrated" in d["flagged_by"]
    assert detection_choice(labels, fits, oos, emb, RankConfig(top=0.5), learned=True)["flagged"] == 1500
    assert flag_count(10, None, 0.26) == 3 and flag_count(10, 0.3, 0.9) == 3


def test_embedding_probs_are_out_of_sample():
    """Random features, random labels: a model fitted on every row would be sure of its own labels; out-of-sample
    probabilities stay near chance."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(200, 300)), rng.integers(0, 2, 200)
    p = embedding_probs(x, y, num_classes=3, seed=0)
    assert p.shape == (200, 3) and np.allclose(p.sum(1), 1) and np.all(p[:, 2] == 0)
    assert abs(self_confidence(p, y).mean() - 0.5) < 0.1
    from sklearn.linear_model import LogisticRegression

    inside = LogisticRegression(max_iter=1000).fit(x, y).predict_proba(x)
    assert self_confidence(inside, y).mean() > 0.9


def _weak_model(n: int, rate: float, error: float, seed: int):
    """Two classes, ``rate`` of the labels flipped, and out-of-sample probabilities of a model that is wrong about
    the true class on a share ``error`` of the rows, with confidences spread over (0.5, 1)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 2, n)
    noisy = np.zeros(n, bool)
    noisy[rng.choice(n, int(rate * n), replace=False)] = True
    given = np.where(noisy, 1 - true, true)
    pred = np.where(rng.random(n) < error, 1 - true, true)
    conf = rng.uniform(0.5, 1.0, n)
    probs = np.empty((n, 2))
    probs[np.arange(n), pred] = conf
    probs[np.arange(n), 1 - pred] = 1 - conf
    return probs, given, noisy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_label_issues_is_cleanlabs_num_label_issues(seed):
    cleanlab_count = pytest.importorskip("cleanlab.count", reason="cleanlab is an optional extra: layerinf[compare]")
    rng = np.random.default_rng(seed)
    k = 2 + seed
    probs = rng.dirichlet(np.ones(k) * 0.7, 400)
    labels = np.where(rng.random(400) < 0.7, probs.argmax(1), rng.integers(0, k, 400))
    assert count_label_issues(probs, labels) == cleanlab_count.num_label_issues(labels, probs)
    probs, labels, _ = _weak_model(1000, 0.2, 0.2, seed)
    assert count_label_issues(probs, labels) == cleanlab_count.num_label_issues(labels, probs)


def test_the_flagged_count_is_the_issue_count_not_the_inflated_calibrated_rate():
    """A model wrong on 20 % of the rows, 20 % of the labels flipped: the rows it is unsure of are counted as noisy
    in proportion by the calibrated rate, which overshoots; the count of rows called mislabelled stays closer to
    the truth, and it is what is flagged."""
    probs, labels, noisy = _weak_model(4000, 0.2, 0.2, 5)
    est = estimate_noise_rate(probs, labels, n_boot=50)
    true = noisy.sum()
    assert abs(est.issues - true) < abs(est.rate * len(labels) - true)
    assert est.issues == count_label_issues(probs, labels)
    assert est.issues_low <= est.issues / len(labels) <= est.issues_high
