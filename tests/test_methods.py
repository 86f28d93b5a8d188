"""Influence methods (spec §3): worked examples E1, E2, E8, edge cases, and properties against slow references."""

import warnings

import numpy as np
import pytest
import torch

from layerinf.influence import methods as M
from layerinf.influence import registry as R
from layerinf.influence.aggregate import mean as agg_mean
from layerinf.errors import LayerinfError

ATOL = 1e-6

# E1 (spec §3.1–§3.3)
G1 = np.array([[1, 0, 2], [0, 1, -1], [2, 2, 0], [-1, 0, 1]], dtype=np.float64)
V1 = np.array([[1, 1, 0], [0, -1, 1]], dtype=np.float64)
# E2 (spec §2.3) module 2
G2 = np.array([[1, -1], [0, 2], [1, 1], [2, 0]], dtype=np.float64)
V2 = np.array([[1, 0], [1, 1]], dtype=np.float64)

E1_DATAINF = np.array([[6.080702, 3.539296, 17.316913, -3.196079],
                       [7.432544, -7.757845, -7.078591, 2.209442]])
E1_DATAINF0 = np.array([[0.786584, -1.754822, -3.859557, 2.098039],
                        [-3.155691, 2.830391, 3.509644, -3.084676]])
E1_KWON = np.array([-6.756623, 2.109274, -5.119161, 0.493319])


# ------------------------------------------------------------------------------------------ slow references


def ref_tracin(V, G):
    return np.array([[float(np.dot(v, g)) for g in G] for v in V])


def ref_cosine(V, G):
    out = np.zeros((len(V), len(G)))
    for j, v in enumerate(V):
        for k, g in enumerate(G):
            nv, ng = np.linalg.norm(v), np.linalg.norm(g)
            out[j, k] = 0.0 if nv == 0 or ng == 0 else np.dot(v, g) / (nv * ng)
    return out


def ref_datainf(V, G, lam=None):
    """S_jk = v_jᵀ [(1/n) Σ_i (g_i g_iᵀ + λI)⁻¹] g_k with literal matrix inverses."""
    n, d = G.shape
    lam = 0.1 * np.mean(G ** 2) if lam is None else lam
    H_inv = sum(np.linalg.inv(np.outer(g, g) + lam * np.eye(d)) for g in G) / n
    return V @ H_inv @ G.T


def random_blocks(seed, n=23, m=7, d=11):
    rng = np.random.RandomState(seed)
    scale = rng.uniform(0.1, 3.0, size=d)  # uneven columns make λ and D non-trivial
    return rng.randn(m, d) * scale, rng.randn(n, d) * scale


def uneven_chunks(G, sizes):
    out, lo = [], 0
    for s in sizes:
        out.append(G[lo : lo + s])
        lo += s
    assert lo == len(G)
    return out


# ---------------------------------------------------------------------------------------------- worked examples


def test_e1_tracin_cosine():
    np.testing.assert_allclose(M.tracin(V1, G1), [[1, 1, 4, -1], [2, -2, -2, 1]], atol=ATOL)
    np.testing.assert_allclose(M.cosine(V1, G1), [[0.316228, 0.5, 1.0, -0.5], [0.632456, -1.0, -0.5, 0.5]],
                               atol=ATOL)


def test_e1_datainf_all_forms_and_lambda():
    assert M.datainf_lambda(G1) == pytest.approx(17 / 120, abs=1e-12)
    assert M.datainf_lambda(float((G1 ** 2).sum()), n=4, d=3) == pytest.approx(17 / 120, abs=1e-12)
    forms = {f: M.datainf(V1, G1, form=f) for f in ("factor", "gram", "explicit")}
    for f, S in forms.items():
        np.testing.assert_allclose(S, E1_DATAINF, atol=ATOL, err_msg=f)
    np.testing.assert_allclose(forms["factor"], forms["gram"], atol=1e-12)
    np.testing.assert_allclose(forms["factor"], forms["explicit"], atol=1e-12)
    np.testing.assert_allclose(ref_datainf(V1, G1), E1_DATAINF, atol=ATOL)


def test_e1_kwon_sign_and_averaged_identity():
    np.testing.assert_allclose(M.kwon_influence(V1, G1), E1_KWON, atol=ATOL)
    np.testing.assert_allclose(M.datainf(V1, G1).mean(axis=0), -E1_KWON, atol=ATOL)
    np.testing.assert_allclose(M.datainf_averaged(V1, G1), -E1_KWON, atol=ATOL)


def test_e1_default_is_not_legacy_datainf0():
    S = M.datainf(V1, G1)
    assert not np.allclose(S, E1_DATAINF0, atol=1e-3)
    np.testing.assert_allclose(M.datainf(V1, G1, legacy_datainf0=True), E1_DATAINF0, atol=ATOL)
    np.testing.assert_allclose(M.datainf(V1, G1, form="gram", legacy_datainf0=True), E1_DATAINF0, atol=ATOL)


def test_e2_group_mean_equals_concatenated_tracin_over_group_size():
    S1, S2 = M.tracin(V1, G1), M.tracin(V2, G2)
    np.testing.assert_allclose(S1, [[1, 1, 4, -1], [2, -2, -2, 1]], atol=ATOL)
    np.testing.assert_allclose(S2, [[1, 0, 1, 2], [0, 2, 2, 2]], atol=ATOL)
    group_mean = agg_mean([S1, S2])
    np.testing.assert_allclose(group_mean, [1.0, 0.25, 1.25, 1.0], atol=ATOL)
    concat = M.score_concat("tracin", [V1, V2], [G1, G2])
    np.testing.assert_allclose(concat.mean(axis=0) / 2, group_mean, atol=ATOL)
    np.testing.assert_allclose(concat, M.tracin(np.hstack([V1, V2]), np.hstack([G1, G2])), atol=1e-12)


def test_e2_cosine_per_module_mean_differs_from_concatenated():
    per_module = agg_mean([M.cosine(V1, G1), M.cosine(V2, G2)])
    np.testing.assert_allclose(per_module, [0.413948, 0.051777, 0.551777, 0.426777], atol=ATOL)
    concat = M.score_concat("cosine", [V1, V2], [G1, G2]).mean(axis=0)
    np.testing.assert_allclose(concat, [0.407200, 0.117851, 0.456435, 0.424037], atol=ATOL)
    assert not np.allclose(per_module, concat, atol=1e-3)
    with pytest.raises(LayerinfError):
        M.score_concat("datainf", [V1, V2], [G1, G2])


def test_e8_tracin_cp():
    ckpts = [(np.array([[2.0, 1.0]]), np.array([[1.0, 0.0]])), (np.array([[1.0, -1.0]]), np.array([[0.5, 0.5]]))]
    np.testing.assert_allclose(M.tracin_cp(ckpts, [0.1, 0.05]), [[0.2]], atol=ATOL)
    with pytest.raises(LayerinfError):
        M.tracin_cp(ckpts, [0.1])


E8_V = [np.array([[2.0, 1.0]]), np.array([[1.0, -1.0]])]
E8_G = [np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]])]


def test_e8_tracin_cp_through_the_registry():
    """E8 as the score stage computes it: the registered ``tracin_cp`` (lists of V_c, G_c; ``lrs=``)."""

    spec = R.method("TracIn_CP")
    assert spec.checkpoints and spec.applies("we", 10**9, 100_000) and spec.applies("cl", 10, 100_000)
    np.testing.assert_allclose(spec.score_dense(E8_V, E8_G, lrs=[0.1, 0.05]), [[0.2]], atol=ATOL)
    S = R.score_module("tracin_cp", E8_V, [iter([g]) for g in E8_G], 1, lrs=[0.1, 0.05], chunk_rows=1)
    np.testing.assert_allclose(S, [[0.2]], atol=ATOL)
    # each checkpoint alone: its own η·TracIn
    np.testing.assert_allclose(spec.score_dense(E8_V[1:], E8_G[1:], lrs=[0.05]), [[0.0]], atol=ATOL)
    for bad in ([0.1], None, [0.1, float("nan")]):
        with pytest.raises(LayerinfError):
            spec.score_dense(E8_V, E8_G, lrs=bad)
    with pytest.raises(LayerinfError):
        spec.score_dense(E8_V[0], E8_G[0], lrs=[0.1])  # one array, not a list per checkpoint


def test_tracin_cp_on_word_embeddings_is_the_lr_weighted_sum_of_tracin_we():
    rng = np.random.RandomState(5)

    def block(n, h=3, vocab=9):
        counts = rng.randint(1, 4, size=n)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        tokens = np.concatenate([np.sort(rng.choice(vocab, c, replace=False)) for c in counts]).astype(np.int64)
        return indptr, tokens, rng.randn(int(indptr[-1]), h)

    Vs, Gs, lrs = [block(3), block(3)], [block(5), block(5)], [0.3, 0.02]
    ref = sum(lr * M.tracin_we(V, G, 5) for V, G, lr in zip(Vs, Gs, lrs))
    np.testing.assert_allclose(R.method("tracin_cp").score_we(Vs, Gs, 5, lrs=lrs), ref, rtol=1e-6, atol=1e-7)


def test_tracin_cp_matches_loop_over_checkpoints():
    rng = np.random.RandomState(3)
    ckpts = [(rng.randn(4, 6), rng.randn(9, 6)) for _ in range(3)]
    lrs = [0.3, 0.2, 0.05]
    ref = sum(lr * ref_tracin(V, G) for (V, G), lr in zip(ckpts, lrs))
    np.testing.assert_allclose(M.tracin_cp(ckpts, lrs), ref, atol=1e-10)


# ----------------------------------------------------------------------------------------------- edge cases


def test_cosine_zero_norm_gives_zero_not_nan():
    G = G1.copy()
    G[1] = 0.0
    V = V1.copy()
    V[0] = 0.0
    S = M.cosine(V, G)
    assert np.all(np.isfinite(S))
    assert np.all(S[0] == 0.0) and np.all(S[:, 1] == 0.0)
    np.testing.assert_allclose(S[1, [0, 2, 3]], ref_cosine(V1, G1)[1, [0, 2, 3]], atol=1e-12)


@pytest.mark.parametrize("form", ["factor", "gram", "explicit"])
def test_datainf_lambda_zero_returns_zeros_and_warns(form):
    G = np.zeros((5, 3))
    with pytest.warns(RuntimeWarning, match="λ = 0"):
        S = M.datainf(V1, G, form=form)
    assert S.shape == (2, 5) and np.all(S == 0)


def test_datainf_applicable_threshold():
    assert M.datainf_applicable(4096)
    assert not M.datainf_applicable(100_000)
    assert M.datainf_applicable(99_999)
    assert not M.datainf_applicable(5000, threshold=4096)
    assert M.datainf_applicable(10**9, threshold=None)


def test_bad_inputs_raise_layerinf_error():
    with pytest.raises(LayerinfError):
        R.score_module("nope", V1, G1)
    with pytest.raises(LayerinfError):
        M.tracin(V1, G2)  # d mismatch
    with pytest.raises(LayerinfError):
        R.score_module("tracin", V1, G1, n=5)  # wrong n
    with pytest.raises(LayerinfError):
        M.datainf(V1, G1, form="bogus")


def test_one_shot_generator_is_fine_for_tracin_but_not_for_datainf():
    np.testing.assert_allclose(M.tracin(V1, (c for c in [G1[:2], G1[2:]])), ref_tracin(V1, G1), atol=1e-12)
    with pytest.raises(LayerinfError, match="one-shot"):
        M.datainf(V1, (c for c in [G1[:2], G1[2:]]))


# ---------------------------------------------------------------------------------- properties vs references


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_datainf_matches_explicit_inverse_reference(seed):
    V, G = random_blocks(seed)
    ref = ref_datainf(V, G)
    for form in ("factor", "gram", "explicit"):
        np.testing.assert_allclose(M.datainf(V, G, form=form), ref, rtol=1e-9, atol=1e-9, err_msg=form)
    lam = 0.37
    np.testing.assert_allclose(M.datainf(V, G, lam=lam), ref_datainf(V, G, lam=lam), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_datainf_forms_agree_to_1e10_and_mean_is_minus_kwon(seed):
    V, G = random_blocks(seed, n=31, m=9, d=6)
    f = M.datainf(V, G, form="factor")
    np.testing.assert_allclose(f, M.datainf(V, G, form="gram"), atol=1e-10, rtol=0)
    np.testing.assert_allclose(f, M.datainf(V, G, form="explicit"), atol=1e-10, rtol=0)
    kwon = M.kwon_influence(V, G)
    np.testing.assert_allclose(f.mean(axis=0), -kwon, atol=1e-10)
    np.testing.assert_allclose(M.datainf_averaged(V, G), -kwon, atol=1e-10)


@pytest.mark.parametrize("seed", [7, 8])
def test_tracin_and_cosine_match_loops(seed):
    V, G = random_blocks(seed)
    np.testing.assert_allclose(M.tracin(V, G), ref_tracin(V, G), atol=1e-10)
    np.testing.assert_allclose(M.cosine(V, G), ref_cosine(V, G), atol=1e-12)


@pytest.mark.parametrize("method", ["tracin", "cosine", "datainf"])
@pytest.mark.parametrize("sizes", [[1] * 23, [5, 1, 10, 7], [23], [2, 21], [11, 12]])
def test_streamed_chunks_equal_unstreamed(method, sizes):
    V, G = random_blocks(11)
    full = R.score_module(method, V, G)
    chunks = uneven_chunks(G, sizes)
    np.testing.assert_allclose(R.score_module(method, V, chunks, n=23), full, atol=1e-10)
    np.testing.assert_allclose(R.score_module(method, V, lambda: iter(chunks)), full, atol=1e-10)
    np.testing.assert_allclose(R.score_module(method, V, G, chunk_rows=sizes[0]), full, atol=1e-10)


def test_torch_inputs_and_float32_default():
    V, G = random_blocks(12)
    S64 = M.datainf(V, G)
    S_t = M.datainf(torch.from_numpy(V), [torch.from_numpy(G[:10]), torch.from_numpy(G[10:])])
    np.testing.assert_allclose(S_t, S64, atol=1e-10)
    S32 = M.datainf(V.astype(np.float32), G.astype(np.float32))
    assert S32.dtype == np.float32 and S64.dtype == np.float64
    np.testing.assert_allclose(S32, S64, rtol=1e-4, atol=1e-4 * np.abs(S64).max())


def test_memmap_chunks_read_only_are_accepted(tmp_path):
    V, G = random_blocks(13)
    np.save(tmp_path / "g.npy", G.astype(np.float32))
    Gm = np.load(tmp_path / "g.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S = M.tracin(V.astype(np.float32), lambda: (Gm[i : i + 5] for i in range(0, 23, 5)))
    np.testing.assert_allclose(S, ref_tracin(V, G), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("method", ["tracin", "cosine", "datainf"])
def test_bfloat16_path_ranks_agree_with_float32(method):
    from scipy.stats import spearmanr

    rng = np.random.RandomState(14)
    V, G = rng.randn(6, 256).astype(np.float32), rng.randn(300, 256).astype(np.float32)
    S32 = R.score_module(method, V, G)
    S16 = R.score_module(method, V, G, compute_dtype=torch.bfloat16)
    assert S16.dtype == np.float32
    rho = np.mean([spearmanr(a, b).statistic for a, b in zip(S32, S16)])
    assert rho > 0.98, rho
    assert not np.array_equal(S32, S16)  # the fast path really is a different computation


def test_score_concat_streams_in_lockstep():
    V, G = random_blocks(15)
    Va, Vb, Ga, Gb = V[:, :4], V[:, 4:], G[:, :4], G[:, 4:]
    expected = ref_cosine(V, G)
    got = M.score_concat("cosine", [Va, Vb], [uneven_chunks(Ga, [3, 20]), uneven_chunks(Gb, [3, 20])], n=23)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    with pytest.raises(LayerinfError):
        M.score_concat("tracin", [Va, Vb], [uneven_chunks(Ga, [3, 20]), uneven_chunks(Gb, [4, 19])])


# ---------------------------------------------------------------------------------------------------- TracIn-WE


def random_we(rng, n, vocab, h, max_tokens=6, duplicates=False):
    """Row-sparse WE gradients plus the dense (n × vocab·h) scattered reference."""
    indptr, tokens, rows = [0], [], []
    dense = np.zeros((n, vocab, h))
    for i in range(n):
        k = rng.randint(0, max_tokens + 1)
        toks = np.sort(rng.choice(vocab, size=k, replace=duplicates))
        r = rng.randn(k, h)
        for t, row in zip(toks, r):
            dense[i, t] += row
        tokens.extend(toks.tolist())
        rows.append(r)
        indptr.append(indptr[-1] + k)
    rows = np.concatenate(rows) if rows else np.zeros((0, h))
    return (np.array(indptr), np.array(tokens, dtype=np.int64), rows.reshape(-1, h)), dense.reshape(n, -1)


def we_chunks(we, sizes):
    indptr, tokens, rows = we
    out, lo = [], 0
    for s in sizes:
        a, b = indptr[lo], indptr[lo + s]
        out.append(M.WEGrads(indptr[lo : lo + s + 1] - a, tokens[a:b], rows[a:b]))
        lo += s
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("heavy_pairs", [1, 10**9, 64])
def test_tracin_we_equals_dense_tracin(seed, heavy_pairs):
    rng = np.random.RandomState(seed)
    V_we, V_dense = random_we(rng, 9, vocab=12, h=5)
    G_we, G_dense = random_we(rng, 40, vocab=12, h=5, duplicates=True)  # repeated tokens are summed
    ref = ref_tracin(V_dense, G_dense)
    got = M.tracin_we(V_we, we_chunks(G_we, [7, 1, 20, 12]), 40, heavy_pairs=heavy_pairs, pair_batch_elems=50)
    np.testing.assert_allclose(got, ref, atol=1e-10)
    np.testing.assert_allclose(M.tracin_we(V_we, G_we), ref, atol=1e-10)  # one block, n inferred
    np.testing.assert_allclose(M.cosine_we(V_we, we_chunks(G_we, [40]), 40, heavy_pairs=heavy_pairs),
                               ref_cosine(V_dense, G_dense), atol=1e-10)


def ref_topk_filter(we, k):
    """Per sample: keep the k tokens with the largest ‖row‖₂ / count (ties: smaller token id), loop version."""
    indptr, tokens, rows = we
    new_ptr, new_tok, new_rows = [0], [], []
    for i in range(len(indptr) - 1):
        t, r = tokens[indptr[i] : indptr[i + 1]], rows[indptr[i] : indptr[i + 1]]
        agg = {}
        for tok, row in zip(t, r):
            s, c = agg.get(tok, (0.0, 0))
            agg[tok] = (s + row, c + 1)
        items = sorted(agg.items(), key=lambda kv: (-np.linalg.norm(kv[1][0]) / kv[1][1], kv[0]))[:k]
        items.sort()
        new_tok.extend(tok for tok, _ in items)
        new_rows.extend(sr for _, (sr, _) in items)
        new_ptr.append(new_ptr[-1] + len(items))
    h = rows.shape[1]
    return np.array(new_ptr), np.array(new_tok, dtype=np.int64), np.array(new_rows).reshape(-1, h)


def dense_of(we, vocab):
    indptr, tokens, rows = we
    h = rows.shape[1]
    out = np.zeros((len(indptr) - 1, vocab, h))
    for i in range(len(indptr) - 1):
        for t, r in zip(tokens[indptr[i] : indptr[i + 1]], rows[indptr[i] : indptr[i + 1]]):
            out[i, t] += r
    return out.reshape(len(indptr) - 1, -1)


@pytest.mark.parametrize("k", [1, 3])
def test_tracin_we_topk_is_tracin_on_each_samples_top_k_rows(k):
    rng = np.random.RandomState(20 + k)
    V_we, _ = random_we(rng, 6, vocab=10, h=4, max_tokens=7, duplicates=True)
    G_we, _ = random_we(rng, 15, vocab=10, h=4, max_tokens=7)
    ref = ref_tracin(dense_of(ref_topk_filter(V_we, k), 10), dense_of(ref_topk_filter(G_we, k), 10))
    np.testing.assert_allclose(M.tracin_we_topk(V_we, we_chunks(G_we, [4, 11]), 15, k=k), ref, atol=1e-10)
    full = M.tracin_we(V_we, G_we)
    assert not np.allclose(M.tracin_we_topk(V_we, G_we, k=k), full)  # top-k really drops tokens here
    np.testing.assert_allclose(M.tracin_we_topk(V_we, G_we, k=100), full, atol=1e-10)


def test_tracin_we_empty_samples_and_wrong_n():
    V_we = (np.array([0, 0, 1]), np.array([3]), np.ones((1, 2)))
    G_we = (np.array([0, 1, 1, 2]), np.array([3, 4]), np.array([[2.0, 1.0], [5.0, 5.0]]))
    np.testing.assert_allclose(M.tracin_we(V_we, G_we), [[0, 0, 0], [3, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(M.cosine_we(V_we, G_we)[1], [3 / (np.sqrt(2) * np.sqrt(5)), 0, 0], atol=1e-12)
    with pytest.raises(LayerinfError):
        M.tracin_we(V_we, [G_we], n=4)


# ------------------------------------------------------------------------------- dtype mixing and zero norms


@pytest.mark.parametrize("method", ["tracin", "cosine", "datainf"])
def test_training_chunks_of_another_dtype_are_cast(method):
    """Regression: DataInf's third pass did not cast float32 chunks to a float64 accumulator (crash)."""
    V, G = random_blocks(31)
    V32, G32 = V.astype(np.float32), G.astype(np.float32)
    want = R.score_module(method, V32.astype(np.float64), G32.astype(np.float64))
    got = R.score_module(method, V32, [G32[:10], G32[10:]], n=23, compute_dtype=torch.float64)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    mixed = R.score_module(method, V32.astype(np.float64), lambda: iter([G32[:4], G32[4:]]))  # float64 V
    np.testing.assert_allclose(mixed, want, rtol=1e-12, atol=1e-12)
    S32 = R.score_module(method, V, G, compute_dtype=torch.float32)  # float64 chunks, float32 compute
    assert S32.dtype == np.float32
    np.testing.assert_allclose(S32, R.score_module(method, V, G), rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _tiny_rows(seed):
    """Random V, G with a rounding-noise row (norm 1e-14 × the median) in each: V[2] and G[4]."""
    rng = np.random.RandomState(seed)
    V, G = random_blocks(seed)
    for X, i in ((V, 2), (G, 4)):
        X[i] = rng.randn(X.shape[1]) * 1e-14 * np.median(np.linalg.norm(X, axis=1)) / np.sqrt(X.shape[1])
    return V, G


def test_cosine_counts_a_rounding_noise_row_as_zero():
    """Regression: only an exact 0 norm was zero, so a 1e-14-norm noise row got cosines of order 0.3."""
    V, G = _tiny_rows(32)
    assert np.abs(ref_cosine(V, G)[:, 4]).max() > 0.05  # the literal formula turns noise into scores
    keep_v, keep_g = np.arange(7) != 2, np.arange(23) != 4
    for S in (M.cosine(V, G), R.score_module("cosine", V, uneven_chunks(G, [3, 1, 19]), n=23),
              R.score_module("cosine", V, lambda: iter(uneven_chunks(G, [5, 18]))), M.score_concat(
                  "cosine", [V[:, :5], V[:, 5:]], [G[:, :5], G[:, 5:]], chunk_rows=6)):
        assert np.all(S[2] == 0.0) and np.all(S[:, 4] == 0.0)
        np.testing.assert_allclose(S[np.ix_(keep_v, keep_g)], ref_cosine(V, G)[np.ix_(keep_v, keep_g)], atol=1e-12)


def test_cosine_zero_rule_is_relative_and_scale_invariant():
    V, G = random_blocks(33)
    G[5] = G[0] * 1e-9  # small but above the 1e-10 relative cut: keeps its direction
    S = M.cosine(V, G)
    np.testing.assert_allclose(S[:, 5], S[:, 0], atol=1e-12)
    np.testing.assert_allclose(M.cosine(V * 1e-30, G * 1e-30), S, atol=1e-12)  # no absolute threshold
    np.testing.assert_allclose(M.cosine(V * 1e30, G * 1e30), S, atol=1e-12)


def test_cosine_we_counts_a_rounding_noise_sample_as_zero():
    rng = np.random.RandomState(34)
    V_we, V_dense = random_we(rng, 5, vocab=8, h=3)
    indptr, tokens, rows = random_we(rng, 12, vocab=8, h=3, max_tokens=4)[0]
    rows = rows.copy()
    k = int(np.flatnonzero(np.diff(indptr) > 0)[0])  # a training sample with tokens
    rows[indptr[k] : indptr[k + 1]] *= 1e-14
    G_we = (indptr, tokens, rows)
    S = M.cosine_we(V_we, we_chunks(G_we, [k + 1, 11 - k]), 12)
    assert np.all(S[:, k] == 0.0)
    full = ref_cosine(V_dense, dense_of(G_we, 8))
    keep = np.arange(12) != k
    np.testing.assert_allclose(S[:, keep], full[:, keep], atol=1e-12)


# ------------------------------------------------------------------------------------------------- registry


def test_method_registry_holds_the_paper_methods():
    assert list(R.METHODS) == ["tracin", "cosine", "datainf", "tracin_cp"]
    assert [s.title for s in R.METHODS.values()] == ["TracIn", "Cosine", "DataInf", "TracInCP"]
    assert all(s.help and "\n" not in s.help for s in R.METHODS.values())
    assert R.method("DataInf") is R.METHODS["datainf"]
    assert R.METHODS["tracin"].score_we is M.tracin_we and R.METHODS["cosine"].score_we is M.cosine_we
    assert R.METHODS["datainf"].score_we is None
    assert [name for name, s in R.METHODS.items() if s.checkpoints] == ["tracin_cp"]
    V, G = random_blocks(35)
    for name in R.METHODS:
        if not R.METHODS[name].checkpoints:
            np.testing.assert_array_equal(R.METHODS[name].score_dense(V, G), R.score_module(name, V, G))
    np.testing.assert_array_equal(R.METHODS["tracin_cp"].score_dense([V], [G], lrs=[1.0]),
                                  R.score_module("tracin_cp", [V], [G], lrs=[1.0]))
    tr, di = R.METHODS["tracin"], R.METHODS["datainf"]
    assert tr.applies("we", 10**9, 100_000) and tr.applies("query_A", 4096, 100_000)
    assert not di.applies("we", 10, 100_000) and di.applies("value_B", 4096, 100_000)
    assert not di.applies("cl", 100_000, 100_000) and di.applies("cl", 10**9, None)


def test_unknown_method_names_the_choices_and_a_close_match():
    with pytest.raises(LayerinfError) as err:
        R.method("cosin")
    assert err.value.problem == "unknown method 'cosin'"
    assert err.value.fix.startswith("use one of tracin, cosine, datainf, tracin_cp") and "did you mean 'cosine'" in err.value.fix
    with pytest.raises(LayerinfError) as err:
        R.score_module("zzz", V1, G1)
    assert str(err.value) == "unknown method 'zzz' — use one of tracin, cosine, datainf, tracin_cp"


def test_a_registered_method_works_end_to_end():
    def neg_tracin(V, train_chunks, n=None, *, compute_dtype=None):
        return -M.score_tracin(V, train_chunks, n, compute_dtype=compute_dtype)

    spec = R.register_method(R.MethodSpec("neg_tracin", "−TracIn", "minus the gradient dot product", neg_tracin))
    try:
        assert R.method("NEG_TRACIN") is spec
        np.testing.assert_array_equal(R.score_module("neg_tracin", V1, G1, lam=3.0, form="gram"), -M.tracin(V1, G1))
        assert spec.applies("value_A", 10**9, 100) and not spec.applies("we", 1, 100)  # no score_we: not on WE
        with pytest.raises(LayerinfError, match="already registered"):
            R.register_method(spec)
        R.register_method(spec, replace=True)
    finally:
        R.METHODS.pop("neg_tracin", None)
    with pytest.raises(LayerinfError):
        R.score_module("neg_tracin", V1, G1)


def test_option_checks_know_the_registry_without_importing_it():
    """layerinf.config (ground floor) lists the built-in names itself and a registered name once the registry is in."""
    import subprocess
    import sys

    from layerinf.config import BUILTIN_METHODS, PAPER_AGGREGATORS, RankConfig

    assert list(R.METHODS) == list(BUILTIN_METHODS) and list(R.AGGREGATORS) == list(PAPER_AGGREGATORS)
    code = ("import sys; from layerinf.config import ScoreConfig; ScoreConfig(methods=['tracin_cp']);"
            " print('layerinf.influence.registry' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    R.register_method(R.MethodSpec("neg_tracin", "−TracIn", "minus the gradient dot product", M.score_tracin))
    try:
        assert RankConfig(method="neg_tracin").method == "neg_tracin"
    finally:
        R.METHODS.pop("neg_tracin", None)
    with pytest.raises(LayerinfError, match="unknown value 'neg_tracin' .* use one of tracin, cosine, datainf, tracin_cp$"):
        RankConfig(method="neg_tracin")


def test_old_import_paths_keep_every_public_name():
    from layerinf.influence import we

    for name in ("WEGrads", "cosine_we", "top_k_rows", "tracin_we", "tracin_we_topk"):
        assert getattr(M, name) is getattr(we, name)
    for name in M.__all__:
        assert hasattr(M, name), name
    assert M.METHODS == ("tracin", "cosine", "datainf") and M.DATAINF_MAX_NUMEL == 100_000


def test_influence_and_evaluation_import_no_model_code():
    """Both packages are pure math: no layerinf.model/engine/store/stages, transformers or peft imports."""
    import ast
    from pathlib import Path

    import layerinf

    forbidden = ("layerinf.model", "layerinf.engine", "layerinf.store", "layerinf.stages", "transformers", "peft")
    root = Path(layerinf.__file__).parent
    files = sorted((root / "influence").glob("*.py")) + sorted((root / "evaluation").glob("*.py"))
    assert len(files) >= 9
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
            assert not bad, f"{path.name} imports {bad}"
    for path in files:
        assert len(path.read_text().splitlines()) <= 450, path.name
