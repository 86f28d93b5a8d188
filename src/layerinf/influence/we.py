"""TracIn-WE, Cosine-WE and TracIn-WE-Top-k on row-sparse word-embedding gradients (spec §3.4) — pure math.

A block of consecutive samples is an ``(indptr, tokens, rows)`` triple: sample i owns entries
``indptr[i]:indptr[i+1]`` of ``tokens`` (token ids) and ``rows`` (nnz × h). Scores are (m × n) numpy arrays,
higher = more helpful, equal to the dense methods on the scattered (vocab × h) gradients.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch

from layerinf.errors import LayerinfError
from layerinf.influence._chunks import _as_tensor, _inverse_norms, _row_sq_norms

__all__ = ["WEGrads", "cosine_we", "top_k_rows", "tracin_we", "tracin_we_topk"]


class WEGrads(NamedTuple):
    """Row-sparse word-embedding gradients of consecutive samples (docs/internals.md, gradient store).

    Sample i owns entries ``indptr[i]:indptr[i+1]`` of ``tokens`` (token ids) and ``rows`` (nnz × h).
    Any ``(indptr, tokens, rows)`` triple (e.g. ``store.batch.WERows``) is accepted.
    """

    indptr: Any
    tokens: Any
    rows: Any


class _Entries(NamedTuple):
    sample: np.ndarray  # (e,) sample index within the block
    token: np.ndarray  # (e,) token id
    rows: torch.Tensor  # (e, h)
    count: np.ndarray  # (e,) occurrences of the token in its sample before coalescing
    n_samples: int


def _entries(we, dtype: torch.dtype | None = None) -> _Entries:
    """Flatten a row-sparse block into (sample, token, row) entries, summing repeated tokens of a sample."""
    indptr, tokens, rows = we
    indptr = np.asarray(indptr, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    R = _as_tensor(rows)
    if dtype is not None:
        R = R.to(dtype)
    b = len(indptr) - 1
    if b < 0 or indptr[0] != 0 or indptr[-1] != len(tokens) or R.shape[0] != len(tokens) or np.any(np.diff(indptr) < 0):
        raise LayerinfError("malformed row-sparse WE gradients (indptr / tokens / rows disagree)",
                            "recollect the word-embedding gradients")
    sample = np.repeat(np.arange(b, dtype=np.int64), np.diff(indptr))
    if len(tokens) == 0:
        return _Entries(sample, tokens, R, tokens.copy(), b)
    base = int(tokens.max()) + 1
    key = sample * base + tokens
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    if len(uniq) != len(key):
        summed = torch.zeros((len(uniq), R.shape[1]), dtype=R.dtype)
        summed.index_add_(0, torch.from_numpy(inverse.reshape(-1)), R)
        return _Entries(uniq // base, uniq % base, summed, counts, b)
    return _Entries(sample, tokens, R, np.ones(len(tokens), dtype=np.int64), b)


def _we_sources(train_chunks) -> Iterable:
    if (isinstance(train_chunks, tuple) and len(train_chunks) == 3
            and isinstance(train_chunks[0], (np.ndarray, torch.Tensor)) and train_chunks[0].ndim == 1):
        return [train_chunks]  # a single (indptr, tokens, rows) block
    return train_chunks() if callable(train_chunks) else train_chunks


class _ValidationIndex:
    """Validation entries sorted by token so train entries find their matches with ``searchsorted``."""

    def __init__(self, V: _Entries):
        order = np.argsort(V.token, kind="stable")
        self.token = V.token[order]
        self.sample = V.sample[order]
        self.rows = V.rows[torch.from_numpy(order)]
        self.m = V.n_samples


def _accumulate_we(S: torch.Tensor, vi: _ValidationIndex, G: _Entries, offset: int,
                   heavy_pairs: int, pair_batch_elems: int) -> None:
    """S[:, offset:offset+b] += Σ_w V_w G_wᵀ over tokens shared by validation and this training chunk.

    Frequent tokens (≥ ``heavy_pairs`` sample pairs) use one GEMM per token; the rest are expanded into
    (train entry, validation entry) pairs and reduced in batches — no Python loop over sample pairs.
    """
    n_total = S.shape[1]
    flat = S.view(-1)
    lo = np.searchsorted(vi.token, G.token, side="left")
    hi = np.searchsorted(vi.token, G.token, side="right")
    cnt = hi - lo
    has = np.flatnonzero(cnt > 0)
    if len(has) == 0:
        return
    utok, inv, n_w = np.unique(G.token[has], return_inverse=True, return_counts=True)
    pairs_per_token = n_w * cnt[has][np.unique(inv, return_index=True)[1]]
    heavy_tok = pairs_per_token >= heavy_pairs
    heavy_entry = heavy_tok[inv]
    # light tokens: vectorised pair expansion
    light = has[~heavy_entry]
    if len(light):
        reps = cnt[light]
        starts = np.cumsum(reps) - reps
        total = int(reps.sum())
        h = max(1, G.rows.shape[1])
        step = max(1, pair_batch_elems // h)
        for a in range(0, total, step):
            b = min(total, a + step)
            p = np.arange(a, b)
            owner = np.searchsorted(starts, p, side="right") - 1
            e_idx = light[owner]
            f_idx = lo[e_idx] + (p - starts[owner])
            dots = torch.einsum("ph,ph->p", G.rows[torch.from_numpy(e_idx)], vi.rows[torch.from_numpy(f_idx)])
            target = vi.sample[f_idx] * n_total + offset + G.sample[e_idx]
            flat.index_add_(0, torch.from_numpy(target), dots.to(S.dtype))
    # heavy tokens: one small GEMM per token
    if heavy_tok.any():
        heavy = has[heavy_entry]
        order = heavy[np.argsort(G.token[heavy], kind="stable")]
        toks = G.token[order]
        bounds = np.flatnonzero(np.r_[True, toks[1:] != toks[:-1], True])
        for s, e in zip(bounds[:-1], bounds[1:]):
            ents = order[s:e]
            f_lo, f_hi = lo[ents[0]], hi[ents[0]]
            block = torch.mm(vi.rows[f_lo:f_hi], G.rows[torch.from_numpy(ents)].T).to(S.dtype)
            rows_j = torch.from_numpy(vi.sample[f_lo:f_hi])[:, None]
            cols_k = torch.from_numpy(offset + G.sample[ents])[None, :]
            S.index_put_((rows_j.expand_as(block), cols_k.expand_as(block)), block, accumulate=True)


def _we_scores(V_we, train_chunks, n, compute_dtype, cosine_norm: bool, keep_top: int | None,
               heavy_pairs: int, pair_batch_elems: int) -> np.ndarray:
    Vrows = _as_tensor(V_we[2])
    acc = torch.float64 if (compute_dtype == torch.float64 or (compute_dtype is None and Vrows.dtype == torch.float64)) \
        else torch.float32
    V = _entries(V_we, acc)
    if keep_top is not None:
        V = _keep_top(V, keep_top)
    vi = _ValidationIndex(V)
    v_norm = None
    if cosine_norm:
        v_norm = torch.sqrt(torch.zeros(V.n_samples, dtype=acc).index_add_(
            0, torch.from_numpy(V.sample), _row_sq_norms(V.rows, acc)))
    blocks, norms = [], []
    S = torch.zeros((V.n_samples, n), dtype=acc) if n is not None else None
    offset = 0
    with torch.no_grad():
        for chunk in _we_sources(train_chunks):
            G = _entries(chunk, acc)
            if keep_top is not None:
                G = _keep_top(G, keep_top)
            target = S
            if S is None:
                target = torch.zeros((V.n_samples, G.n_samples), dtype=acc)
            elif offset + G.n_samples > n:
                raise LayerinfError(f"the WE training chunks hold more than n={n} samples", "pass the right n")
            _accumulate_we(target, vi, G, offset if S is not None else 0, heavy_pairs, pair_batch_elems)
            if S is None:
                blocks.append(target)
            if cosine_norm:
                norms.append(torch.sqrt(torch.zeros(G.n_samples, dtype=acc).index_add_(
                    0, torch.from_numpy(G.sample), _row_sq_norms(G.rows, acc))))
            offset += G.n_samples
    if S is None:
        S = torch.cat(blocks, dim=1) if blocks else torch.zeros((V.n_samples, 0), dtype=acc)
    elif offset != n:
        raise LayerinfError(f"the WE training chunks hold {offset} samples, expected n={n}", "pass the right n")
    if cosine_norm:
        g_norm = torch.cat(norms) if norms else torch.zeros(0, dtype=acc)
        S = S * _inverse_norms(v_norm)[:, None] * _inverse_norms(g_norm)[None, :]
    return S.numpy()


def tracin_we(V_we, train_chunks, n: int | None = None, *, compute_dtype: torch.dtype | None = None,
              heavy_pairs: int = 256, pair_batch_elems: int = 1 << 22) -> np.ndarray:
    """TracIn-WE on row-sparse word-embedding gradients (spec §3.4): ``S_jk = Σ_{w common} ∇_{E_w}ℓ(z'_j)·∇_{E_w}ℓ(z_k)``.

    Equals TracIn on the dense scattered (vocab × h) gradients. ``V_we`` is one ``(indptr, tokens, rows)`` block
    for the validation split, ``train_chunks`` an iterable (or callable) of such blocks, or one block.
    """
    return _we_scores(V_we, train_chunks, n, compute_dtype, False, None, heavy_pairs, pair_batch_elems)


def cosine_we(V_we, train_chunks, n: int | None = None, *, compute_dtype: torch.dtype | None = None,
              heavy_pairs: int = 256, pair_batch_elems: int = 1 << 22) -> np.ndarray:
    """Cosine on row-sparse WE gradients: TracIn-WE divided by the full WE-gradient norms of both samples.

    Zero rule (as :func:`~layerinf.influence.methods.cosine`): a sample whose WE-gradient norm is ≤ 1e-10 × the
    largest norm of its split (the m validation or all n training samples) counts as zero and gets cosine 0.
    """
    return _we_scores(V_we, train_chunks, n, compute_dtype, True, None, heavy_pairs, pair_batch_elems)


def _keep_top(E: _Entries, k: int) -> _Entries:
    """Keep each sample's top-k tokens by ‖∇_{E_w}ℓ‖₂ / count_w (ties: lower token id first)."""
    if len(E.token) == 0:
        return E
    score = (torch.sqrt(_row_sq_norms(E.rows, torch.float64)).numpy() / E.count)
    order = np.lexsort((E.token, -score, E.sample))  # per sample: descending score, then token id
    s_sorted = E.sample[order]
    first = np.searchsorted(s_sorted, s_sorted, side="left")
    keep = order[(np.arange(len(order)) - first) < k]
    keep.sort()
    return _Entries(E.sample[keep], E.token[keep], E.rows[torch.from_numpy(keep)], E.count[keep], E.n_samples)


def top_k_rows(we, k: int = 10) -> WEGrads:
    """Row-sparse gradients restricted to each sample's top-k tokens (by ‖row‖₂ / occurrences), spec §3.4."""
    E = _keep_top(_entries(we), k)
    indptr = np.zeros(E.n_samples + 1, dtype=np.int64)
    np.cumsum(np.bincount(E.sample, minlength=E.n_samples), out=indptr[1:])
    return WEGrads(indptr, E.token, E.rows.numpy())


def tracin_we_topk(V_we, train_chunks, n: int | None = None, k: int = 10, *,
                   compute_dtype: torch.dtype | None = None, heavy_pairs: int = 256,
                   pair_batch_elems: int = 1 << 22) -> np.ndarray:
    """TracIn-WE-Top-k with Yeh et al.'s intent (spec §3.4 [O]): Σ over w ∈ Top_k(x_k) ∩ Top_k(x'_j) of row dots.

    Each sample keeps its own top-k tokens, scored by ‖∇_{E_w}ℓ‖₂ / count_w (count_w = occurrences of w in the
    sample's token list; 1 when the store already summed repeated tokens). Differs from [C] ``hf_we_topk_10``,
    which picks the top-k among the *common* tokens of each pair and pairs the i-th train token with the i-th
    validation token by position.
    """
    if k < 1:
        raise LayerinfError(f"top-k needs k ≥ 1, got {k}", "use k = 10 as in the paper")
    return _we_scores(V_we, train_chunks, n, compute_dtype, False, int(k), heavy_pairs, pair_batch_elems)
