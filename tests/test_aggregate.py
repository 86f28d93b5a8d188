"""Aggregators (spec §4–§5): worked examples E3/E3b, edge cases, and loop references on random inputs."""

import numpy as np
import pytest
import torch

from layerinf.influence import aggregate as A
from layerinf.influence import registry as R
from layerinf.errors import LayerinfError
from layerinf.evaluation.metrics import filter_order, removal_count

ATOL = 1e-6

# E3: two modules, three validation samples (rows), five training samples (columns)
E3_MODULES = [
    np.array([[0.9, -0.2, 0.1, -1.5, 0.4], [5, 4, -3, 2, 1], [0.3, 0.3, -0.4, 0.0, 0.8]]),
    np.array([[10, -50, 2, 1, 3], [-1, -2, -3, -4, -5], [0.5, -0.1, 0.2, -0.3, 0.6]]),
]
E3_CORRECT = np.array([True, False, True])
# E3b: three voter columns over four training samples (one module, three validation rows)
E3B = np.array([[0, 0.1, 0.5, 0.9], [-1, 0, 1, 2], [5, -2, 1, 3]])


# ------------------------------------------------------------------------------------------- slow references


def ref_ranks(col, tie):
    """0-based ranks of one voter column, by loops."""
    n = len(col)
    out = np.zeros(n)
    for k in range(n):
        less = sum(col[q] < col[k] for q in range(n))
        equal = sum(col[q] == col[k] for q in range(n))
        if tie == "min":
            out[k] = less
        elif tie == "average":
            out[k] = less + (equal - 1) / 2
        else:  # ordinal: ties by index
            out[k] = less + sum(col[q] == col[k] for q in range(k))
    return out


def ref_voter_columns(modules, rows):
    return [S[j] for S in modules for j in rows]


def ref_rank(modules, rows, tie):
    cols = ref_voter_columns(modules, rows)
    return sum(ref_ranks(c, tie) for c in cols) / len(cols)


def ref_vote(modules, rows, kappa, tie):
    cols = ref_voter_columns(modules, rows)
    n = len(cols[0])
    K = int(np.floor(kappa * n + 1e-9))
    total = np.zeros(n)
    for c in cols:
        r = ref_ranks(c, tie)
        for k in range(n):
            total[k] += max(K - r[k], 0)
    return -total


def random_modules(seed, B=3, m=5, n=17, ties=True):
    rng = np.random.RandomState(seed)
    if ties:  # small integers → plenty of ties
        return [rng.randint(-3, 4, size=(m, n)).astype(np.float64) for _ in range(B)]
    return [rng.randn(m, n) for _ in range(B)]


# ---------------------------------------------------------------------------------------------- worked examples


def test_e3_mean():
    np.testing.assert_allclose(A.mean(E3_MODULES), [2.616667, -8.0, -0.683333, -0.466667, 0.133333], atol=ATOL)
    np.testing.assert_allclose(A.mean(E3_MODULES, E3_CORRECT, use_correct=True), [2.925, -12.5, 0.475, -0.2, 1.2],
                               atol=ATOL)
    # the paper's default: Mean over ALL validation samples even when a mask is given
    np.testing.assert_allclose(A.mean(E3_MODULES, E3_CORRECT), A.mean(E3_MODULES), atol=0)


def test_e3_voter_ranks():
    voters = [E3_MODULES[0][0], E3_MODULES[0][2], E3_MODULES[1][0], E3_MODULES[1][2]]
    expected = [[4, 1, 2, 0, 3], [2, 2, 0, 1, 4], [4, 0, 2, 1, 3], [3, 1, 2, 0, 4]]
    np.testing.assert_array_equal(A.rank_rows(np.array(voters)), expected)
    np.testing.assert_allclose(A.rank_rows(E3_MODULES[0][2], "average"), [2.5, 2.5, 0, 1, 4])


def test_e3_rank_and_vote():
    np.testing.assert_allclose(A.rank(E3_MODULES, E3_CORRECT), [3.25, 1.0, 1.5, 0.5, 3.5], atol=ATOL)
    np.testing.assert_allclose(A.rank(E3_MODULES, E3_CORRECT, tie_method="average"),
                               [3.375, 1.125, 1.5, 0.5, 3.5], atol=ATOL)
    np.testing.assert_allclose(A.vote(E3_MODULES, E3_CORRECT, kappa=0.4), [0, -4, -2, -6, 0], atol=ATOL)
    np.testing.assert_allclose(A.vote(E3_MODULES, E3_CORRECT, kappa=0.4, normalize=True), [0, -1, -0.5, -1.5, 0],
                               atol=ATOL)


def test_e3_removal_sets():
    k = removal_count(0.4, 5)  # the number removed
    assert k == 2
    removed = {
        "mean": set(filter_order(R.aggregate("mean", E3_MODULES, E3_CORRECT))[:k].tolist()),
        "rank": set(filter_order(R.aggregate("rank", E3_MODULES, E3_CORRECT))[:k].tolist()),
        "vote": set(filter_order(R.aggregate("vote", E3_MODULES, E3_CORRECT, kappa=0.4))[:k].tolist()),
    }
    assert removed == {"mean": {1, 2}, "rank": {1, 3}, "vote": {1, 3}}


def test_e3b_rank_and_vote_diverge():
    rank = A.rank(E3B)
    np.testing.assert_allclose(rank, [1.0, 0.666667, 1.666667, 2.666667], atol=ATOL)
    vote = A.vote(E3B, kappa=0.25)
    np.testing.assert_allclose(vote, [-2, -1, 0, 0], atol=ATOL)
    assert filter_order(rank)[0] == 1
    assert filter_order(vote)[0] == 0


# ------------------------------------------------------------------------------------------------ edge cases


def test_empty_correct_set_falls_back_to_all_with_warning():
    none_correct = np.zeros(3, dtype=bool)
    with pytest.warns(RuntimeWarning, match="no validation sample"):
        s = A.rank(E3_MODULES, none_correct)
    np.testing.assert_allclose(s, A.rank(E3_MODULES, use_correct=False), atol=0)
    with pytest.warns(RuntimeWarning):
        A.mean(E3_MODULES, none_correct, use_correct=True)


def test_vote_k_zero_gives_zeros_and_warns():
    with pytest.warns(RuntimeWarning, match="K"):
        s = A.vote(E3_MODULES, kappa=0.1)  # ⌊0.1·5⌋ = 0
    assert np.all(s == 0) and not np.any(np.signbit(s))


def test_vote_kappa_float_guard():
    cols = np.tile(np.arange(100, dtype=np.float64), (2, 1))
    s = A.vote(cols, kappa=0.29)  # K must be 29, not 28
    assert s[0] == -2 * 29 and s[28] == -2 and s[29] == 0


def test_non_finite_scores_raise():
    bad = [E3_MODULES[0].copy()]
    bad[0][1, 2] = np.nan
    for name in A.AGGREGATORS:
        with pytest.raises(LayerinfError, match="NaN"):
            R.aggregate(name, bad, use_correct=False)
    bad[0][1, 2] = np.inf
    with pytest.raises(LayerinfError):
        A.mean(bad)


def test_input_errors():
    with pytest.raises(LayerinfError):
        R.aggregate("median", E3_MODULES)
    with pytest.raises(LayerinfError):
        A.rank(E3_MODULES, tie_method="dense")
    with pytest.raises(LayerinfError):
        A.mean([E3_MODULES[0], E3_MODULES[1][:, :4]])  # n mismatch
    with pytest.raises(LayerinfError):
        A.rank(E3_MODULES, use_correct=True)  # no mask
    with pytest.raises(LayerinfError):
        A.rank(E3_MODULES, np.array([True, False]), use_correct=True)  # wrong mask length
    with pytest.raises(LayerinfError):
        A.mean([])


# ----------------------------------------------------------------------------------- properties vs references


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tie", ["min", "average", "ordinal"])
def test_rank_matches_loop_reference(seed, tie):
    mods = random_modules(seed)
    correct = np.random.RandomState(seed + 100).rand(5) < 0.6
    rows = np.flatnonzero(correct) if correct.any() else np.arange(5)
    got = A.rank(mods, correct, use_correct=True, tie_method=tie) if correct.any() else \
        A.rank(mods, use_correct=False, tie_method=tie)
    np.testing.assert_allclose(got, ref_rank(mods, rows, tie), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kappa", [0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("tie", ["min", "average", "ordinal"])
def test_vote_matches_loop_reference(seed, kappa, tie):
    mods = random_modules(seed)
    got = A.vote(mods, kappa=kappa, tie_method=tie, use_correct=False)
    np.testing.assert_allclose(got, ref_vote(mods, range(5), kappa, tie), atol=1e-12)


@pytest.mark.parametrize("seed", [5, 6])
def test_mean_matches_loop_reference(seed):
    mods = random_modules(seed, ties=False)
    cols = ref_voter_columns(mods, [0, 2, 3])
    ref = np.array([np.mean([c[k] for c in cols]) for k in range(17)])
    got = A.mean(mods, np.array([1, 0, 1, 1, 0], dtype=bool), use_correct=True)
    np.testing.assert_allclose(got, ref, atol=1e-12)


@pytest.mark.parametrize("seed", [7, 8])
def test_vote_with_k_at_least_n_is_rank_equivalent(seed):
    mods = random_modules(seed)
    n, P = 17, 3 * 5
    for kappa in (1.0, 1.5):
        K = int(np.floor(kappa * n + 1e-9))
        v = A.vote(mods, kappa=kappa, use_correct=False)
        r = A.rank(mods, use_correct=False)
        np.testing.assert_allclose(v, P * (r - K), atol=1e-9)
        np.testing.assert_array_equal(filter_order(v), filter_order(r))
    # …and with a small K it generally is not
    assert not np.allclose(A.vote(mods, kappa=0.2, use_correct=False) / P + 3,
                           A.rank(mods, use_correct=False))


def test_layouts_list_tensor_generator_T_agree():
    mods = random_modules(9, ties=False)
    T = np.stack(mods, axis=0).transpose(2, 0, 1)  # T[n, B, m]
    correct = np.array([1, 1, 0, 1, 0], dtype=bool)
    for name in A.AGGREGATORS:
        ref = R.aggregate(name, mods, correct, use_correct=True)
        np.testing.assert_allclose(R.aggregate(name, T, correct, use_correct=True), ref, atol=1e-12)
        np.testing.assert_allclose(R.aggregate(name, (S for S in mods), correct, use_correct=True), ref, atol=1e-12)
        np.testing.assert_allclose(R.aggregate(name, [torch.from_numpy(S) for S in mods], correct,
                                               use_correct=True), ref, atol=1e-12)


def test_row_blocking_does_not_change_results(monkeypatch):
    mods = random_modules(10, m=9)
    ref = {name: R.aggregate(name, mods, use_correct=False) for name in A.AGGREGATORS}
    monkeypatch.setattr(A, "_ROW_BLOCK", 2)
    for name in A.AGGREGATORS:
        got = R.aggregate(name, mods, use_correct=False)
        np.testing.assert_allclose(got, ref[name], atol=1e-12)


def test_rank_ignores_score_scale_but_mean_does_not():
    """Score dominance (spec §3.3): scaling one module by 1e6 flips Mean, leaves Rank unchanged."""
    mods = random_modules(11, ties=False)
    scaled = [mods[0] * 1e6] + mods[1:]
    np.testing.assert_allclose(A.rank(scaled, use_correct=False), A.rank(mods, use_correct=False), atol=0)
    assert not np.array_equal(filter_order(A.mean(scaled)), filter_order(A.mean(mods)))


# ------------------------------------------------------------------------------------------------- registry


def test_aggregator_registry_holds_mean_rank_vote_with_the_paper_defaults():
    assert list(R.AGGREGATORS) == ["mean", "rank", "vote"]
    assert [s.title for s in R.AGGREGATORS.values()] == ["Mean", "Rank", "Vote"]
    assert [s.fn for s in R.AGGREGATORS.values()] == [A.mean, A.rank, A.vote]
    assert [s.default_use_correct for s in R.AGGREGATORS.values()] == [False, True, True]
    assert R.aggregator("Vote") is R.AGGREGATORS["vote"]
    with pytest.raises(LayerinfError) as err:
        R.aggregate("mena", E3_MODULES)
    assert err.value.problem == "unknown aggregator 'mena'" and "did you mean 'mean'" in err.value.fix


@pytest.mark.parametrize("name", ["mean", "rank", "vote"])
@pytest.mark.parametrize("use_correct", [None, True, False])
def test_aggregate_dispatch_equals_the_direct_call(name, use_correct):
    direct = {"mean": lambda **k: A.mean(E3_MODULES, E3_CORRECT, **k),
              "rank": lambda **k: A.rank(E3_MODULES, E3_CORRECT, tie_method="average", **k),
              "vote": lambda **k: A.vote(E3_MODULES, E3_CORRECT, kappa=0.4, tie_method="average", **k)}[name]
    got = R.aggregate(name, E3_MODULES, E3_CORRECT, use_correct, kappa=0.4, tie_method="average")
    np.testing.assert_array_equal(got, direct(use_correct=use_correct))


def test_a_registered_aggregator_works_end_to_end():
    def worst(scores, correct=None, use_correct=None):
        """The lowest voter score of each training sample."""
        return np.min([np.asarray(b) for b in A._voter_blocks(scores, correct, use_correct, "worst")], axis=(0, 1))

    R.register_aggregator(R.AggregatorSpec("worst", "Worst", "minimum over voters", worst, True))
    try:
        got = R.aggregate("worst", E3_MODULES, E3_CORRECT, kappa=0.9, tie_method="average")
        voters = np.vstack([S[E3_CORRECT] for S in E3_MODULES])  # default_use_correct=True: correct rows only
        np.testing.assert_array_equal(got, voters.min(axis=0))
        np.testing.assert_array_equal(R.aggregate("worst", E3_MODULES, E3_CORRECT, use_correct=False),
                                      np.vstack(E3_MODULES).min(axis=0))
        np.testing.assert_array_equal(A.select_validation(E3_CORRECT, 3, None, "worst"), [0, 2])
    finally:
        R.AGGREGATORS.pop("worst", None)
