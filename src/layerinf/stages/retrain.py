"""The ``retrain`` stage (``layerinf retrain RUN``, ``li.retrain``): the paper's filter-and-retrain experiment.

For each retrained configuration (``filter.configs``, default every scored one) and baseline (``none``,
``random``, the noise-aware ``oracle``) the lowest ``filter.fraction`` of the training set is removed and the
model is retrained from the same initial checkpoint with the recipe it was fine-tuned with
(``finetuned_recipe``). Each retraining is a small JSON record under ``RUN/retrain/records/`` keyed by the exact
kept subset, the initial checkpoint and the recipe, with its own checksum, written as soon as it is done:
configurations that remove the same examples share one retraining, a killed run resumes where it stopped, and
an edited or broken record is redone rather than trusted. When every record is in, the results table is written
and the records are copied into the new stage folder (``retrain/results.parquet|csv``, ``retrain/records/``), so
the stage's checksums cover them too: a missing or edited record makes the stage redo itself (and that one
retraining). Records of other filter options stay (a return to earlier options retrains nothing).

``filter.repeats: R`` retrains every kept subset R times, with the training seeds ``train_seed``,
``train_seed + 1``, …: one record per (kept subset, seed), keyed like the others (the seed is part of the
recipe), so repeat 0 is exactly today's retraining and its record. ``results`` then has one row per
configuration and repeat, with the columns ``repeat`` (0..R−1) and ``train_seed``; with R = 1 it is the table
it always was (one row per configuration, no such columns). The report averages the repeats (mean ± a 95 %
t-interval) and flags retrainings that collapsed to the majority class.

Each retraining is a task (``retrain_task``): it reads the run and returns its record, and this process
writes the record as it arrives. Without an executor the tasks run here one by one, as always; with one
(``RetrainStage(run, executor=...)``, ``workflows.executor``: local processes or Ray, docs/ray.md) they run in
parallel, with the same results. The metrics themselves (NDR, AUC, the filter order) are ``layerinf.evaluation``'s.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, fields
from pathlib import Path
import numpy as np
import pandas as pd

from layerinf.config import BASELINES, FilterConfig, ModelConfig, TrainConfig
from layerinf.errors import LayerinfError
from layerinf.evaluation import metrics
from layerinf.stages.base import Inputs, StageBase
from layerinf.store.layout import (DATA, FINETUNE, RECORDS_DIR, RESULTS, RETRAIN, SCORES, adapter_file, record_file,
                                   table_file)
from layerinf.store.rundir import RunDir, atomic_write_json, config_hash

METRIC_COLUMNS = ["ndr_30", "auc_ndr", "roc_auc", "cancellation"]


def config_key(method: str, group: str, aggregator: str) -> str:
    return f"{method}/{group}/{aggregator}"


def baseline_scores(name: str, noisy: np.ndarray, seed: int) -> np.ndarray | None:
    """Scores of a baseline (spec §6): Random, the noise-aware oracle ('Full'), or None for no removal."""
    if name == "random":
        return metrics.random_scores(len(noisy), seed)
    if name == "oracle":
        return metrics.oracle_scores(noisy, seed)
    if name == "none":
        return None
    raise LayerinfError(f"unknown baseline '{name}'", f"use any of {', '.join(BASELINES)}")


def _unit_key(kept: np.ndarray, salt: str) -> str:
    """File key of one retraining: the exact kept subset plus what else shapes it (start point, recipe)."""
    h = hashlib.sha256(salt.encode())
    h.update(np.ascontiguousarray(kept, dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def _record_sha(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def read_record(path: Path) -> dict | None:
    """A retraining record whose checksum matches, else None (missing, half-written or edited)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        record = raw["record"]
        return record if raw.get("sha256") == _record_sha(record) and "best_accuracy" in record else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(path: Path, record: dict) -> None:
    atomic_write_json(path, {"record": record, "sha256": _record_sha(record)})


def finetuned_recipe(run_dir) -> tuple[ModelConfig, TrainConfig]:
    """The model and training recipe the run was fine-tuned with (learning rate and seed resolved): what every
    retraining repeats. A run whose model was imported (``--adapter``) has neither an initial checkpoint nor a
    recipe: a clear error."""
    info = RunDir(run_dir).stage_info(FINETUNE)
    summary = info.get("summary") or {}
    if summary.get("imported") or "train" not in (info.get("config") or {}):
        raise LayerinfError(f"the model of {RunDir(run_dir).root} was imported (an adapter): there is no initial "
                            "checkpoint or recipe to retrain from", "fine-tune it: `layerinf finetune RUN`")
    names = {f.name for f in fields(TrainConfig)}  # an older stage's key may hold options since moved to runtime
    train = TrainConfig(**{k: v for k, v in info["config"]["train"].items() if k in names})
    return ModelConfig(**summary["model"]), train


def run_tasks(executor, tasks: list[dict], on_result, *, progress: bool, desc: str) -> list:
    """Run task dicts (``fn``, ``args``, ``label``, ``key``, ``log``) on ``executor`` (its ``run_tasks``), or
    without one here, one by one (errors propagate), calling ``on_result(key, value)`` as each finishes.
    Returns the failed tasks (each prints as one line naming it and its log)."""
    if executor is not None:
        return executor.run_tasks(tasks, on_result, progress=progress, desc=desc)
    from tqdm.auto import tqdm

    with tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress) as bar:
        for task in tasks:
            on_result(task["key"], task["fn"](*task["args"]))
            bar.update(1)
    return []


_WORKER_CACHE: dict = {}  # per process: the model, splits and initial state of the last run retrained


def _retrain_context(run_root: str, device: str):
    """The run's model at its initial checkpoint, its encoded splits and initial state (kept per process: a
    worker that retrains the same run again loads nothing)."""
    from layerinf.model import read_adapter
    from layerinf.stages.finetune import encode_splits, load_finetuned
    from layerinf.store.rundir import RunDir

    run = RunDir(run_root)
    key = (str(run.root.resolve()), run.fingerprint(FINETUNE), device)
    if _WORKER_CACHE.get("key") != key:
        _WORKER_CACHE.clear()
        loaded, prepared, model_cfg = load_finetuned(run, "init", device=device)
        enc = encode_splits(prepared, loaded.tokenizer, model_cfg)
        _WORKER_CACHE.update(key=key, value=(loaded, enc, read_adapter(run.layout.adapter("init")), prepared))
    return _WORKER_CACHE["value"]


def retrain_task(run_root: str, kept: np.ndarray, first_config: str, train: TrainConfig, rec: dict,
                 device: str, gradient_checkpointing: bool = False, eval_batch_size: int = 64) -> dict:
    """One retraining (a task: it reads the run, writes nothing) → ``{"record", "device"}``.

    ``device`` is resolved here, on the worker (``auto`` picks the worker's GPU); ``rec["train_seed"]`` is the
    seed of this retraining (the run's training seed plus the repeat). ``gradient_checkpointing`` recomputes
    activations in the backward pass (less memory, same results) and ``eval_batch_size`` is the batch of the
    evaluation passes: ``RuntimeConfig``, how fast, not what."""
    from layerinf.engine import train as train_mod
    from layerinf.model import resolve_device

    device = str(resolve_device(device))
    from layerinf.stages.task import task_of

    loaded, enc, init_state, prepared = _retrain_context(run_root, device)
    res = train_mod.fit(loaded.model, enc["train"], enc["infl"], enc["test"], train, lr=rec["lr"],
                        seed=rec["train_seed"], rows=kept, init_state=init_state, progress=False,
                        gradient_checkpointing=bool(gradient_checkpointing),
                        objective=task_of(prepared).objective(train), eval_batch_size=int(eval_batch_size))
    n = len(enc["train"])
    record = {
        "kept": int(len(kept)), "best_accuracy": res.best_accuracy,
        "accuracy_at_best_epoch": res.accuracy_at_best_epoch, "best_epoch": res.best_epoch,
        "history": res.history.to_dict(orient="list"), "first_config": first_config,
        "train_seed": int(rec["train_seed"]),
    }  # no wall-clock time: identical runs write identical records (the retrain stage.json times the stage)
    return {"record": record, "device": device, "removed": n - len(kept)}


def _seeded(rec: dict, repeat: int) -> dict:
    """The recipe of repeat ``repeat``: the same, with the training seed ``train_seed + repeat``."""
    return rec if repeat == 0 else {**rec, "train_seed": int(rec["train_seed"]) + int(repeat)}


def _baseline_metrics(s: np.ndarray | None, noisy: np.ndarray) -> dict[str, float]:
    if s is None or not noisy.any():
        return {c: float("nan") for c in METRIC_COLUMNS}
    return {"ndr_30": float(metrics.ndr_at(s, noisy, 0.30)), "auc_ndr": float(metrics.auc_ndr(s, noisy)),
            "roc_auc": float(metrics.roc_auc(s, noisy)), "cancellation": float("nan")}


class RetrainStage(StageBase):
    """Filter and retrain; writes ``results.parquet|csv`` (one row per configuration or baseline, and per repeat
    when ``filter.repeats`` > 1) and the retraining records (``records/``)."""

    name = RETRAIN
    upstream = (DATA, FINETUNE, SCORES)
    artifacts = (table_file(RESULTS), table_file(RESULTS, "csv"), RECORDS_DIR)

    def __init__(self, run_dir, echo=None, *, source=None, executor=None, task_device: str | None = None,
                 gradient_checkpointing: bool | None = None, runtime=None):
        """``executor``: where the retrainings run, a ``workflows.executor.Executor`` (``make_executor("ray")``);
        default: one by one in this process, as always. ``task_device``: the device each task resolves on its
        worker (e.g. ``"auto"`` on a cluster of GPU nodes); default: the stage's device.
        ``gradient_checkpointing`` (None: ``runtime``'s) and ``runtime.eval_batch_size`` for the retrainings
        (how fast, not what: no part of the stage's key or of a record's)."""
        super().__init__(run_dir, echo, source=source, runtime=runtime)
        self.executor = executor
        self.task_device = task_device
        gc = self.runtime.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        self.gradient_checkpointing = bool(gc)

    def key(self, filt: FilterConfig, model: ModelConfig, train: TrainConfig) -> dict:
        from layerinf.stages.finetune import recipe

        filt_key = asdict(filt)
        if filt_key.get("repeats", 1) == 1:  # one repeat is what the stage always did: its key stays the same
            filt_key.pop("repeats", None)
        return {"filter": filt_key, "train": recipe(self.run_dir, model, train)}

    def seed(self, filt, model, train) -> int:
        return int(self.run_dir.stage_info(DATA)["seed"] or 0)

    def plan(self, filt: FilterConfig, model: ModelConfig, train: TrainConfig, inputs=None):
        """(kind, name, scores, kept rows, record path, repeat) per configuration and baseline, repeats
        0..R−1 of each in turn (R = ``filter.repeats``; repeat r trains with seed ``train_seed + r``), the score
        table and the noise mask (``inputs``: the upstream results; default: this run's, verified first)."""
        if inputs is None:
            inputs = Inputs(self.source, self.upstream, verify=True)
        run = self.run_dir
        noisy = inputs[DATA].train["noisy"].to_numpy(bool)
        n = len(noisy)
        table = inputs[SCORES]
        aggregated = inputs.stage(SCORES).aggregated()
        keys = [config_key(r.method, r.group, r.aggregator) for r in table.itertuples()]
        if filt.configs is not None:
            unknown = sorted(set(filt.configs) - set(keys))
            if unknown:
                raise LayerinfError(f"filter.configs names unscored configuration(s) {', '.join(unknown)}",
                                    "add their method/group/aggregator to the score section, or fix the names")
            keys = [k for k in keys if k in set(filt.configs)]
        seed = self.seed(filt, model, train)
        units = [("baseline", b, baseline_scores(b, noisy, seed)) for b in filt.baselines]
        units += [("influence", k, aggregated[k].to_numpy(np.float64)) for k in keys]
        removed = metrics.removal_count(filt.fraction, n)
        self._n = n
        # a retraining is reused only for the same kept subset, initial checkpoint and recipe (seed included)
        init = inputs.stage(FINETUNE).files()[adapter_file("init")]
        rec = self.key(filt, model, train)["train"]
        salts = [config_hash({"init": init, "train": _seeded(rec, r)}) for r in range(filt.repeats)]
        plan = []
        for kind, name, s in units:
            kept = np.arange(n) if s is None else np.sort(metrics.filter_order(s)[removed:])
            for r, salt in enumerate(salts):
                plan.append((kind, name, s, kept, run.layout.record(_unit_key(kept, salt)), r))
        return plan, table, noisy

    def compute(self, st, filt: FilterConfig, model: ModelConfig, train: TrainConfig, *, inputs, progress=True,
                device="cpu") -> dict:
        plan, table, noisy = self.plan(filt, model, train, inputs)
        self._retrain(plan, model, train, progress=progress, device=device)
        results = self._results(plan, table, noisy, model, inputs[DATA], repeats=filt.repeats)
        results.to_parquet(st.out(table_file(RESULTS)), index=False)
        results.to_csv(st.out(table_file(RESULTS, "csv")), index=False)
        for path in sorted(self.run_dir.layout.records.glob("*.json")):  # every intact record, these options' and
            if read_record(path) is not None:  # earlier ones': the new folder replaces retrain/ as a whole
                shutil.copy2(path, st.out(record_file(path.stem)))  # its time stamp too: when it was made
        return {"rows": len(results), "retrainings": len({p[4] for p in plan})}

    def retrain_tasks(self, plan, model: ModelConfig, train: TrainConfig, *, device: str, label: str = "") -> list:
        """One task (a dict of ``workflows.executor.Task`` fields) per retraining still to do (kept subset ×
        recipe), in plan order; its key is the record's path. ``label`` prefixes the task names."""
        from layerinf.stages.finetune import recipe

        rec = recipe(self.run_dir, model, train)
        n = getattr(self, "_n", None)
        tasks, seen = [], set()
        for kind, name, s, kept, path, r in plan:
            if path in seen or read_record(path) is not None:
                continue
            seen.add(path)
            removed = f"{n - len(kept)} examples" if n is not None else "examples"
            seeded = _seeded(rec, r)
            which = f", seed {seeded['train_seed']}" if r else ""
            tasks.append({"fn": retrain_task,
                          "args": (str(self.run_dir.root), kept, name, train, seeded, device,
                                   self.gradient_checkpointing, self.runtime.eval_batch_size),
                          "label": f"{label}retraining without the {removed} chosen by {name}{which} "
                                   f"(record {path.stem})",
                          "key": path, "log": path.with_suffix(".log")})
        return tasks

    def store_result(self, path: Path, value: dict) -> None:
        """Write a finished retraining's record at ``path`` (atomically; the driver is the only writer)."""
        record = {**value["record"], "unit": path.stem}
        write_record(path, record)
        path.with_suffix(".log").unlink(missing_ok=True)  # an earlier failure's log
        if self.echo:
            self.echo(f"retrained without {value['removed']} examples chosen by {record['first_config']}: "
                      f"best test acc {record['best_accuracy']:.4f}")

    def _retrain(self, plan, model: ModelConfig, train: TrainConfig, *, progress: bool, device: str) -> None:
        ex = self.executor
        tasks = self.retrain_tasks(plan, model, train, device=device if ex is None else (self.task_device or device))
        if not tasks:
            return
        try:
            failures = run_tasks(ex, tasks, self.store_result, progress=progress, desc="retrain")
        finally:
            _WORKER_CACHE.clear()  # the run's model is not kept alive in the caller's process
        if failures:
            raise LayerinfError(f"{len(failures)} of {len(tasks)} retrainings failed (first: {failures[0]})",
                                "fix the cause and rerun the same command: finished retrainings are reused")

    def _results(self, plan, table: pd.DataFrame, noisy: np.ndarray, model: ModelConfig, prepared,
                 repeats: int = 1) -> pd.DataFrame:
        from layerinf.stages.task import task_of

        seed = int(self.run_dir.stage_info(DATA)["seed"] or 0)
        task = prepared.task or self.run_dir.stage_info(DATA)["config"]["data"]["source"]
        by_key = {config_key(r.method, r.group, r.aggregator): r for r in table.itertuples()}
        n, rows = len(noisy), []
        for kind, name, s, kept, path, r in plan:
            unit = read_record(path)
            if unit is None:
                raise LayerinfError(f"retraining record {path} is missing or corrupted",
                                    "rerun the same command: the retraining is redone")
            if kind == "baseline":
                method, group, agg = name, "-", "-"
                m = _baseline_metrics(s, noisy)
            else:
                method, group, agg = name.split("/")
                m = {c: float(getattr(by_key[name], c)) for c in METRIC_COLUMNS}
            row = {
                "model": model.name, "task": task, "seed": seed, "method": method, "group": group,
                "aggregator": agg, "kind": kind, **m, "removed": int(n - len(kept)),
                "best_accuracy": unit["best_accuracy"], "accuracy_at_best_epoch": unit["accuracy_at_best_epoch"],
            }
            row.update(task_of(prepared).retrain_fields(unit))  # instruction data: the loss too
            if repeats > 1:  # one row per repeat; with one repeat the table is the one it always was
                row.update(repeat=int(r), train_seed=int(unit["train_seed"]))
            rows.append(row)
        return pd.DataFrame(rows)

    def load(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / table_file(RESULTS))
