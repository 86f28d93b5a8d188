"""Influence methods (spec §3): worked examples E1, E2, E8, edge cases, and properties against slow references."""

import warnings

import numpy as np
import pytest
import torch

from layerinf.influence import methods as M
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
        M.score_module("nope", V1, G1)
    with pytest.raises(LayerinfError):
        M.tracin(V1, G2)  # d mismatch
    with pytest.raises(LayerinfError):
        M.score_module("tracin", V1, G1, n=5)  # wrong n
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
    full = M.score_module(method, V, G)
    chunks = uneven_chunks(G, sizes)
    np.testing.assert_allclose(M.score_module(method, V, chunks, n=23), full, atol=1e-10)
    np.testing.assert_allclose(M.score_module(method, V, lambda: iter(chunks)), full, atol=1e-10)
    np.testing.assert_allclose(M.score_module(method, V, G, chunk_rows=sizes[0]), full, atol=1e-10)


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
    S32 = M.score_module(method, V, G)
    S16 = M.score_module(method, V, G, compute_dtype=torch.bfloat16)
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
