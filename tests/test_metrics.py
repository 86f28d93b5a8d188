"""Metrics (spec §6–§7): worked examples E4–E7, edge cases, and loop references on random inputs."""

import math

import numpy as np
import pytest

from layerinf.evaluation import metrics as M
from layerinf.errors import LayerinfError

ATOL = 1e-6

E4_S = np.array([0.5, -1.2, 0.3, 0.9, -0.7, 0.1, 1.5, 0.05, -0.2, 0.8])
E4_NOISY = np.zeros(10, dtype=bool)
E4_NOISY[[1, 4, 7]] = True
E5_ACC = np.array([[0.80, 0.75, 0.90, 0.60], [0.78, 0.75, 0.92, 0.55], [0.70, 0.70, 0.85, 0.65]])


# ------------------------------------------------------------------------------------------- slow references


def ref_order(s):
    """Ascending by score, ties by index — by an explicit comparison sort on (score, index) pairs."""
    return [k for _, k in sorted((float(v), k) for k, v in enumerate(s))]


def ref_ndr(s, noisy, k):
    n = len(s)
    K = int(math.floor(k * n + 1e-9))
    N = sum(bool(x) for x in noisy)
    if N == 0:
        return float("nan")
    return sum(bool(noisy[i]) for i in ref_order(s)[:K]) / N


def ref_auc_ndr(s, noisy):
    order = ref_order(s)
    N = sum(bool(x) for x in noisy)
    hits, area, best = 0, 0.0, 0.0
    for t, i in enumerate(order, start=1):
        hits += bool(noisy[i])
        area += hits / N
        best += min(t, N) / N
    return area / best


def ref_roc(s, noisy):
    """P(a noisy sample comes before a clean one in the stable order), by pairs."""
    pos = {i: p for p, i in enumerate(ref_order(s))}
    noisy_idx = [i for i in range(len(s)) if noisy[i]]
    clean_idx = [i for i in range(len(s)) if not noisy[i]]
    wins = sum(pos[a] < pos[b] for a in noisy_idx for b in clean_idx)
    return wins / (len(noisy_idx) * len(clean_idx))


# ---------------------------------------------------------------------------------------------------- E4 (NDR)


def test_e4_order_curve_and_ndr():
    np.testing.assert_array_equal(M.filter_order(E4_S), [1, 4, 8, 7, 5, 2, 0, 9, 3, 6])
    np.testing.assert_allclose(M.ndr_curve(E4_S, E4_NOISY), [1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1, 1, 1, 1], atol=ATOL)
    assert M.ndr_at(E4_S, E4_NOISY, 0.30) == pytest.approx(0.666667, abs=ATOL)
    assert M.ndr_at(E4_S, E4_NOISY, 0.30, compat=True) == pytest.approx(1.0, abs=ATOL)
    assert M.precision_at(E4_S, E4_NOISY, 0.30) == pytest.approx(0.666667, abs=ATOL)
    assert M.max_ndr(E4_NOISY, 0.30) == pytest.approx(1.0)
    assert M.max_ndr(E4_NOISY, 0.20) == pytest.approx(2 / 3)


def test_e4_auc_ndr_and_roc_identity():
    auc = M.auc_ndr(E4_S, E4_NOISY)
    assert auc == pytest.approx(0.962963, abs=ATOL)
    assert M.auc_ndr(E4_S, E4_NOISY, compat=True) == pytest.approx(1.019608, abs=ATOL)
    roc = M.roc_auc(E4_S, E4_NOISY)
    assert roc == pytest.approx(20 / 21, abs=ATOL)
    n, N = 10, 3
    assert (roc * (n - N) + (N + 1) / 2) / ((n - N) + (N + 1) / 2) == pytest.approx(auc, abs=ATOL)


def test_ndr_levels_are_the_papers():
    assert [round(100 * k) for k in M.NDR_LEVELS] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90]
    levels = M.ndr_levels(E4_S, E4_NOISY)
    assert levels[0.3] == pytest.approx(2 / 3) and levels[0.1] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------- NDR edge cases


def test_removal_count_float_guard():
    assert 0.29 * 100 < 29  # the float problem the guard exists for
    assert M.removal_count(0.29, 100) == 29
    assert M.removal_count(0.3, 4500) == 1350
    assert M.removal_count(0.0, 10) == 0 and M.removal_count(1.0, 10) == 10
    with pytest.raises(LayerinfError):
        M.removal_count(1.5, 10)


def test_no_noisy_samples_gives_nan():
    clean = np.zeros(10, dtype=bool)
    assert math.isnan(M.ndr_at(E4_S, clean, 0.3))
    assert math.isnan(M.auc_ndr(E4_S, clean))
    assert np.all(np.isnan(M.ndr_curve(E4_S, clean)))
    assert math.isnan(M.max_ndr(clean, 0.3))
    with pytest.warns(RuntimeWarning):
        assert math.isnan(M.roc_auc(E4_S, clean))


def test_k_zero_gives_zero_ndr():
    assert M.ndr_at(E4_S, E4_NOISY, 0.05) == 0.0  # ⌊0.05·10⌋ = 0
    assert math.isnan(M.precision_at(E4_S, E4_NOISY, 0.05))


def test_stable_tie_break_by_index():
    s = np.array([1.0, 0.0, 1.0, 0.0, 0.0, -1.0])
    np.testing.assert_array_equal(M.filter_order(s), [5, 1, 3, 4, 0, 2])
    noisy = np.array([0, 0, 0, 0, 1, 0], dtype=bool)
    assert M.ndr_at(s, noisy, 0.5) == 0.0  # cut after {5, 1, 3}: sample 4 is tied but comes later
    assert M.ndr_at(s, noisy, 0.5, ties="expected") == pytest.approx(2 / 3)  # 2 of the 3 tied slots


def test_non_finite_scores_raise():
    with pytest.raises(LayerinfError):
        M.filter_order([0.1, np.nan])
    with pytest.raises(LayerinfError):
        M.ndr_at([0.1, np.inf], [1, 0], 0.5)
    with pytest.raises(LayerinfError):
        M.ndr_at([0.1, 0.2], [1, 0, 0], 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_ndr_auc_roc_match_loop_references(seed):
    rng = np.random.RandomState(seed)
    n = 37
    s = rng.randint(-4, 5, size=n).astype(float) if seed % 2 else rng.randn(n)  # odd seeds: many ties
    noisy = rng.rand(n) < 0.25
    noisy[0] = True
    for k in M.NDR_LEVELS:
        assert M.ndr_at(s, noisy, k) == pytest.approx(ref_ndr(s, noisy, k), abs=1e-12)
    np.testing.assert_array_equal(M.filter_order(s), ref_order(s))
    assert M.auc_ndr(s, noisy) == pytest.approx(ref_auc_ndr(s, noisy), abs=1e-12)
    roc = M.roc_auc(s, noisy)
    assert roc == pytest.approx(ref_roc(s, noisy), abs=1e-12)
    N = int(noisy.sum())
    # AUC-NDR is affine in ROC-AUC (exact on the stable order, ties or not)
    assert M.auc_ndr(s, noisy) == pytest.approx((roc * (n - N) + (N + 1) / 2) / ((n - N) + (N + 1) / 2), abs=1e-12)


def test_roc_expected_ties_gives_half_credit():
    s = np.array([0.0, 0.0, 1.0])
    noisy = np.array([False, True, False])
    assert M.roc_auc(s, noisy) == pytest.approx(0.5)  # stable order puts the clean 0 first
    assert M.roc_auc(s, noisy, ties="expected") == pytest.approx(0.75)


def test_random_and_oracle_baselines():
    r = M.random_scores(1000, seed=3)
    assert r.shape == (1000,) and r.min() >= 0 and r.max() < 1
    np.testing.assert_array_equal(r, M.random_scores(1000, seed=3))
    assert not np.array_equal(r, M.random_scores(1000, seed=4))
    noisy = np.zeros(1000, dtype=bool)
    noisy[::5] = True
    o = M.oracle_scores(noisy, seed=0)
    assert np.all(o[noisy] == -1) and np.all(o[~noisy] >= 0)
    assert M.ndr_at(o, noisy, 0.2) == 1.0 and M.auc_ndr(o, noisy) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ E7 cancellation

E7 = np.array([[1.0, 2.0], [-1.0, 1.0], [0.5, -2.5]])
E7_B = np.array([[0.2], [0.3], [-0.1]])


def test_e7_cancellation_values():
    assert M.Cancellation("l1").update(E7).value == pytest.approx(8.0, abs=ATOL)
    assert M.Cancellation("l2").update(E7).value == pytest.approx(8.767829, abs=ATOL)
    assert M.Cancellation("l1_l2").update(E7).value == pytest.approx(11.313708, abs=ATOL)
    st = M.Cancellation().update(E7).param_stats()
    assert (st["min"], st["max"], st["median"], st["count"]) == (pytest.approx(5), pytest.approx(11), pytest.approx(8), 2)
    group = M.Cancellation.combine([M.Cancellation().update(E7), M.Cancellation().update(E7_B)])
    assert group.value == pytest.approx(6.142857, abs=ATOL)


def test_cancellation_streaming_and_group_l2_equal_concatenated():
    rng = np.random.RandomState(0)
    Ga, Gb = rng.randn(20, 4), rng.randn(20, 3)
    for norm in M.Cancellation.NORMS:
        whole = M.Cancellation(norm).update(np.hstack([Ga, Gb])).value
        a, b = M.Cancellation(norm), M.Cancellation(norm)
        for lo, hi in [(0, 1), (1, 8), (8, 20)]:
            a.update(Ga[lo:hi])
            b.update(Gb[lo:hi])
        assert M.Cancellation.combine([a, b]).value == pytest.approx(whole, rel=1e-12)
    ref_l2 = np.linalg.norm(np.hstack([Ga, Gb]), axis=1).sum() / np.linalg.norm(np.hstack([Ga, Gb]).sum(0))
    assert M.Cancellation.combine([M.Cancellation("l2").update(Ga), M.Cancellation("l2").update(Gb)]).value == \
        pytest.approx(ref_l2, rel=1e-12)


def test_cancellation_param_stats_skip_zero_and_allow_inf():
    G = np.array([[1.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # p0: Σg = 0 → ∞; p1: all zero → skipped
    st = M.Cancellation().update(G).param_stats()
    assert st["count"] == 2 and st["max"] == math.inf and st["min"] == pytest.approx(1.0)
    assert M.Cancellation().update(np.array([[1.0], [-1.0]])).value == math.inf


def test_cancellation_row_sparse_equals_dense_scatter():
    rng = np.random.RandomState(1)
    vocab, h = 9, 3
    indptr, tokens, rows, dense = [0], [], [], np.zeros((12, vocab * h))
    for i in range(12):
        toks = np.sort(rng.choice(vocab, size=rng.randint(0, 5), replace=True))
        r = rng.randn(len(toks), h)
        for t, row in zip(toks, r):
            dense[i, t * h : (t + 1) * h] += row
        tokens += toks.tolist()
        rows.append(r)
        indptr.append(indptr[-1] + len(toks))
    rows = np.concatenate(rows)
    for norm in M.Cancellation.NORMS:
        ref = M.Cancellation(norm).update(dense)
        sp = M.Cancellation(norm)
        cut = indptr[5]
        sp.update_row_sparse(np.array(indptr[:6]), np.array(tokens[:cut]), rows[:cut])
        sp.update_row_sparse(np.array(indptr[5:]) - cut, np.array(tokens[cut:]), rows[cut:])
        assert sp.value == pytest.approx(ref.value, rel=1e-12)
        assert sp.param_stats() == pytest.approx(ref.param_stats())


# ---------------------------------------------------------------------------------------- E5 win rate / Pareto


def test_e5_win_rates():
    wr, F, wstd = M.win_rate(E5_ACC)
    np.testing.assert_allclose(F, [[0, 0.5, 0.75], [0.25, 0, 0.75], [0.25, 0.25, 0]], atol=ATOL)
    np.testing.assert_allclose(wr, [0.625, 0.5, 0.25], atol=ATOL)
    np.testing.assert_allclose(M.win_rate(E5_ACC, include_self=True)[0], [0.416667, 0.333333, 0.166667], atol=ATOL)
    np.testing.assert_allclose(M.win_rate(E5_ACC, ties=0.5)[0], [0.6875, 0.5625, 0.25], atol=ATOL)
    np.testing.assert_allclose(wstd, np.std(F, axis=1, ddof=1), atol=1e-12)


def test_e5_pareto_ranks():
    F = M.win_rate(E5_ACC)[1]
    np.testing.assert_array_equal(M.pareto_ranks(F, 0.75), [1, 1, 1])
    np.testing.assert_array_equal(M.pareto_ranks(F, 0.5), [1, 1, 2])
    np.testing.assert_array_equal(M.pareto_ranks(F, 0.4), [1, 2, 3])


def ref_pareto(F, tau):
    C = len(F)
    D = [[F[a][b] if (F[a][b] > tau and a != b) else 0.0 for b in range(C)] for a in range(C)]
    ranks, left, front = [0] * C, set(range(C)), 0
    while left:
        front += 1
        cur = {c for c in left
               if not any(all(D[o][q] >= D[c][q] for q in range(C)) and any(D[o][q] > D[c][q] for q in range(C))
                          for o in left if o != c)}
        for c in cur:
            ranks[c] = front
        left -= cur
    return ranks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_win_rate_and_pareto_match_loops(seed):
    rng = np.random.RandomState(seed)
    acc = np.round(rng.rand(6, 9), 1)  # rounding makes ties
    wr, F, _ = M.win_rate(acc, ties=0.5)
    for a in range(6):
        for b in range(6):
            if a != b:
                ref = np.mean([1.0 if acc[a, r] > acc[b, r] else 0.5 if acc[a, r] == acc[b, r] else 0.0
                               for r in range(9)])
                assert F[a, b] == pytest.approx(ref)
    np.testing.assert_allclose(wr, [sum(F[a]) / 5 for a in range(6)])
    for tau in (0.3, 0.5, 0.6):
        np.testing.assert_array_equal(M.pareto_ranks(F, tau), ref_pareto(F.tolist(), tau))


def test_win_rate_rejects_missing_values():
    acc = E5_ACC.copy()
    acc[0, 0] = np.nan
    with pytest.raises(LayerinfError):
        M.win_rate(acc)


# ------------------------------------------------------------------------------------------ E6 and statistics


def test_e6_spearman():
    rho, p = M.spearman([0.81, 0.79, 0.85, 0.80, 0.83], [0.55, 0.40, 0.70, 0.40, 0.60])
    assert rho == pytest.approx(0.974679, abs=ATOL)
    assert p == pytest.approx(0.004818, abs=ATOL)


def test_spearman_constant_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="constant"):
        rho, p = M.spearman([1, 2, 3], [5, 5, 5])
    assert math.isnan(rho) and math.isnan(p)


def test_wilcoxon_paired():
    from scipy.stats import wilcoxon

    a = np.array([0.81, 0.79, 0.85, 0.80, 0.83, 0.77, 0.9])
    b = a + np.array([0.01, 0.02, -0.005, 0.03, 0.015, 0.04, 0.025])
    stat, p = M.wilcoxon_paired(a, b)
    ref = wilcoxon(a, b)
    assert (stat, p) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    with pytest.warns(RuntimeWarning):
        assert math.isnan(M.wilcoxon_paired(a, a)[1])


def test_friedman_and_nemenyi():
    from scipy.stats import friedmanchisquare

    rng = np.random.RandomState(0)
    acc = rng.rand(4, 10) + np.array([[0.3], [0.2], [0.0], [0.0]])
    out = M.friedman(acc)
    ref = friedmanchisquare(*acc)
    assert out["statistic"] == pytest.approx(ref.statistic) and out["pvalue"] == pytest.approx(ref.pvalue)
    # Demšar (2006) Table 5: q_0.05 = 2.569 for k = 4 → CD = 2.569 √(4·5 / (6·10))
    assert out["cd"] == pytest.approx(2.569 * math.sqrt(20 / 60), abs=2e-3)
    assert out["avg_ranks"].sum() == pytest.approx(4 * 5 / 2)
    P = out["nemenyi_p"]
    np.testing.assert_allclose(P, P.T)
    # the pair with the larger average-rank gap gets the smaller p-value
    gaps = np.abs(out["avg_ranks"][:, None] - out["avg_ranks"][None, :])
    iu = np.triu_indices(4, 1)
    assert np.all(np.diff(P[iu][np.argsort(gaps[iu])]) <= 1e-12)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(M.friedman(acc[:2])["pvalue"])


# -------------------------------------------------------------------------------------- §7.5 noise ranks


def test_noise_rank_single_module_and_by_layer():
    S = np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0], [0.0, 2.0, 1.0, 3.0]])
    noisy = np.array([True, False, False, True])
    st = M.noise_rank(S, noisy, normalize=False)
    # ranks per row: [0,1,2,3], [3,2,1,0], [0,2,1,3] → means [1, 5/3, 4/3, 2]
    np.testing.assert_allclose(st["mean_ranks"], [1, 5 / 3, 4 / 3, 2])
    assert st["noisy_mean_rank"] == pytest.approx(1.5) and st["clean_mean_rank"] == pytest.approx(1.5)
    assert st["top1_noisy_rank"] == pytest.approx(1.0) and st["top1_clean_rank"] == pytest.approx(4 / 3)
    assert M.noise_rank(S, noisy)["noisy_mean_rank"] == pytest.approx(0.5)  # normalised by n − 1 = 3
    S2 = -S
    out = M.noise_rank_by_layer({"L00.q": S, "L00.v": S2, "CL": S}, {"L00.q": 1, "L00.v": 1, "CL": 2}, noisy,
                                normalize=False)
    assert set(out["modules"]) == {"L00.q", "L00.v", "CL"}
    # layer 1 averages the two modules' per-sample mean ranks: S and −S give exactly (n − 1)/2 everywhere
    assert out["layers"][1]["noisy_mean_rank"] == pytest.approx(1.5)
    assert out["layers"][1]["top1_clean_rank"] == pytest.approx(1.5)
    assert out["layers"][2]["top1_noisy_rank"] == pytest.approx(1.0) and out["layers"][1]["modules"] == 2


def test_metrics_reexports_detection_and_statistics():
    from layerinf.evaluation import detection, statistics

    for name in M.__all__:
        owner = detection if name in detection.__all__ else statistics
        assert getattr(M, name) is getattr(owner, name), name
    assert set(M.__all__) == set(detection.__all__) | set(statistics.__all__)
    assert M.GroupCancellation is detection.GroupCancellation
