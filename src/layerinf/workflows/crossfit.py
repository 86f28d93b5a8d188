"""Cross-fitting for ``layerinf suspects``: every row of your file is ranked, none is spent as validation data.

Used when ``folds`` ≥ 2 (the default is 3) and neither ``dev_source`` nor ``run`` is given, for a source whose
validation part would otherwise be carved out of it (a CSV/TSV/JSONL/Parquet file, an ``hf:`` dataset without a
validation split). A source that brings its own dev part (``demo``, a GLUE folder, an ``hf:`` dataset with a
validation split) is ranked like ``dev_source``: one fit on its whole training part.

**Rows.** The source is loaded whole (rows with an empty text are dropped, with the loader's warning);
``max_train`` caps the rows taken part (a stratified, seeded subset; the others are not ranked, and the
console and page say how many). Every row keeps ``source_idx``, its row number in your file.

**Folds.** The rows are cut into K stratified folds (``StratifiedKFold``, shuffled with the data seed: the same
data and seed give the same folds). Fit k is an ordinary run directory ``OUT/folds/fold-<k>/``:

- ``data``: train = the rows of the other K − 1 folds (in file order), dev = the rows of fold k, capped at
  ``max_dev`` rows (stratified, seeded); the dev rows are both the influence set (validation gradients) and the
  test set (best checkpoint, health check), as with ``infl_equals_test``;
- ``finetune`` (or ``adapter``), ``grads`` and ``suspects``: the same stages, configuration and code as a
  single fit (``layerinf.workflows.suspects.fit_and_rank``).

**Combination rule.** Each row is a training row of the K − 1 fits whose validation fold is not its own. In fit k
its score becomes a percentile rank p = (r − 1) / (n_k − 1), r its rank among the n_k training rows of that fit
by ascending score (ties share their average rank): 0 = the most suspicious row of the fit, 1 = the most
helpful. A row's combined score is the mean of its K − 1 percentiles, and ``OUT/suspects`` ranks the rows by it
(lowest first; ties by row order); every aggregator's column of ``scores.parquet`` is combined the same way.
Percentiles, not raw scores, because raw influence scores of different models have different scales. The
predicted label and p(given label) are from the class probabilities averaged over the same K − 1 models.

**Caching.** Each fold is cached by its stages like any run: a rerun reuses finished folds (and a fold that
failed resumes from its finished stages); changing the file, the seed, ``folds`` or ``max_train`` redoes the
folds' data and what follows; the combined ``OUT/suspects`` stage records every fold's stage fingerprints.

**Instruction data (SFT).** The same rule for prompt/response (or chat) files: the rows (``layerinf.data.sft``
raw columns) are cut into K folds by ``KFold`` (shuffled with the data seed; stratified by response when the
responses are class words and every class has at least K rows), every fold needs at least 2 rows, and
``max_train`` keeps a seeded random subset. Fold k's ``data`` is ``data.sft_prepared.prepare_sft_fold``
(train = the other folds' rows, influence = test = fold k's rows, ≤ ``max_dev``). A row's ``response_loss`` is
its response loss averaged over the K − 1 models that trained on it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerinf.config import DataConfig, RankConfig
from layerinf.errors import LayerinfError
from layerinf.stages.base import Inputs, StageBase
from layerinf.stages.data import DataStage
from layerinf.evaluation.rankings import FitScores, combine
from layerinf.evaluation.rankings import percentile_ranks as percentiles
from layerinf.stages.detect import DEFAULT_TOP, detection_choice
from layerinf.stages.embed import EmbedStage
from layerinf.stages.rank import (DEFAULT_KAPPA, RankStage, SuspectsResult, _softmax, build_sft_table, build_table, health_of,
                                  load_result, write_result)
from layerinf.store.layout import DATA, EMBED, FINETUNE, GRADS, PRED_PROBS_FILE, SUMMARY_FILE, SUSPECTS
from layerinf.store.rundir import RunDir

FOLDS_DIR = "folds"  # OUT/folds/fold-<k>/ (a candidate for store/layout.py)


def fold_path(out_root: str | os.PathLike, k: int) -> Path:
    return Path(out_root) / FOLDS_DIR / f"fold-{k}"


@dataclass
class FoldPlan:
    """The rows taking part (raw columns, file order), their fold ids, and how many rows the source has."""

    rows: pd.DataFrame  # source_idx, text, text_pair, label (SFT: source_idx, messages, prompt, response)
    fold_of: np.ndarray
    folds: int
    total: int  # rows loaded from the source (after dropping empty texts)
    label_names: list[str]
    task: str | None = None
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "classification"  # the task's name (``stages.task``)
    probe_rate: float = 0.0
    planted: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # fold → (positions, labels)

    @property
    def job(self):
        """The task (``stages.task.Task``) whose rows these are."""
        from layerinf.stages.task import task_named

        return task_named(self.kind)

    @property
    def ranked(self) -> int:
        return len(self.rows)

    def describe(self) -> dict[str, Any]:
        capped = f"; {self.total - self.ranked:,} rows beyond --max-train were NOT ranked" if self.ranked < self.total else ""
        text = (f"{self.ranked:,} of {self.total:,} rows ranked, cross-fitted over {self.folds} folds (each row scored "
                f"by the {self.folds - 1} models that trained on it){capped}")
        return {"ranked": self.ranked, "rows": self.total, "how": "crossfit", "folds": self.folds, "text": text}


def plant_probe(plan: FoldPlan, rate: float, seed: int) -> FoldPlan:
    """Choose the probe's planted flips (``evaluation.rankings``): in fold k's training part, ``round(rate × its
    rows)`` labels flipped to another class, each row planted in at most one fit (so the other fits that train on
    it rank it under its own label). Classification only; ``rate`` 0 plants nothing."""
    from layerinf.evaluation.rankings import plant_flips

    if plan.folds < 3:  # with 2 folds a row trains only one fit: planted there, it would have no own-label score
        rate = 0.0
    plan.probe_rate = float(rate)
    if rate <= 0 or not plan.job.class_probabilities:
        return plan
    labels = plan.rows["label"].to_numpy(np.int64)
    taken = np.zeros(len(labels), dtype=bool)
    for k in range(plan.folds):
        train = np.flatnonzero(plan.fold_of != k)
        count = max(1, int(round(rate * train.size)))
        at, new = plant_flips(labels, train[~taken[train]], count, len(plan.label_names), seed * 1009 + k)
        taken[at] = True
        plan.planted[k] = (at, new)
    return plan


def plan_folds(data: DataConfig, folds: int, sft_raw=None) -> FoldPlan | None:
    """Load the source and cut its rows into folds (``Task.plan_folds``: ``stages.task_folds``); None when the source
    brings its own dev part (then one fit on its training part ranks every training row). Raises
    ``LayerinfError`` before anything is written. ``sft_raw``: instruction data already loaded."""
    from layerinf.stages.task import task_for

    task = task_for(data)
    fields = task.plan_folds(data, folds, sft_raw)
    return None if fields is None else FoldPlan(**fields, kind=task.name)


class FoldDataStage(DataStage):
    """Fold k's ``data``: train = the other folds' rows, influence = test = fold k's rows (≤ ``max_dev``)."""

    def __init__(self, run_dir, plan: FoldPlan, fold: int):
        super().__init__(run_dir)
        self.plan, self.fold = plan, int(fold)

    def _crossfit(self) -> dict:
        out = {"folds": self.plan.folds, "fold": self.fold, "rows": self.plan.ranked, "of": self.plan.total}
        if self.fold in self.plan.planted:  # the probe (left out when off, so that older folds still match)
            out["probe_rate"] = self.plan.probe_rate
        return out

    def key(self, cfg: DataConfig) -> dict:
        return {**super().key(cfg), "crossfit": self._crossfit()}

    def compute(self, st, cfg: DataConfig, *, inputs=None, progress: bool = True, device: str = "cpu") -> dict:
        held = self.plan.fold_of == self.fold
        info = {**self.plan.info, "dev_origin": f"cross-fitting: fold {self.fold} of {self.plan.folds}"}
        train, dev = self.plan.rows[~held].reset_index(drop=True), self.plan.rows[held].reset_index(drop=True)
        task = self.plan.job
        prepared = task.prepare_fold(self.plan, train, dev, info, cfg)
        if self.fold in self.plan.planted:  # the probe's flips (classification: ``plant_probe``)
            at, new = self.plan.planted[self.fold]
            planted_idx = self.plan.rows["source_idx"].to_numpy()[at]
            where = pd.Series(np.arange(len(prepared.train)), index=prepared.train["source_idx"].to_numpy())
            labels = prepared.train["label"].to_numpy(np.int64).copy()
            labels[where.loc[planted_idx].to_numpy()] = new
            prepared.train["label"] = labels
            prepared.meta["planted"] = {"source_idx": [int(v) for v in planted_idx], "label": [int(v) for v in new]}
        prepared.meta["crossfit"] = self._crossfit()
        task.save(prepared, st.tmp)
        summary = {k: v for k, v in task.data_summary(prepared).items() if k != "noise_kind"}  # as folds always were
        return {**summary, "noisy": 0, "fold": self.fold, "folds": self.plan.folds}


def _planted(prepared) -> list[int]:
    """The source rows whose label the probe flipped in this fold's training part (none when it was off)."""
    return list((prepared.meta.get("planted") or {}).get("source_idx") or [])


def oos_health(oos_probs: np.ndarray, labels: np.ndarray) -> dict:
    """``health_check`` of the folds' out-of-sample predictions of every ranked row together: did the fold models
    learn? (One fold's held-out third of a small file is too few rows to tell.)"""
    from layerinf.stages.finetune import health_check

    acc = float((np.asarray(oos_probs).argmax(1) == labels).mean())
    return health_check(acc, labels, acc, labels)


class CrossfitStage(StageBase, provides=False):
    """``OUT/suspects``: the folds' rankings combined (mean within-fit percentile rank per row)."""

    name = SUSPECTS
    upstream = ()
    artifacts = RankStage.artifacts

    def __init__(self, run_dir, fold_dirs, plan: FoldPlan):
        super().__init__(run_dir)
        self.fold_dirs = [RunDir(d) for d in fold_dirs]
        self.plan = plan

    def check_upstream(self) -> dict[str, str]:
        inputs = {}
        for run in self.fold_dirs:
            for up in (DATA, FINETUNE, GRADS, SUSPECTS):
                run.require(up)
                inputs[self.run_dir.layout.input_key(run.layout, up)] = run.fingerprint(up)
        if self.plan.job.class_probabilities:  # the embedding ranking's input
            self.run_dir.require(EMBED)
            inputs[EMBED] = self.run_dir.fingerprint(EMBED)
        return inputs

    def inputs(self) -> Inputs:
        """The folds' data, fine-tuning, gradients and rankings (``parts``), and this folder's embeddings."""
        embed = EmbedStage(self.run_dir, self.plan.rows, len(self.plan.label_names))
        return Inputs(self.run_dir, (EMBED,) if self.plan.job.class_probabilities else (), stages={EMBED: embed},
                      parts=[Inputs(run, (DATA, FINETUNE, GRADS, SUSPECTS)) for run in self.fold_dirs])

    def _first_fit(self) -> dict:
        """Fit 0's suspects summary (its group, label names and checkpoint are every fit's)."""
        return json.loads((self.fold_dirs[0].stage_path(SUSPECTS) / SUMMARY_FILE).read_text(encoding="utf-8"))

    def key(self, cfg: RankConfig, model_name: str = "", vote_kappa: float = DEFAULT_KAPPA) -> dict:
        group = self._first_fit()["group"]
        rank = {k: v for k, v in asdict(cfg).items() if k != "folds"}
        return {"rank": {**rank, "vote_kappa": vote_kappa, "group": group}, "model": model_name,
                "crossfit": {"folds": self.plan.folds, "rows": self.plan.ranked, "of": self.plan.total}}

    def seed(self, cfg: RankConfig, model_name: str = "", vote_kappa: float = DEFAULT_KAPPA) -> int:
        return int(self.fold_dirs[0].stage_info(DATA)["seed"] or 0)

    def compute(self, st, cfg: RankConfig, model_name: str = "", vote_kappa: float = DEFAULT_KAPPA, *,
                inputs, progress=True, device="cpu") -> dict:
        fits_in = inputs.parts
        trains = [fit[DATA].train for fit in fits_in]
        rows = pd.concat(trains, ignore_index=True).drop_duplicates("source_idx").sort_values("source_idx")
        rows = rows.reset_index(drop=True).assign(idx=lambda d: np.arange(len(d), dtype=np.int64))
        by_class = self.plan.job.class_probabilities  # else instruction rows: response losses, no class probabilities
        first = fits_in[0].stage(SUSPECTS).written_summary()
        n, classes = len(rows), len(first["label_names"])
        position = pd.Series(np.arange(n), index=rows["source_idx"].to_numpy())
        if by_class:  # the rows' own labels (a fold's training table holds the probe's planted ones)
            own = self.plan.rows.set_index("source_idx")["label"]
            rows["label"] = own.loc[rows["source_idx"].to_numpy()].to_numpy(np.int64)
        columns: list[str] | None = None
        sums: dict[str, np.ndarray] = {}
        probs, count, kept = np.zeros((n, classes)), np.zeros(n, dtype=np.int64), np.zeros(n)
        losses = np.zeros(n)  # SFT: the response loss summed over the fits that trained on the row
        key = f"{cfg.method}/{first['group']}/{cfg.aggregator}"
        fits = []
        for fit, train in zip(fits_in, trains):
            at = position.loc[train["source_idx"].to_numpy()].to_numpy()
            scores = fit.stage(SUSPECTS).scores().sort_values("idx")
            if len(scores) != len(train):
                raise LayerinfError(f"the ranking in {fit.source.root} does not match its training data",
                                    "rerun with --force")
            planted = train["source_idx"].isin(_planted(fit[DATA])).to_numpy()
            columns = columns or [c for c in scores.columns if c not in ("idx", "source_idx")]
            for c in columns:  # a row's planted fit is left out of its influence score
                sums.setdefault(c, np.zeros(n))[at[~planted]] += percentiles(scores[c].to_numpy())[~planted]
            kept[at[~planted]] += 1
            store = fit[GRADS][0]
            if by_class:
                probs[at] += _softmax(np.asarray(store.logits, dtype=np.float64))
                fits.append(FitScores(rows=at, scores=scores[key].to_numpy(np.float64),
                                      labels=train["label"].to_numpy(np.int64), planted=planted))
            else:
                losses[at] += np.asarray(store.loss, dtype=np.float64)
            count[at] += 1
        if (count != self.plan.folds - 1).any() or (kept == 0).any():
            raise LayerinfError(f"{int((count != self.plan.folds - 1).sum())} row(s) are not in exactly "
                                f"{self.plan.folds - 1} fits", "rerun with --force")
        combined = {c: v / kept for c, v in sums.items()}
        health = health_of(self.fold_dirs)
        common = dict(method=cfg.method, group=first["group"], aggregator=cfg.aggregator, kappa=vote_kappa,
                      n=n, label_names=list(first["label_names"]), model=model_name,
                      checkpoint=first.get("checkpoint", ""), coverage=self.plan.describe(), health=health)
        scores_table = pd.DataFrame({"idx": rows["idx"], "source_idx": rows["source_idx"], **combined})
        rule = "mean within-fit percentile rank (0 = lowest score of a fit, 1 = highest)"
        folds = [str(r.root) for r in self.fold_dirs]
        if not by_class:
            top = cfg.top if cfg.top is not None else DEFAULT_TOP
            oos_loss = self._oos_losses(position, fits_in)
            side = {"response_loss_oos": oos_loss, "score:influence": combined[key],
                    "score:loss_oos": -oos_loss, "score:combined": combine([combined[key], -oos_loss])}
            table = build_sft_table(rows, combined[key], losses / count, top, False, extra=side)
            result = SuspectsResult(folder=st.tmp, run_dir=self.run_dir.root, table=table, top=top,
                                    n_suspects=int(table["suspect"].sum()), task=self.plan.kind, **common)
            summary = write_result(st.tmp, result, scores_table, folds=folds, rule=rule)
        else:
            oos = self._oos_probs(position, classes, fits_in)
            emb_probs = inputs[EMBED][1]
            labels = rows["label"].to_numpy(np.int64)
            pooled = oos_health(oos, labels)
            detect = detection_choice(labels, fits, oos, emb_probs, cfg, learned=pooled["learned"],
                                      seed=self.seed(cfg))
            detect["oos_health"] = pooled["infl"]
            rankings = detect.pop("rankings")
            for name, values in rankings.items():
                scores_table[f"score:{name}"] = values  # as in suspects.csv
            table = build_table(rows, first["label_names"], rankings[detect["ranking"]], None, None, False,
                                probs=probs / count[:, None], flagged=detect["flagged"], oos_probs=oos,
                                rankings=rankings)
            result = SuspectsResult(folder=st.tmp, run_dir=self.run_dir.root, table=table,
                                    top=detect["flagged"] / n, n_suspects=detect["flagged"], detection=detect,
                                    **common)
            np.save(st.tmp / PRED_PROBS_FILE, oos)
            summary = write_result(st.tmp, result, scores_table, folds=folds, rule=rule, detection=detect)
        return {k: summary[k] for k in ("config", "n", "n_suspects", "mask_known")} | {"folds": self.plan.folds}

    def _oos_losses(self, position: pd.Series, fits_in) -> np.ndarray:
        """Instruction data: each row's response loss under the fold model that held it out (NaN for a row beyond
        its fold's ``max_dev`` cap, or a fold made by an older layerinf)."""
        out = np.full(len(position), np.nan)
        for fit in fits_in:
            test, summary = fit[DATA].test, fit.stage(FINETUNE).test_logits()
            if summary is not None and len(summary) == len(test):
                out[position.loc[test["source_idx"].to_numpy()].to_numpy()] = summary[:, 0]
        return out

    def _oos_probs(self, position: pd.Series, classes: int, fits_in) -> np.ndarray:
        """Each row's class probabilities from the fold model that held it out (its best checkpoint's logits of
        the fold's test split, which holds every held-out row)."""
        out = np.full((len(position), classes), np.nan)
        for fit in fits_in:
            test, logits = fit[DATA].test, fit.stage(FINETUNE).test_logits()
            if logits is None or len(logits) != len(test):
                raise LayerinfError(f"{fit.source.root} has no out-of-sample logits (made by an older layerinf)",
                                    "rerun with --force")
            out[position.loc[test["source_idx"].to_numpy()].to_numpy()] = _softmax(logits.astype(np.float64))
        if np.isnan(out).any():
            raise LayerinfError("some rows have no out-of-sample probabilities", "rerun with --force")
        return out

    def load(self) -> SuspectsResult:
        return load_result(self.path)
