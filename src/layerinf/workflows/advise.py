"""``layerinf advise``: which layers to trust on YOUR data — a planted-noise probe advisor — and Vote's κ from
an estimated noise rate. The design, its choices and its validation: docs/advisor.md.

Layout of ``OUT`` (a run directory; every sub-run is one too)::

    OUT/data/               the user's data as given (no noise injected; caps and split seed as configured)
    OUT/probes/source/      OUT/data's dev set and each probe's (or fold run's) training set as JSONL copies
    OUT/probes/<seed>/      one probe: data (planted flips) → finetune → grads → scores
    OUT/probes/fold<k>/     only with separate fold runs (noise_folds ≥ 2): fine-tuned on every fold but k
    OUT/noise/              out-of-sample probabilities, fold ids, the noise-rate estimate (estimate.json)
    OUT/advise/             table.parquet|csv, probes.parquet|csv, heatmap.png, recommendation.json, index.html

**Probes are cross-fitted** (the default, with ≥ 2 probes): OUT/data's training set is cut into ``probes``
stratified folds (seeded by ``data.seed``) and probe k trains on every fold but k; its best checkpoint predicts
fold k, and those out-of-sample probabilities give the noise estimate at no extra fine-tuning
(``workflows.advise_noise``). Probe seed ``s`` (``data.seed + 1 …``) flips ``⌊probe_rate · n_k⌋`` of its
``n_k`` training labels with ``DataConfig(noise_rate=probe_rate, seed=s)``: uniformly among the **training**
examples only (influence and test examples keep the user's labels), **whatever their label** — nobody knows
which labels are wrong already, so a flip may hit a mislabelled example (with two classes it then restores the
true label). The probe's ``noisy`` mask is exactly the planted flips; the metrics count only them as noisy
(real noise counts as clean). The seed also draws the probe's influence / test halves and its training seed,
so the spread over probes covers data, noise and training randomness (mean and Student-t 95 % interval over
probes). With ``noise_folds`` = 0 or ≥ 2, or a single probe, every probe trains on the whole training set.

**Instruction (SFT) data** differ (``workflows.probe_data``): each probe re-prepares the user's source with its own
seed (its own split, the same sizes; no ``OUT/probes/source/`` copies) and plants ``data.noise_kind`` response
noise; there is no noise stage (``OUT/noise/`` is absent, κ stays ``vote_kappa``).

**Cost.** Data prepared once (OUT/data); each probe is one fine-tuning + one gradient pass (scoring is cheap next to
those); the noise estimate adds one forward pass (separate fold runs: ``noise_folds`` fine-tunings more). Stages
are cached: a rerun computes only what changed (a new probe count re-cuts the folds, so every probe is redone).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from layerinf.config import (SCALE_OUT, DataConfig, GradsConfig, ModelConfig, RankConfig, RuntimeConfig, ScoreConfig,
                             TrainConfig, runtime_options_except, split_options)
from layerinf.errors import LayerinfError
from layerinf.evaluation.noise_rate import KAPPA_FACTOR, NoiseEstimate, planted_metrics
from layerinf.stages.base import Inputs, StageBase
from layerinf.stages.data import DataStage, load_data
from layerinf.stages.task import task_for
from layerinf.stages.finetune import FinetuneStage
from layerinf.stages.grads import GradsStage
from layerinf.stages.score import ScoreStage
from layerinf.store.layout import (ADVISE, ADVISE_TABLE, DATA, HEATMAP_FILE, NOISE, PAGE_FILE, PROBE_TABLE, PROBES_DIR,
                                   RECOMMENDATION_FILE, SCORES, SOURCE_DIR, table_file)
from layerinf.store.rundir import RunDir, atomic_write_bytes, atomic_write_json
from layerinf.workflows.advise_noise import N_BOOT, NoiseStage, fold_ids, run_noise
from layerinf.workflows.advise_page import AdviceConfig, recommend, render_heatmap, render_page, summarize
from layerinf.workflows.defaults import ADVISE_DEFAULTS, small_data_recipe
from layerinf.workflows.probe_data import probe_config, probe_seeds, write_source

SECTIONS = (DataConfig, ModelConfig, TrainConfig, GradsConfig, ScoreConfig, RuntimeConfig)
NOT_OPTIONS = {"noise_rate", "noise_rates"}  # the advisor plants its own flips (probe_rate); runtime: what its stages use
NOT_TAKEN = SCALE_OUT | runtime_options_except("finetune", "grads", "score")
MIN_PLANTED = 10  # planted flips per probe below which NDR is too coarse to compare configurations
MAX_PROBE_RATE = 0.5
CRITERIA = ("ndr_30", "ndr_10", "auc_ndr", "roc_auc")


def advise_options() -> list[tuple[type, dataclasses.Field]]:
    """(section, field) of every config option ``advise`` takes, in CLI order."""
    return [(cls, f) for cls in SECTIONS for f in dataclasses.fields(cls) if f.name not in NOT_OPTIONS | NOT_TAKEN]


# ------------------------------------------------------------------------------------------ validation


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.number)) and math.isfinite(float(v))


def _whole(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def probe_train_size(n: int, folds: int = 0) -> int:
    """Training examples of a probe: all ``n``, or those outside the largest of ``folds`` cross-fitting folds."""
    return n - math.ceil(n / folds) if folds else n


def min_train_size(probe_rate: float, min_planted: int = MIN_PLANTED, folds: int = 0) -> int:
    """The smallest training set in which ``probe_rate`` plants at least ``min_planted`` flips per probe (whose
    training part is ``probe_train_size(n, folds)``)."""
    from layerinf.data.noise import noise_count

    n = max(1, math.ceil(min_planted / probe_rate - 1e-9))
    while noise_count(probe_train_size(n, folds), probe_rate) < min_planted:
        n += 1
    return n


def check_probe_args(probe_rate: Any, probes: Any, noise_folds: Any = None, kappa_factor: Any = KAPPA_FACTOR,
                     criterion: str = "ndr_30") -> tuple[float, int, int | None, float]:
    """Validate the advisor's own arguments (each a ``LayerinfError`` with a fix); ``noise_folds`` None: the
    noise estimate shares the probes' fits (``noise_plan``)."""
    if not _number(probe_rate) or not 0 < float(probe_rate) <= MAX_PROBE_RATE:
        raise LayerinfError(f"probe_rate={probe_rate!r} is outside (0, {MAX_PROBE_RATE}]",
                            "use a fraction such as 0.1 (10 % of the training labels flipped per probe)")
    if not _whole(probes) or probes < 1:
        raise LayerinfError(f"probes={probes!r} must be a whole number ≥ 1",
                            "use e.g. 3 (each probe is one fine-tuning; ≥ 2 give a confidence interval)")
    if noise_folds is not None and (not _whole(noise_folds) or noise_folds < 0 or noise_folds == 1):
        raise LayerinfError(f"noise_folds={noise_folds!r} must be 0 (no noise estimate) or a whole number ≥ 2",
                            "leave it out (the estimate shares the probes' fine-tunings), use 0 to skip it, or ≥ 2 "
                            "for separate cross-fitting runs (one more fine-tuning each)")
    if not _number(kappa_factor) or float(kappa_factor) <= 0:
        raise LayerinfError(f"kappa_factor={kappa_factor!r} must be a positive number", "use e.g. 1.5")
    if criterion not in CRITERIA:
        raise LayerinfError(f"unknown criterion {criterion!r}", f"use one of {', '.join(CRITERIA)}")
    return float(probe_rate), int(probes), None if noise_folds is None else int(noise_folds), float(kappa_factor)


def noise_plan(noise_folds: int | None, probes: int) -> tuple[int, bool]:
    """(folds of the noise estimate, whether the probes are those folds): by default (``None``) the probes are
    cross-fitted over ``probes`` folds and the estimate costs no fine-tuning of its own; with one probe, or an
    explicit ``noise_folds`` ≥ 2, separate fold runs; 0: no estimate (docs/advisor.md, ``workflows.advise_noise``)."""
    if noise_folds is None:
        return (probes, True) if probes >= 2 else (2, False)
    return int(noise_folds), False


def _configs(source: str | None, options: dict[str, Any]):
    bad = sorted(NOT_OPTIONS & set(options))
    if bad:
        raise LayerinfError(f"advise does not take {', '.join(bad)}", "the advisor plants its own flips: set probe_rate")
    if source is None:
        raise LayerinfError("advise needs source= (your training data)", "e.g. layerinf advise OUT --source my_data.csv")
    opts = {**ADVISE_DEFAULTS, **options, "source": source}
    data, model, train, grads, score, runtime = split_options(opts, *SECTIONS, where="advise", exclude=NOT_TAKEN)
    train = small_data_recipe(train, model.name, options, not task_for(data).step_budget)
    return dataclasses.replace(data, noise_rate=0.0), model, train, grads, score, runtime, set(options)


def _needs_we(score: ScoreConfig, num_layers: int) -> bool:
    """Validate the score groups from the layer count alone; True when a group needs word-embedding gradients."""
    from layerinf.workflows.suspects import check_group

    needs = score.groups is None  # the default groups hold WE (and `all`)
    for g in score.groups or []:
        needs |= check_group(RankConfig(method="tracin", group=g), num_layers)
    return needs and any(m != "datainf" for m in score.methods)


def _prepare_in_memory(data: DataConfig, sft_raw=None):
    """The user's data split as the data stage will split them, in memory, without noise (``sft_raw``: instruction
    data already loaded, by ``Task.check_data``)."""
    return task_for(data).prepare(data, noise_rate=0.0, raw=sft_raw)


def check_size(prepared, probe_rate: float, noise_folds: int, probe_folds: int = 0) -> None:
    """Enough training examples per probe (``probe_folds``: the probes' cross-fitting folds, 0: none) for
    ``MIN_PLANTED`` planted flips, and every class for the noise folds."""
    from layerinf.data.noise import noise_count

    n = probe_train_size(len(prepared.train), probe_folds)
    planted = noise_count(n, probe_rate)
    if planted < MIN_PLANTED:
        where = (f"each probe trains on {n} of the {len(prepared.train)} training examples ({probe_folds - 1} of "
                 f"{probe_folds} folds)" if probe_folds else f"the training set has {n} examples")
        need = min_train_size(probe_rate, folds=probe_folds)
        raise LayerinfError(
            f"{where}: a probe at probe_rate {probe_rate:g} plants only {planted} flip(s), "
            f"fewer than the {MIN_PLANTED} needed to compare configurations",
            f"give at least {need} training examples (raise max_train or add data), or raise probe_rate (at most "
            f"{MAX_PROBE_RATE})" + (", or use more probes (each then trains on more of the rows), or pass "
                                    "noise_folds=2 (probes on every example, the estimate from 2 separate fold runs: "
                                    "2 more fine-tunings)" if probe_folds else ""))
    if not noise_folds:
        return
    counts = np.bincount(prepared.train["label"].to_numpy(), minlength=prepared.num_classes)
    if counts.min() < 2 * noise_folds:
        few = f"class '{prepared.label_names[int(counts.argmin())]}' has {int(counts.min())} training example(s)"
        if probe_folds:  # the folds are the probes'
            raise LayerinfError(
                f"{few}: too few for {probe_folds} cross-fitted probes (each fold needs 2 per class)",
                "use fewer probes (at least 2), add examples of that class, or noise_folds=0 (probes on every "
                "example, no noise estimate)")
        raise LayerinfError(
            f"{few}: too few for noise_folds={noise_folds} (each fold's model needs 2 per class)",
            "use noise_folds=2, add examples of that class, or noise_folds=0 to skip the noise estimate")


def run_probe(probe_dir: Path, data: DataConfig, model: ModelConfig, train: TrainConfig, grads: GradsConfig,
              score: ScoreConfig, *, device: str, progress: bool = True, force: bool = False,
              runtime=None) -> RunDir:
    """One probe: data (planted flips) → fine-tune → gradients → every configuration scored (runtime: how fast)."""
    pr = RunDir(probe_dir)
    with pr.guard(), pr.locked():
        DataStage(pr).run(data, force=force, progress=progress)
        FinetuneStage(pr, runtime=runtime).run(model, train, force=force, progress=progress, device=device)
        GradsStage(pr, runtime=runtime).run(grads, force=force, progress=progress, device=device)
        ScoreStage(pr, runtime=runtime).run(score, force=force, progress=progress, device=device)
    return pr


def probe_rows(prepared, scores: ScoreStage, seed: int) -> pd.DataFrame:
    """Planted-flip metrics of every scored configuration of one probe (a row per configuration; ``prepared``: its
    data, ``scores``: its finished score stage)."""
    planted = prepared.train["noisy"].to_numpy(bool)
    aggregated = scores.aggregated()
    rows = []
    for col in (c for c in aggregated.columns if c != "idx"):
        method, group, aggregator = col.split("/", 2)
        rows.append({"seed": int(seed), "method": method, "group": group, "aggregator": aggregator,
                     **planted_metrics(aggregated[col].to_numpy(), planted)})
    return pd.DataFrame(rows)


def estimate_noise(out_dir, *, source: str, noise_folds: int = 2, progress: bool = True, force: bool = False,
                   **options) -> NoiseEstimate:
    """Only the advisor's noise-rate estimate (OUT/data, the fold runs, OUT/noise); options as for ``advise``."""
    from layerinf.model import resolve_device

    check_probe_args(0.1, 1, noise_folds)
    if noise_folds is None or noise_folds < 2:
        raise LayerinfError("estimate_noise needs noise_folds ≥ 2", "use noise_folds=2")
    data, model, train, _, _, runtime, _ = _configs(source, options)
    device = str(resolve_device(runtime.device))
    check_size(_prepare_in_memory(data), MAX_PROBE_RATE, noise_folds)
    out = RunDir(out_dir)
    with out.guard(), out.locked():
        base = DataStage(out).run(data, force=force, progress=progress)
    with out.locked():
        return run_noise(out, base, data, model, train, noise_folds, device=device, progress=progress, force=force,
                         runtime=runtime)


# ------------------------------------------------------------------------------------------ the advice


class AdviseStage(StageBase):
    """OUT/advise: the table over probes, the heat map, the recommendation and the page."""

    name = ADVISE
    artifacts = (table_file(ADVISE_TABLE), table_file(ADVISE_TABLE, "csv"), table_file(PROBE_TABLE),
                 table_file(PROBE_TABLE, "csv"), HEATMAP_FILE, RECOMMENDATION_FILE, PAGE_FILE)

    def __init__(self, run_dir, probe_dirs=(), *, with_noise: bool = False, context: dict | None = None):
        super().__init__(run_dir)
        self.probe_dirs, self.with_noise, self.context = [Path(p) for p in probe_dirs], with_noise, context or {}

    def check_upstream(self) -> dict[str, str]:
        inputs = {}
        if self.with_noise:
            self.run_dir.require(NOISE)
            inputs[NOISE] = self.run_dir.fingerprint(NOISE)
        for p in self.probe_dirs:
            pr = RunDir(p)
            for up in (DATA, SCORES):
                pr.require(up)
                inputs[self.run_dir.layout.input_key(pr.layout, up)] = pr.fingerprint(up)
        return inputs

    def key(self, cfg: AdviceConfig) -> dict:
        return {"advice": cfg.to_dict(), "context": self.context}

    def inputs(self) -> Inputs:
        """The noise estimate (when asked for), and each probe's data and scores (``parts``)."""
        return Inputs(self.run_dir, (NOISE,) if self.with_noise else (), stages={NOISE: NoiseStage(self.run_dir)},
                      parts=[Inputs(p, (DATA, SCORES)) for p in self.probe_dirs])

    def compute(self, st, cfg: AdviceConfig, *, inputs, progress=True, device="cpu") -> dict:
        per_probe = pd.concat([probe_rows(probe[DATA], probe.stage(SCORES), s)
                               for probe, s in zip(inputs.parts, cfg.seeds)], ignore_index=True)
        table = summarize(per_probe, cfg.criterion, cfg.level)
        noise = inputs[NOISE] if self.with_noise else None
        rec = recommend(table, per_probe, cfg, noise, self.context)
        for name, df in ((ADVISE_TABLE, table), (PROBE_TABLE, per_probe)):
            df.to_parquet(st.out(table_file(name)), index=False)
            df.to_csv(st.out(table_file(name, "csv")), index=False)
        png = render_heatmap(table, cfg.criterion, best=rec["best"]["key"], default=cfg.default_key)
        atomic_write_bytes(st.out(HEATMAP_FILE), png)
        atomic_write_json(st.out(RECOMMENDATION_FILE), rec)
        atomic_write_bytes(st.out(PAGE_FILE), render_page(rec, table, per_probe, png).encode("utf-8"))
        return {"best": rec["best"]["key"], "vote_kappa": rec["vote_kappa"], "configurations": int(len(table))}

    def load(self) -> dict:
        return json.loads((self.path / RECOMMENDATION_FILE).read_text(encoding="utf-8"))


@dataclass
class AdviseResult:
    """What ``advise`` produced (files under ``folder``; ``recommendation`` is recommendation.json)."""

    folder: Path
    table: pd.DataFrame
    per_probe: pd.DataFrame
    recommendation: dict[str, Any]
    noise: NoiseEstimate | None = None
    probe_dirs: list[Path] = field(default_factory=list)

    best = property(lambda self: self.recommendation["best"])
    rank_config = property(lambda self: dict(self.recommendation["rank_config"]))
    csv = property(lambda self: self.folder / table_file(ADVISE_TABLE, "csv"))
    html = property(lambda self: self.folder / PAGE_FILE)
    heatmap = property(lambda self: self.folder / HEATMAP_FILE)


def advise(out_dir, *, source: str | None = None, probe_rate: float = 0.1, probes: int = 3,
           noise_folds: int | None = None, kappa_factor: float = KAPPA_FACTOR, criterion: str = "ndr_30",
           progress: bool = True, force: bool = False, echo: Callable[[str], None] | None = print,
           **options) -> AdviseResult:
    """Which (method, layer group, aggregator) finds bad labels best on YOUR data, and Vote's κ for it.

    For each of ``probes`` seeds, ``probe_rate`` ∈ (0, 0.5] of a probe's training labels are flipped (planted;
    only training examples, uniformly, whatever their label), a LoRA model is fine-tuned, per-sample gradients are
    collected and every configuration of ``ScoreConfig`` is scored; NDR@10/30, AUC-NDR and ROC-AUC of the
    planted flips (real noise counted as clean) are averaged over probes with a Student-t 95 % interval. The best
    by ``criterion`` (default NDR@30; ties: AUC-NDR) is recommended with its paired margins over the runner-up
    and over the paper's default (DataInf, second attention group, Vote). The share of wrong labels is estimated
    by confident learning on cross-fitted probabilities, and Vote's κ for the data is
    ``clip(kappa_factor × rate, 0.05, 0.5)``.

    ``noise_folds``: None (default) shares the probes' fits with the estimate: with ``probes`` ≥ 2 the training
    set is cut into ``probes`` stratified folds, probe k trains on every fold but k and predicts fold k; with one
    probe, 2 separate fold runs. An explicit K ≥ 2: K separate fold runs (K more fine-tunings; the probes then
    train on every example). 0: no estimate (κ stays ``vote_kappa``). See ``workflows.advise_noise``.

    Cost: the data are loaded once (OUT/data) and reused by every probe; each probe is one fine-tuning and one
    gradient pass; scoring is cheap next to those; by default the noise estimate adds one forward pass over the
    training set. Finished stages are reused on a rerun.

    Instruction (SFT) data (``data.task_type``): each probe plants ``data.noise_kind`` response noise (class words
    replaced, or responses swapped) in its own seeded split of your file; there is no noise-rate estimate (κ stays
    ``vote_kappa``). See ``workflows.probe_data``.

    Options: every field of DataConfig (not noise_rate), ModelConfig (``model=``), TrainConfig (``epochs``
    default 3), GradsConfig, ScoreConfig and RuntimeConfig, by their usual names. Every argument, and each probe's
    training set against ``probe_rate`` (≥ 10 planted flips), is checked before anything is written.
    Outputs in ``OUT/advise/``: table.csv|parquet, probes.csv|parquet, heatmap.png, recommendation.json,
    index.html (docs/advisor.md).
    """
    from layerinf.data.noise import noise_count
    from layerinf.model import num_layers_of, resolve_device
    from layerinf.stages.rank import default_group

    say = echo or (lambda _m: None)
    probe_rate, probes, noise_folds, kappa_factor = check_probe_args(probe_rate, probes, noise_folds, kappa_factor,
                                                                     criterion)
    data, model, train, grads, score, runtime, given = _configs(source, options)
    from layerinf.stages.grads import check_tracin_checkpoints, check_tracin_request

    task = task_for(data)
    task.check_model(model)
    sft_raw = task.check_data(data, model)  # instruction data: the whole file loaded and tokenised, before any write
    if not task.class_probabilities:  # planted response noise (data.noise_kind): no noise-rate estimate
        noise_folds = 0  # (--noise-folds is ignored: it cross-fits class probabilities)
    noise_folds, shared = noise_plan(noise_folds, probes)
    probe_folds = noise_folds if shared else 0  # the probes' own cross-fitting folds (0: each trains on every row)
    check_tracin_checkpoints(grads)
    check_tracin_request(score.methods, grads)
    device = str(resolve_device(runtime.device))
    num_layers = num_layers_of(model)
    needs_we = _needs_we(score, num_layers)
    if "include_we" not in given:  # word-embedding gradients (the costliest) only when a group uses them
        grads = dataclasses.replace(grads, include_we=needs_we)
    out = RunDir(out_dir)
    if out.root.exists() and not out.root.is_dir():
        raise LayerinfError(f"{out.root} is a file, not a folder", "choose another output path")
    check_size(_prepare_in_memory(data, sft_raw), probe_rate, noise_folds, probe_folds)  # reads only: nothing written
    seeds = probe_seeds(data.seed, probes)

    with out.guard(), out.locked():
        base = DataStage(out).run(data, force=force, progress=progress)
    n = len(base.train)
    n_probe = probe_train_size(n, probe_folds)
    where = f" in {probe_folds - 1} of {probe_folds} folds ({n_probe} examples)" if probe_folds else ""
    say(f"[data] {n} training examples, {len(base.infl) + len(base.test)} dev examples; {probes} probe(s) × "
        f"{noise_count(n_probe, probe_rate)} {task.planted} ({probe_rate:.0%}){where}")
    if not task.class_probabilities:
        say("[noise] no noise-rate estimate for instruction data (it needs class probabilities): Vote's κ stays "
            f"{score.vote_kappa:g} (--vote-kappa)")
    with out.locked():
        noise = None
        if noise_folds and not shared:
            noise = run_noise(out, base, data, model, train, noise_folds, device=device, progress=progress,
                              force=force, runtime=runtime)
        src = out.root / PROBES_DIR / SOURCE_DIR
        train_files, dev_file = [None] * probes, None
        fold_of = fold_ids(base.train["label"].to_numpy(np.int64), probe_folds, data.seed) if shared else None
        if task.class_probabilities:  # labels to flip: probes read OUT/data's splits back (else: see probe_data)
            dev_file = write_source(base, None, src / "dev.jsonl", "dev")
            train_files = ([write_source(base, np.flatnonzero(fold_of != k), src / f"probe-fold{k}.jsonl")
                            for k in range(probes)] if shared else [write_source(base, None, src / "all.jsonl")] * probes)
        probe_dirs = []
        for i, (s, train_file) in enumerate(zip(seeds, train_files), 1):
            pdir = out.root / PROBES_DIR / str(s)
            run_probe(pdir, probe_config(base, data, train_file, dev_file, noise_rate=probe_rate, seed=s), model, train,
                      grads, score, device=device, progress=progress, force=force, runtime=runtime)
            probe_dirs.append(pdir)
            say(f"[probe {i}/{probes}] seed {s}: fine-tuned, gradients collected, every configuration scored")
        if shared:  # fold k's rows predicted by probe k (trained on the other folds)
            noise = NoiseStage(out, probe_dirs, fold_of).run(N_BOOT, force=force, progress=progress, device=device)
        if noise is not None:
            how = "the probes' models" if shared else "separate fold runs"
            say(f"[noise] estimated share of wrong labels in your data: {noise} (confident learning, "
                f"{noise_folds}-fold cross-fitted, {how})")
        cfg = AdviceConfig(probe_rate=probe_rate, seeds=tuple(seeds), criterion=criterion, kappa_factor=kappa_factor,
                           vote_kappa=score.vote_kappa, default_key=f"datainf/{default_group(num_layers)}/vote")
        context = {"model": model.name, "source": str(data.source), "n_train": n, "num_layers": int(num_layers),
                   **({"probe_folds": probe_folds, "n_probe_train": n_probe} if shared else {}),
                   **task.advice_context(lambda: load_data(probe_dirs[0]))}
        stage = AdviseStage(out, probe_dirs, with_noise=noise is not None, context=context)
        rec = stage.run(cfg, force=force, progress=progress)
    best = rec["best"][criterion]
    ci = f" [{best['low']:.3f}, {best['high']:.3f}]" if best["low"] is not None else ""
    say(f"[advise] best: {rec['best']['key']} (planted {criterion} {best['mean']:.3f}{ci}); Vote κ for your data "
        f"{rec['vote_kappa']:.2f} → {stage.path / PAGE_FILE}")
    return AdviseResult(folder=stage.path, table=pd.read_parquet(stage.path / table_file(ADVISE_TABLE)),
                        per_probe=pd.read_parquet(stage.path / table_file(PROBE_TABLE)), recommendation=rec,
                        noise=noise, probe_dirs=probe_dirs)


def recommended_rank_config(advise_dir: str | os.PathLike) -> dict[str, Any]:
    """``dict(method=, group=, aggregator=, vote_kappa=)`` of the advisor's pick, for ``li.suspects(..., **it)``.

    ``advise_dir``: the advisor's output folder OUT (OUT/advise's checksums are verified) or OUT/advise itself.
    """
    path = Path(advise_dir)
    hint = f"run `layerinf advise {path} --source YOUR_DATA` first"
    if (path / ADVISE).is_dir():
        path = RunDir(path).require(ADVISE, hint)
    rec_file = path / RECOMMENDATION_FILE
    if not rec_file.is_file():
        raise LayerinfError(f"no advisor recommendation in {Path(advise_dir)} ({RECOMMENDATION_FILE} is absent)", hint)
    try:
        cfg = json.loads(rec_file.read_text(encoding="utf-8"))["rank_config"]
        out = {"method": str(cfg["method"]), "group": str(cfg["group"]), "aggregator": str(cfg["aggregator"]),
               "vote_kappa": float(cfg["vote_kappa"])}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise LayerinfError(f"{rec_file} is not a valid advisor recommendation",
                            f"rerun `layerinf advise {Path(advise_dir)} --source YOUR_DATA --force`") from None
    RankConfig(**{k: v for k, v in out.items() if k != "vote_kappa"}), ScoreConfig(vote_kappa=out["vote_kappa"])
    return out


__all__ = ["ADVISE_DEFAULTS", "AdviseResult", "AdviseStage", "NoiseStage", "advise", "advise_options",
           "check_probe_args", "estimate_noise", "min_train_size", "recommended_rank_config"]
