"""Uncertainty statistics: the bootstrap of the detection metrics against a slow loop over resamples that calls
the detection functions themselves, and the t-interval of a mean against scipy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from layerinf.evaluation import detection, metrics
from layerinf.evaluation.statistics import (bootstrap_counts, bootstrap_detection, percentile_interval,
                                            t_interval)
from layerinf.errors import LayerinfError


def _reference(S: np.ndarray, noisy: np.ndarray, B: int, seed: int, k: float) -> dict[str, np.ndarray]:
    """The obvious loop: per resample, the drawn examples (in training-index order, so ties break as in the
    filter order) scored by detection.ndr_at / auc_ndr / roc_auc."""
    n, C = S.shape
    counts = bootstrap_counts(n, B, np.random.default_rng(seed))
    out = {name: np.full((B, C), np.nan) for name in ("ndr", "auc_ndr", "roc_auc")}
    for b in range(B):
        idx = np.repeat(np.arange(n), counts[b])
        m = noisy[idx]
        for c in range(C):
            s = S[idx, c]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out["ndr"][b, c] = detection.ndr_at(s, m, k)
                out["auc_ndr"][b, c] = detection.auc_ndr(s, m)
                out["roc_auc"][b, c] = detection.roc_auc(s, m)
    return out


@pytest.mark.parametrize("n, C, rate, k, ties", [(37, 3, 0.2, 0.30, False), (50, 2, 0.3, 0.25, True),
                                                 (12, 2, 0.1, 0.5, True), (25, 1, 0.4, 0.0, False)])
def test_bootstrap_detection_matches_a_loop_over_resamples(n, C, rate, k, ties):
    rng = np.random.default_rng(n)
    S = rng.normal(size=(n, C))
    if ties:  # Vote-like scores: many exact ties, broken by training index
        S = np.round(S * 1.5)
    noisy = rng.random(n) < rate
    noisy[0] = True
    S[noisy, 0] -= 1.0  # column 0 detects noise somewhat
    B = 60
    got = bootstrap_detection(S, noisy, B=B, seed=7, k=k)
    want = _reference(S, noisy, B, seed=7, k=k)
    for name in ("ndr", "auc_ndr", "roc_auc"):
        assert got[name].shape == (B, C)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # blocks of resamples give the same replicates as one block
    small = bootstrap_detection(S, noisy, B=B, seed=7, k=k, max_cells=3 * n)
    for name in got:
        np.testing.assert_allclose(small[name], got[name], rtol=1e-12, atol=1e-12)


def test_bootstrap_detection_single_column_single_class_and_errors():
    s = np.linspace(0, 1, 20)
    clean = np.zeros(20, bool)
    reps = bootstrap_detection(s, clean, B=10, seed=0)
    assert reps["ndr"].shape == (10, 1) and np.isnan(reps["ndr"]).all() and np.isnan(reps["roc_auc"]).all()
    lo, hi = percentile_interval(reps["ndr"])
    assert np.isnan(lo).all() and np.isnan(hi).all()
    with pytest.raises(LayerinfError):
        bootstrap_detection(s, clean[:5])
    with pytest.raises(LayerinfError):
        bootstrap_detection(np.full(20, np.nan), clean)


def test_bootstrap_interval_covers_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(3)
    n = 400
    noisy = rng.random(n) < 0.2
    s = rng.normal(size=n) - 1.2 * noisy
    a = bootstrap_detection(s, noisy, B=300, seed=11)
    b = bootstrap_detection(s, noisy, B=300, seed=11)
    np.testing.assert_array_equal(a["ndr"], b["ndr"])
    for name, point in (("ndr", metrics.ndr_at(s, noisy, 0.3)), ("auc_ndr", metrics.auc_ndr(s, noisy)),
                        ("roc_auc", metrics.roc_auc(s, noisy))):
        lo, hi = percentile_interval(a[name][:, 0])
        assert lo < point < hi and hi - lo < 0.25, name
        q = np.percentile(a[name][:, 0], [2.5, 97.5])
        assert (lo, hi) == pytest.approx(tuple(q))


def test_t_interval():
    v = np.array([0.81, 0.83, 0.79, 0.84, np.nan])
    mean, half, n = t_interval(v)
    ok = v[np.isfinite(v)]
    lo, hi = stats.t.interval(0.95, len(ok) - 1, loc=ok.mean(), scale=stats.sem(ok))
    assert n == 4 and mean == pytest.approx(ok.mean()) and half == pytest.approx((hi - lo) / 2)
    one = t_interval([0.5])
    assert one[0] == 0.5 and np.isnan(one[1]) and one[2] == 1  # one measurement: no interval
    assert t_interval([])[2] == 0


# ------------------------------------------------------------------ the report's use: repeats, collapse, bootstrap


def _repeat_rows() -> "pd.DataFrame":
    import pandas as pd

    rows = []
    accs = {("tracin", "CL", "mean"): [0.80, 0.82, 0.84], ("datainf", "02-03", "vote"): [0.86, 0.50, 0.88],
            ("none", "-", "-"): [0.50, 0.50, 0.50], ("random", "-", "-"): [0.78, 0.79, 0.77]}
    for (m, g, a), values in accs.items():
        for r, acc in enumerate(values):
            rows.append({"model": "minilm", "task": "demo", "seed": 0, "method": m, "group": g, "aggregator": a,
                         "kind": "baseline" if g == "-" else "influence", "ndr_30": 0.4, "auc_ndr": 0.6,
                         "roc_auc": 0.6, "cancellation": np.nan, "removed": 10, "best_accuracy": acc,
                         "accuracy_at_best_epoch": acc - 0.01, "repeat": r, "train_seed": r,
                         "majority": 0.5, "collapsed": acc <= 0.5})
    return pd.DataFrame(rows)


def test_average_repeats_policy_and_configuration_table():
    from layerinf.reporting import summary
    from layerinf.reporting.uncertainty import average_repeats

    res = _repeat_rows()
    per = average_repeats(res).set_index(["method", "group", "aggregator"])
    assert len(per) == 4 and set(per["repeats"]) == {3} and "repeat" not in per.columns
    tr = per.loc[("tracin", "CL", "mean")]
    mean, half, n = t_interval([0.80, 0.82, 0.84])
    assert tr["best_accuracy"] == pytest.approx(mean) and tr["best_accuracy_ci95"] == pytest.approx(half)
    di = per.loc[("datainf", "02-03", "vote")]  # one collapsed repeat, the others learned: excluded
    assert di["repeats_used"] == 2 and di["collapsed"] == 1 and di["collapsed_used"] == 0
    assert di["best_accuracy"] == pytest.approx(0.87)
    no = per.loc[("none", "-", "-")]  # every repeat collapsed: kept, flagged
    assert no["repeats_used"] == 3 and no["collapsed"] == 3 and no["collapsed_used"] == 3
    assert average_repeats(average_repeats(res)).equals(average_repeats(res))

    conf = summary.tables(res)["configurations"].set_index(["method", "group", "aggregator"])
    assert conf.loc[("datainf", "02-03", "vote"), "best_accuracy_mean"] == pytest.approx(0.87)
    assert conf.loc[("datainf", "02-03", "vote"), "win_rate"] == 1.0  # means decide, not single repeats
    assert conf.loc[("tracin", "CL", "mean"), "best_accuracy_ci95"] == pytest.approx(half)
    assert set(conf["retrainings"]) == {3} and conf.loc[("none", "-", "-"), "collapsed_included"] == 3
    notes = " ".join(summary.tables(res)["configurations"].attrs["notes"])
    assert "t-interval" in notes and "4 of 12 retraining(s) collapsed" in notes
    from layerinf.reporting.formatting import display

    shown = display("configurations", summary.tables(res)["configurations"])
    assert any("⚠ 3 collapsed (included)" in v for v in shown["best accuracy"])
    assert any("⚠ 1 collapsed (excluded)" in v for v in shown["best accuracy"])


def test_detection_ci_and_collapse_flags_read_the_run(tmp_path):
    import pandas as pd

    from layerinf.reporting.uncertainty import detection_ci, flag_collapsed
    from layerinf.store.layout import AGGREGATED_FILE, SCORES, RunLayout

    lay = RunLayout(tmp_path)
    rng = np.random.default_rng(0)
    n = 120
    noisy = rng.random(n) < 0.2
    good = rng.normal(size=n) - 2 * noisy
    (tmp_path / SCORES).mkdir()
    pd.DataFrame({"idx": np.arange(n), "tracin/CL/mean": good, "loss/-/-": rng.normal(size=n)}).to_parquet(
        lay.stage(SCORES) / AGGREGATED_FILE)
    lay.split("train").parent.mkdir()
    pd.DataFrame({"noisy": noisy, "label": np.zeros(n, int)}).to_parquet(lay.split("train"))
    pd.DataFrame({"label": [0, 0, 0, 1]}).to_parquet(lay.split("test"))
    ci = detection_ci([tmp_path], B=200, seed=1).set_index(["method", "group", "aggregator"])
    assert {("tracin", "CL", "mean"), ("loss", "-", "-"), ("random", "-", "-"), ("oracle", "-", "-")} == set(ci.index)
    reps = bootstrap_detection(good, noisy, B=200, seed=1)
    lo, hi = percentile_interval(reps["ndr"][:, 0])
    row = ci.loc[("tracin", "CL", "mean")]
    assert row["ndr_30_lo"] == pytest.approx(lo) and row["ndr_30_hi"] == pytest.approx(hi)
    assert ci.loc[("oracle", "-", "-"), "ndr_30_hi"] == 1.0 and ci.loc[("oracle", "-", "-"), "ndr_30_lo"] > 0.8
    res = _repeat_rows().drop(columns=["majority", "collapsed"])
    flagged = flag_collapsed(res, tmp_path)
    assert set(flagged["majority"]) == {0.75}
    np.testing.assert_array_equal(flagged["collapsed"], res["best_accuracy"] <= 0.75)
    assert not flag_collapsed(res, tmp_path / "nowhere")["collapsed"].any()
    assert detection_ci([tmp_path / "nowhere"]).empty
