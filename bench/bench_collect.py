"""Benchmark per-sample gradient collection against a LoRA training step and a batch-of-one loop.

Same model, same batches, one process; the three measurements are interleaved (order rotated each round)
and the median round is reported. ``--store-test`` also writes and streams a synthetic 10,000-sample gradient
store and reports peak traced (numpy/Python heap) memory against one chunk and against n × d.

    python bench/bench_collect.py                       # MiniLM, 256 samples, batch 32, length ≤ 64
    python bench/bench_collect.py --model smollm2-135m --n 64
    python bench/bench_collect.py --store-test
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

WORDS = ("the film story actor plot scene great boring funny moving dull clever music ending long short "
         "character dialogue camera director script audience laugh cry love hate brilliant weak strong "
         "slow fast dark bright simple complex honest fake warm cold quiet loud").split()


def synthetic_texts(n: int, length: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(length // 2, length + 1)))) for _ in range(n)]


def train_steps(model, batches, optimizer) -> None:
    from layerinf.engine.batching import model_inputs

    model.train()
    for batch in batches:
        logits = model(**model_inputs(batch)).logits
        loss = F.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def ours(model, encoded, batch_size) -> None:
    from layerinf.engine.collect import collect_gradients

    for _ in collect_gradients(model, encoded, batch_size=batch_size, sort_by_length=False, progress=False):
        pass


def batch_of_one(model, encoded, specs, dev="cpu") -> None:
    """The per-sample baseline: one forward/backward per sample, same outputs (LoRA + head + row-sparse WE),
    copied back to the host as collection does (shared with bench_gpu.py)."""
    from layerinf.engine.batching import model_inputs
    from layerinf.engine.collect import row_sparse_rows

    params = dict(model.named_parameters())
    wanted = [params[s.param_name] for s in specs if s.kind != "we"]
    emb = model.get_input_embeddings()
    vocab = emb.weight.shape[0]
    box = []

    def hook(_m, _a, out):
        leaf = out.detach().requires_grad_(True)
        box.append(leaf)
        return leaf

    handle = emb.register_forward_hook(hook)
    model.eval()
    try:
        for i in range(len(encoded)):
            box.clear()
            batch = encoded.collate(np.array([i]))
            inputs = {k: v.to(dev) for k, v in model_inputs(batch).items()}
            logits = model(**inputs).logits
            loss = F.cross_entropy(logits.float(), batch["labels"].to(dev))
            grads = torch.autograd.grad(loss, wanted + box)
            for g in grads[:-1]:
                g.reshape(1, -1).cpu()
            row_sparse_rows(inputs["input_ids"], inputs["attention_mask"], grads[-1].float(), vocab).rows.cpu()
    finally:
        handle.remove()


def bench_speed(args) -> None:
    from layerinf.engine.batching import encode_split
    from layerinf.model import inventory, load_classifier, trainable_state

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    loaded = load_classifier(args.model, 2, seed=0)
    model = loaded.model
    print(f"model {args.model}: loaded in {time.perf_counter() - t0:.1f} s; threads {torch.get_num_threads()}")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    texts = synthetic_texts(args.n, args.length)
    df = pd.DataFrame({"idx": range(args.n), "text": texts, "text_pair": [None] * args.n,
                       "label": np.arange(args.n) % 2})
    encoded = encode_split(df, loaded.tokenizer, max_length=args.length)
    lengths = encoded.lengths
    print(f"{args.n} samples, batch {args.batch_size}, tokens/sample mean {lengths.mean():.1f} "
          f"(min {lengths.min()}, max {lengths.max()})")
    batches = list(encoded.batches(args.batch_size))
    specs = inventory(model)
    start_state = trainable_state(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    runs = {
        "train step (fwd+bwd+AdamW)": lambda: train_steps(model, batches, optimizer),
        "ours (LoRA+head+WE)": lambda: ours(model, encoded, args.batch_size),
    }
    if not args.skip_loop:
        runs["batch-of-one loop"] = lambda: batch_of_one(model, encoded, specs)
    # warm-up: one batch of each
    small = encoded.batches(args.batch_size)
    train_steps(model, [next(small)], optimizer)
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for rep in range(args.repeats):
        for k in names[rep % len(names):] + names[: rep % len(names)]:
            t = time.perf_counter()
            runs[k]()
            times[k].append(time.perf_counter() - t)
        with torch.no_grad():  # undo the optimizer's steps so every round sees the same weights
            for n_, p in model.named_parameters():
                if n_ in start_state:
                    p.copy_(start_state[n_])
    print(f"\n{'method':32s} {'samples/s':>10s} {'median s':>9s}   all rounds (s)")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:32s} {args.n / med[k]:10.1f} {med[k]:9.2f}   {' '.join(f'{x:.2f}' for x in v)}")
    train, mine = med["train step (fwd+bwd+AdamW)"], med["ours (LoRA+head+WE)"]
    print(f"\nours / train-step time        = {mine / train:.2f}  (target ≤ 1.0)")
    if "batch-of-one loop" in med:
        print(f"batch-of-one / ours time      = {med['batch-of-one loop'] / mine:.2f}  (target ≥ 1.3)")


def rss_anon() -> int:
    """Resident anonymous memory (bytes, Linux): heap incl. torch tensors, excluding memory-mapped file pages."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bench_store(args) -> None:
    from layerinf.engine.collect import row_sparse_rows
    from layerinf.store.batch import GradBatch
    from layerinf.store.gradstore import StoreWriter
    from layerinf.spec import ModuleSpec

    n, h, vocab, batch, chunk = args.store_n, 384, 30522, 32, args.chunk
    specs = [ModuleSpec("WE", "", "", "weight", "we", None, (vocab, h))]
    for layer in range(2):  # two MiniLM layers' LoRA modules (r = 4, h = 384) + head
        for kind in ("query", "value"):
            specs.append(ModuleSpec(f"L{layer:02d}.{kind}.A", "", "", "weight", f"{kind}_A", layer, (4, h)))
            specs.append(ModuleSpec(f"L{layer:02d}.{kind}.B", "", "", "weight", f"{kind}_B", layer, (h, 4)))
    specs.append(ModuleSpec("CL.classifier.weight", "", "", "weight", "cl", None, (2, h)))
    dense = [s for s in specs if s.kind != "we"]
    d = sum(s.numel for s in dense)
    rng = np.random.default_rng(0)
    tokens_per_sample = 16
    ids = torch.from_numpy(rng.integers(0, vocab, (n, tokens_per_sample)))
    counts = np.array([len(torch.unique(r)) for r in ids])
    print(f"\nstore test: n = {n}, dense d = {d} floats/sample ({len(dense)} modules) + row-sparse WE "
          f"({tokens_per_sample} tokens × h {h}); batch {batch}, read chunk {chunk}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        base = rss_anon()
        anon_peak = 0
        tracemalloc.start()
        t = time.perf_counter()
        with StoreWriter(Path(tmp) / "grads", n, specs, we_counts=counts) as writer:
            for lo in range(0, n, batch):
                rows = np.arange(lo, min(lo + batch, n))
                b = len(rows)
                we = row_sparse_rows(ids[rows], torch.ones(b, tokens_per_sample), torch.randn(b, tokens_per_sample, h),
                                     vocab)
                grads = {s.name: torch.randn(b, s.numel) for s in dense}
                writer.add(GradBatch(rows, grads, we, torch.zeros(b), torch.zeros(b, 2), torch.zeros(b, dtype=torch.long)))
                anon_peak = max(anon_peak, rss_anon() - base)
            store = writer.finish()
        write_s = time.perf_counter() - t
        _, write_peak = tracemalloc.get_traced_memory()
        write_anon, anon_peak = anon_peak, 0
        base = rss_anon()
        tracemalloc.reset_peak()
        t = time.perf_counter()
        total = np.zeros(d)
        for _, block in store.concat_chunks(store.dense_modules, chunk):
            total += block.sum(0)
            anon_peak = max(anon_peak, rss_anon() - base)
        nnz = sum(part.rows.shape[0] for part in store.iter_we_chunks(chunk))
        read_s = time.perf_counter() - t
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = sum(f.stat().st_size for f in (Path(tmp) / "grads").iterdir())
    mib = 1 << 20
    full, one_chunk = n * d * 4, chunk * d * 4
    print(f"store on disk {size / mib:.0f} MiB (dense n×d = {full / mib:.0f} MiB, WE rows {nnz})")
    print(f"write: {write_s:.1f} s ({n / write_s:.0f} samples/s), traced peak {write_peak / mib:.1f} MiB "
          f"= {write_peak / full:.3f} × n×d; anonymous RSS growth {write_anon / mib:.1f} MiB")
    print(f"stream: {read_s:.1f} s ({size / mib / read_s:.0f} MiB/s), traced peak {read_peak / mib:.1f} MiB "
          f"= {read_peak / one_chunk:.2f} × one chunk ({one_chunk / mib:.1f} MiB) = {read_peak / full:.3f} × n×d; "
          f"anonymous RSS growth {anon_peak / mib:.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-loop", action="store_true", help="leave out the (slow) batch-of-one baseline")
    ap.add_argument("--store-test", action="store_true", help="also write and stream a 10,000-sample store")
    ap.add_argument("--store-only", action="store_true")
    ap.add_argument("--store-n", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--tmp", default=None, help="folder for the temporary store")
    args = ap.parse_args()
    if not args.store_only:
        bench_speed(args)
    if args.store_test or args.store_only:
        bench_store(args)


if __name__ == "__main__":
    main()
