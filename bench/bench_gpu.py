"""One-command device benchmark: training step, per-sample gradient collection, the batch-of-one loop and
streamed scoring, per shape model and base precision, on whatever device is there.

    python bench/bench_gpu.py --device cuda            # roberta-large, llama-3.2-1b, qwen2.5-1.5b, mistral-7b
    python bench/bench_gpu.py --quick                  # CPU: tiny-bert, tiny-llama (< 2 minutes on 2 cores)
    python bench/bench_gpu.py --device cuda --models llama-3.2-1b --precisions bf16

For each ``shape:`` model (random weights with the real architecture; LoRA r = 4 on the query/value
projections, classification head, row-sparse word embeddings) and each base precision, it prints one table:

* train step: seconds per optimiser step (forward + backward + AdamW) on a batch of ``--batch`` sequences of
  ``--seq-len`` tokens;
* collect: seconds per batch for ``engine.collect.collect_gradients`` (per-sample gradients of every LoRA
  module, the head and WE, copied to the host as the store needs them); collect / train;
* loop: the batch-of-one autograd loop on the same samples (one forward + backward per sample), and
  loop / collect (how much faster the batched hooks are);
* peak device memory (``torch.cuda.max_memory_allocated``) of a training step and of collection; back-off:
  the batch sizes the out-of-memory back-off fell back to, if any;

then the scoring table: streamed TracIn (``influence.methods.score_tracin`` with ``device=``: host chunks
through pinned double buffers) on n × d training and m × d validation gradients, d = the model's largest
LoRA module, as TFLOP/s (2·m·n·d per call) and as a share of this device's own GEMM rate in the same dtype,
measured in the same run just before (square ``torch.mm``, n = 8192 on CUDA, 1024 elsewhere; best of ≥ 5).
fp32 GEMMs run in full fp32 (TF32 off) unless the row says tf32; "gradients streamed" is n·d·4 bytes over the
time (on CUDA: what crossed host → device). Everything goes to stdout. Timings are medians of ``--repeats``
runs after one warm-up. Peak memory is "—" on a CPU. On a busy CPU (load ≥ cores) the script uses one thread
unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from bench_collect import batch_of_one  # noqa: E402  (same folder; one per-sample baseline for both benches)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:
    import layerinf  # noqa: F401,E402
except ImportError:  # a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

GPU_MODELS = ("roberta-large", "llama-3.2-1b", "qwen2.5-1.5b", "mistral-7b")
CPU_MODELS = ("tiny-bert", "tiny-llama")
MIB = 1 << 20


# ------------------------------------------------------------------------------------------------ timing


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    sync(dev)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def peak_mib(dev: torch.device) -> float | None:
    if dev.type == "cuda":
        sync(dev)
        return torch.cuda.max_memory_allocated(dev) / MIB
    return None


class BackoffLog(logging.Handler):
    """Collects the out-of-memory back-off warnings of ``layerinf`` (batch sizes fallen back to)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.sizes: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("out of memory at batch size"):
            self.sizes.append(msg.split("retrying with ")[1].split()[0])


def gemm_rate(dev: torch.device, dtype: torch.dtype, size: int, repeats: int, tf32: bool = False) -> float:
    """TFLOP/s of a square ``torch.mm`` in ``dtype`` (fp32: TF32 only when asked)."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(size, size, generator=g).to(dev, dtype)
        b = torch.randn(size, size, generator=g).to(dev, dtype)
        torch.mm(a, b)
        sync(dev)
        best = float("inf")
        for _ in range(max(repeats, 5)):  # the device's own rate: the best run
            t = time.perf_counter()
            torch.mm(a, b)
            sync(dev)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_float32_matmul_precision(old)
    return 2 * size**3 / best / 1e12


# ------------------------------------------------------------------------------------------------ workloads


def synthetic_split(n: int, seq_len: int, vocab: int, seed: int = 0):
    """``n`` full-length sequences of random token ids (no padding), alternating labels."""
    from layerinf.engine.batching import EncodedSplit

    rng = np.random.default_rng(seed)
    lo = min(1000, vocab // 2)
    feats = [{"input_ids": rng.integers(lo, vocab, seq_len).tolist(), "attention_mask": [1] * seq_len}
             for _ in range(n)]
    return EncodedSplit(feats, np.arange(n, dtype=np.int64) % 2, np.arange(n, dtype=np.int64), 0, "right")


def train_step(model, batch, optimizer, dev) -> None:
    from layerinf.engine.batching import model_inputs

    inputs = {k: v.to(dev) for k, v in model_inputs(batch).items()}
    logits = model(**inputs).logits
    loss = F.cross_entropy(logits.float(), batch["labels"].to(dev))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def collect(model, encoded, batch_size: int) -> None:
    """Per-sample gradients of every module, brought to the host as ``write_store`` does."""
    from layerinf.engine.collect import collect_gradients

    for gb in collect_gradients(model, encoded, batch_size=batch_size, sort_by_length=False, progress=False):
        for g in gb.grads.values():
            g.cpu()
        if gb.we is not None:
            gb.we.rows.cpu()


def chunk_source(pool: list[np.ndarray], n: int):
    """A callable giving a fresh pass over ``n`` rows cut from a small pool of host chunks (G never resident)."""

    def chunks():
        done, i = 0, 0
        while done < n:
            c = pool[i % len(pool)]
            take = min(len(c), n - done)
            yield c[:take]
            done += take
            i += 1

    return chunks


# ------------------------------------------------------------------------------------------------ one model


def fmt(x, spec=".3f", none="—"):
    return none if x is None else format(x, spec)


def gemm_rates(dev: torch.device, repeats: int) -> dict[str, float]:
    """This device's square-GEMM TFLOP/s per compute dtype (measured next to each scoring table)."""
    size = 8192 if dev.type == "cuda" else 1024
    rates = {"fp32": gemm_rate(dev, torch.float32, size, repeats),
             "bf16": gemm_rate(dev, torch.bfloat16, size, repeats)}
    if dev.type == "cuda":
        rates["tf32"] = gemm_rate(dev, torch.float32, size, repeats, tf32=True)
    return rates


def bench_model(shape: str, precisions, args, dev) -> None:
    from layerinf.config import ModelConfig
    from layerinf.influence.methods import score_tracin
    from layerinf.model import SHAPES, clear_model_cache, default_lora_targets, inventory, load_classifier

    name = f"shape:{shape}"
    targets = default_lora_targets(name)
    vocab = int(SHAPES[shape].kwargs["vocab_size"])
    print(f"\n## {name}  (T = {args.seq_len}, batch {args.batch}, LoRA r = 4 on {', '.join(targets)}; "
          f"device {dev})\n")
    head = ("| base | load s | train step s | collect s | collect / train | loop s | loop / collect "
            "| peak train MiB | peak collect MiB | back-off |")
    rows, d_max = [head, "| " + " | ".join(["---"] + ["---:"] * 8 + ["---"]) + " |"], None
    for precision in precisions:
        model = optimizer = None
        try:
            t0 = time.perf_counter()
            cfg = ModelConfig(name=name, precision=precision, lora_r=4, lora_alpha=4, lora_targets=list(targets))
            loaded = load_classifier(cfg, 2, seed=0, device=dev)
            clear_model_cache()  # the host copy of the base weights is not needed any more
            load_s = time.perf_counter() - t0
            model = loaded.model
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():  # LoRA B starts at 0 (then every A gradient is 0): give it values
                for pname, p in model.named_parameters():
                    if "lora_B" in pname:
                        p.copy_((torch.randn(p.shape, generator=gen) * 0.02).to(p.device, p.dtype))
            specs = inventory(model)
            d_max = max(s.numel for s in specs if s.layer is not None)
            encoded = synthetic_split(args.batch, args.seq_len, vocab)
            batch = encoded.collate(np.arange(args.batch))
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
            log = BackoffLog()
            logging.getLogger("layerinf").addHandler(log)
            try:
                model.train()
                reset_peak(dev)
                train_s = timed(lambda: train_step(model, batch, optimizer, dev), dev, args.repeats)
                peak_train = peak_mib(dev)
                optimizer.zero_grad(set_to_none=True)
                reset_peak(dev)
                collect_s = timed(lambda: collect(model, encoded, args.batch), dev, args.repeats)
                peak_collect = peak_mib(dev)
                k = args.loop_samples or args.batch
                sub = synthetic_split(min(k, args.batch), args.seq_len, vocab)
                loop_s = timed(lambda: batch_of_one(model, sub, specs, dev), dev, 1) * args.batch / len(sub)
            finally:
                logging.getLogger("layerinf").removeHandler(log)
            back = "→".join(log.sizes) if log.sizes else "none"
            rows.append(f"| {precision} | {load_s:.1f} | {train_s:.4f} | {collect_s:.4f} | {collect_s / train_s:.2f} "
                        f"| {loop_s:.4f} | {loop_s / collect_s:.2f} | {fmt(peak_train, '.0f')} "
                        f"| {fmt(peak_collect, '.0f')} | {back} |")
        except Exception as exc:  # noqa: BLE001 — report and go on with the next configuration
            msg = str(exc).splitlines()[0][:120]
            rows.append(f"| {precision} | failed: {type(exc).__name__}: {msg} |" + " |" * 8)
        finally:
            del model, optimizer
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    print("\n".join(rows))
    if d_max is None:
        return
    n, m = args.score_n, args.score_m
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal((min(4096, n), d_max), dtype=np.float32) for _ in range(2)]
    V = rng.standard_normal((m, d_max), dtype=np.float32)
    src = chunk_source(pool, n)
    flops = 2.0 * m * n * d_max
    print(f"\nscoring: streamed TracIn, n = {n} training × m = {m} validation gradients, d = {d_max} "
          f"(largest LoRA module); " + ("host chunks → pinned buffers → device" if dev.type == "cuda" else "CPU path"))
    rates = gemm_rates(dev, args.repeats)
    out = ["| compute | s | TFLOP/s | GEMM TFLOP/s (same dtype) | share of GEMM | gradients streamed GB/s |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    computes = [("fp32", None), ("bf16", torch.bfloat16)] + ([("tf32", "tf32")] if dev.type == "cuda" else [])
    for label, compute in computes:
        try:
            s = timed(lambda: score_tracin(V, src, n, compute_dtype=compute, device=dev), dev, max(args.repeats, 5))
            tf = flops / s / 1e12
            peak = rates.get(label)
            share = f"{100 * tf / peak:.1f} %" if peak else "—"
            gbs = n * d_max * 4 / s / 1e9
            out.append(f"| {label} | {s:.4f} | {tf:.4f} | {fmt(peak, '.4f')} | {share} | {gbs:.2f} |")
        except Exception as exc:  # noqa: BLE001
            out.append(f"| {label} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]} | | | | |")
    print("\n".join(out))


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    ap.add_argument("--models", default=None,
                    help=f"comma-separated shape names (default: {','.join(GPU_MODELS)} on cuda, "
                         f"{','.join(CPU_MODELS)} elsewhere)")
    ap.add_argument("--precisions", default="bf16,fp32", help="base precisions (default bf16,fp32)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 128; --quick on cpu: 32)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per batch (default 32; --quick on cpu: 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5; --quick: 2)")
    ap.add_argument("--loop-samples", type=int, default=None,
                    help="samples timed in the batch-of-one loop, extrapolated to the batch (default: the batch; "
                         "--quick: 4)")
    ap.add_argument("--score-n", type=int, default=None, help="training rows scored (default 32768; cpu: 4096)")
    ap.add_argument("--score-m", type=int, default=None, help="validation rows scored (default 512; cpu: 128)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a minute or two on a CPU")
    args = ap.parse_args()

    from layerinf.model import resolve_device

    dev = resolve_device(args.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    busy = ""
    if args.threads:
        torch.set_num_threads(args.threads)
    elif dev.type == "cpu" and hasattr(os, "getloadavg") and os.getloadavg()[0] >= (os.cpu_count() or 1):
        # other jobs hold the cores: several OpenMP threads then wait for each other at every operator
        # (we measured ~20 ms per op at load 11 on 2 cores with 2 threads, 1 ms with 1 thread)
        torch.set_num_threads(1)
        busy = " (machine busy: 1 thread; --threads to override)"
    small = args.quick and dev.type != "cuda"
    args.seq_len = args.seq_len or (32 if small else 128)
    args.batch = args.batch or (8 if small else 32)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.loop_samples = args.loop_samples or (4 if args.quick else None)
    args.score_n = args.score_n or (4096 if dev.type != "cuda" else 32768)
    args.score_m = args.score_m or (128 if dev.type != "cuda" else 512)
    models = [s.strip().removeprefix("shape:") for s in args.models.split(",")] if args.models else list(
        GPU_MODELS if dev.type == "cuda" else CPU_MODELS)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]

    t_start = time.perf_counter()
    print("# layerinf device benchmark (bench/bench_gpu.py)\n")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"device {dev} ({name}); torch {torch.__version__}; CPU threads {torch.get_num_threads()} of "
          f"{os.cpu_count()}{busy}; load average {fmt(load, '.2f')}")
    for shape in models:
        bench_model(shape, precisions, args, dev)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
