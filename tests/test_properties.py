"""Property tests (Hypothesis): the pure math against slow, obvious loop references on random small inputs."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import roc_auc_score

from layerinf.evaluation import detection as D
from layerinf.influence import methods as M
from layerinf.influence import registry as R

FAST = settings(max_examples=25, deadline=None)


# ------------------------------------------------------------------------------------------------ strategies


def int_matrix(rows, cols, lo=-4, hi=4):
    """Small integer-valued float64 matrices: exact arithmetic, many ties and some all-zero rows."""
    return arrays(np.float64, (rows, cols), elements=st.integers(lo, hi).map(float))


@st.composite
def blocks(draw, tiny_rows=False):
    """(V, G, chunk sizes): V (m × d), G (n × d), G split into chunks; optionally a 1e-14-scaled noise row."""
    m, n, d = draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    V = draw(int_matrix(m, d)) * scale
    G = draw(int_matrix(n, d)) * scale
    if tiny_rows and draw(st.booleans()):
        G[draw(st.integers(0, n - 1))] *= 1e-14
    if tiny_rows and draw(st.booleans()):
        V[draw(st.integers(0, m - 1))] *= 1e-14
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=3))) if n > 1 else []
    return V, G, [b - a for a, b in zip([0, *cuts], [*cuts, n])]


def split(G, sizes):
    out, lo = [], 0
    for s in sizes:
        out.append(G[lo : lo + s])
        lo += s
    return out


def stable_order(s):
    return sorted(range(len(s)), key=lambda i: (s[i], i))


# ------------------------------------------------------------------------------------------- loop references


def ref_tracin(V, G):
    return np.array([[sum(v[i] * g[i] for i in range(len(v))) for g in G] for v in V])


def ref_cosine(V, G):
    """v·g / (‖v‖‖g‖); a row with norm ≤ 1e-10 × its matrix's largest norm counts as zero (cosine 0)."""
    nv = [math.sqrt(sum(x * x for x in v)) for v in V]
    ng = [math.sqrt(sum(x * x for x in g)) for g in G]
    out = np.zeros((len(V), len(G)))
    for j, v in enumerate(V):
        for k, g in enumerate(G):
            if nv[j] > 1e-10 * max(nv) and ng[k] > 1e-10 * max(ng):
                out[j, k] = sum(a * b for a, b in zip(v, g)) / (nv[j] * ng[k])
    return out


def ref_ranks(col, tie):
    n = len(col)
    out = np.zeros(n)
    for k in range(n):
        less = sum(col[i] < col[k] for i in range(n))
        equal = sum(col[i] == col[k] for i in range(n))
        if tie == "min":
            out[k] = less
        elif tie == "average":
            out[k] = less + (equal - 1) / 2
        else:
            out[k] = less + sum(col[i] == col[k] for i in range(k))
    return out


def ref_voters(modules, correct, use_correct):
    rows = [j for j in range(modules[0].shape[0]) if correct[j]] if use_correct else []
    rows = rows or list(range(modules[0].shape[0]))
    return [S[j] for S in modules for j in rows]


# ---------------------------------------------------------------------------------------------------- methods


@FAST
@given(blocks())
def test_tracin_is_v_g_transpose(b):
    V, G, sizes = b
    want = ref_tracin(V, G)
    np.testing.assert_allclose(M.tracin(V, G), want, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(R.score_module("tracin", V, split(G, sizes), n=len(G)), want, rtol=1e-12, atol=1e-9)


@FAST
@given(blocks(tiny_rows=True))
def test_cosine_is_bounded_and_equals_the_loop(b):
    V, G, sizes = b
    want = ref_cosine(V, G)
    for S in (M.cosine(V, G), R.score_module("cosine", V, split(G, sizes), n=len(G))):
        assert np.all(np.abs(S) <= 1 + 1e-12)
        np.testing.assert_allclose(S, want, atol=1e-12)


@FAST
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 5), st.integers(0, 2**31 - 1), st.booleans())
def test_datainf_factor_form_equals_explicit_form(m, n, d, seed, given_lam):
    rng = np.random.RandomState(seed)
    scale = rng.uniform(0.1, 3.0, size=d)
    V, G = rng.randn(m, d) * scale, rng.randn(n, d) * scale
    lam = float(rng.uniform(0.05, 2.0)) if given_lam else None
    cut = rng.randint(1, n) if n > 1 else n
    factor = M.datainf(V, [c for c in (G[:cut], G[cut:]) if len(c)], lam=lam)  # streamed in two chunks
    explicit = M.datainf(V, G, form="explicit", lam=lam)
    lam_ref = 0.1 * np.mean(G ** 2) if lam is None else lam
    literal = V @ (sum(np.linalg.inv(np.outer(g, g) + lam_ref * np.eye(d)) for g in G) / n) @ G.T
    tol = 1e-9 * max(1.0, np.abs(literal).max())
    np.testing.assert_allclose(factor, explicit, rtol=1e-9, atol=tol)
    np.testing.assert_allclose(factor, literal, rtol=1e-8, atol=tol)


# ---------------------------------------------------------------------------------------------- aggregators


@st.composite
def voter_modules(draw):
    B, m, n = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 8))
    modules = [draw(int_matrix(m, n, -3, 3)) for _ in range(B)]
    correct = draw(arrays(np.bool_, m))
    return modules, correct


@FAST
@given(voter_modules(), st.sampled_from([None, True, False]))
def test_mean_equals_the_loop(mc, use_correct):
    modules, correct = mc
    voters = ref_voters(modules, correct, bool(use_correct))  # None = all for Mean
    want = np.array([sum(v[k] for v in voters) / len(voters) for k in range(len(voters[0]))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(R.aggregate("mean", modules, correct, use_correct), want, rtol=1e-12, atol=1e-12)


@FAST
@given(voter_modules(), st.sampled_from([None, True, False]), st.sampled_from(["min", "average", "ordinal"]))
def test_rank_equals_the_loop(mc, use_correct, tie):
    modules, correct = mc
    voters = ref_voters(modules, correct, use_correct is not False)  # None = correct only for Rank
    want = np.mean([ref_ranks(v, tie) for v in voters], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = R.aggregate("rank", modules, correct, use_correct, tie_method=tie)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@FAST
@given(voter_modules(), st.sampled_from(["min", "average", "ordinal"]), st.floats(0.0, 1.5), st.booleans())
def test_vote_equals_the_loop(mc, tie, kappa, normalize):
    modules, correct = mc
    voters = ref_voters(modules, correct, True)
    n = len(voters[0])
    K = math.floor(kappa * n + 1e-9)
    want = np.array([-sum(max(K - ref_ranks(v, tie)[k], 0) for v in voters) for k in range(n)])
    if normalize:
        want = want / len(voters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = R.aggregate("vote", modules, correct, kappa=kappa, tie_method=tie, normalize=normalize)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------------------- metrics


@st.composite
def scored(draw):
    n = draw(st.integers(1, 30))
    s = draw(arrays(np.float64, n, elements=st.integers(-5, 5).map(float)))  # many ties
    noisy = draw(arrays(np.bool_, n))
    return s, noisy


@FAST
@given(scored())
def test_filter_order_is_a_stable_ascending_sort(sn):
    s, _ = sn
    assert D.filter_order(s).tolist() == stable_order(s)


@FAST
@given(scored(), st.floats(0.0, 1.0))
def test_ndr_at_k_is_a_loop_count(sn, k):
    s, noisy = sn
    N = int(noisy.sum())
    K = math.floor(k * len(s) + 1e-9)
    got = D.ndr_at(s, noisy, k)
    if N == 0:
        assert math.isnan(got)
    else:
        assert got == sum(bool(noisy[i]) for i in stable_order(s)[:K]) / N


@FAST
@given(scored())
def test_roc_auc_equals_sklearn_and_a_pair_count(sn):
    s, noisy = sn
    if noisy.all() or not noisy.any():
        with pytest.warns(RuntimeWarning, match="single class"):
            assert math.isnan(D.roc_auc(s, noisy))
        return
    pos, neg = np.flatnonzero(noisy), np.flatnonzero(~noisy)
    pairs = sum(1.0 if s[i] < s[j] else 0.5 if s[i] == s[j] else 0.0 for i in pos for j in neg)
    expected = D.roc_auc(s, noisy, ties="expected")
    assert expected == pytest.approx(roc_auc_score(noisy, -s), abs=1e-12)
    assert expected == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)
    position = np.empty(len(s))
    position[stable_order(s)] = np.arange(len(s))
    assert D.roc_auc(s, noisy) == pytest.approx(roc_auc_score(noisy, -position), abs=1e-12)
