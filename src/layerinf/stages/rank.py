"""The ``suspects`` stage: rank every training example by one influence configuration (no noise mask needed).

By default DataInf on the second of the four attention groups (the paper's recommendation, e.g. ``02-03``
for MiniLM) aggregated with Vote. Higher score = more helpful; the suspects are the LOWEST ``top`` fraction.
Reads the ``data`` and ``grads`` stages (of this run, or of another run given as ``source=``) and writes
``suspects.csv|jsonl`` (every training example, rank 1 = most suspicious), ``scores.parquet`` (the chosen
method and group under every aggregator), ``summary.json`` and ``index.html``.
"""

from __future__ import annotations

import json
import math
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
from layerinf.stages.rank_page import render_html
from layerinf.store.layout import (DATA, GRADS, PAGE_FILE, SUMMARY_FILE, SUSPECT_SCORES_FILE, SUSPECTS,
                                   SUSPECTS_TABLE, table_file)

COLUMNS = ["rank", "index", "source_idx", "text", "text_pair", "given_label", "predicted_label", "probability",
           "score", "suspect"]


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def build_table(train: pd.DataFrame, label_names: list[str], scores: np.ndarray, logits: np.ndarray, top: float,
                mask_known: bool) -> pd.DataFrame:
    """Every training example ranked by ascending score (stable; rank 1 = most suspicious)."""
    n = len(train)
    order = metrics.filter_order(scores)
    k = metrics.removal_count(top, n)
    given = train["label"].to_numpy(np.int64)
    probs = _softmax(np.asarray(logits, dtype=np.float64))
    pred = probs.argmax(1)
    names = np.asarray(label_names, dtype=object)
    tp = train["text_pair"].to_numpy(object)
    out = pd.DataFrame({
        "rank": np.arange(1, n + 1, dtype=np.int64),
        "index": train["idx"].to_numpy(np.int64)[order],
        "source_idx": train["source_idx"].to_numpy(np.int64)[order],
        "text": train["text"].to_numpy(object)[order],
        "text_pair": [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in tp[order]],
        "given_label": names[given[order]],
        "predicted_label": names[pred[order]],
        "probability": probs[order, given[order]],
        "score": np.asarray(scores, dtype=np.float64)[order],
        "suspect": np.arange(n) < k,
    })
    if mask_known:
        out["noisy"] = train["noisy"].to_numpy(bool)[order]
    return out


def _write_outputs(folder: Path, result: SuspectsResult) -> None:
    t = result.table
    t.to_csv(folder / table_file(SUSPECTS_TABLE, "csv"), index=False)
    with open(folder / table_file(SUSPECTS_TABLE, "jsonl"), "w", encoding="utf-8") as fh:
        for rec in t.to_dict(orient="records"):
            rec = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (folder / PAGE_FILE).write_text(render_html(result), encoding="utf-8")


def _read_table(folder: Path) -> pd.DataFrame:
    with open(folder / table_file(SUSPECTS_TABLE, "jsonl"), encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    t = pd.DataFrame.from_records(recs)
    for c in ("rank", "index", "source_idx"):
        t[c] = t[c].astype(np.int64)
    for c in ("probability", "score"):
        t[c] = t[c].astype(np.float64)
    t["suspect"] = t["suspect"].astype(bool)
    if "noisy" in t.columns:
        t["noisy"] = t["noisy"].astype(bool)
    t["text_pair"] = t["text_pair"].astype(object).where(t["text_pair"].notna(), None)
    return t


def summary_table(result: SuspectsResult, k: int = 10, width: int = 70) -> pd.DataFrame:
    """The ``k`` most suspicious examples, texts shortened to ``width`` characters (for a one-screen print)."""

    def short(text, pair) -> str:
        s = str(text) if pair is None else f"{text} / {pair}"
        s = " ".join(s.split())
        return s if len(s) <= width else s[: width - 1] + "…"

    head = result.table.head(int(k))
    out = pd.DataFrame({
        "rank": head["rank"].to_numpy(),
        "index": head["index"].to_numpy(),
        "given": head["given_label"].to_numpy(),
        "predicted": head["predicted_label"].to_numpy(),
        "p(given)": head["probability"].round(3).to_numpy(),
        "score": head["score"].to_numpy(),
        "text": [short(a, b) for a, b in zip(head["text"], head["text_pair"])],
    })
    if result.mask_known and "noisy" in head.columns:
        out["noisy"] = head["noisy"].to_numpy()
    return out


def group_members(group: str | None, specs, num_layers: int, method: str) -> tuple[str, list[str]]:
    """The group's name and module names (``None``: ``default_group``); errors name the valid groups."""
    from layerinf.influence.groups import resolve_groups
    from layerinf.stages.score import method_applies

    name = default_group(num_layers) if group is None else str(group)
    key, members = next(iter(resolve_groups([name], specs, num_layers).items()))
    if not any(s.name in members and method_applies(method, s, ScoreConfig()) for s in specs):
        raise LayerinfError(
            f"method {method} does not apply to any module of group '{key}'",
            "DataInf skips WE and large heads: use tracin or cosine for that group, or pick an attention group",
        )
    return key, members


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

    def key(self, cfg: RankConfig, model_name: str = "") -> dict:
        return {"rank": {**asdict(cfg), "group": self._group(cfg)}, "model": model_name}

    def seed(self, cfg: RankConfig, model_name: str = "") -> int:
        return int(self.source.stage_info(DATA)["seed"] or 0)

    def compute(self, st, cfg: RankConfig, model_name: str = "", *, progress=True, device="cpu") -> dict:
        from layerinf.stages.data import load_data
        from layerinf.stages.grads import GradsStage
        from layerinf.stages.score import score_stores

        prepared = load_data(self.source)
        grads = GradsStage(self.source)
        train, infl = grads.load()
        group = self._group(cfg)
        if len(train.labels) != len(prepared.train) or not np.array_equal(
                np.asarray(train.labels), prepared.train["label"].to_numpy()):
            raise LayerinfError(f"the gradients in {self.source.root} do not match its training data",
                                f"redo them: `layerinf grads {self.source.root} --force`")
        aggregators = list(dict.fromkeys([cfg.aggregator, *PAPER_AGGREGATORS]))
        score_cfg = ScoreConfig(methods=[cfg.method], groups=[group], aggregators=aggregators,
                                vote_kappa=cfg.vote_kappa)
        correct = np.asarray(infl.logits).argmax(1) == np.asarray(infl.labels)
        scratch = st.tmp / ".scratch"
        try:
            res = score_stores(train, infl, None, correct, grads.num_layers, score_cfg, scratch, progress=progress,
                               per_module_metrics=False)
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
        table = build_table(prepared.train, prepared.label_names, s, train.logits, cfg.top, mask_known)
        result = SuspectsResult(
            folder=st.tmp, run_dir=self.source.root, table=table, method=cfg.method, group=group,
            aggregator=cfg.aggregator, kappa=cfg.vote_kappa, top=cfg.top, n=len(table),
            n_suspects=int(table["suspect"].sum()), label_names=list(prepared.label_names), mask_known=mask_known,
            model=model_name, checkpoint=str(grads.summary().get("checkpoint", "best")),
        )
        summary: dict[str, Any] = {
            "config": key, "method": cfg.method, "group": group, "aggregator": cfg.aggregator,
            "kappa": cfg.vote_kappa, "top": cfg.top, "n": result.n, "n_suspects": result.n_suspects,
            "label_names": result.label_names, "model": model_name, "checkpoint": result.checkpoint,
            "run_dir": str(self.source.root), "mask_known": mask_known,
            "suspects_disagreeing": int((table["suspect"] & (table["given_label"] != table["predicted_label"])).sum()),
        }
        pd.DataFrame({"idx": np.arange(len(s)), **extras}).to_parquet(st.out(SUSPECT_SCORES_FILE), index=False)
        if mask_known:
            result.ndr_30 = float(metrics.ndr_at(s, noisy, 0.30))
            result.auc_ndr = float(metrics.auc_ndr(s, noisy))
            summary.update(ndr_30=result.ndr_30, auc_ndr=result.auc_ndr, n_noisy=int(noisy.sum()),
                           ndr_30_by_aggregator={k: float(metrics.ndr_at(v, noisy, 0.30)) for k, v in extras.items()})
        (st.tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        _write_outputs(st.tmp, result)
        return {k: summary[k] for k in ("config", "n", "n_suspects", "mask_known")} | (
            {"ndr_30": summary["ndr_30"]} if mask_known else {})

    def load(self) -> "SuspectsResult":
        folder = self.path
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        return SuspectsResult(
            folder=folder, run_dir=Path(summary["run_dir"]), table=_read_table(folder), method=summary["method"],
            group=summary["group"], aggregator=summary["aggregator"], kappa=float(summary["kappa"]),
            top=float(summary["top"]), n=int(summary["n"]), n_suspects=int(summary["n_suspects"]),
            label_names=list(summary["label_names"]), mask_known=bool(summary["mask_known"]),
            ndr_30=summary.get("ndr_30"), auc_ndr=summary.get("auc_ndr"), model=summary.get("model", ""),
            checkpoint=summary.get("checkpoint", ""), info=summary,
        )
