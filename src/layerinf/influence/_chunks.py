"""Shared plumbing of the influence methods: chunk sources, dtype rules, row norms and the (n × m) output buffer.

Private to :mod:`layerinf.influence.methods` and :mod:`layerinf.influence.we`; pure torch/numpy, no model code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from layerinf.errors import LayerinfError

ChunkSource = Any  # array | tensor | Sequence[array] | Callable[[], Iterable[array]] | Iterator[array]

# Cosine: a row whose L2 norm is ≤ ZERO_NORM_RTOL × the largest finite row norm of its own matrix (the m
# validation rows, or all n training rows) counts as a zero gradient and gets cosine 0. Such a row is rounding
# noise around zero; normalising it would turn noise into scores of order 1.
ZERO_NORM_RTOL = 1e-10


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


def _inverse_norms(norms: torch.Tensor) -> torch.Tensor:
    """1/‖x‖ per row, and 0 for a row that counts as zero (spec §3.2 [O], cosine 0 instead of NaN).

    A row counts as zero when ‖x‖ ≤ ZERO_NORM_RTOL (1e-10) × the largest finite norm among ``norms`` (all rows
    of the same matrix). Exact zeros always count; rows above the cut get exactly ``1.0 / ‖x‖``.
    """
    inv = torch.zeros_like(norms)
    finite = norms[torch.isfinite(norms)]
    cut = ZERO_NORM_RTOL * finite.max() if finite.numel() else 0.0
    nz = norms > cut
    inv[nz] = 1.0 / norms[nz]
    return inv


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
