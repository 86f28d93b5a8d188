"""Influence methods on one module's per-sample gradients (spec §3) — pure math, streamed over training chunks.

Every function returns a score matrix ``S`` of shape ``(m, n)`` (validation × train) oriented so that a
HIGHER score means a MORE HELPFUL training example (spec §1.1); for DataInf this is ``s = −I_Kwon``.

Inputs
------
``V`` is the ``(m, d)`` validation-gradient block (numpy or torch). The training gradients ``G`` (``n × d``) may
be given as a *chunk source* so that ``G`` is never resident:

* a 2-D array / tensor (split internally into row blocks of ``chunk_rows``),
* a list / tuple of ``(c_i × d)`` chunks,
* a zero-argument callable returning a fresh iterable of chunks (required by DataInf with a one-shot
  generator, because λ needs all ``n`` rows before the second pass),
* a one-shot iterator (fine for TracIn and Cosine, which make a single pass).

Precision: float64 when ``V`` is float64, float32 otherwise; ``compute_dtype=torch.bfloat16`` runs the matmuls
in bfloat16 (norms, λ and accumulators stay float32; the GEMM outputs are rounded to bfloat16 by torch on
CPU, so expect more ties). Results are numpy arrays.

Memory: TracIn/Cosine O(mn + md + chunk·d); DataInf factor form O(mn + md + chunk·d) with three passes over
the chunks (A and row norms → P = (A D⁻¹) G → S = (A − P Gᵀ / n) / λ); Gram/explicit forms materialise G
(they are reference forms).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from layerinf.errors import LayerinfError

__all__ = [
    "DATAINF_MAX_NUMEL",
    "METHODS",
    "WEGrads",
    "cosine",
    "cosine_we",
    "datainf",
    "datainf_applicable",
    "datainf_averaged",
    "datainf_lambda",
    "kwon_influence",
    "score_concat",
    "score_module",
    "top_k_rows",
    "tracin",
    "tracin_cp",
    "tracin_we",
    "tracin_we_topk",
]

DATAINF_MAX_NUMEL = 100_000  # spec §3.3: [C] skips DataInf for modules with d_b ≥ 100 000
DATAINF_LAMBDA_SCALE = 0.1  # spec §3.3: λ = 0.1 × mean squared gradient entry ([K] lambda_const_param=10)
METHODS = ("tracin", "cosine", "datainf")
DATAINF_FORMS = ("factor", "gram", "explicit")

ChunkSource = Any  # array | tensor | Sequence[array] | Callable[[], Iterable[array]] | Iterator[array]


# ----------------------------------------------------------------------------------------------- helpers


def _as_tensor(x: Any) -> torch.Tensor:
    """A CPU tensor view of ``x`` (numpy, memmap or torch) without copying when possible."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    arr = np.asarray(x)
    if not arr.flags.writeable:  # memmaps / read-only views: torch refuses to alias them silently
        arr = np.array(arr)
    if arr.dtype.kind not in "fc":
        arr = arr.astype(np.float64)
    return torch.from_numpy(arr)


def _result_dtype(V: torch.Tensor, compute_dtype: torch.dtype | None) -> tuple[torch.dtype, torch.dtype]:
    """(matmul dtype, accumulator/result dtype): float64 in → float64; bf16 fast path accumulates float32."""
    if compute_dtype is None:
        compute_dtype = torch.float64 if V.dtype == torch.float64 else torch.float32
    if compute_dtype not in (torch.float32, torch.float64, torch.bfloat16):
        raise LayerinfError(f"unsupported compute dtype {compute_dtype}", "use torch.float32, float64 or bfloat16")
    acc = torch.float64 if compute_dtype == torch.float64 else torch.float32
    return compute_dtype, acc


def _chunk_passes(source: ChunkSource, chunk_rows: int) -> Callable[[], Iterator[torch.Tensor]]:
    """Normalise a chunk source into a function giving a fresh iterator of 2-D tensors per call."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim != 2:
            raise LayerinfError(f"training gradients must be 2-D (n × d), got shape {tuple(source.shape)}",
                                "pass one module's gradients as an n × d array or as row chunks")
        step = max(1, int(chunk_rows))
        return lambda: (_as_tensor(source[i : i + step]) for i in range(0, source.shape[0], step))
    if isinstance(source, (list, tuple)):
        return lambda: (_as_tensor(c) for c in source)
    if callable(source):
        return lambda: (_as_tensor(c) for c in source())
    if isinstance(source, Iterable):
        it = iter(source)
        used = [False]

        def once() -> Iterator[torch.Tensor]:
            if used[0]:
                raise LayerinfError("this method needs several passes over the training chunks, "
                                    "but a one-shot iterator was given",
                                    "pass a list of chunks or a callable returning a fresh iterator")
            used[0] = True
            return (_as_tensor(c) for c in it)

        return once
    raise LayerinfError(f"cannot read training gradients from {type(source).__name__}",
                        "pass an array, a list of chunks or a callable returning an iterator of chunks")


def _checked(chunk: torch.Tensor, d: int) -> torch.Tensor:
    if chunk.ndim == 1:
        chunk = chunk.reshape(1, -1)
    if chunk.ndim != 2 or chunk.shape[1] != d:
        raise LayerinfError(f"a training chunk has shape {tuple(chunk.shape)}, expected (rows, {d})",
                            "validation and training gradients must come from the same module")
    return chunk


def _row_norms(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """Row-wise L2 norms computed in ≥ float32 (spec §3.2)."""
    return torch.linalg.vector_norm(x.to(acc), dim=1)


def _row_sq_norms(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """Row-wise squared L2 norms computed in ≥ float32."""
    return _row_norms(x, acc).square()


class _Output:
    """The (m × n) result, stored transposed (n × m) so each training chunk fills a contiguous row block.

    ``n=None`` (unknown up front) collects the blocks and concatenates them at the end.
    """

    def __init__(self, m: int, n: int | None, dtype: torch.dtype):
        self.m, self.n, self.dtype = m, n, dtype
        self.filled = 0
        self.buf = torch.empty((n, m), dtype=dtype) if n is not None else None
        self.blocks: list[torch.Tensor] = []

    def slot(self, c: int) -> torch.Tensor:
        """The next (c × m) block of the transposed result, to be written in place."""
        if self.buf is not None:
            if self.filled + c > self.n:
                raise LayerinfError(f"the training chunks hold more than n={self.n} rows",
                                    "pass the right n or the right chunks")
            block = self.buf[self.filled : self.filled + c]
        else:
            block = torch.empty((c, self.m), dtype=self.dtype)
            self.blocks.append(block)
        self.filled += c
        return block

    def transposed(self) -> torch.Tensor:
        """The filled (n × m) result."""
        if self.buf is None:
            return torch.cat(self.blocks, dim=0) if self.blocks else torch.zeros((0, self.m), dtype=self.dtype)
        if self.filled != self.n:
            raise LayerinfError(f"the training chunks hold {self.filled} rows, expected n={self.n}",
                                "pass the right n or the right chunks")
        return self.buf


def _gemm_into(out: torch.Tensor, chunk: torch.Tensor, Vm: torch.Tensor, mm_dtype: torch.dtype) -> torch.Tensor:
    """out (c × m) = chunk · Vmᵀ, written in place when the dtypes allow."""
    if mm_dtype == out.dtype:
        return torch.mm(chunk.to(mm_dtype), Vm.T, out=out)
    out.copy_(torch.mm(chunk.to(mm_dtype), Vm.T))
    return out


def _numpy_mn(St: torch.Tensor) -> np.ndarray:
    """The (m × n) C-contiguous numpy result from the transposed (n × m) buffer."""
    return np.ascontiguousarray(St.numpy().T)


# ------------------------------------------------------------------------------------- TracIn and Cosine


def _tracin_or_cosine(method: str, V: torch.Tensor, passes, n, mm_dtype, acc) -> torch.Tensor:
    m, d = V.shape
    out = _Output(m, n, acc)
    Vm = V.to(mm_dtype).contiguous()
    inv_v = None
    if method == "cosine":
        inv_v = _safe_inverse(_row_norms(V, acc))
    for chunk in passes():
        chunk = _checked(chunk, d)
        block = _gemm_into(out.slot(chunk.shape[0]), chunk, Vm, mm_dtype)  # (c × m)
        if inv_v is not None:
            block.mul_(_safe_inverse(_row_norms(chunk, acc))[:, None]).mul_(inv_v[None, :])
    return out.transposed()


def _safe_inverse(norms: torch.Tensor) -> torch.Tensor:
    """1/‖x‖ with 0 for zero norms, so a zero gradient gets a neutral cosine of 0 (spec §3.2 [O])."""
    inv = torch.zeros_like(norms)
    nz = norms > 0
    inv[nz] = 1.0 / norms[nz]
    return inv


def tracin(V, G, *, compute_dtype: torch.dtype | None = None, chunk_rows: int = 4096) -> np.ndarray:
    """TracIn with one checkpoint and η = 1 (spec §3.1): ``S = V Gᵀ`` (m × n)."""
    return score_module("tracin", V, G, compute_dtype=compute_dtype, chunk_rows=chunk_rows)


def tracin_cp(checkpoints: Sequence[tuple[Any, Any]], lrs: Sequence[float], *,
              compute_dtype: torch.dtype | None = None, chunk_rows: int = 4096) -> np.ndarray:
    """TracInCP (spec §3.1, E8): ``S = Σ_c η_c V_c G_cᵀ`` over checkpoints ``(V_c, G_c)`` with learning rates η_c."""
    if len(checkpoints) != len(lrs) or not checkpoints:
        raise LayerinfError(f"{len(checkpoints)} checkpoint(s) but {len(lrs)} learning rate(s)",
                            "give one learning rate per checkpoint (at least one)")
    total = None
    for (Vc, Gc), lr in zip(checkpoints, lrs):
        S = score_module("tracin", Vc, Gc, compute_dtype=compute_dtype, chunk_rows=chunk_rows)
        total = float(lr) * S if total is None else total + float(lr) * S
    return total


def cosine(V, G, *, compute_dtype: torch.dtype | None = None, chunk_rows: int = 4096) -> np.ndarray:
    """Cosine of gradients (spec §3.2): ``S_jk = v_j·g_k / (‖v_j‖‖g_k‖)``, 0 where a norm is 0."""
    return score_module("cosine", V, G, compute_dtype=compute_dtype, chunk_rows=chunk_rows)


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


def _datainf_factor(V, passes, n, lam, mm_dtype, acc, legacy_datainf0) -> torch.Tensor:
    """Factor form (spec §3.3 b), three passes: A & ‖g‖² → P = (A D⁻¹) G → S = (A − P Gᵀ/n)/λ."""
    m, d = V.shape
    Vm = V.to(mm_dtype).contiguous()
    out = _Output(m, n, acc)
    sq_blocks = []
    total_sq = 0.0
    for chunk in passes():  # pass 1: Aᵀ = G Vᵀ (kept; becomes Sᵀ in place) and row norms
        chunk = _checked(chunk, d)
        sq = _row_sq_norms(chunk, acc)
        total_sq += float(sq.sum(dtype=torch.float64))
        sq_blocks.append(sq)
        _gemm_into(out.slot(chunk.shape[0]), chunk, Vm, mm_dtype)
    At = out.transposed()  # (n × m)
    n = At.shape[0]
    sq_all = torch.cat(sq_blocks) if sq_blocks else torch.zeros(0, dtype=acc)
    if lam is None:
        lam = datainf_lambda(total_sq, n, d)
    if not lam > 0:
        warnings.warn("DataInf: λ = 0 (all training gradients of this module are zero); returning zero scores",
                      RuntimeWarning, stacklevel=3)
        return torch.zeros((n, m), dtype=acc)
    inv_diag = 1.0 / (lam + sq_all)  # D⁻¹
    P = torch.zeros((m, d), dtype=acc)
    lo = 0
    for chunk in passes():  # pass 2: P = (A D⁻¹) G
        chunk = _checked(chunk, d)
        c = chunk.shape[0]
        Wt = At[lo : lo + c] * inv_diag[lo : lo + c, None]  # (c × m) = (A D⁻¹)ᵀ block
        if mm_dtype == acc:
            P.addmm_(Wt.T, chunk.to(acc))
        else:
            P += torch.mm(Wt.T.to(mm_dtype), chunk.to(mm_dtype)).to(acc)
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
            block.mul_(a_scale * n).addmm_(chunk, Pm.T, alpha=-1.0).div_(lam * n)
        else:
            block.mul_(a_scale).sub_(torch.mm(chunk.to(mm_dtype), Pm.T).to(acc), alpha=1.0 / n).div_(lam)
        lo += c
    return At


def _datainf_dense(V, passes, n, lam, acc, form, legacy_datainf0) -> torch.Tensor:
    """Gram (spec §3.3 a) or explicit Sherman–Morrison (d × d) form; both materialise G (reference forms)."""
    m, d = V.shape
    chunks = [_checked(c, d).to(acc) for c in passes()]
    G = torch.cat(chunks) if chunks else torch.zeros((0, d), dtype=acc)
    if n is not None and G.shape[0] != n:
        raise LayerinfError(f"the training chunks hold {G.shape[0]} rows, expected n={n}", "pass the right n")
    n = G.shape[0]
    V = V.to(acc)
    sq = _row_sq_norms(G, acc)
    if lam is None:
        lam = datainf_lambda(float(sq.sum(dtype=torch.float64)), n, d)
    if not lam > 0:
        warnings.warn("DataInf: λ = 0 (all training gradients of this module are zero); returning zero scores",
                      RuntimeWarning, stacklevel=3)
        return torch.zeros((n, m), dtype=acc)
    a_scale = 1.0 / n if legacy_datainf0 else 1.0
    A = V @ G.T
    if form == "gram":
        B = G @ G.T
        return ((a_scale * A - (A / (lam + sq)[None, :]) @ B / n) / lam).T
    # explicit: H̃⁻¹ = (1/(nλ)) Σ_i [I − g_i g_iᵀ/(λ + ‖g_i‖²)] = (1/λ)(I − Gᵀ D⁻¹ G / n)
    H_inv = (torch.eye(d, dtype=acc) * a_scale - (G.T * (1.0 / (lam + sq))[None, :]) @ G / n) / lam
    return (V @ H_inv @ G.T).T


def datainf(V, G, form: str = "factor", lam: float | None = None, *, compute_dtype: torch.dtype | None = None,
            legacy_datainf0: bool = False, chunk_rows: int = 4096) -> np.ndarray:
    """DataInf per validation sample, helpful > 0 (spec §3.3): ``S = (1/λ)[A − (1/n) A D⁻¹ B]``.

    ``A = V Gᵀ``, ``B = G Gᵀ``, ``D = diag(λ + ‖g_i‖²)``, λ = :func:`datainf_lambda` unless given. ``form`` is
    ``"factor"`` (streamed, O(mn + md) memory), ``"gram"`` or ``"explicit"``; all agree to 1e-10 in float64.
    λ = 0 gives zeros and a warning. ``legacy_datainf0=True`` reproduces [C]'s mathematically wrong
    ``datainf0`` variant (A divided by nλ); it is never the default.
    """
    return score_module("datainf", V, G, compute_dtype=compute_dtype, lam=lam, form=form,
                        legacy_datainf0=legacy_datainf0, chunk_rows=chunk_rows)


def datainf_averaged(V, G, lam: float | None = None, *, compute_dtype: torch.dtype | None = None,
                     chunk_rows: int = 4096) -> np.ndarray:
    """Kwon's averaged-validation DataInf in our sign (spec §3.3 c): ``s = mean_j S_jk = −I_k``, shape (n,).

    S is linear in v, so this is the factor form with the single validation row v̄ = mean_j v_j: O(nd) time.
    """
    Vt = _as_tensor(V)
    if Vt.ndim != 2 or Vt.shape[0] == 0:
        raise LayerinfError("datainf_averaged needs at least one validation gradient (m × d)", "check V")
    v_bar = Vt.to(torch.float64 if Vt.dtype == torch.float64 else torch.float32).mean(dim=0, keepdim=True)
    return score_module("datainf", v_bar, G, compute_dtype=compute_dtype, lam=lam, chunk_rows=chunk_rows)[0]


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


# -------------------------------------------------------------------------------------- the one entry point


def score_module(method: str, V, train_chunks: ChunkSource, n: int | None = None, *,
                 compute_dtype: torch.dtype | None = None, lam: float | None = None, form: str = "factor",
                 legacy_datainf0: bool = False, chunk_rows: int = 4096) -> np.ndarray:
    """One module's score matrix S (m × n, helpful > 0) for ``method`` ∈ {tracin, cosine, datainf} (spec §3).

    ``train_chunks`` is any chunk source (see the module docstring); ``n``, when given, is checked against the
    rows seen. TracIn/Cosine make one pass; DataInf's factor form makes three (λ needs all n rows first).
    """
    method = method.lower()
    if method not in METHODS:
        raise LayerinfError(f"unknown influence method '{method}'", f"use one of {', '.join(METHODS)}")
    Vt = _as_tensor(V)
    if Vt.ndim != 2:
        raise LayerinfError(f"validation gradients must be 2-D (m × d), got shape {tuple(Vt.shape)}",
                            "pass one module's validation gradients as an m × d array")
    mm_dtype, acc = _result_dtype(Vt, compute_dtype)
    Vt = Vt.to(acc)
    passes = _chunk_passes(train_chunks, chunk_rows)
    with torch.no_grad():  # each path returns the TRANSPOSED (n × m) result
        if method in ("tracin", "cosine"):
            St = _tracin_or_cosine(method, Vt, passes, n, mm_dtype, acc)
        elif form == "factor":
            St = _datainf_factor(Vt, passes, n, lam, mm_dtype, acc, legacy_datainf0)
        elif form in DATAINF_FORMS:
            St = _datainf_dense(Vt, passes, n, lam, acc, form, legacy_datainf0)
        else:
            raise LayerinfError(f"unknown DataInf form '{form}'", f"use one of {', '.join(DATAINF_FORMS)}")
    return _numpy_mn(St)


def score_concat(method: str, V_blocks: Sequence[Any], train_sources: Sequence[ChunkSource], n: int | None = None,
                 *, compute_dtype: torch.dtype | None = None, chunk_rows: int = 4096) -> np.ndarray:
    """TracIn or Cosine on the CONCATENATED gradients of several modules (``group_mode="concat"``, spec §2.3 [O]).

    ``V_blocks[b]`` is module b's (m × d_b) block and ``train_sources[b]`` its chunk source; the sources are read in
    lockstep and must yield chunks with the same row counts. TracIn-concat equals the sum of per-module TracIn;
    Cosine-concat differs from the mean of per-module cosines.
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
    inv_v = _safe_inverse(torch.sqrt(sum(_row_sq_norms(v, acc) for v in Vs)))
    Vms = [v.to(mm_dtype).contiguous() for v in Vs]
    iters = [_chunk_passes(s, chunk_rows)() for s in train_sources]
    out = _Output(m, n, acc)
    with torch.no_grad():
        for chunks in zip(*iters, strict=True):
            rows = {c.shape[0] for c in chunks}
            if len(rows) != 1:
                raise LayerinfError("concatenated modules yield chunks of different sizes",
                                    "read every module with the same chunk size")
            block = out.slot(chunks[0].shape[0])
            block.zero_()
            for v, c in zip(Vms, chunks):
                block += torch.mm(_checked(c, v.shape[1]).to(mm_dtype), v.T).to(acc)
            if method == "cosine":
                inv_g = _safe_inverse(torch.sqrt(sum(_row_sq_norms(c, acc) for c in chunks)))
                block.mul_(inv_g[:, None]).mul_(inv_v[None, :])
    return _numpy_mn(out.transposed())


# ------------------------------------------------------------------------ TracIn-WE on row-sparse gradients


class WEGrads(NamedTuple):
    """Row-sparse word-embedding gradients of consecutive samples (docs/internals.md, gradient store).

    Sample i owns entries ``indptr[i]:indptr[i+1]`` of ``tokens`` (token ids) and ``rows`` (nnz × h).
    Any ``(indptr, tokens, rows)`` triple (e.g. ``collect.WERows``) is accepted.
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
        S = S * _safe_inverse(v_norm)[:, None] * _safe_inverse(g_norm)[None, :]
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
    """Cosine on row-sparse WE gradients: TracIn-WE divided by the full WE-gradient norms (0 for zero norms)."""
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
