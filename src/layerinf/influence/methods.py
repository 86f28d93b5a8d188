"""Influence methods on one module's dense per-sample gradients (spec §3) — pure math, streamed over chunks.

Every function returns a score matrix ``S`` of shape ``(m, n)`` (validation × train), HIGHER = MORE HELPFUL
(spec §1.1); for DataInf this is ``s = −I_Kwon``. The row-sparse word-embedding methods live in
:mod:`layerinf.influence.we` (re-exported here); methods are looked up through :mod:`layerinf.influence.registry`.

``V`` is the ``(m, d)`` validation block (numpy or torch). The training gradients ``G`` (``n × d``) are a
*chunk source*, so ``G`` is never resident: a 2-D array / tensor (split into ``chunk_rows`` row blocks), a list
of ``(c_i × d)`` chunks, a zero-argument callable returning a fresh iterable of chunks (needed by DataInf with a
generator: λ needs all ``n`` rows first), or a one-shot iterator (TracIn and Cosine make a single pass).

Precision: float64 when ``V`` is float64, float32 otherwise; ``compute_dtype=torch.bfloat16`` runs the matmuls
in bfloat16 (norms, λ and accumulators stay float32); ``compute_dtype="tf32"`` is float32 with TF32 GEMMs on
CUDA (plain float32 elsewhere). ``compute_dtype`` may be a torch dtype or its name. Training chunks of another
dtype are cast. Memory: O(mn + md + chunk·d); DataInf's factor form makes three passes, its gram/explicit
forms materialise G.

Device: ``device=None`` or ``"cpu"`` computes on the CPU (unchanged, bitwise). ``device="cuda"`` moves V once
and streams the training chunks through pinned, double-buffered host buffers (``_chunks.DeviceChunks``) in
device chunks of ``device_chunk_rows`` rows (default: sized from free device memory); the result comes back
as the same numpy (m × n) array.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from layerinf.errors import LayerinfError
from layerinf.influence._chunks import (ZERO_NORM_RTOL, ChunkSource, DeviceChunks, _as_tensor, _checked,
                                        _chunk_passes, _gemm_into, _inverse_norms, _mm, _numpy_mn, _Output,
                                        _result_dtype, _row_norms, _row_sq_norms, device_rows_for, gemm_precision,
                                        resolve_compute, score_device)
from layerinf.influence.we import WEGrads, cosine_we, top_k_rows, tracin_we, tracin_we_topk

__all__ = [
    "DATAINF_MAX_NUMEL",
    "METHODS",
    "WEGrads",
    "ZERO_NORM_RTOL",
    "cosine",
    "cosine_we",
    "datainf",
    "datainf_applicable",
    "datainf_averaged",
    "datainf_lambda",
    "kwon_influence",
    "score_concat",
    "score_cosine",
    "score_datainf",
    "score_tracin",
    "score_tracin_cp",
    "score_tracin_cp_we",
    "top_k_rows",
    "tracin",
    "tracin_cp",
    "tracin_we",
    "tracin_we_topk",
]

DATAINF_MAX_NUMEL = 100_000  # spec §3.3: [C] skips DataInf for modules with d_b ≥ 100 000
DATAINF_LAMBDA_SCALE = 0.1  # spec §3.3: λ = 0.1 × mean squared gradient entry ([K] lambda_const_param=10)
METHODS = ("tracin", "cosine", "datainf")  # the paper's methods; registry.METHODS also holds tracin_cp and others
DATAINF_FORMS = ("factor", "gram", "explicit")


# ------------------------------------------------------------------------------------- TracIn and Cosine


def _on(V: torch.Tensor) -> torch.device | None:
    """Where results live: None (the CPU, as always) or V's accelerator."""
    return None if V.device.type == "cpu" else V.device


def _tracin_or_cosine(method: str, V: torch.Tensor, passes, n, mm_dtype, acc) -> torch.Tensor:
    m, d = V.shape
    out = _Output(m, n, acc, _on(V))
    Vm = V.to(mm_dtype).contiguous()
    g_norms = []
    for chunk in passes():
        chunk = _checked(chunk, d)
        _gemm_into(out.slot(chunk.shape[0]), chunk, Vm, mm_dtype)  # (c × m)
        if method == "cosine":
            g_norms.append(_row_norms(chunk, acc))
    St = out.transposed()
    if method == "cosine":  # scaled at the end: the zero-norm cut needs the largest of all n norms
        inv_g = _inverse_norms(torch.cat(g_norms) if g_norms else torch.zeros(0, dtype=acc, device=_on(V)))
        St.mul_(inv_g[:, None]).mul_(_inverse_norms(_row_norms(V, acc))[None, :])
    return St


def tracin(V, G, *, compute_dtype=None, chunk_rows: int = 4096, device=None) -> np.ndarray:
    """TracIn with one checkpoint and η = 1 (spec §3.1): ``S = V Gᵀ`` (m × n)."""
    return score_tracin(V, G, compute_dtype=compute_dtype, chunk_rows=chunk_rows, device=device)


def tracin_cp(checkpoints: Sequence[tuple[Any, Any]], lrs: Sequence[float], *,
              compute_dtype: torch.dtype | None = None, chunk_rows: int = 4096, device=None) -> np.ndarray:
    """TracInCP (spec §3.1, E8): ``S = Σ_c η_c V_c G_cᵀ`` over checkpoints ``(V_c, G_c)`` with learning rates η_c."""
    if not isinstance(checkpoints, (list, tuple)):
        checkpoints = list(checkpoints)
    return score_tracin_cp([v for v, _ in checkpoints], [g for _, g in checkpoints], lrs=lrs,
                           compute_dtype=compute_dtype, chunk_rows=chunk_rows, device=device)


def _check_checkpoints(Vs: Sequence[Any], sources: Sequence[Any], lrs: Sequence[float] | None) -> list[float]:
    if lrs is None or isinstance(lrs, (str, bytes)) or not isinstance(Vs, (list, tuple)) \
            or not isinstance(sources, (list, tuple)) or not Vs or not len(Vs) == len(sources) == len(lrs):
        n_lrs = "no" if lrs is None else len(lrs)
        raise LayerinfError(f"TracInCP needs one (validation, training) gradient pair and one learning rate per "
                            f"checkpoint; got {len(Vs) if isinstance(Vs, (list, tuple)) else 'no list of'} "
                            f"validation block(s) and {n_lrs} learning rate(s)",
                            "pass lists V=[V_c], train_chunks=[G_c] and lrs=[η_c] of the same length (≥ 1)")
    out = [float(x) for x in lrs]
    if not all(np.isfinite(out)):
        raise LayerinfError(f"TracInCP learning rates must be finite, got {out}", "pass finite learning rates")
    return out


def score_tracin_cp(V, train_chunks, n: int | None = None, *, lrs: Sequence[float] | None = None,
                    compute_dtype=None, chunk_rows: int = 4096, device=None,
                    device_chunk_rows: int | None = None) -> np.ndarray:
    """TracInCP on one module: ``V`` is the list of per-checkpoint validation blocks V_c (m × d), ``train_chunks``
    the list of per-checkpoint chunk sources G_c, ``lrs`` the η_c; returns ``Σ_c η_c V_c G_cᵀ`` (m × n), each term
    streamed like :func:`score_tracin` and accumulated in float64 (float32 result, like TracIn)."""
    lrs = _check_checkpoints(V, train_chunks, lrs)
    total = None
    for Vc, Gc, lr in zip(V, train_chunks, lrs):
        S = score_tracin(Vc, Gc, n, compute_dtype=compute_dtype, chunk_rows=chunk_rows, device=device,
                         device_chunk_rows=device_chunk_rows)
        total = lr * S.astype(np.float64) if total is None else total + lr * S.astype(np.float64)
    return total.astype(np.result_type(S.dtype, np.float32))


def score_tracin_cp_we(V_we, train_chunks, n: int | None = None, *, lrs: Sequence[float] | None = None,
                       compute_dtype=None) -> np.ndarray:
    """TracInCP on row-sparse word embeddings: ``Σ_c η_c`` TracIn-WE at checkpoint c (lists as
    :func:`score_tracin_cp`)."""
    lrs = _check_checkpoints(V_we, train_chunks, lrs)
    total = None
    for Vc, Gc, lr in zip(V_we, train_chunks, lrs):
        S = np.asarray(tracin_we(Vc, Gc, n, compute_dtype=compute_dtype))
        total = lr * S.astype(np.float64) if total is None else total + lr * S.astype(np.float64)
    return total.astype(np.float32)


def cosine(V, G, *, compute_dtype=None, chunk_rows: int = 4096, device=None) -> np.ndarray:
    """Cosine of gradients (spec §3.2): ``S_jk = v_j·g_k / (‖v_j‖‖g_k‖)``.

    Zero rule: a row whose norm is ≤ 1e-10 (``ZERO_NORM_RTOL``) × the largest row norm of its own matrix (the m
    validation rows, or all n training rows) counts as a zero gradient, and its scores are 0 (neutral, no NaN).
    Only exact zeros and rounding noise fall under this; cosine is otherwise scale-invariant.
    """
    return score_cosine(V, G, compute_dtype=compute_dtype, chunk_rows=chunk_rows, device=device)


# ------------------------------------------------------------------------------------------------ DataInf


def datainf_applicable(numel: int, threshold: int | None = DATAINF_MAX_NUMEL) -> bool:
    """Whether DataInf runs on a module of ``numel`` parameters: ``numel < threshold`` (spec §3.3; None = always)."""
    return threshold is None or int(numel) < int(threshold)


def datainf_lambda(G_or_sum_sq, n: int | None = None, d: int | None = None) -> float:
    """DataInf damping λ = 0.1 · mean(G∘G) = 0.1 · Σ_k‖g_k‖² / (n d) (spec §3.3).

    Pass the ``n × d`` gradient block, or the streamed total sum of squares with ``n`` and ``d``.
    """
    if isinstance(G_or_sum_sq, (np.ndarray, torch.Tensor)) and np.ndim(G_or_sum_sq) == 2:
        G = _as_tensor(G_or_sum_sq)
        n, d = G.shape
        sum_sq = float(_row_sq_norms(G, torch.float64).sum())
    else:
        if n is None or d is None:
            raise LayerinfError("datainf_lambda got a sum of squares without n and d", "pass n and d too")
        sum_sq = float(G_or_sum_sq)
    if n * d == 0:
        return 0.0
    return DATAINF_LAMBDA_SCALE * sum_sq / (n * d)


def _lambda_zero(n: int, m: int, acc: torch.dtype) -> torch.Tensor:
    warnings.warn("DataInf: λ = 0 (all training gradients of this module are zero); returning zero scores",
                  RuntimeWarning, stacklevel=4)
    return torch.zeros((n, m), dtype=acc)


def _datainf_factor(V, passes, n, lam, mm_dtype, acc, legacy_datainf0) -> torch.Tensor:
    """Factor form (spec §3.3 b), three passes: A & ‖g‖² → P = (A D⁻¹) G → S = (A − P Gᵀ/n)/λ."""
    m, d = V.shape
    Vm = V.to(mm_dtype).contiguous()
    out = _Output(m, n, acc, _on(V))
    sq_blocks = []
    total_sq = 0.0
    for chunk in passes():  # pass 1: Aᵀ = G Vᵀ (kept; becomes Sᵀ in place) and row norms
        chunk = _checked(chunk, d)
        sq = _row_sq_norms(chunk, acc)
        part = sq.sum(dtype=torch.float64)
        total_sq = total_sq + (float(part) if part.device.type == "cpu" else part)  # no sync per device chunk
        sq_blocks.append(sq)
        _gemm_into(out.slot(chunk.shape[0]), chunk, Vm, mm_dtype)
    At = out.transposed()  # (n × m)
    n = At.shape[0]
    sq_all = torch.cat(sq_blocks) if sq_blocks else torch.zeros(0, dtype=acc, device=_on(V))
    if lam is None:
        lam = datainf_lambda(float(total_sq), n, d)
    if not lam > 0:
        return _lambda_zero(n, m, acc)
    inv_diag = 1.0 / (lam + sq_all)  # D⁻¹
    P = torch.zeros((m, d), dtype=acc, device=_on(V))
    lo = 0
    for chunk in passes():  # pass 2: P = (A D⁻¹) G
        chunk = _checked(chunk, d)
        c = chunk.shape[0]
        Wt = At[lo : lo + c] * inv_diag[lo : lo + c, None]  # (c × m) = (A D⁻¹)ᵀ block
        if mm_dtype == acc:
            P.addmm_(Wt.T, chunk.to(acc))
        else:
            P += _mm(Wt.T.to(mm_dtype), chunk.to(mm_dtype), acc)
        lo += c
    if lo != n:
        raise LayerinfError(f"the second pass over the training chunks gave {lo} rows, the first {n}",
                            "the chunk source must yield the same chunks on every call")
    a_scale = 1.0 / n if legacy_datainf0 else 1.0
    lo = 0
    Pm = P.to(mm_dtype).contiguous()
    for chunk in passes():  # pass 3: Sᵀ = (Aᵀ − G Pᵀ / n) / λ, written over Aᵀ
        chunk = _checked(chunk, d)
        c = chunk.shape[0]
        block = At[lo : lo + c]
        if mm_dtype == acc:
            block.mul_(a_scale * n).addmm_(chunk.to(acc), Pm.T, alpha=-1.0).div_(lam * n)
        else:
            block.mul_(a_scale).sub_(_mm(chunk.to(mm_dtype), Pm.T, acc), alpha=1.0 / n).div_(lam)
        lo += c
    return At


def _datainf_dense(V, passes, n, lam, acc, form, legacy_datainf0) -> torch.Tensor:
    """Gram (spec §3.3 a) or explicit Sherman–Morrison (d × d) form; both materialise G (reference forms)."""
    m, d = V.shape
    chunks = [_checked(c, d).to(acc, copy=True) for c in passes()]  # device chunks are reused buffers
    G = torch.cat(chunks) if chunks else torch.zeros((0, d), dtype=acc, device=_on(V))
    if n is not None and G.shape[0] != n:
        raise LayerinfError(f"the training chunks hold {G.shape[0]} rows, expected n={n}", "pass the right n")
    n = G.shape[0]
    V = V.to(acc)
    sq = _row_sq_norms(G, acc)
    if lam is None:
        lam = datainf_lambda(float(sq.sum(dtype=torch.float64)), n, d)
    if not lam > 0:
        return _lambda_zero(n, m, acc)
    a_scale = 1.0 / n if legacy_datainf0 else 1.0
    A = V @ G.T
    if form == "gram":
        B = G @ G.T
        return ((a_scale * A - (A / (lam + sq)[None, :]) @ B / n) / lam).T
    # explicit: H̃⁻¹ = (1/(nλ)) Σ_i [I − g_i g_iᵀ/(λ + ‖g_i‖²)] = (1/λ)(I − Gᵀ D⁻¹ G / n)
    H_inv = (torch.eye(d, dtype=acc, device=_on(V)) * a_scale - (G.T * (1.0 / (lam + sq))[None, :]) @ G / n) / lam
    return (V @ H_inv @ G.T).T


def datainf(V, G, form: str = "factor", lam: float | None = None, *, compute_dtype=None,
            legacy_datainf0: bool = False, chunk_rows: int = 4096, device=None) -> np.ndarray:
    """DataInf per validation sample, helpful > 0 (spec §3.3): ``S = (1/λ)[A − (1/n) A D⁻¹ B]``.

    ``A = V Gᵀ``, ``B = G Gᵀ``, ``D = diag(λ + ‖g_i‖²)``, λ = :func:`datainf_lambda` unless given. ``form`` is
    ``"factor"`` (streamed, O(mn + md) memory), ``"gram"`` or ``"explicit"``; all agree to 1e-10 in float64.
    λ = 0 gives zeros and a warning. ``legacy_datainf0=True`` reproduces [C]'s mathematically wrong
    ``datainf0`` variant (A divided by nλ); it is never the default.
    """
    return score_datainf(V, G, compute_dtype=compute_dtype, lam=lam, form=form,
                         legacy_datainf0=legacy_datainf0, chunk_rows=chunk_rows, device=device)


def datainf_averaged(V, G, lam: float | None = None, *, compute_dtype: torch.dtype | None = None,
                     chunk_rows: int = 4096) -> np.ndarray:
    """Kwon's averaged-validation DataInf in our sign (spec §3.3 c): ``s = mean_j S_jk = −I_k``, shape (n,).

    S is linear in v, so this is the factor form with the single validation row v̄ = mean_j v_j: O(nd) time.
    """
    Vt = _as_tensor(V)
    if Vt.ndim != 2 or Vt.shape[0] == 0:
        raise LayerinfError("datainf_averaged needs at least one validation gradient (m × d)", "check V")
    v_bar = Vt.to(torch.float64 if Vt.dtype == torch.float64 else torch.float32).mean(dim=0, keepdim=True)
    return score_datainf(v_bar, G, compute_dtype=compute_dtype, lam=lam, chunk_rows=chunk_rows)[0]


def kwon_influence(V, G, lam: float | None = None) -> np.ndarray:
    """Kwon et al.'s DataInf influence in its NATIVE sign (positive = harmful), eq. 5 closed form (spec §3.3).

    ``I_k = (1/λ)((1/n) Σ_i L_i L_ik / (λ + L_ii) − L_k)`` with ``L = G Gᵀ`` and ``L_i = v̄·g_i``. A dense O(n²d)
    reference used by tests; scoring uses :func:`datainf_averaged` (which returns −I).
    """
    Vt, Gt = _as_tensor(V).to(torch.float64), _as_tensor(G).to(torch.float64)
    n, d = Gt.shape
    lam = datainf_lambda(Gt) if lam is None else lam
    if not lam > 0:
        warnings.warn("DataInf: λ = 0; returning zero influence", RuntimeWarning, stacklevel=2)
        return np.zeros(n)
    L = Gt @ Gt.T
    Lv = Gt @ Vt.mean(dim=0)
    inner = (Lv / (lam + torch.diagonal(L))) @ L / n
    return ((inner - Lv) / lam).numpy()


# ------------------------------------------------------------------------------------------- entry points


def _dense_scores(method: str, V, train_chunks: ChunkSource, n: int | None, compute_dtype,
                  chunk_rows: int, lam: float | None = None, form: str = "factor",
                  legacy_datainf0: bool = False, device=None, device_chunk_rows: int | None = None) -> np.ndarray:
    Vt = _as_tensor(V)
    if Vt.ndim != 2:
        raise LayerinfError(f"validation gradients must be 2-D (m × d), got shape {tuple(Vt.shape)}",
                            "pass one module's validation gradients as an m × d array")
    mm_dtype, acc = _result_dtype(Vt, compute_dtype)
    Vt = Vt.to(acc)
    dev = score_device(device)
    passes = _chunk_passes(train_chunks, chunk_rows)
    if dev is not None:  # V once onto the device; training chunks staged through pinned buffers
        m, d = Vt.shape
        Vt = Vt.to(dev)
        rows = device_rows_for(dev, d, m, n, mm_dtype, acc, extra_md=1 if method == "datainf" else 0,
                               requested=device_chunk_rows)
        passes = DeviceChunks(_chunk_passes(train_chunks, chunk_rows, raw=True), d, rows, dev)
    with torch.no_grad(), gemm_precision(dev, resolve_compute(compute_dtype)[1]):
        # each path returns the TRANSPOSED (n × m) result
        if method in ("tracin", "cosine"):
            St = _tracin_or_cosine(method, Vt, passes, n, mm_dtype, acc)
        elif form == "factor":
            St = _datainf_factor(Vt, passes, n, lam, mm_dtype, acc, legacy_datainf0)
        elif form in DATAINF_FORMS:
            St = _datainf_dense(Vt, passes, n, lam, acc, form, legacy_datainf0)
        else:
            raise LayerinfError(f"unknown DataInf form '{form}'", f"use one of {', '.join(DATAINF_FORMS)}")
    return _numpy_mn(St)


def score_tracin(V, train_chunks: ChunkSource, n: int | None = None, *, compute_dtype=None, chunk_rows: int = 4096,
                 device=None, device_chunk_rows: int | None = None) -> np.ndarray:
    """TracIn on any chunk source, ``n`` checked when given: the registry's ``score_dense`` for ``tracin``."""
    return _dense_scores("tracin", V, train_chunks, n, compute_dtype, chunk_rows, device=device,
                         device_chunk_rows=device_chunk_rows)


def score_cosine(V, train_chunks: ChunkSource, n: int | None = None, *, compute_dtype=None, chunk_rows: int = 4096,
                 device=None, device_chunk_rows: int | None = None) -> np.ndarray:
    """Cosine (zero rule of :func:`cosine`) on any chunk source: the registry's ``score_dense`` for ``cosine``."""
    return _dense_scores("cosine", V, train_chunks, n, compute_dtype, chunk_rows, device=device,
                         device_chunk_rows=device_chunk_rows)


def score_datainf(V, train_chunks: ChunkSource, n: int | None = None, *, compute_dtype=None,
                  lam: float | None = None, form: str = "factor", legacy_datainf0: bool = False,
                  chunk_rows: int = 4096, device=None, device_chunk_rows: int | None = None) -> np.ndarray:
    """DataInf (see :func:`datainf`) on any chunk source: the registry's ``score_dense`` for ``datainf``."""
    return _dense_scores("datainf", V, train_chunks, n, compute_dtype, chunk_rows, lam, form, legacy_datainf0,
                         device=device, device_chunk_rows=device_chunk_rows)


def score_concat(method: str, V_blocks: Sequence[Any], train_sources: Sequence[ChunkSource], n: int | None = None,
                 *, compute_dtype=None, chunk_rows: int = 4096, device=None,
                 device_chunk_rows: int | None = None) -> np.ndarray:
    """TracIn or Cosine on the CONCATENATED gradients of several modules (``group_mode="concat"``, spec §2.3 [O]).

    ``V_blocks[b]`` is module b's (m × d_b) block and ``train_sources[b]`` its chunk source, read in lockstep (same
    row counts). TracIn-concat equals the sum of per-module TracIn; Cosine-concat (zero rule of :func:`cosine` on
    the concatenated norms) differs from the mean of per-module cosines. ``device``: as the per-module methods
    (every module's chunks re-cut to the same device rows, so they stay in lockstep).
    """
    method = method.lower()
    if method not in ("tracin", "cosine"):
        raise LayerinfError(f"group_mode='concat' supports tracin and cosine, not '{method}'",
                            "use the default per-module group mode for DataInf (block-diagonal Hessian)")
    if len(V_blocks) != len(train_sources) or not V_blocks:
        raise LayerinfError("score_concat needs one chunk source per validation block", "check the module lists")
    Vs = [_as_tensor(v) for v in V_blocks]
    mm_dtype, acc = _result_dtype(Vs[0], compute_dtype)
    Vs = [v.to(acc) for v in Vs]
    m = Vs[0].shape[0]
    if any(v.shape[0] != m for v in Vs):
        raise LayerinfError("validation blocks have different numbers of rows", "use the same validation samples")
    dev = score_device(device)
    if dev is None:
        iters = [_chunk_passes(s, chunk_rows)() for s in train_sources]
    else:
        Vs = [v.to(dev) for v in Vs]
        d_all = sum(v.shape[1] for v in Vs)
        rows = device_rows_for(dev, d_all, m, n, mm_dtype, acc, requested=device_chunk_rows)
        iters = [DeviceChunks(_chunk_passes(s, chunk_rows, raw=True), v.shape[1], rows, dev)()
                 for s, v in zip(train_sources, Vs)]
    Vms = [v.to(mm_dtype).contiguous() for v in Vs]
    out = _Output(m, n, acc, dev)
    g_norms = []
    with torch.no_grad(), gemm_precision(dev, resolve_compute(compute_dtype)[1]):
        for chunks in zip(*iters, strict=True):
            rows = {c.shape[0] for c in chunks}
            if len(rows) != 1:
                raise LayerinfError("concatenated modules yield chunks of different sizes",
                                    "read every module with the same chunk size")
            block = out.slot(chunks[0].shape[0])
            block.zero_()
            for v, c in zip(Vms, chunks):
                block += _mm(_checked(c, v.shape[1]).to(mm_dtype), v.T, acc)
            if method == "cosine":
                g_norms.append(torch.sqrt(sum(_row_sq_norms(c, acc) for c in chunks)))
        St = out.transposed()
        if method == "cosine":
            inv_v = _inverse_norms(torch.sqrt(sum(_row_sq_norms(v, acc) for v in Vs)))
            inv_g = _inverse_norms(torch.cat(g_norms) if g_norms else torch.zeros(0, dtype=acc, device=dev))
            St.mul_(inv_g[:, None]).mul_(inv_v[None, :])
    return _numpy_mn(St)
