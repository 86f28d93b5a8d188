"""The ``suspects`` stage: rank every training example by one influence configuration (no noise mask needed).

By default DataInf on the second of the four attention groups (the paper's recommendation, e.g. ``02-03``
for MiniLM) aggregated with Vote. Higher score = more helpful; the suspects are the LOWEST ``top`` fraction.
Reads the ``data`` and ``grads`` stages (of this run, or of another run given as ``source=``) and writes
``suspects.csv|jsonl`` (every training example, rank 1 = most suspicious), ``scores.parquet`` (the chosen
method and group under every aggregator), ``summary.json`` and ``index.html``.

The summary, the result and the page also say which rows were ranked and how (``coverage``: one fit, and how many
rows of the source were left out as its validation set) and carry the fine-tuning stage's health warning when the
model did not clearly learn the task (``health``). Cross-fitting (every row ranked) combines several of these
stages: ``layerinf.workflows.crossfit``.

Instruction data (SFT, ``task = "sft"``): the table has ``SFT_COLUMNS`` instead of ``COLUMNS`` (``prompt``,
``response``, and ``response_loss``: the fine-tuned model's mean response-token loss on that row, from the
gradient store), the validation filter of Rank/Vote keeps the validation rows that greedy decoding reproduces
(``stages.task``: ``InstructionTask.correct``), and the summary records ``task``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerinf.config import PAPER_AGGREGATORS, RankConfig, ScoreConfig
from layerinf.errors import LayerinfError
from layerinf.evaluation import metrics
from layerinf.stages.base import StageBase
from layerinf.stages.detect import DEFAULT_TOP
from layerinf.stages.rank_page import render_html
from layerinf.stages.suspects_table import _softmax, build_sft_table, build_table  # noqa: F401 (re-exported)
from layerinf.store.layout import (DATA, DATA_META_FILE, GRADS, PAGE_FILE, SUMMARY_FILE, SUSPECT_SCORES_FILE,
                                   SUSPECTS, SUSPECTS_TABLE, table_file)

COLUMNS = ["rank", "index", "source_idx", "text", "text_pair", "given_label", "predicted_label", "probability",
           "score", "suspect"]
SFT_COLUMNS = ["rank", "index", "source_idx", "prompt", "response", "response_loss", "score", "suspect"]
DEFAULT_KAPPA = ScoreConfig().vote_kappa  # Vote's κ has one home, the score section (``score.vote_kappa``)


@dataclass
class SuspectsResult:
    """What ``find_suspects`` produced. ``table`` holds every training example, rank 1 = most suspicious."""

    folder: Path  # out_dir/suspects
    run_dir: Path  # where data/ (and finetune/, grads/) live
    table: pd.DataFrame
    method: str
    group: str
    aggregator: str
    kappa: float
    top: float
    n: int
    n_suspects: int
    label_names: list[str]
    mask_known: bool = False
    ndr_30: float | None = None
    auc_ndr: float | None = None
    model: str = ""
    checkpoint: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)  # ranked, rows, how, folds, text (see coverage_of)
    health: list[str] = field(default_factory=list)  # warnings of fits whose model did not clearly learn
    task: str = "classification"  # the task's name (``stages.task``; instruction data: prompt / response rows)
    detection: dict[str, Any] = field(default_factory=dict)  # cross-fitting: rankings' probe, noise estimate, choice

    @property
    def ranking(self) -> str:
        """The ranking that orders the table (``influence`` for one fit; cross-fitting: see ``detection``)."""
        return str(self.detection.get("ranking") or "influence")

    @property
    def kind(self):
        """The task (``stages.task.Task``): its table, summary and page parts."""
        from layerinf.stages.task import task_named

        return task_named(self.task)

    @property
    def coverage_text(self) -> str:
        """E.g. "500 of 500 rows ranked, cross-fitted over 3 folds"."""
        return str(self.coverage.get("text") or f"{self.n} rows ranked")

    @property
    def config_key(self) -> str:
        return f"{self.method}/{self.group}/{self.aggregator}"

    @property
    def suspects(self) -> pd.DataFrame:
        """The flagged examples only (the bottom ``top`` fraction), most suspicious first."""
        return self.table[self.table["suspect"]].reset_index(drop=True)

    @property
    def csv(self) -> Path:
        return self.folder / table_file(SUSPECTS_TABLE, "csv")

    @property
    def jsonl(self) -> Path:
        return self.folder / table_file(SUSPECTS_TABLE, "jsonl")

    @property
    def html(self) -> Path:
        return self.folder / PAGE_FILE


def default_group(num_layers: int) -> str:
    """The paper's recommendation: the second of the four attention groups (a middle one), e.g. ``02-03``."""
    from layerinf.influence.groups import attention_groups

    groups = attention_groups(num_layers)
    return groups[1][0] if len(groups) > 1 else groups[0][0]


CSV_FLOAT = "%.6g"  # the CSV's one number format (6 significant digits); the JSONL keeps full precision


def _write_outputs(folder: Path, result: SuspectsResult) -> None:
    t = result.table
    t.to_csv(folder / table_file(SUSPECTS_TABLE, "csv"), index=False, float_format=CSV_FLOAT)
    with open(folder / table_file(SUSPECTS_TABLE, "jsonl"), "w", encoding="utf-8") as fh:
        for rec in t.to_dict(orient="records"):
            rec = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (folder / PAGE_FILE).write_text(render_html(result), encoding="utf-8")


def write_result(folder: Path, result: SuspectsResult, scores: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    """Write a ranking into ``folder``: ``scores.parquet`` (``scores``), ``summary.json`` (returned), the table
    (CSV, JSONL) and the page."""
    summary: dict[str, Any] = {
        "config": result.config_key, "method": result.method, "group": result.group, "aggregator": result.aggregator,
        "kappa": result.kappa, "top": result.top, "n": result.n, "n_suspects": result.n_suspects,
        "label_names": result.label_names, "model": result.model, "checkpoint": result.checkpoint,
        "run_dir": str(result.run_dir), "mask_known": result.mask_known,
        "coverage": result.coverage, "health": result.health, **extra,
    }
    summary.update(result.kind.suspects_summary(result))
    scores.to_parquet(folder / SUSPECT_SCORES_FILE, index=False)
    (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _write_outputs(folder, result)
    return summary


def _read_table(folder: Path) -> pd.DataFrame:
    with open(folder / table_file(SUSPECTS_TABLE, "jsonl"), encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    t = pd.DataFrame.from_records(recs)
    for c in ("rank", "index", "source_idx"):
        t[c] = t[c].astype(np.int64)
    for c in t.columns:
        if c in ("probability", "response_loss", "response_loss_oos", "score", "p_given_oos") or c.startswith(
                ("p_oos:", "score:")):
            t[c] = t[c].astype(np.float64)
    t["suspect"] = t["suspect"].astype(bool)
    if "noisy" in t.columns:
        t["noisy"] = t["noisy"].astype(bool)
    if "text_pair" in t.columns:
        t["text_pair"] = t["text_pair"].astype(object).where(t["text_pair"].notna(), None)
    for c in ("prompt", "response"):
        if c in t.columns:
            t[c] = t[c].astype(str).astype(object)
    return t


def summary_table(result: SuspectsResult, k: int = 10, width: int = 70) -> pd.DataFrame:
    """The ``k`` most suspicious examples, texts shortened to ``width`` characters (for a one-screen print)."""

    def short(text, pair, width: int = width) -> str:
        s = str(text) if pair is None else f"{text} / {pair}"
        s = " ".join(s.split())
        return s if len(s) <= width else s[: width - 1] + "…"

    head = result.table.head(int(k))
    out = result.kind.summary_rows(head, short, width)
    if result.mask_known and "noisy" in head.columns:
        out["noisy"] = head["noisy"].to_numpy()
    return out


def group_members(group: str | None, specs, num_layers: int, method: str) -> tuple[str, list[str]]:
    """The group's name and module names (``None``: ``default_group``); errors name the valid groups."""
    from layerinf.influence.registry import resolve_groups
    from layerinf.stages.score import method_applies

    name = default_group(num_layers) if group is None else str(group)
    key, members = next(iter(resolve_groups([name], specs, num_layers).items()))
    if not any(s.name in members and method_applies(method, s, ScoreConfig()) for s in specs):
        raise LayerinfError(
            f"method {method} does not apply to any module of group '{key}'",
            "DataInf skips WE and large heads: use tracin or cosine for that group, or pick an attention group",
        )
    return key, members


def coverage_of(meta: dict, n: int, run_dir: Path | None = None) -> dict[str, Any]:
    """Which rows one fit ranked: its whole training set, out of the source's rows (``meta``: the data stage's
    meta.json). ``run_dir``: the ranking reads another run (``--run``), whose own validation rows are not ranked."""
    counts = meta.get("counts") or {}
    origin = str(meta.get("dev_origin") or "")
    src_train, src_dev = int(counts.get("source_train", n)), int(counts.get("source_dev", 0))
    if run_dir is not None:
        rows, how = n, "run"
        text = (f"{n:,} training rows of run {run_dir} ranked by one fit (its {int(counts.get('infl', 0)):,} "
                f"influence and {int(counts.get('test', 0)):,} test rows are not ranked)")
    elif origin.startswith("carved"):
        rows, how = src_train + src_dev, "carved"
        left = rows - n
        why = "carved out as the validation set" + (" or beyond --max-train" if n < src_train else "")
        text = (f"{n:,} of {rows:,} rows ranked by one fit; {left:,} rows were NOT ranked ({why}): "
                "use --folds 3 (cross-fitting) to rank every row")
    else:
        rows, how = src_train, "dev_source"
        capped = f"; {src_train - n:,} rows beyond --max-train were NOT ranked" if n < src_train else ""
        text = f"{n:,} of {rows:,} rows ranked by one fit (validation set: {origin or 'a separate dev part'}){capped}"
    return {"ranked": int(n), "rows": int(rows), "how": how, "folds": 1, "text": text}


def health_of(run_dirs) -> list[str]:
    """The fine-tuning health warnings of the fits in ``run_dirs`` (none when every model clearly learned)."""
    from layerinf.stages.finetune import health_warning

    dirs = list(run_dirs)
    out = []
    for i, d in enumerate(dirs):
        w = health_warning(d)
        if w:
            out.append(w if len(dirs) == 1 else f"fold {i}: {w}")
    return out


class RankStage(StageBase):
    """Rank the training examples of the run's data by ``RankConfig``."""

    name = SUSPECTS
    upstream = (DATA, GRADS)
    artifacts = (table_file(SUSPECTS_TABLE, "csv"), table_file(SUSPECTS_TABLE, "jsonl"), SUSPECT_SCORES_FILE,
                 SUMMARY_FILE, PAGE_FILE)

    def _group(self, cfg: RankConfig) -> str:
        from layerinf.stages.grads import GradsStage

        grads = GradsStage(self.source)
        train, _ = grads.load()
        return group_members(cfg.group, train.specs, grads.num_layers, cfg.method)[0]

    def key(self, cfg: RankConfig, model_name: str = "", vote_kappa: float = DEFAULT_KAPPA) -> dict:
        # folds decide how many fits there are (the workflow's business), not what one ranking is
        rank = {k: v for k, v in asdict(cfg).items() if k != "folds"}
        return {"rank": {**rank, "vote_kappa": vote_kappa, "group": self._group(cfg)}, "model": model_name}

    def seed(self, cfg: RankConfig, model_name: str = "", vote_kappa: float = DEFAULT_KAPPA) -> int:
        return int(self.source.stage_info(DATA)["seed"] or 0)

    def compute(self, st, cfg: RankConfig, model_name: str = "", vote_kappa: float = DEFAULT_KAPPA, *,
                inputs, progress=True, device="cpu") -> dict:
        from layerinf.stages.score import score_stores
        from layerinf.stages.task import task_of

        prepared, grads = inputs[DATA], inputs.stage(GRADS)
        train, infl = inputs[GRADS]
        group = group_members(cfg.group, train.specs, grads.num_layers, cfg.method)[0]
        task = task_of(prepared)
        if not task.labels_match(train.labels, prepared):
            raise LayerinfError(f"the gradients in {self.source.root} do not match its training data",
                                f"redo them: `layerinf grads {self.source.root} --force`")
        aggregators = list(dict.fromkeys([cfg.aggregator, *PAPER_AGGREGATORS]))
        score_cfg = ScoreConfig(methods=[cfg.method], groups=[group], aggregators=aggregators,
                                vote_kappa=vote_kappa)
        correct = np.asarray(task.correct(infl.logits, infl.labels), dtype=bool)
        scratch = st.tmp / ".scratch"
        try:
            res = score_stores(train, infl, None, correct, grads.num_layers, score_cfg, scratch, progress=progress,
                               per_module_metrics=False, chunk_size=self.runtime.chunk_size)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        prefix = f"{cfg.method}/{group}/"  # the chosen method and group under each aggregator (no baseline columns)
        extras = {c: res.aggregated[c].to_numpy(np.float64) for c in res.aggregated.columns if c.startswith(prefix)}
        key = f"{cfg.method}/{group}/{cfg.aggregator}"
        if key not in extras:
            raise LayerinfError(f"no scores for {key}", "pick a group whose modules the method applies to")
        s = extras[key]
        noisy = prepared.train["noisy"].to_numpy(bool)
        mask_known = bool(noisy.any())
        top = DEFAULT_TOP if cfg.top is None else cfg.top  # one fit: no out-of-sample probabilities to estimate from
        table = task.suspects_table(prepared.train, prepared.label_names, s, train, top, mask_known)
        foreign = self.source.root.resolve() != self.run_dir.root.resolve()
        result = SuspectsResult(
            folder=st.tmp, run_dir=self.source.root, table=table, method=cfg.method, group=group,
            aggregator=cfg.aggregator, kappa=vote_kappa, top=top, n=len(table),
            n_suspects=int(table["suspect"].sum()), label_names=list(prepared.label_names), mask_known=mask_known,
            model=model_name, checkpoint=str(grads.summary().get("checkpoint", "best")),
            coverage=coverage_of(prepared.meta, len(table), self.source.root if foreign else None),
            health=health_of([self.source]), task=task.name,
        )
        extra: dict[str, Any] = {}
        if mask_known:
            result.ndr_30 = float(metrics.ndr_at(s, noisy, 0.30))
            result.auc_ndr = float(metrics.auc_ndr(s, noisy))
            extra.update(ndr_30=result.ndr_30, auc_ndr=result.auc_ndr, n_noisy=int(noisy.sum()),
                         ndr_30_by_aggregator={k: float(metrics.ndr_at(v, noisy, 0.30)) for k, v in extras.items()})
        summary = write_result(st.tmp, result, pd.DataFrame({"idx": np.arange(len(s)), **extras}), **extra)
        return {k: summary[k] for k in ("config", "n", "n_suspects", "mask_known")} | (
            {"ndr_30": summary["ndr_30"]} if mask_known else {})

    def load(self) -> "SuspectsResult":
        return load_result(self.path)

    def scores(self) -> pd.DataFrame:
        """``scores.parquet``: the chosen method and group under every aggregator, one row per training row."""
        return pd.read_parquet(self.path / SUSPECT_SCORES_FILE)

    def written_summary(self) -> dict:
        """``summary.json`` (its group, label names and checkpoint)."""
        return json.loads((self.path / SUMMARY_FILE).read_text(encoding="utf-8"))


def load_result(folder: Path) -> SuspectsResult:
    """A finished suspects folder read back (stages made before ``coverage`` / ``health`` existed get them now)."""
    from layerinf.store.rundir import RunDir

    summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    coverage, health = summary.get("coverage"), summary.get("health")
    if coverage is None or health is None:
        run = RunDir(summary["run_dir"])
        meta_path = run.stage_path(DATA) / DATA_META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        foreign = run.root.resolve() != folder.parent.resolve()
        coverage = coverage_of(meta, int(summary["n"]), run.root if foreign else None) if coverage is None else coverage
        health = health_of([run]) if health is None else health
    return SuspectsResult(
        folder=folder, run_dir=Path(summary["run_dir"]), table=_read_table(folder), method=summary["method"],
        group=summary["group"], aggregator=summary["aggregator"], kappa=float(summary["kappa"]),
        top=float(summary["top"]), n=int(summary["n"]), n_suspects=int(summary["n_suspects"]),
        label_names=list(summary["label_names"]), mask_known=bool(summary["mask_known"]),
        ndr_30=summary.get("ndr_30"), auc_ndr=summary.get("auc_ndr"), model=summary.get("model", ""),
        checkpoint=summary.get("checkpoint", ""), info=summary, coverage=dict(coverage), health=list(health),
        task=str(summary.get("task") or "classification"), detection=dict(summary.get("detection") or {}),
    )
