"""Shared plumbing of the influence methods: chunk sources, dtype rules, row norms and the (n × m) output buffer,
and the accelerator path (training chunks staged through pinned host buffers onto the device).

Private to :mod:`layerinf.influence.methods` and :mod:`layerinf.influence.we`; pure torch/numpy, no model code.

On a CUDA device (``device=`` of the scoring functions) the validation block is moved once; the training chunks
are re-cut into device chunks of :func:`device_chunk_rows` rows (sized from free device memory), each copied
into one of two pinned host buffers and sent to the device on a side stream while the previous chunk's GEMM
runs (double buffering, :class:`DeviceChunks`). ``compute_dtype="tf32"`` lets float32 GEMMs use TF32 tensor
cores; bfloat16 GEMMs accumulate and return float32 (``torch.mm(..., out_dtype=float32)``, else with reduced-
precision reductions off). On the CPU (``device=None`` or ``"cpu"``) none of this runs: results are unchanged
bit for bit.
"""

from __future__ import annotations

import contextlib
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


COMPUTE_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64,
                  "fp64": torch.float64, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
TF32_NAMES = ("tf32", "tfloat32")


def resolve_compute(compute_dtype: torch.dtype | str | None) -> tuple[torch.dtype | None, bool]:
    """``compute_dtype`` as (torch dtype or None, TF32 allowed): a dtype, None, or one of ``float32``,
    ``bfloat16``, ``float64``, ``tf32`` (float32 operands, TF32 tensor-core GEMMs on CUDA; float32 elsewhere)."""
    if compute_dtype is None or isinstance(compute_dtype, torch.dtype):
        return compute_dtype, False
    key = str(compute_dtype).strip().lower()
    if key in TF32_NAMES:
        return torch.float32, True
    if key in COMPUTE_DTYPES:
        return COMPUTE_DTYPES[key], False
    raise LayerinfError(f"unsupported compute dtype '{compute_dtype}'", "use float32, tf32, bfloat16 or float64")


def _result_dtype(V: torch.Tensor, compute_dtype: torch.dtype | str | None) -> tuple[torch.dtype, torch.dtype]:
    """(matmul dtype, accumulator/result dtype): float64 in → float64; bf16 fast path accumulates float32."""
    compute_dtype, _ = resolve_compute(compute_dtype)
    if compute_dtype is None:
        compute_dtype = torch.float64 if V.dtype == torch.float64 else torch.float32
    if compute_dtype not in (torch.float32, torch.float64, torch.bfloat16):
        raise LayerinfError(f"unsupported compute dtype {compute_dtype}", "use torch.float32, float64 or bfloat16")
    acc = torch.float64 if compute_dtype == torch.float64 else torch.float32
    return compute_dtype, acc


def _chunk_passes(source: ChunkSource, chunk_rows: int, *, raw: bool = False) -> Callable[[], Iterator[Any]]:
    """Normalise a chunk source into a function giving a fresh iterator of 2-D tensors per call.

    ``raw=True`` yields the chunks as given (numpy arrays or tensors, not converted): the device path copies
    them straight into its pinned buffers.
    """
    conv = (lambda c: c) if raw else _as_tensor
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim != 2:
            raise LayerinfError(f"training gradients must be 2-D (n × d), got shape {tuple(source.shape)}",
                                "pass one module's gradients as an n × d array or as row chunks")
        step = max(1, int(chunk_rows))
        return lambda: (conv(source[i : i + step]) for i in range(0, source.shape[0], step))
    if isinstance(source, (list, tuple)):
        return lambda: (conv(c) for c in source)
    if callable(source):
        return lambda: (conv(c) for c in source())
    if isinstance(source, Iterable):
        it = iter(source)
        used = [False]

        def once() -> Iterator[torch.Tensor]:
            if used[0]:
                raise LayerinfError("this method needs several passes over the training chunks, "
                                    "but a one-shot iterator was given",
                                    "pass a list of chunks or a callable returning a fresh iterator")
            used[0] = True
            return (conv(c) for c in it)

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

    def __init__(self, m: int, n: int | None, dtype: torch.dtype, device: torch.device | None = None):
        self.m, self.n, self.dtype, self.device = m, n, dtype, device
        self.filled = 0
        self.buf = torch.empty((n, m), dtype=dtype, device=device) if n is not None else None
        self.blocks: list[torch.Tensor] = []

    def slot(self, c: int) -> torch.Tensor:
        """The next (c × m) block of the transposed result, to be written in place."""
        if self.buf is not None:
            if self.filled + c > self.n:
                raise LayerinfError(f"the training chunks hold more than n={self.n} rows",
                                    "pass the right n or the right chunks")
            block = self.buf[self.filled : self.filled + c]
        else:
            block = torch.empty((c, self.m), dtype=self.dtype, device=self.device)
            self.blocks.append(block)
        self.filled += c
        return block

    def transposed(self) -> torch.Tensor:
        """The filled (n × m) result."""
        if self.buf is None:
            if not self.blocks:
                return torch.zeros((0, self.m), dtype=self.dtype, device=self.device)
            return torch.cat(self.blocks, dim=0)
        if self.filled != self.n:
            raise LayerinfError(f"the training chunks hold {self.filled} rows, expected n={self.n}",
                                "pass the right n or the right chunks")
        return self.buf


def _gemm_into(out: torch.Tensor, chunk: torch.Tensor, Vm: torch.Tensor, mm_dtype: torch.dtype) -> torch.Tensor:
    """out (c × m) = chunk · Vmᵀ, written in place when the dtypes allow."""
    if mm_dtype == out.dtype:
        return torch.mm(chunk.to(mm_dtype), Vm.T, out=out)
    if out.is_cuda:
        out.copy_(_mm(chunk.to(mm_dtype), Vm.T, out.dtype))
        return out
    out.copy_(torch.mm(chunk.to(mm_dtype), Vm.T))
    return out


_MM_OUT_DTYPE = [True]  # torch.mm(..., out_dtype=) works here (CUDA, torch ≥ 2.8); cleared on first failure


def _mm(a: torch.Tensor, b: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """``a @ b`` as ``acc``. Half-precision operands on CUDA accumulate and return float32 (no bf16 rounding of
    the result); on the CPU this is ``torch.mm(a, b).to(acc)``, as it always was."""
    if a.is_cuda and a.dtype != acc and _MM_OUT_DTYPE[0]:
        try:
            return torch.mm(a, b, out_dtype=acc)
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE[0] = False
    return torch.mm(a, b).to(acc)


def _numpy_mn(St: torch.Tensor) -> np.ndarray:
    """The (m × n) C-contiguous numpy result from the transposed (n × m) buffer (copied off a device)."""
    if St.device.type != "cpu":
        St = St.cpu()
    return np.ascontiguousarray(St.numpy().T)


# ------------------------------------------------------------------------------------------ accelerator path


def score_device(device: torch.device | str | None) -> torch.device | None:
    """The accelerator to score on, or None for the CPU path (``None``, ``"cpu"``, ``"auto"`` without a GPU)."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        dev = device
    else:
        key = str(device).strip().lower()
        if key == "auto":
            key = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(key)
        except (RuntimeError, ValueError):
            raise LayerinfError(f"unknown device '{device}'", "use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LayerinfError("no CUDA GPU is available (torch.cuda.is_available() is False)",
                                "use --device cpu (or auto)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


MIN_DEVICE_ROWS = 256  # below this a GEMM chunk wastes the device
MAX_DEVICE_ROWS = 65_536
PINNED_BUFFER_BYTES = 1 << 30  # per staging buffer (two are used)
DEVICE_MEMORY_FRACTION = 0.5  # of the free device memory left after the resident tensors


def device_chunk_rows(d: int, *, free_bytes: int, stage_bytes: int = 4, mm_bytes: int = 4, acc_bytes: int = 4,
                      resident_bytes: int = 0, n: int | None = None, fraction: float = DEVICE_MEMORY_FRACTION,
                      pinned_bytes: int = PINNED_BUFFER_BYTES, max_rows: int = MAX_DEVICE_ROWS) -> int:
    """Training rows per device chunk for ``d``-wide gradients, from ``free_bytes`` of device memory.

    A row costs two staging buffers on the device (``stage_bytes`` each: the chunk being used and the one
    arriving), its matmul-dtype copy when that differs, and an accumulator-dtype copy for row norms when that
    differs. ``resident_bytes`` (the output, V, DataInf's P) is taken off the free memory first; ``fraction``
    of the rest is used. Each pinned host buffer stays under ``pinned_bytes``. The result is at most ``n``
    (the rows there are) and ``max_rows``, at least 1, and a multiple of 64 when above 64.
    """
    d = max(1, int(d))
    per_row = d * (2 * stage_bytes + (mm_bytes if mm_bytes != stage_bytes else 0)
                   + (acc_bytes if acc_bytes != stage_bytes else 0))
    budget = fraction * max(int(free_bytes) - int(resident_bytes), 0)
    rows = int(budget // per_row)
    rows = min(rows, int(pinned_bytes) // (d * stage_bytes), int(max_rows))
    if n is not None:
        rows = min(rows, max(1, int(n)))
    if rows > 64:
        rows -= rows % 64
    return max(1, rows)


def free_device_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the driver's free bytes plus what PyTorch's cache holds unused (CUDA)."""
    if device.type != "cuda":
        return 0
    free, _total = torch.cuda.mem_get_info(device)
    return int(free) + int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _stage_dtype(chunk: Any) -> torch.dtype:
    if isinstance(chunk, torch.Tensor):
        return chunk.dtype if chunk.is_floating_point() else torch.float64
    return {np.float16: torch.float16, np.float32: torch.float32}.get(np.asarray(chunk).dtype.type, torch.float64)


class DeviceChunks:
    """A chunk source re-cut into device chunks of ``rows`` rows, double-buffered.

    Every call gives a fresh pass. Host chunks (numpy arrays, memmaps or tensors, any row count) are copied
    into one of two staging buffers — pinned on CUDA — until ``rows`` rows are there; the buffer is then sent
    to its device buffer on a side stream and the main stream waits for that copy only. While the consumer's
    kernels on chunk k run, the host fills the other buffer with chunk k+1 and its copy overlaps them. A buffer
    is refilled only after the copy out of it finished, and its device buffer is overwritten only after the
    main stream finished with it (events). The yielded tensor is a view of a reused buffer: consume it before
    asking for the next chunk (clone what you keep). On devices without streams (or on the CPU, used by the
    tests) the same re-cutting runs with plain copies. Staging keeps the chunks' own dtype (norms stay exact).
    """

    def __init__(self, passes: Callable[[], Iterator[Any]], d: int, rows: int, device: torch.device,
                 *, pin: bool | None = None):
        self.passes, self.d, self.rows, self.device = passes, int(d), max(1, int(rows)), device
        self.cuda = device.type == "cuda"
        self.pin = self.cuda if pin is None else pin
        self.host: list[torch.Tensor] | None = None
        self.dev: list[torch.Tensor] = []
        self.rows_shipped = 0
        self.chunks_shipped = 0

    def _alloc(self, dtype: torch.dtype) -> None:
        shape = (self.rows, self.d)
        self.host = [torch.empty(shape, dtype=dtype, pin_memory=self.pin) for _ in range(2)]
        self.dev = [torch.empty(shape, dtype=dtype, device=self.device) for _ in range(2)]
        if self.cuda:
            self.stream = torch.cuda.Stream(self.device)
            self.copied = [torch.cuda.Event(), torch.cuda.Event()]
            self.used = [torch.cuda.Event(), torch.cuda.Event()]
            for buf in self.dev:
                buf.record_stream(self.stream)

    def _fill(self, slot: int, at: int, part: Any) -> None:
        dst = self.host[slot][at : at + part.shape[0]]
        if isinstance(part, torch.Tensor):
            dst.copy_(part.detach())
        elif dst.dtype in (torch.float16, torch.float32, torch.float64):
            np.copyto(dst.numpy(), np.asarray(part), casting="unsafe")  # straight from the memmap
        else:
            dst.copy_(torch.from_numpy(np.array(part, dtype=np.float64)))

    def _ship(self, slot: int, fill: int) -> Iterator[torch.Tensor]:
        host, dev = self.host[slot][:fill], self.dev[slot][:fill]
        self.rows_shipped += fill
        self.chunks_shipped += 1
        if not self.cuda:
            dev.copy_(host)
            yield dev
            return
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(self.used[slot])  # the main stream is done with this device buffer
            dev.copy_(host, non_blocking=True)
            self.copied[slot].record(self.stream)
        main.wait_event(self.copied[slot])
        yield dev
        self.used[slot].record(main)  # the consumer has queued all its work on this chunk

    def __call__(self) -> Iterator[torch.Tensor]:
        slot, fill = 0, 0
        for raw in self.passes():
            if raw.ndim == 1:
                raw = raw.reshape(1, -1)
            if raw.ndim != 2 or raw.shape[1] != self.d:
                raise LayerinfError(f"a training chunk has shape {tuple(raw.shape)}, expected (rows, {self.d})",
                                    "validation and training gradients must come from the same module")
            if self.host is None:
                self._alloc(_stage_dtype(raw))
            c, off = raw.shape[0], 0
            while off < c:
                if fill == 0 and self.cuda:
                    self.copied[slot].synchronize()  # the copy out of this host buffer has finished
                take = min(self.rows - fill, c - off)
                self._fill(slot, fill, raw[off : off + take])
                fill, off = fill + take, off + take
                if fill == self.rows:
                    yield from self._ship(slot, fill)
                    slot, fill = slot ^ 1, 0
        if fill:
            yield from self._ship(slot, fill)


@contextlib.contextmanager
def gemm_precision(device: torch.device | None, tf32: bool):
    """On CUDA: float32 GEMMs in full precision, or TF32 when ``tf32``; bf16 GEMMs reduce in float32."""
    if device is None or device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    old_precision = torch.get_float32_matmul_precision()
    old_bf16 = matmul.allow_bf16_reduced_precision_reduction
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old_precision)
        matmul.allow_bf16_reduced_precision_reduction = old_bf16


def device_rows_for(device: torch.device, d: int, m: int, n: int | None, mm_dtype: torch.dtype, acc: torch.dtype,
                    stage: torch.dtype = torch.float32, extra_md: int = 0, requested: int | None = None) -> int:
    """Rows per device chunk: ``requested`` when given, else :func:`device_chunk_rows` from free memory (CUDA;
    elsewhere 4096). Resident: the n × m output, V (acc + matmul copy) and ``extra_md`` more m × d blocks."""
    if requested is not None:
        return max(1, int(requested))
    if device.type != "cuda":
        return 4096 if n is None else max(1, min(4096, int(n)))
    esize = lambda dt: torch.empty((), dtype=dt).element_size()  # noqa: E731
    resident = (int(n or 0) * m + m * d * (1 + extra_md)) * esize(acc) + m * d * esize(mm_dtype)
    return device_chunk_rows(d, free_bytes=free_device_bytes(device), stage_bytes=esize(stage),
                             mm_bytes=esize(mm_dtype), acc_bytes=esize(acc), resident_bytes=resident, n=n)
