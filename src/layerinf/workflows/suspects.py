"""Rank the training examples of a user's own data by how likely they are wrong (no noise mask needed).

``find_suspects`` is the everyday entry point: give it a dataset (``source=``) or an existing run directory
(``run=``). With a dataset, the labels are the user's own (no noise is injected): the data are prepared into
``out_dir`` (``data/``), a LoRA model is fine-tuned (``finetune/``; or an existing adapter is loaded),
per-sample gradients are collected (``grads/``) and one influence configuration — by default DataInf on the
paper's recommended middle attention group (the second of the four, e.g. ``02-03`` for MiniLM) aggregated
with Vote — scores every training example. Higher score = more helpful; the suspects are the LOWEST
``top`` fraction. With ``run=``, the run's data, best checkpoint and gradients are reused (missing stages are
computed with the pipeline), and when its training split carries a known noise mask (a noisy experiment)
the detection rate NDR@30 and AUC-NDR are reported too.

Outputs (written atomically into ``out_dir/suspects/``): ``suspects.csv`` and ``suspects.jsonl`` (every
training example, rank 1 = most suspicious), ``index.html`` (a static page listing the top suspects) and
``summary.json``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from layerinf.evaluation import metrics
from layerinf.stages import pipeline
from layerinf.store.rundir import RunDir, config_hash, sha256_file
from layerinf.config import DataConfig, GradsConfig, ModelConfig, ScoreConfig, TrainConfig
from layerinf.errors import LayerinfError

log = logging.getLogger("layerinf")

STAGE = "suspects"
AGGREGATORS = ("mean", "rank", "vote")
COLUMNS = ["rank", "index", "source_idx", "text", "text_pair", "given_label", "predicted_label", "probability",
           "score", "suspect"]
HTML_LIMIT = 300  # rows listed on the HTML page (the CSV / JSONL hold every example)
_DATA_OPTIONS = ("task", "label_names")  # DataConfig fields not already named in find_suspects' signature


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
        return self.folder / "suspects.csv"

    @property
    def jsonl(self) -> Path:
        return self.folder / "suspects.jsonl"

    @property
    def html(self) -> Path:
        return self.folder / "index.html"


# ------------------------------------------------------------------------------------------------ checks


def _check_options(source, run, method: str, aggregator: str, top: float, kappa: float, epochs: int,
                   max_length: int) -> tuple[str, str]:
    from layerinf.stages.score import KNOWN_METHODS

    if (source is None) == (run is None):
        raise LayerinfError(
            "give exactly one of source= (your dataset) or run= (an existing layerinf run directory)"
            + (", not both" if source is not None else ""),
            "e.g. layerinf suspects OUT --source my_data.csv, or layerinf suspects OUT --run RUN_DIR",
        )
    method = str(method).lower()
    if method not in KNOWN_METHODS:
        raise LayerinfError(f"unknown method '{method}'", f"use one of {', '.join(KNOWN_METHODS)}")
    aggregator = str(aggregator).lower()
    if aggregator not in AGGREGATORS:
        raise LayerinfError(f"unknown aggregator '{aggregator}'", f"use one of {', '.join(AGGREGATORS)}")
    if not (isinstance(top, (int, float)) and math.isfinite(top) and 0.0 < float(top) < 1.0):
        raise LayerinfError(f"top={top} must be a fraction strictly between 0 and 1", "use e.g. 0.30 (the bottom 30 %)")
    if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and 0.0 < float(kappa) <= 1.0):
        raise LayerinfError(f"kappa={kappa} must be a fraction in (0, 1]", "use e.g. 0.30 (the paper's Vote κ)")
    if int(epochs) < 1:
        raise LayerinfError(f"epochs={epochs} must be at least 1", "use e.g. 3")
    if int(max_length) < 1:
        raise LayerinfError(f"max_length={max_length} must be positive", "use e.g. 128 tokens")
    return method, aggregator


def default_group(num_layers: int) -> str:
    """The paper's recommendation: the second of the four attention groups (a middle one), e.g. ``02-03``."""
    from layerinf.influence.groups import attention_groups

    groups = attention_groups(num_layers)
    return groups[1][0] if len(groups) > 1 else groups[0][0]


def resolve_group(group: str | None, specs, num_layers: int, method: str) -> tuple[str, list[str]]:
    """The group's name and module names (``None``: ``default_group``); errors name the valid groups."""
    from layerinf.influence.groups import resolve_groups
    from layerinf.stages.score import method_applies

    name = default_group(num_layers) if group is None else str(group)
    resolved = resolve_groups([name], specs, num_layers)
    key, members = next(iter(resolved.items()))
    cfg = ScoreConfig()
    usable = [s for s in specs if s.name in members and method_applies(method, s, cfg)]
    if not usable:
        raise LayerinfError(
            f"method {method} does not apply to any module of group '{key}'",
            "DataInf skips WE and large heads: use tracin or cosine for that group, or pick an attention group",
        )
    return key, members


# ------------------------------------------------------------------------------------------------ data


def _data_config(source, *, max_train, max_dev, seed, text_column, text_pair_column, label_column, dev_source,
                 data_options: dict[str, Any]) -> DataConfig:
    bad = sorted(set(data_options) - set(_DATA_OPTIONS))
    if bad:
        raise LayerinfError(f"unknown option(s) {', '.join(bad)}",
                            f"data options are {', '.join(_DATA_OPTIONS)} (plus the named arguments)")
    return DataConfig(source=str(source), text_column=text_column, text_pair_column=text_pair_column,
                      label_column=label_column, dev_source=None if dev_source is None else str(dev_source),
                      max_train=max_train, max_dev=max_dev, noise_rate=0.0, seed=int(seed), **data_options)


def _prepare_source(run: RunDir, cfg: DataConfig, *, force: bool):
    """``pipeline.prepare``; its stage config carries a content hash of the source file, so a user who fixes
    labels in their file and reruns gets the new data, and fine-tuning, gradients and suspects follow."""
    return pipeline.prepare(run, cfg, force=force)


# ------------------------------------------------------------------------------------------------ adapters


def _adapter_kind(adapter: Path) -> str:
    if adapter.is_dir():
        if not (adapter / "adapter_config.json").is_file():
            raise LayerinfError(f"adapter folder {adapter} has no adapter_config.json",
                                "pass a PEFT adapter folder (save_pretrained) or a layerinf .safetensors adapter")
        return "peft"
    if adapter.is_file():
        return "layerinf"
    raise LayerinfError(f"adapter {adapter} does not exist", "check the path")


def _adapter_fingerprint(adapter: Path) -> str:
    if adapter.is_file():
        return sha256_file(adapter)
    files = sorted(p for p in adapter.rglob("*") if p.is_file())
    return config_hash({p.relative_to(adapter).as_posix(): sha256_file(p) for p in files})


def _layerinf_lora_settings(adapter: Path) -> ModelConfig:
    """LoRA rank and targets of a layerinf adapter file, read from its tensor names and shapes."""
    from layerinf.model.loading import read_adapter

    state = read_adapter(adapter)
    ranks, targets = set(), []
    for name, t in state.items():
        if ".lora_A." in name:
            ranks.add(int(t.shape[0]))
            proj = name.split(".lora_A.")[0].rsplit(".", 1)[-1]
            if proj not in targets:
                targets.append(proj)
    if not ranks:
        raise LayerinfError(f"adapter file {adapter} holds no LoRA tensors",
                            "pass an adapter saved by layerinf finetune")
    if len(ranks) > 1:
        raise LayerinfError(f"adapter file {adapter} mixes LoRA ranks {sorted(ranks)}", "use a single-rank adapter")
    return ModelConfig(lora_r=ranks.pop(), lora_targets=targets)


def _peft_head_saved(adapter: Path) -> bool:
    """Whether a PEFT adapter folder carries classification-head weights (modules_to_save)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    if cfg.get("modules_to_save"):
        return True
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            keys = list(fh.keys())
        return any("lora_" not in k and any(h in k.split(".") for h in ("classifier", "score")) for k in keys)
    return False


def load_with_adapter(model: str, adapter: str | os.PathLike, num_labels: int, *, seed: int = 0,
                      trust_remote_code: bool = False):
    """``model`` with a trained adapter: a layerinf ``.safetensors`` file or a PEFT adapter folder.

    Returns a ``models.LoadedModel``. A PEFT adapter without head weights leaves the classification head
    randomly initialised: that is warned about, since the predictions and the CL gradients are then meaningless.
    """
    from layerinf.model.loading import LoadedModel, LoraSettings, load_base_model, load_tokenizer, resolve_source

    adapter = Path(adapter).expanduser()
    kind = _adapter_kind(adapter)
    if kind == "layerinf":
        mc = _layerinf_lora_settings(adapter)
        mc = dataclasses.replace(mc, name=model, trust_remote_code=trust_remote_code)
        return pipeline.load_model(mc, num_labels, seed, adapter=adapter)
    from peft import PeftModel

    src = resolve_source(model)
    tok = load_tokenizer(src, trust_remote_code=trust_remote_code)
    base = load_base_model(src, num_labels, seed=seed, trust_remote_code=trust_remote_code,
                           pad_token_id=tok.pad_token_id)
    try:
        peft_model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise LayerinfError(
            f"PEFT adapter {adapter} does not fit model '{model}' with {num_labels} labels "
            f"({str(exc).splitlines()[0][:120]})",
            "pass the base model the adapter was trained on (--model) and data with the same label set",
        ) from None
    if not _peft_head_saved(adapter):
        msg = (f"PEFT adapter {adapter} has no trained classification head: the head is randomly initialised "
               "(untrained), so predictions and scores are unreliable; save the adapter with task_type=SEQ_CLS "
               "or fine-tune with layerinf instead")
        warnings.warn(msg, UserWarning, stacklevel=3)
        log.warning(msg)
    cfg = peft_model.peft_config.get("default")
    lora = LoraSettings(r=int(getattr(cfg, "r", 4)), alpha=int(getattr(cfg, "lora_alpha", 4)),
                        dropout=float(getattr(cfg, "lora_dropout", 0.0)),
                        targets=tuple(sorted(getattr(cfg, "target_modules", None) or ())) or None)
    return LoadedModel(peft_model, tok, src, lora)


def _adapter_grads(run: RunDir, model: str, adapter: Path, max_length: int, *, group: str | None, method: str,
                   seed: int, progress: bool, force: bool = False):
    """The ``grads/`` stage for a user-supplied adapter (no ``finetune/`` stage in this run)."""
    from layerinf.store.gradstore import GradStore, write_store
    from layerinf.model.loading import inventory

    prepared = pipeline.load_data(run)
    loaded = load_with_adapter(model, adapter, len(prepared.label_names), seed=seed)
    specs = inventory(loaded.model, include_we=True)
    _, members = resolve_group(group, specs, loaded.num_layers, method)  # before the costly part
    gcfg = GradsConfig(checkpoint="adapter", include_we="WE" in members)
    stage_cfg = {
        "data": config_hash(run.stage_info("data")["files"]),
        "model": model,
        "adapter": str(adapter),
        "adapter_sha256": _adapter_fingerprint(adapter),
        "max_length": int(max_length),
        "grads": dataclasses.asdict(gcfg),
    }
    with run.stage("grads", stage_cfg, force=force) as st:
        if not st.done:
            enc = pipeline.encode_splits(prepared, loaded.tokenizer, int(max_length))
            specs = [s for s in specs if gcfg.include_we or s.kind != "we"]
            for split in ("train", "infl"):
                write_store(loaded.model, enc[split], st.tmp / split, specs=specs, batch_size=gcfg.batch_size,
                            include_we=gcfg.include_we, dtype=gcfg.dtype,
                            checkpoint_sha256=stage_cfg["adapter_sha256"], progress=progress)
            st.info["summary"] = {"num_layers": loaded.num_layers, "checkpoint": "adapter",
                                  "n_train": len(enc["train"]), "n_infl": len(enc["infl"])}
    folder = run.stage_path("grads")
    return GradStore(folder / "train"), GradStore(folder / "infl")


# ------------------------------------------------------------------------------------------------ scoring


def _layout(model_cfg: ModelConfig, num_labels: int, seed: int):
    """Module specs and layer count of a model as the pipeline would build it (for early group checks)."""
    from layerinf.model.loading import inventory

    loaded = pipeline.load_model(model_cfg, num_labels, seed)
    return inventory(loaded.model), loaded.num_layers


def _seed_matrices(run: RunDir, method: str, members: list[str], cfg: ScoreConfig, dst: Path) -> None:
    """Link the run's already computed per-module matrices into ``dst`` (score_stores skips those)."""
    if not run.is_finished("scores", verify=False):
        return
    info = run.stage_info("scores")
    used = info["config"].get("score", {})
    if info["config"].get("grads") != run.stage_info("grads")["config_hash"]:
        return
    if any(used.get(k) != getattr(cfg, k) for k in ("datainf_threshold", "compute_dtype")):
        return
    src = run.stage_path("scores") / "matrices" / method
    for module in members:
        f = src / f"{module}.npy"
        if f.is_file():
            (dst / method).mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dst / method / f.name)
            except OSError:
                shutil.copyfile(f, dst / method / f.name)


def score_group(run: RunDir, train, infl, num_layers: int, method: str, group: str, aggregator: str,
                kappa: float, scratch: Path, *, progress: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores of ``method`` on ``group`` for the chosen aggregator, plus all three aggregators (cheap extras)."""
    from layerinf.stages.score import score_stores

    aggregators = list(dict.fromkeys([aggregator, *AGGREGATORS]))
    cfg = ScoreConfig(methods=[method], groups=[group], aggregators=aggregators, vote_kappa=float(kappa))
    key = f"{method}/{group}/{aggregator}"
    correct = np.asarray(infl.logits).argmax(1) == np.asarray(infl.labels)
    if not correct.any():
        log.warning("the model predicts no influence example correctly: Rank / Vote fall back to what aggregate does")
    from layerinf.influence.groups import resolve_groups

    members = next(iter(resolve_groups([group], train.specs, num_layers).values()))
    _seed_matrices(run, method, members, cfg, scratch)
    res = score_stores(train, infl, None, correct, num_layers, cfg, scratch, progress=progress,
                       per_module_metrics=False)
    extras = {c: res.aggregated[c].to_numpy(np.float64) for c in res.aggregated.columns if c != "idx"}
    if key not in extras:
        raise LayerinfError(f"no scores for {key}", "pick a group whose modules the method applies to")
    return extras[key], extras


# ------------------------------------------------------------------------------------------------ outputs


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


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} .sub{color:#666;margin-top:0}
.box{background:#f5f7fa;border:1px solid #dde3ea;border-radius:6px;padding:.8em 1em;margin:1em 0}
.ndr{background:#eef8ee;border-color:#bfe0bf}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border-bottom:1px solid #e3e3e3;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#fafafa;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.diff{color:#b00020;font-weight:600} .pair{color:#555;display:block;margin-top:.2em}
.tag{font-size:.8em;border-radius:3px;padding:0 .3em;background:#fde2e2;color:#8a1020}
"""


def render_html(result: SuspectsResult, limit: int = HTML_LIMIT) -> str:
    """A static, self-contained page (inline CSS, no scripts, no external resources; all texts escaped)."""
    e = html.escape
    t = result.table
    shown = t[t["suspect"]].head(limit)
    rows = []
    for r in shown.itertuples(index=False):
        text = e(str(r.text))
        if r.text_pair is not None:
            text += f'<span class="pair">{e(str(r.text_pair))}</span>'
        pred_cls = ' class="diff"' if r.predicted_label != r.given_label else ""
        noisy = ""
        if result.mask_known:
            noisy = "<td>" + ('<span class="tag">noisy</span>' if r.noisy else "") + "</td>"
        rows.append(
            f"<tr><td class=\"num\">{r.rank}</td><td class=\"num\">{r.index}</td><td>{text}</td>"
            f"<td>{e(str(r.given_label))}</td><td{pred_cls}>{e(str(r.predicted_label))}</td>"
            f"<td class=\"num\">{r.probability:.3f}</td><td class=\"num\">{e(_fmt(float(r.score)))}</td>{noisy}</tr>"
        )
    method_names = {"datainf": "DataInf", "tracin": "TracIn", "cosine": "Cosine (gradient similarity)"}
    agg_names = {"vote": f"Vote (κ = {result.kappa:g})", "rank": "Rank", "mean": "Mean"}
    explain = (
        f"Each training example was scored by <b>{e(method_names.get(result.method, result.method))}</b> influence: "
        f"how much the example's gradient, on the LoRA modules of layer group <b>{e(result.group)}</b> of the "
        f"fine-tuned model <b>{e(result.model)}</b>, helps the model on held-out validation examples. "
        "The per-module, per-validation-example scores were combined by "
        f"<b>{e(agg_names.get(result.aggregator, result.aggregator))}</b>. "
        "Sign convention: <b>higher score = more helpful</b>; an example with a low score pushes the model away from "
        "what the validation data teach, which is typical of a wrong label. The page lists the lowest-scoring "
        f"{result.top:.0%} of the training set ({result.n_suspects} of {result.n}), most suspicious first. "
        "This is a ranking, not a verdict: read the suspects, <b>relabel</b> the ones that are wrong (or <b>drop</b> "
        "them when unsure), then <b>retrain</b> and run this again on the cleaned data."
    )
    ndr = ""
    if result.mask_known and result.ndr_30 is not None:
        ndr = (f'<div class="box ndr">A noise mask is known for this data: the suspects contain '
               f"<b>NDR@30 = {result.ndr_30:.3f}</b> of the known noisy examples (random ranking: 0.30), "
               f"AUC-NDR = {result.auc_ndr:.3f}.</div>")
    more = ""
    if len(shown) < result.n_suspects:
        more = (f'<p class="sub">Showing the first {len(shown)} of {result.n_suspects} suspects; '
                "every example is in suspects.csv.</p>")
    noisy_head = "<th>known</th>" if result.mask_known else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>layerinf suspects</title>
<style>{_CSS}</style></head>
<body>
<h1>Training examples most likely to be wrong</h1>
<p class="sub">{e(result.config_key)} · {result.n} training examples · labels: {e(", ".join(result.label_names))}</p>
<div class="box">{explain}</div>
{ndr}
{more}
<table>
<thead><tr><th>rank</th><th>index</th><th>text</th><th>given label</th><th>predicted</th><th>p(given)</th>
<th>score</th>{noisy_head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<p class="sub">Made by layerinf (layer-wise influence for LoRA fine-tuned language models;
Vitel &amp; Chhabra, arXiv 2511.04715).</p>
</body></html>
"""


def _write_outputs(folder: Path, result: SuspectsResult) -> None:
    t = result.table
    t.to_csv(folder / "suspects.csv", index=False)
    with open(folder / "suspects.jsonl", "w", encoding="utf-8") as fh:
        for rec in t.to_dict(orient="records"):
            rec = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (folder / "index.html").write_text(render_html(result), encoding="utf-8")


def _read_table(folder: Path) -> pd.DataFrame:
    with open(folder / "suspects.jsonl", encoding="utf-8") as fh:
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


# ------------------------------------------------------------------------------------------------ main


def find_suspects(
    out_dir,
    *,
    source: str | None = None,
    run=None,
    model: str = "minilm",
    adapter: str | os.PathLike | None = None,
    method: str = "datainf",
    group: str | None = None,
    aggregator: str = "vote",
    kappa: float = 0.30,
    top: float = 0.30,
    epochs: int = 3,
    lr: float | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    max_train: int | None = None,
    max_dev: int | None = 1000,
    seed: int = 0,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    dev_source: str | None = None,
    progress: bool = True,
    force: bool = False,
    **data_options,
) -> SuspectsResult:
    """Rank every training example by influence (lowest = most likely mislabelled or harmful).

    ``source=``: a dataset (``demo``, a CSV/TSV/JSONL/Parquet file, a GLUE folder, ``hf:NAME``) prepared into
    ``out_dir`` with no noise injected and no cap on the training set by default; then fine-tuned with LoRA
    (``epochs``, ``lr``, ``batch_size``; or ``adapter=`` — a layerinf ``.safetensors`` file or a PEFT adapter
    folder — is loaded instead). ``run=``: an existing run directory whose data, best checkpoint and gradients
    are reused (missing stages are computed there); if its training split has a known noise mask, NDR@30 and
    AUC-NDR are reported. ``group`` defaults to the second of the four attention groups (the paper's
    recommendation). The suspects are the bottom ``top`` fraction. Outputs go to ``out_dir/suspects/``.
    """
    method, aggregator = _check_options(source, run, method, aggregator, top, kappa, epochs, max_length)
    out = RunDir(out_dir)
    top, kappa = float(top), float(kappa)
    model_used, checkpoint = model, "best"

    if run is not None:
        given = {k: v for k, v in {"adapter": adapter, "text_column": text_column, "text_pair_column": text_pair_column,
                                   "label_column": label_column, "dev_source": dev_source, **data_options}.items()
                 if v is not None}
        if given:
            raise LayerinfError(f"option(s) {', '.join(sorted(given))} only apply with source=",
                                "a run directory already holds its data and model; drop them or use source=")
        work = run if isinstance(run, RunDir) else RunDir(run)
        if not work.root.is_dir():
            raise LayerinfError(f"run directory {work.root} does not exist", "check the path, or use source=")
        prepared = pipeline.load_data(work)  # clear error when data/ is missing
        num_labels = len(prepared.label_names)
        if not work.is_finished("grads", verify=False):
            if work.is_finished("finetune", verify=False):
                ft_cfg = work.stage_info("finetune")["config"]
                model_cfg = ModelConfig(**ft_cfg["model"])
                specs, num_layers = _layout(model_cfg, num_labels, ft_cfg["train"]["seed"])
                resolve_group(group, specs, num_layers, method)
            else:
                model_cfg = ModelConfig(name=model, max_length=int(max_length))
                specs, num_layers = _layout(model_cfg, num_labels, prepared.meta.get("seed", seed))
                resolve_group(group, specs, num_layers, method)
                tcfg = TrainConfig(epochs=int(epochs), lr=lr, batch_size=int(batch_size))
                pipeline.finetune(work, model_cfg, tcfg, progress=progress)
            pipeline.grads(work, GradsConfig(), progress=progress)
        if work.is_finished("finetune", verify=False):
            model_used = work.stage_info("finetune")["config"]["model"]["name"]
    else:
        work = out
        dcfg = _data_config(source, max_train=max_train, max_dev=max_dev, seed=seed, text_column=text_column,
                            text_pair_column=text_pair_column, label_column=label_column, dev_source=dev_source,
                            data_options=data_options)
        prepared = _prepare_source(work, dcfg, force=force)
        num_labels = len(prepared.label_names)
        if adapter is not None:
            adapter = Path(adapter).expanduser().resolve()
            _adapter_kind(adapter)
            checkpoint = "adapter"
            _adapter_grads(work, model, adapter, int(max_length), group=group, method=method, seed=int(seed),
                           progress=progress)
        else:
            model_cfg = ModelConfig(name=model, max_length=int(max_length))
            tcfg = TrainConfig(epochs=int(epochs), lr=lr, batch_size=int(batch_size))
            specs, num_layers = _layout(model_cfg, num_labels, int(seed))
            _, members = resolve_group(group, specs, num_layers, method)  # fail before training, not after
            pipeline.finetune(work, model_cfg, tcfg, progress=progress)
            # word-embedding gradients (row-sparse, the costliest part) only when the group uses WE (or a
            # store that has them already is there to reuse)
            done = work.is_finished("grads", verify=False)
            prev = work.stage_info("grads")["config"].get("grads", {}) if done else {}
            include_we = "WE" in members or bool(prev.get("include_we", False))
            pipeline.grads(work, GradsConfig(include_we=include_we), progress=progress)

    from layerinf.store.gradstore import GradStore

    grads_info = work.stage_info("grads")
    num_layers = int(grads_info["summary"]["num_layers"])
    checkpoint = str(grads_info["summary"].get("checkpoint", checkpoint))
    train_store = GradStore(work.stage_path("grads") / "train")
    infl_store = GradStore(work.stage_path("grads") / "infl")
    group_key, _ = resolve_group(group, train_store.specs, num_layers, method)
    noisy = prepared.train["noisy"].to_numpy(bool)
    mask_known = bool(noisy.any())

    stage_cfg = {
        "run": str(work.root.resolve()),
        "data": config_hash(work.stage_info("data")["files"]),
        "grads": config_hash(grads_info["files"]),
        "method": method, "group": group_key, "aggregator": aggregator, "kappa": kappa, "top": top,
    }
    with out.stage(STAGE, stage_cfg, seed=int(prepared.meta.get("seed", seed)), force=force) as st:
        if not st.done:
            if len(train_store.labels) != len(prepared.train) or not np.array_equal(
                    np.asarray(train_store.labels), prepared.train["label"].to_numpy()):
                raise LayerinfError(f"the gradients in {work.root}/grads do not match its training data",
                                    "rerun the grads stage (layerinf grads --force)")
            out.root.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(dir=out.root, prefix=".suspects-matrices."))
            try:
                s, extras = score_group(work, train_store, infl_store, num_layers, method, group_key, aggregator,
                                        kappa, scratch, progress=progress)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            table = build_table(prepared.train, prepared.label_names, s, train_store.logits, top, mask_known)
            result = SuspectsResult(
                folder=st.tmp, run_dir=work.root, table=table, method=method, group=group_key,
                aggregator=aggregator, kappa=kappa, top=top, n=len(table), n_suspects=int(table["suspect"].sum()),
                label_names=list(prepared.label_names), mask_known=mask_known, model=model_used,
                checkpoint=checkpoint,
            )
            summary: dict[str, Any] = {
                "config": f"{method}/{group_key}/{aggregator}", "method": method, "group": group_key,
                "aggregator": aggregator, "kappa": kappa, "top": top, "n": result.n,
                "n_suspects": result.n_suspects, "label_names": result.label_names, "model": model_used,
                "checkpoint": checkpoint, "run_dir": str(work.root), "mask_known": mask_known,
                "suspects_disagreeing": int((table["suspect"]
                                             & (table["given_label"] != table["predicted_label"])).sum()),
            }
            pd.DataFrame({"idx": np.arange(len(s)), **extras}).to_parquet(st.out("scores.parquet"), index=False)
            if mask_known:
                result.ndr_30 = float(metrics.ndr_at(s, noisy, 0.30))
                result.auc_ndr = float(metrics.auc_ndr(s, noisy))
                summary.update(ndr_30=result.ndr_30, auc_ndr=result.auc_ndr, n_noisy=int(noisy.sum()),
                               ndr_30_by_aggregator={k: float(metrics.ndr_at(v, noisy, 0.30))
                                                     for k, v in extras.items()})
            (st.tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
            _write_outputs(st.tmp, result)
            st.info["summary"] = {k: summary[k] for k in ("config", "n", "n_suspects", "mask_known")
                                  if k in summary} | ({"ndr_30": summary["ndr_30"]} if mask_known else {})
    folder = out.stage_path(STAGE)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return SuspectsResult(
        folder=folder, run_dir=Path(summary["run_dir"]), table=_read_table(folder), method=summary["method"],
        group=summary["group"], aggregator=summary["aggregator"], kappa=float(summary["kappa"]),
        top=float(summary["top"]), n=int(summary["n"]), n_suspects=int(summary["n_suspects"]),
        label_names=list(summary["label_names"]), mask_known=bool(summary["mask_known"]),
        ndr_30=summary.get("ndr_30"), auc_ndr=summary.get("auc_ndr"), model=summary.get("model", ""),
        checkpoint=summary.get("checkpoint", ""), info=summary,
    )


__all__ = ["SuspectsResult", "build_table", "default_group", "find_suspects", "load_with_adapter", "render_html",
           "resolve_group", "summary_table"]
