"""Mislabel detection, side by side: ``layerinf suspects`` against cleanlab and the model's own probability.

Planted sets are built from ../shared/data/glue (labels flipped on purpose; the mask is kept by the benchmark and
never shown to layerinf). For each set, in one run:

* ``layerinf suspects`` with its defaults (the console script, in a subprocess whose CPU time is measured), and
  every ranking it writes side by side (``score:<ranking>`` columns), plus its in-sample ``probability``;
* cleanlab on sentence embeddings (the cleanlab text tutorial's recipe: all-MiniLM-L6-v2 mean-pooled, normalised
  embeddings → logistic regression → 5-fold out-of-sample ``pred_probs`` → ``find_label_issues`` /
  ``get_label_quality_scores``), computed here with transformers directly (not layerinf's code);
* cleanlab on layerinf's own out-of-sample probabilities (``suspects/pred_probs.npy``).

Reported per set and ranking: ROC-AUC with a 95 % bootstrap interval (1,000 resamples of the rows), NDR@30 (share
of the flips among the lowest 30 %), precision and recall of the flagged set (layerinf: its ``suspect`` column;
cleanlab: ``find_label_issues``; rankings without a flagged set: the lowest ⌊rate·n⌋ rows at the true rate, marked
"at true k"), CPU-seconds; and the paired bootstrap interval of layerinf's default minus cleanlab on embeddings.

Resumable: each set's layerinf run is cached stage by stage under ``--work``, and a finished set's metrics are kept
in ``<work>/<set>/metrics.json`` (its CPU-seconds are those of the first, complete run). Results:
``bench/results/detection.csv`` and the table in ``docs/detection.md`` (between the bench markers); a set not
run this time keeps its earlier rows there, with the date it was measured (``--sets`` picks what is run).

Run: ``.venv/bin/python bench/bench_detection.py`` (needs ``pip install 'layerinf[compare]'`` for cleanlab).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
BOOT = 1000


# ------------------------------------------------------------------------------------------------- the sets

def _glue(task: str) -> pd.DataFrame:
    df = pd.read_csv(GLUE / task / "train.tsv", sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig",
                     keep_default_na=False)
    if task == "SST-2":
        return pd.DataFrame({"text": df["sentence"], "text_pair": None, "label": df["label"].astype(int)})
    if task == "MRPC":
        return pd.DataFrame({"text": df["#1 String"], "text_pair": df["#2 String"], "label": df["Quality"].astype(int)})
    raise ValueError(task)


SETS = {  # name: (task, rows, flip rate per class (class 0, class 1))
    "sst2-500-uniform20": ("SST-2", 500, (0.20, 0.20)),
    "sst2-2000-uniform20": ("SST-2", 2000, (0.20, 0.20)),
    "sst2-1000-classcond35-5": ("SST-2", 1000, (0.05, 0.35)),
    "mrpc-1000-uniform20": ("MRPC", 1000, (0.20, 0.20)),
}
FIRST_MEASURED = "2026-12-07"  # the sets measured before the CSV had a date column
NAMES = {"SST-2": ("negative", "positive"), "MRPC": ("different", "paraphrase")}


def build_set(name: str, folder: Path) -> tuple[Path, np.ndarray]:
    """The planted CSV (text[, text2], label as a word) and its flip mask (row order = file order)."""
    task, n, rates = SETS[name]
    rng = np.random.default_rng(0)
    df = _glue(task)
    df = df.iloc[rng.choice(len(df), n, replace=False)].reset_index(drop=True)
    y = df["label"].to_numpy()
    flip = np.zeros(n, dtype=bool)
    uniform = rates[0] == rates[1]
    if uniform:  # exactly ⌊rate·n⌋ rows, drawn from all rows (the paper's injection)
        flip[rng.choice(n, int(rates[0] * n), replace=False)] = True
    else:  # class-conditional: ⌊rate_c · n_c⌋ rows of each class c
        for c, r in enumerate(rates):
            rows = np.flatnonzero(y == c)
            flip[rng.choice(rows, int(r * rows.size), replace=False)] = True
    words = np.asarray(NAMES[task], dtype=object)
    out = pd.DataFrame({"text": df["text"]})
    if task == "MRPC":
        out["text2"] = df["text_pair"]
    out["label"] = words[np.where(flip, 1 - y, y)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.csv"
    out.to_csv(path, index=False)
    np.save(folder / "flipped.npy", flip)
    return path, flip


# ------------------------------------------------------------------------------------------------ metrics

def roc(scores: np.ndarray, mask: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(mask, -np.asarray(scores, dtype=np.float64)))


def boot_auc(scores: np.ndarray, mask: np.ndarray, base: np.ndarray | None = None, seed: int = 0):
    """95 % percentile bootstrap interval of the ROC-AUC (or of AUC − AUC(base), paired)."""
    rng = np.random.default_rng(seed)
    n, vals = len(mask), []
    for _ in range(BOOT):
        i = rng.integers(0, n, n)
        if 0 < mask[i].sum() < n:
            a = roc(scores[i], mask[i])
            vals.append(a - roc(base[i], mask[i]) if base is not None else a)
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def row(set_name, ranking, scores, mask, flagged=None, cpu=None, note=""):
    from layerinf.evaluation.detection import ndr_at

    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = boot_auc(scores, mask)
    if flagged is None:  # no flagged set of its own: the lowest ⌊rate·n⌋ rows at the true rate
        k = int(mask.sum())
        flagged = np.zeros(len(mask), bool)
        flagged[np.argsort(scores, kind="stable")[:k]] = True
        note = (note + "; " if note else "") + "flagged: lowest k at the true k"
    tp = int((flagged & mask).sum())
    return {"set": set_name, "ranking": ranking, "roc_auc": roc(scores, mask), "auc_lo": lo, "auc_hi": hi,
            "ndr_30": float(ndr_at(scores, mask, 0.30)), "flagged": int(flagged.sum()), "true_flips": int(mask.sum()),
            "precision": tp / max(int(flagged.sum()), 1), "recall": tp / max(int(mask.sum()), 1),
            "cpu_s": cpu, "note": note}


# ------------------------------------------------------------------------------------------------ methods

def cpu_now() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def run_layerinf(data: Path, folder: Path, pair: bool) -> float:
    """``layerinf suspects`` with its defaults on the planted file; the CPU-seconds it took."""
    exe = Path(sys.executable).parent / "layerinf"
    cmd = [str(exe), "suspects", str(folder / "out"), "--source", str(data), "--text-column", "text",
           "--label-column", "label", *(["--text-pair-column", "text2"] if pair else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(folder / "layerinf.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def embeddings(texts: list[str], pairs: list[str] | None) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised), with transformers directly."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from layerinf.model import resolve_source

    path = resolve_source("minilm").path
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i:i + 64], pairs[i:i + 64] if pairs else None, padding=True, truncation=True,
                      max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy())
    return np.concatenate(out)


def cleanlab_rows(set_name: str, probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, name: str, cpu=None):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, probs)  # self-confidence: low = likely wrong
    issues = find_label_issues(labels, probs)
    return row(set_name, name, quality, mask, flagged=issues, cpu=cpu)


def bench_set(name: str, work: Path, redo_detection: bool = False) -> list[dict]:
    folder = work / name
    done = folder / "metrics.json"
    earlier = json.loads(done.read_text()) if done.is_file() else None
    if earlier is not None and not redo_detection:
        return earlier
    if earlier is not None:  # only the last stage (which ranking, how many rows) is redone; the folds are reused
        import shutil

        shutil.rmtree(folder / "out" / "suspects", ignore_errors=True)
    data, mask = build_set(name, folder)
    pair = SETS[name][0] == "MRPC"
    cpu_li = run_layerinf(data, folder, pair)
    if earlier is not None:  # the CPU-seconds stay those of the complete run
        cpu_li = earlier[0]["cpu_s"]
    table = pd.read_csv(folder / "out" / "suspects" / "suspects.csv", keep_default_na=False)
    table = table.sort_values("source_idx").reset_index(drop=True)
    summary = json.loads((folder / "out" / "suspects" / "summary.json").read_text())
    chosen = summary.get("detection", {}).get("ranking", "influence")
    rows = [row(name, f"layerinf default ({chosen})", table["score"], mask, flagged=table["suspect"].to_numpy(bool),
                cpu=round(cpu_li, 1))]
    for col in sorted(c for c in table.columns if c.startswith("score:")):
        rows.append(row(name, f"layerinf {col[6:]}", table[col], mask))
    rows.append(row(name, "model's own p(given), in-sample", table["probability"], mask))
    src = pd.read_csv(data, keep_default_na=False)
    labels = pd.Categorical(src["label"], categories=sorted(src["label"].unique())).codes.astype(int)
    t0 = cpu_now()
    emb = embeddings(src["text"].astype(str).tolist(), src["text2"].astype(str).tolist() if pair else None)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    probs = cross_val_predict(LogisticRegression(max_iter=1000), emb, labels,
                              cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    rows.append(cleanlab_rows(name, probs, labels, mask, "cleanlab on sentence embeddings",
                              cpu=round(cpu_now() - t0, 1)))
    ranked = np.load(folder / "out" / "suspects" / "pred_probs.npy")  # row i = the table's `index` i
    oos = np.full((len(src), ranked.shape[1]), np.nan)
    oos[table.sort_values("index")["source_idx"].to_numpy()] = ranked
    rows.append(cleanlab_rows(name, oos, labels, mask, "cleanlab on layerinf's out-of-sample pred_probs"))
    from cleanlab.rank import get_label_quality_scores

    emb_quality = get_label_quality_scores(labels, probs)
    lo, hi = boot_auc(table["score"].to_numpy(np.float64), mask, base=emb_quality)
    rows[0]["note"] = f"default − cleanlab(embeddings): {rows[0]['roc_auc'] - rows[-2]['roc_auc']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    health = summary.get("health") or []
    if health:
        rows[0]["note"] += f"; {len(health)} fold(s) did not learn"
    done.write_text(json.dumps(rows, indent=1))
    return rows


# ------------------------------------------------------------------------------------------------- output

def markdown(df: pd.DataFrame) -> str:
    lines = ["| set | ranking | ROC-AUC [95 % CI] | NDR@30 | flagged / true | precision | recall | CPU-s | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples(index=False):
        cpu = "" if pd.isna(r.cpu_s) else f"{r.cpu_s:.0f}"
        lines.append(f"| {r.set} | {r.ranking} | {r.roc_auc:.3f} [{r.auc_lo:.3f}, {r.auc_hi:.3f}] | {r.ndr_30:.3f} | "
                     f"{r.flagged} / {r.true_flips} | {r.precision:.3f} | {r.recall:.3f} | {cpu} | "
                     f"{'' if pd.isna(r.note) else r.note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated set names")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "detection")
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "detection.csv")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "detection.md")
    ap.add_argument("--redo-detection", action="store_true",
                    help="a finished set: redo only its last stage (after a change to how the ranking is chosen or "
                    "how many rows are flagged), reusing its fold models; its CPU-seconds stay the complete run's")
    args = ap.parse_args(argv)
    if not GLUE.is_dir():
        print(f"bench_detection: {GLUE} is absent (the GLUE TSVs); nothing to do", file=sys.stderr)
        return 2
    all_rows = []
    for name in [s for s in args.sets.split(",") if s]:
        t0 = time.time()
        rows = bench_set(name, args.work, args.redo_detection)
        print(f"{name}: done in {time.time() - t0:.0f} s", flush=True)
        print(markdown(pd.DataFrame(rows)), flush=True)
        all_rows += rows
    today = dt.date.today().isoformat()
    df = pd.DataFrame(all_rows).assign(date=today)
    if args.csv.is_file():  # the sets not run this time keep their earlier rows (and the date they were measured)
        old = pd.read_csv(args.csv, keep_default_na=False, na_values=[""])
        if "date" not in old.columns:
            old["date"] = FIRST_MEASURED
        old = old[~old["set"].isin(df["set"])]
        df = pd.concat([old, df], ignore_index=True)
        df["_order"] = df["set"].map({name: i for i, name in enumerate(SETS)}).fillna(len(SETS))
        df = df.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.csv, index=False, float_format="%.4f")
    dates = ", ".join(f"{s_} {d}" for s_, d in df.drop_duplicates("set")[["set", "date"]].itertuples(index=False))
    stamp = (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}; "
             f"measured with `python bench/bench_detection.py`, one set at a time, per set: "
             f"{dates}.")
    block = f"<!-- bench:start -->\n{stamp}\n\n{markdown(df)}\n<!-- bench:end -->"
    text = args.docs.read_text() if args.docs.is_file() else "# Detection\n\n<!-- bench:start -->\n<!-- bench:end -->\n"
    head, rest = text.split("<!-- bench:start -->", 1)
    args.docs.write_text(head + block + rest.split("<!-- bench:end -->", 1)[1])
    print(f"→ {args.csv}, {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
