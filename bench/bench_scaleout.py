"""Benchmark the scale-out of retrainings: retrainings per minute with 1 vs 2 Ray workers on this machine.

A small run is prepared (data → finetune → grads → scores, demo data) once under ``--dir``; then the same
``--tasks`` retrainings (each keeps a different random 70 % of the training set; nothing is written) run
(a) in this process, one by one (the local executor), and on a local Ray instance with (b) 1 and (c) 2
CPUs, one CPU and one torch thread per task. Ray's own start-up (``ray.init``) and each worker's warm-up
(importing torch, loading the model once: workers keep it for later tasks) are timed separately and left
out of the rates. "cores busy" is the CPU time the retrainings got divided by the wall time: about the
number of workers on idle cores, less when other processes share the machine. ``--rounds`` alternates 1 and 2 workers and reports each one's best round (on a shared,
loaded machine the best round is the least disturbed one).

    python bench/bench_scaleout.py                    # 8 retrainings of an 80-example run, 1 epoch
    python bench/bench_scaleout.py --tasks 12 --max-train 160 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def prepare(root: Path, max_train: int, epochs: int):
    import layerinf as li
    from layerinf.config import ExperimentConfig
    from layerinf.store.rundir import RunDir

    cfg = ExperimentConfig.from_dict({
        "name": "bench-scaleout",
        "data": {"source": "demo", "max_train": max_train, "max_dev": 40, "noise_rate": 0.2, "seed": 0},
        "model": {"name": "minilm", "max_length": 24},
        "train": {"epochs": epochs, "batch_size": 16},
        "score": {"methods": ["tracin"], "groups": ["CL"], "aggregators": ["mean"]},
        "filter": {"retrain": False},
    })
    if not RunDir(root).is_finished("scores", verify=False):
        li.run(cfg, root, progress=False, echo=None)
    return cfg


def tasks(root: Path, cfg, count: int, seed: int = 0):
    from layerinf.stages.retrain import retrain_task
    from layerinf.stages.finetune import recipe
    from layerinf.stages.data import load_data
    from layerinf.workflows.executor import Task

    n = len(load_data(root).train)
    rng = np.random.default_rng(seed)
    rec = recipe(root, cfg.model, cfg.train)
    return [Task(cpu_timed, (retrain_task, str(root), np.sort(rng.permutation(n)[: int(0.7 * n)]), f"random-{k}",
                             cfg.train, rec, "cpu"), label=f"retraining {k}") for k in range(count)]


def cpu_timed(fn, *args):
    """Run a task and return the CPU seconds its process spent on it (all its threads)."""
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def warm(root: str, seconds: float) -> int:
    """A worker's warm-up: import torch, load the run's model (kept for its later retrainings)."""
    from layerinf.stages.retrain import _retrain_context

    _retrain_context(root, "cpu")
    time.sleep(seconds)  # hold this worker so that the next warm-up lands on another
    return os.getpid()


def timed(executor, todo) -> tuple[float, float]:
    """(wall seconds, CPU seconds the tasks used) of running ``todo``."""
    from layerinf.workflows.executor import run_graph

    cpu = []
    t0 = time.perf_counter()
    failures = run_graph(executor, todo, lambda key, value: cpu.append(value), progress=False)
    if failures:
        raise SystemExit(f"benchmark task failed: {failures[0]}")
    return time.perf_counter() - t0, sum(v for v in cpu if isinstance(v, float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=8, help="retrainings per measurement")
    ap.add_argument("--max-train", type=int, default=80)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "layerinf-bench-scaleout")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (1 worker, 2 workers); the best is reported")
    ap.add_argument("--skip-local", action="store_true", help="skip the in-process reference")
    args = ap.parse_args()

    import torch

    from layerinf.workflows.executor import LocalExecutor, RayExecutor, Task

    root = args.dir / f"run-{args.max_train}-{args.epochs}"
    t0 = time.perf_counter()
    cfg = prepare(root, args.max_train, args.epochs)
    print(f"run ready in {time.perf_counter() - t0:.0f} s: {root}")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    rates = {}
    if not args.skip_local:
        torch.set_num_threads(1)
        ex = LocalExecutor()
        timed(ex, tasks(root, cfg, 1))  # load the model once, as a worker's warm-up does
        sec, cpu = timed(ex, tasks(root, cfg, args.tasks))
        rates["local"] = args.tasks / sec * 60
        print(f"local, in this process (1 thread): {args.tasks} retrainings in {sec:.1f} s = "
              f"{rates['local']:.2f} / min (cores busy {cpu / sec:.2f})")

    startup = {1: [], 2: []}
    for rnd in range(args.rounds):
        for workers in (1, 2) if rnd % 2 == 0 else (2, 1):
            ex = RayExecutor(address="local", local_cpus=workers, num_cpus=1)
            ex.start()
            t1 = time.perf_counter()
            timed(ex, [Task(warm, (str(root), 2.0 if workers > 1 else 0.0), label="warm-up") for _ in range(workers)])
            warmup = time.perf_counter() - t1
            sec, cpu = timed(ex, tasks(root, cfg, args.tasks, seed=rnd))
            ex.close()
            rate = args.tasks / sec * 60
            rates[workers] = max(rates.get(workers, 0.0), rate)
            startup[workers].append(ex.startup_seconds)
            print(f"round {rnd + 1}, ray, {workers} worker{'s' if workers > 1 else ''}: start-up "
                  f"{ex.startup_seconds:.1f} s, worker warm-up {warmup:.1f} s; {args.tasks} retrainings in {sec:.1f} s "
                  f"= {rate:.2f} / min (cores busy {cpu / sec:.2f}, load average {os.getloadavg()[0]:.2f})")
    print(f"best: 1 worker {rates[1]:.2f} / min, 2 workers {rates[2]:.2f} / min; speed-up {rates[2] / rates[1]:.2f}x"
          + (f"; local in-process {rates['local']:.2f} / min" if "local" in rates else ""))
    every = startup[1] + startup[2]
    print(f"Ray start-up (ray.init of a local instance): median {sorted(every)[len(every) // 2]:.1f} s "
          f"(min {min(every):.1f}, max {max(every):.1f})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
