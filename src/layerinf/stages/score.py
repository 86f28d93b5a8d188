"""The ``score`` stage: gradient store → per-module score matrices → aggregated scores → metric tables.

For each method (TracIn, Cosine, DataInf) every module's validation × train score matrix S^b is computed by
streaming training-gradient chunks from the store (``methods``), kept on disk as float32 ``.npy``; then
each layer group × aggregator turns its modules' matrices into one score per training example
(``aggregate``), and the metrics of ``metrics`` are measured against the noise mask. TracIn on WE is
TracIn-WE (row-sparse word-embedding gradients); DataInf skips modules above the size threshold (WE, large
heads), so it has no WE group. Higher score = more helpful, everywhere.

TracInCP (``tracin_cp``, a method over several checkpoints) reads the grads stage's per-checkpoint stores
(``GradsConfig.tracin_checkpoints``) and their learning rates η_c: S^b = Σ_c η_c V_c G_cᵀ per module (TracIn-WE
terms on WE), then groups and aggregators as for every method. The validation filter (correct predictions) and
the other columns (cancellation, baselines) come from the stage's own checkpoint, as for the other methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from layerinf.influence import methods, registry
from layerinf.evaluation import metrics
from layerinf.config import ScoreConfig
from layerinf.errors import LayerinfError
from layerinf.store import score_sets
from layerinf.store.gradstore import GradStore
from layerinf.spec import ModuleSpec
from layerinf.stages.base import StageBase
from layerinf.store.layout import (AGGREGATED_FILE, DATA, GRADS, MATRICES_DIR, NOISE, SCORE_FRAMES, SCORE_TABLE, SCORES,
                                   matrix_file, table_file)

NDR_LEVELS = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90)


@dataclass
class ModuleScores:
    """Per-module score matrices (m × n) of one method, memory-mapped from disk (``folder``: the stage's)."""

    method: str
    folder: Path

    def path(self, module: str) -> Path:
        return self.folder / matrix_file(self.method, module)

    def has(self, module: str) -> bool:
        return self.path(module).exists()

    def load(self, module: str) -> np.ndarray:
        return np.load(self.path(module), mmap_mode="r")


def method_applies(method: str, spec: ModuleSpec, cfg: ScoreConfig) -> bool:
    """Whether a registered method scores this module (DataInf: not WE, not ≥ ``datainf_threshold`` parameters)."""
    return registry.method(method).applies(spec.kind, spec.numel, cfg.datainf_threshold)


def compute_module_scores(method: str, spec: ModuleSpec, train: GradStore, infl: GradStore,
                          cfg: ScoreConfig, device: str | None = None,
                          checkpoints: "list[tuple[GradStore, GradStore, float]] | None" = None,
                          chunk_size: int = 2048) -> np.ndarray:
    """S^b (m × n, float32) for one method and module, streaming ``chunk_size`` training rows at a time.

    A multi-checkpoint method (``tracin_cp``) scores ``checkpoints`` instead: ``(train_c, infl_c, η_c)`` each."""
    compute_dtype = _torch_dtype(cfg.compute_dtype)
    if registry.method(method).checkpoints:
        return _checkpoint_scores(method, spec, checkpoints, compute_dtype, device, chunk_size)
    if spec.kind == "we":
        score_we = registry.method(method).score_we
        if score_we is None:
            raise LayerinfError(f"method {method} does not apply to WE", "use tracin or cosine for the WE group")
        return np.asarray(score_we(infl.we_all(), train.iter_we_chunks(chunk_size), train.n), dtype=np.float32)
    V = np.asarray(infl.module(spec.name), dtype=np.float32)
    return registry.score_module(
        method,
        V,
        lambda: (chunk for _, chunk in train.iter_chunks(spec.name, chunk_size)),
        n=train.n,
        compute_dtype=compute_dtype,
        device=_gpu(device),
    ).astype(np.float32)


def _checkpoint_scores(method: str, spec: ModuleSpec, checkpoints, compute_dtype, device: str | None,
                       chunk_size: int) -> np.ndarray:
    """A multi-checkpoint method's scores of one module (``checkpoints`` from ``checkpoint_stores``, never empty)."""
    entry = registry.method(method)
    lrs = [lr for _, _, lr in checkpoints]
    n = checkpoints[0][0].n
    if spec.kind == "we":
        return np.asarray(registry.call_with_options(
            entry.score_we, [infl.we_all() for _, infl, _ in checkpoints],
            [train.iter_we_chunks(chunk_size) for train, _, _ in checkpoints], n, lrs=lrs,
            compute_dtype=compute_dtype), dtype=np.float32)
    Vs = [np.asarray(infl.module(spec.name), dtype=np.float32) for _, infl, _ in checkpoints]
    sources = [(lambda t=train: (chunk for _, chunk in t.iter_chunks(spec.name, chunk_size)))
               for train, _, _ in checkpoints]
    return registry.score_module(method, Vs, sources, n=n, compute_dtype=compute_dtype, device=_gpu(device),
                                lrs=lrs).astype(np.float32)


def needs_oos(cfg: ScoreConfig) -> bool:
    """Whether a model baseline needs out-of-sample probabilities from cross-fitted models (``OOS_BASELINES``)."""
    from layerinf.config import OOS_BASELINES

    return bool(set(OOS_BASELINES) & set(cfg.model_baselines))


def model_baseline_scores(name: str, train: GradStore, chunk_size: int = 2048) -> np.ndarray:
    """Scores from the model alone (higher = more helpful, like every score): ``loss`` is minus each training
    example's own loss on its given label (the usual "high loss = suspicious" ranking); ``self_influence`` is
    minus TracIn of the example with itself, Σ over every stored module of ‖g_i‖² (Pruthi et al. 2020)."""
    if name == "loss":
        return -np.asarray(train.loss, dtype=np.float64)
    if name == "self_influence":
        total = np.zeros(train.n, dtype=np.float64)
        for spec in train.specs:
            if spec.kind != "we":
                for start, chunk in train.iter_chunks(spec.name, chunk_size):
                    c = np.asarray(chunk, dtype=np.float64)
                    total[start:start + len(c)] += np.einsum("ij,ij->i", c, c)
        if train.has_we:  # row-sparse: a sample's squared norm is the sum over its rows
            for start in range(0, train.n, max(1, int(chunk_size))):
                we = train.we_chunk(start, start + chunk_size)
                indptr = np.asarray(we.indptr)
                rows = np.asarray(we.rows, dtype=np.float64)
                owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
                total[start:start + len(indptr) - 1] += np.bincount(owner, weights=np.einsum("ij,ij->i", rows, rows),
                                                                    minlength=len(indptr) - 1)
        return -total
    raise LayerinfError(f"unknown model baseline '{name}'", "use loss or self_influence")


def _gpu(device: str | None) -> str | None:
    """The device to stream scoring to: only an accelerator (on CPU the chunks are used where they are)."""
    return None if device in (None, "cpu") else str(device)


def _torch_dtype(name: str):
    import torch

    if name == "tf32":  # float32 with TF32 GEMMs on CUDA (float32 elsewhere)
        return "tf32"
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
    if name not in table:
        raise LayerinfError(f"unknown compute dtype '{name}'", "use float32 or bfloat16 (never float16 on CPU)")
    return table[name]


def aggregate_group(
    matrices: list[np.ndarray], aggregator: str, correct: np.ndarray, cfg: ScoreConfig
) -> np.ndarray:
    """One score per training sample from a group's per-module matrices (voters = module × validation)."""
    use_correct = cfg.use_correct
    if use_correct is None:  # the paper: Mean over all validation samples, Rank / Vote over the correct ones
        use_correct = aggregator != "mean"
    return registry.aggregate(
        aggregator,
        matrices,
        correct=correct,
        use_correct=use_correct,
        kappa=cfg.vote_kappa,
        tie_method=cfg.tie_method,
    )


def ndr_row(s: np.ndarray, noisy: np.ndarray) -> dict[str, float]:
    """NDR@k for the paper's levels plus precision@30, AUC-NDR and ROC-AUC."""
    row = {f"ndr_{k}": float(metrics.ndr_at(s, noisy, k / 100)) for k in NDR_LEVELS}
    row["precision_30"] = float(metrics.precision_at(s, noisy, 0.30))
    row["auc_ndr"] = float(metrics.auc_ndr(s, noisy))
    row["roc_auc"] = float(metrics.roc_auc(s, noisy))
    return row


def curve_points(s: np.ndarray, noisy: np.ndarray, points: int = 201) -> pd.DataFrame:
    curve = np.asarray(metrics.ndr_curve(s, noisy), dtype=np.float64)
    n = len(curve)
    pos = np.unique(np.linspace(1, n, min(points, n)).round().astype(int))
    return pd.DataFrame({"fraction": pos / n, "ndr": curve[pos - 1]})


def group_cancellation(train: GradStore, groups: dict[str, list[str]], norm: str, chunk_size: int) -> dict[str, float]:
    """Cancellation C per group (spec §7.2), one streaming pass per module."""
    per_module = {}
    names = {m for mods in groups.values() for m in mods}
    for spec in train.specs:
        if spec.name not in names:
            continue
        acc = metrics.Cancellation(norm=norm)
        if spec.kind == "we":
            for chunk in train.iter_we_chunks(chunk_size):
                acc.update_row_sparse(*chunk)
        else:
            for _, chunk in train.iter_chunks(spec.name, chunk_size):
                acc.update(chunk)
        per_module[spec.name] = acc
    return {g: metrics.Cancellation.combine([per_module[m] for m in mods if m in per_module]).value
            for g, mods in groups.items()}


def _position(spec: ModuleSpec, num_layers: int) -> int:
    """Layer position for plots: 0 = WE, 1..L = layer index + 1, L+1 = CL."""
    if spec.kind == "we":
        return 0
    if spec.kind == "cl":
        return num_layers + 1
    return int(spec.layer) + 1


@dataclass
class ScoreResult:
    """Everything the score stage produces (also written as parquet/CSV/npy)."""

    table: pd.DataFrame  # one row per (method, group, aggregator)
    aggregated: pd.DataFrame  # n rows; one column per "method/group/aggregator"
    curves: pd.DataFrame
    modules: pd.DataFrame
    noise_rank: pd.DataFrame


def score_stores(
    train: GradStore,
    infl: GradStore,
    noisy: np.ndarray | None,
    correct: np.ndarray,
    num_layers: int,
    cfg: ScoreConfig,
    folder: Path,
    *,
    progress: bool = True,
    per_module_metrics: bool = True,
    device: str | None = None,
    checkpoints: "list[tuple[GradStore, GradStore, float]] | None" = None,
    chunk_size: int = 2048,
    baseline_scores: "dict[str, np.ndarray] | None" = None,
) -> ScoreResult:
    """Score every method × group × aggregator from two gradient stores (pure orchestration of the math).

    ``noisy`` (the ground-truth mask) may be None for real data: then no NDR/AUC columns are computed.
    Per-module matrices are written to ``folder/matrices/<method>/<module>.npy`` (``layout.matrix_file``).
    ``checkpoints``: the ``(train_c, infl_c, η_c)`` stores of multi-checkpoint methods (``tracin_cp``).
    ``chunk_size``: training rows streamed at a time (``RuntimeConfig.chunk_size``: speed and memory only).
    ``baseline_scores``: model baselines computed elsewhere (``confident_learning``: from cross-fitted models).
    """
    from tqdm.auto import tqdm

    method_names = [registry.method(m).name for m in cfg.methods]
    aggregators = [registry.aggregator(a).name for a in cfg.aggregators]
    specs = train.specs
    by_name = {s.name: s for s in specs}
    groups = registry.resolve_groups(cfg.groups, specs, num_layers)
    needed = [s for s in specs if any(s.name in mods for mods in groups.values())]
    if per_module_metrics:  # layer-wise curves need every LoRA module even when no group asks for it
        needed = list(specs)
    n = train.n

    jobs = [(m, s) for m in method_names for s in needed if method_applies(m, s, cfg)]
    bar = tqdm(jobs, desc="influence matrices", disable=not progress)
    for method, spec in bar:
        out = ModuleScores(method, folder)
        if out.has(spec.name):
            continue
        bar.set_postfix(module=spec.name, method=method, refresh=False)
        S = compute_module_scores(method, spec, train, infl, cfg, device, checkpoints, chunk_size)
        if S.shape != (infl.n, n) or not np.all(np.isfinite(S)):
            raise LayerinfError(
                f"{method} scores for module {spec.name} are not finite",
                "check the gradients for NaN/inf (e.g. a diverged checkpoint) and refit with a lower --lr",
            )
        out.path(spec.name).parent.mkdir(parents=True, exist_ok=True)
        tmp = out.path(spec.name).with_suffix(".tmp.npy")
        np.save(tmp, S)
        tmp.replace(out.path(spec.name))

    canc = group_cancellation(train, groups, cfg.cancellation_norm, chunk_size)
    rows, columns, curves = [], {}, []
    combos = [(m, g, a) for m in method_names for g in groups for a in aggregators]
    for method, group, aggregator in tqdm(combos, desc="aggregate", disable=not progress):
        store = ModuleScores(method, folder)
        members = [b for b in groups[group] if method_applies(method, by_name[b], cfg) and store.has(b)]
        if not members:
            continue  # e.g. DataInf × WE: not defined (spec §3.3)
        if cfg.group_mode == "concat" and method in ("tracin", "cosine") and len([b for b in members if b != "WE"]) > 1:
            S_cat = _concat_scores(method, members, train, infl, cfg, device, chunk_size)
            s = aggregate_group([S_cat], aggregator, correct, cfg)
        else:
            s = aggregate_group([store.load(b) for b in members], aggregator, correct, cfg)
        key = f"{method}/{group}/{aggregator}"
        columns[key] = s
        row = {"method": method, "group": group, "aggregator": aggregator, "modules": len(members)}
        if noisy is not None and noisy.any():
            row.update(ndr_row(s, noisy))
            c = curve_points(s, noisy)
            c.insert(0, "aggregator", aggregator)
            c.insert(0, "group", group)
            c.insert(0, "method", method)
            curves.append(c)
        row["cancellation"] = canc.get(group, float("nan"))
        row["n"] = n
        row["n_noisy"] = int(noisy.sum()) if noisy is not None else 0
        rows.append(row)
    for name in cfg.model_baselines:  # the model's own signals, ranked like a configuration (group/aggregator "-")
        s = (np.asarray(baseline_scores[name], dtype=np.float64) if name in (baseline_scores or {})
             else model_baseline_scores(name, train, chunk_size))
        columns[f"{name}/-/-"] = s
        row = {"method": name, "group": "-", "aggregator": "-", "modules": 0}
        if noisy is not None and noisy.any():
            row.update(ndr_row(s, noisy))
            c = curve_points(s, noisy)
            c.insert(0, "aggregator", "-")
            c.insert(0, "group", "-")
            c.insert(0, "method", name)
            curves.append(c)
        rows.append({**row, "cancellation": float("nan"), "n": n,
                     "n_noisy": int(noisy.sum()) if noisy is not None else 0})
    table = pd.DataFrame(rows)
    if "ndr_30" in table.columns:
        table = table.sort_values("ndr_30", ascending=False, kind="stable").reset_index(drop=True)
    aggregated = pd.DataFrame(columns)
    aggregated.insert(0, "idx", np.arange(n))

    module_rows, noise_rows = [], []
    if per_module_metrics and noisy is not None and noisy.any():
        for method in method_names:
            store = ModuleScores(method, folder)
            for spec in specs:
                if not store.has(spec.name):
                    continue
                S = store.load(spec.name)
                for aggregator in aggregators:
                    s = aggregate_group([S], aggregator, correct, cfg)
                    module_rows.append({
                        "method": method, "aggregator": aggregator, "module": spec.name, "kind": spec.kind,
                        "position": _position(spec, num_layers), "ndr_30": float(metrics.ndr_at(s, noisy, 0.30)),
                        "auc_ndr": float(metrics.auc_ndr(s, noisy)),
                    })
                nr = metrics.noise_rank(S, noisy, cfg.tie_method)
                noise_rows.append({
                    "method": method, "module": spec.name, "kind": spec.kind,
                    "position": _position(spec, num_layers),
                    **{k: v for k, v in nr.items() if k != "mean_ranks"},
                })
    return ScoreResult(
        table=table,
        aggregated=aggregated,
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
            columns=["method", "group", "aggregator", "fraction", "ndr"]),
        modules=pd.DataFrame(module_rows),
        noise_rank=pd.DataFrame(noise_rows),
    )


def _concat_scores(method: str, members: list[str], train: GradStore, infl: GradStore, cfg: ScoreConfig,
                   device: str | None = None, chunk_size: int = 2048) -> np.ndarray:
    """TracIn / Cosine on the concatenated gradients of a group's modules (``group_mode="concat"``)."""
    dense = [b for b in members if b != "WE"]  # WE is row-sparse: concat mode scores the group's dense modules
    V_blocks = [np.asarray(infl.module(b), dtype=np.float32) for b in dense]
    sources = [(lambda b=b: (c for _, c in train.iter_chunks(b, chunk_size))) for b in dense]
    return methods.score_concat(method, V_blocks, sources, n=train.n, compute_dtype=_torch_dtype(cfg.compute_dtype),
                                device=_gpu(device))


def checkpoint_stores(grads, cfg: ScoreConfig, train: GradStore, infl: GradStore):
    """The ``(train_c, infl_c, η_c)`` stores for the multi-checkpoint methods of ``cfg`` (None when it has none);
    a clear error when the grads stage collected no checkpoints or they do not match its main stores."""
    if not any(registry.method(m).checkpoints for m in cfg.methods):
        return None
    from layerinf.config import GradsConfig
    from layerinf.stages.grads import check_tracin_request

    stores = grads.checkpoint_stores()
    check_tracin_request(cfg.methods, GradsConfig(tracin_checkpoints=[c for c, *_ in stores] or None))
    for name, tr, inf, _ in stores:
        if (tr.n, inf.n) != (train.n, infl.n) or tr.modules != train.modules or inf.modules != infl.modules:
            raise LayerinfError(f"the TracInCP stores of checkpoint '{name}' do not match the main gradient stores",
                                "redo the gradients: layerinf grads RUN --force")
    return [(tr, inf, lr) for _, tr, inf, lr in stores]


class ScoreStage(StageBase):
    """Every method × layer group × aggregator from the gradient stores, with the metric tables."""

    name = SCORES
    upstream = (DATA, GRADS)
    artifacts = (*(table_file(f) for f in SCORE_FRAMES), table_file(SCORE_TABLE, "csv"), MATRICES_DIR)

    def key(self, cfg: ScoreConfig) -> dict:
        from dataclasses import asdict

        return {"score": asdict(cfg)}

    def compute(self, st, cfg: ScoreConfig, *, inputs, progress=True, device="cpu") -> dict:
        prepared, grads = inputs[DATA], inputs.stage(GRADS)
        train, infl = inputs[GRADS]
        checkpoints = checkpoint_stores(grads, cfg, train, infl)
        from layerinf.stages.task import task_of

        correct = task_of(prepared).correct(infl.logits, infl.labels)  # SFT: greedy decoding gives the response
        noisy = prepared.train["noisy"].to_numpy(bool)
        res = score_stores(train, infl, noisy, correct, grads.num_layers, cfg, st.tmp, progress=progress,
                           device=device, checkpoints=checkpoints, chunk_size=self.runtime.chunk_size,
                           baseline_scores=self._oos_baselines(cfg, prepared, inputs))
        for name in SCORE_FRAMES:
            getattr(res, name).to_parquet(st.out(table_file(name)), index=False)
        res.table.to_csv(st.out(table_file(SCORE_TABLE, "csv")), index=False)
        return {"configurations": len(res.table), "correct_infl": int(correct.sum()), "infl": int(len(correct))}

    def check_upstream(self) -> dict[str, str]:
        """DATA and GRADS; and the noise stage's out-of-sample probabilities when an out-of-sample model baseline
        is asked for (``run`` makes them: ``workflows.advise_noise.run_noise``)."""
        inputs = super().check_upstream()
        if self._needs_oos:
            self.run_dir.require(NOISE, "score.model_baselines has confident_learning: `layerinf run` makes the "
                                        "cross-fitted probabilities it needs")
            inputs[NOISE] = self.run_dir.fingerprint(NOISE)
        return inputs

    _needs_oos = False  # set by ``run`` from its config

    def _oos_baselines(self, cfg: ScoreConfig, prepared, inputs) -> dict[str, np.ndarray]:
        """``confident_learning``: p(given label) under the cross-fitted models' out-of-sample probabilities
        (cleanlab's self-confidence label-quality score; the out-of-sample loss −log p orders the rows the same)."""
        if "confident_learning" not in cfg.model_baselines:
            return {}
        from layerinf.evaluation.rankings import self_confidence

        probs = inputs.stage(NOISE).probs()
        return {"confident_learning": self_confidence(probs, prepared.train["label"].to_numpy(np.int64))}

    def inputs(self):
        """DATA and GRADS, and the noise stage when an out-of-sample model baseline is asked for."""
        from layerinf.stages.base import Inputs
        from layerinf.stages.noise import NoiseStage

        if not self._needs_oos:
            return super().inputs()
        return Inputs(self.source, (*self.upstream, NOISE), stages={NOISE: NoiseStage(self.run_dir)})

    def run(self, cfg: ScoreConfig, *, force: bool = False, progress: bool = True, device: str = "cpu") -> pd.DataFrame:
        """``StageBase.run``, but a finished score set with other options is kept, not replaced
        (``store.score_sets``): it goes to ``score_sets/<hash>/`` first, and a kept set with this run's key is
        restored instead of recomputed (``force``: recomputed). The table's ``attrs["score_set"]`` is its hash."""
        self._needs_oos = needs_oos(cfg)
        inputs = self.check_upstream()
        self._check_groups(cfg)  # an unknown group fails before the current set is moved anywhere
        key = self.key(cfg)
        want = score_sets.set_hash(key, inputs)
        say = self.echo or (lambda _msg: None)
        with self.run_dir.locked():
            if score_sets.current_hash(self.run_dir) != want:
                score_sets.keep_current(self.run_dir, inputs, say)
                restored = not force and score_sets.restore(self.run_dir, want, say)
            else:
                restored = False
            if not restored:
                with self.run_dir.stage(self.name, key, seed=self.seed(cfg), force=force, inputs=inputs,
                                        device=str(device)) as st:
                    if not st.done:
                        st.info["summary"] = self.compute(st, cfg, inputs=self.inputs(), progress=progress,
                                                          device=device)
                score_sets.drop(self.run_dir, want)  # a kept copy of what is current now is superseded
        table = self.load()
        table.attrs["score_set"] = want
        return table

    def _check_groups(self, cfg: ScoreConfig) -> None:
        from layerinf.stages.grads import GradsStage

        grads = GradsStage(self.run_dir)
        train, _ = grads.load()
        registry.resolve_groups(cfg.groups, train.specs, grads.num_layers)

    def sets(self, *, verify: bool = False) -> "list[score_sets.ScoreSet]":
        """The current score set and the kept ones (``store.score_sets.list_sets``)."""
        return score_sets.list_sets(self.run_dir, verify=verify)

    def load(self) -> pd.DataFrame:
        """The summary table, one row per (method, group, aggregator), best NDR@30 first."""
        return pd.read_parquet(self.path / table_file(SCORE_TABLE))

    def aggregated(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / AGGREGATED_FILE)
