"""Scoring throughput and memory of ``layerinf.methods`` (spec §3, §8) on this machine.

Prints, in one run (≈ 1–2 minutes on 2 cores):

1. the float32 ``torch.mm`` rate on GEMMs shaped like the scoring ones (m × d) · (d × chunk);
2. streamed TracIn, Cosine and DataInf (factor form) at n = 10,000, m = 500, d = 10,240, as GFLOP/s and as a
   percentage of that matmul rate (GEMM FLOPs: 2mnd for TracIn/Cosine, 3 × 2mnd for DataInf);
3. the bfloat16 path's speed-up and its Spearman agreement with float32 (mean over validation rows);
4. peak RSS of DataInf in fresh subprocesses at n = 2,500 and n = 10,000: growth should be about the
   m × n output (plus the O(n) row norms), not n × d.

Training chunks are drawn from a fixed pool of synthetic chunks, so G is never resident (as with the gradient
store's memmaps). Run: ``PYTHONPATH=src python bench/bench_scoring.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from layerinf.influence import methods, registry

N, M, D, CHUNK = 10_000, 500, 10_240, 2_048
POOL = 2  # distinct synthetic chunks cycled through


def make_pool(d: int, chunk: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(chunk, d, generator=g) for _ in range(POOL)]


def chunk_source(pool: list[torch.Tensor], n: int):
    """A callable giving a fresh iterator of n rows in chunks (the last one shorter)."""

    def chunks():
        done, i = 0, 0
        while done < n:
            c = pool[i % len(pool)]
            take = min(c.shape[0], n - done)
            yield c[:take]
            done += take
            i += 1

    return chunks


def matmul_rate(m: int, d: int, chunk: int, repeats: int = 6) -> float:
    a, b = torch.randn(m, d), torch.randn(chunk, d)
    torch.mm(a, b.T)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b.T)
        best = min(best, time.perf_counter() - t)
    return 2 * m * d * chunk / best / 1e9


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def mean_row_spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    rho = (ra * rb).sum(1) / np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return float(rho.mean())


def _status_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(n: int) -> None:
    """Run DataInf once at this n and print (as JSON) RSS before and the peak RSS during scoring, in MiB."""
    pool = make_pool(D, CHUNK)
    V = torch.randn(M, D)
    registry.score_module("datainf", V, chunk_source(pool, 64), n=64)  # warm-up: lazy allocations, BLAS buffers
    try:  # reset the kernel's peak-RSS mark so VmHWM measures the scoring alone (Linux)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    base = _status_mib("VmRSS")
    S = registry.score_module("datainf", V, chunk_source(pool, n), n=n)
    peak = _status_mib("VmHWM")
    print(json.dumps({"n": n, "base_mib": base, "peak_mib": peak, "out_mib": S.nbytes / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-child", type=int, default=None)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return

    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}; n={N}, m={M}, d={D}, chunk={CHUNK}")
    rate = matmul_rate(M, D, CHUNK)
    print(f"float32 torch.mm ({M}×{D})·({D}×{CHUNK}): {rate:7.1f} GFLOP/s")

    pool = make_pool(D, CHUNK)
    V = torch.randn(M, D)
    src = chunk_source(pool, N)
    gemm = 2.0 * M * N * D
    results = {}
    print("(the machine is shared, so the matmul rate is re-measured right before each method)")
    for method, mult in (("tracin", 1), ("cosine", 1), ("datainf", 3)):
        ref = matmul_rate(M, D, CHUNK, repeats=4)
        sec, S = timed(lambda: registry.score_module(method, V, src, n=N), repeats=2)
        results[method] = (sec, S)
        gf = mult * gemm / sec / 1e9
        print(f"{method:8s} float32: {sec:6.2f} s  {gf:7.1f} GFLOP/s  = {100 * gf / ref:5.1f} % of matmul "
              f"({ref:.1f} GFLOP/s just before)")

    bf_rate = None
    try:
        a, b = torch.randn(M, D, dtype=torch.bfloat16), torch.randn(CHUNK, D, dtype=torch.bfloat16)
        torch.mm(a, b.T)
        t = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b.T)
        bf_rate = 3 * 2 * M * D * CHUNK / (time.perf_counter() - t) / 1e9
        print(f"bfloat16 torch.mm: {bf_rate:7.1f} GFLOP/s ({bf_rate / rate:4.2f}× float32)")
    except RuntimeError as exc:  # pragma: no cover - CPUs without bf16 GEMM
        print(f"bfloat16 torch.mm unavailable: {exc}")
    if bf_rate is not None:
        for method in ("tracin", "cosine", "datainf"):
            sec, S16 = timed(lambda: registry.score_module(method, V, src, n=N, compute_dtype=torch.bfloat16),
                             repeats=2)
            sec32, S32 = results[method]
            rho = mean_row_spearman(S32[:100], S16[:100])
            print(f"{method:8s} bfloat16: {sec:6.2f} s  speed-up {sec32 / sec:4.2f}×  "
                  f"Spearman vs float32 (mean of 100 rows) {rho:.5f}")
    del results

    print("peak RSS of DataInf (fresh process each; G streamed, never resident):")
    rows = []
    for n in (2_500, 10_000):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                             check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  n={n:6d}: peak {row['peak_mib']:7.1f} MiB = before scoring {row['base_mib']:6.1f} MiB "
              f"+ {row['peak_mib'] - row['base_mib']:6.1f} MiB (m×n output {row['out_mib']:5.1f} MiB; "
              f"G would be {n * D * 4 / 2**20:6.1f} MiB)")
    grow = (rows[1]["peak_mib"] - rows[1]["base_mib"]) - (rows[0]["peak_mib"] - rows[0]["base_mib"])
    print(f"  growth n 2,500 → 10,000: {grow:.1f} MiB vs output growth {rows[1]['out_mib'] - rows[0]['out_mib']:.1f} "
          f"MiB (×2: the n × m buffer is copied once into C-order m × n); G growth would be "
          f"{(rows[1]['n'] - rows[0]['n']) * D * 4 / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
