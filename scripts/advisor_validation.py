"""Validate the noise-probe advisor on data with KNOWN noise that the advisor does not see (issues #15, #22).

For each dataset (the embedded demo and GLUE SST-2, MRPC, CoLA) a training set of ``N_TRAIN`` rows gets 20 % real
label flips (data seed 0); its noisy labels are written to a JSONL file and handed to ``advise`` as "the user's
data" (the mask stays here). The advisor (its defaults: the small-data recipe, 3 cross-fitted probes) plants its
own probe flips on top, picks a configuration and estimates the noise rate. Then "target" runs fine-tune, with the
same recipe, on the user's data as given (seed 0) and on **held-out seeds** 1 and 2 (another sample of rows, other
flips, another training seed: data the advisor never saw), score every configuration, and we compare, on the TRUE
flips: NDR@30 of the advisor's pick, of the paper's default (DataInf, second attention group, Vote), of the best
configuration in hindsight, of the model's own loss and of random (0.30). Every fit's health is recorded; a dataset
whose models did not learn (the probes' cross-fitted accuracy, or a target run's, not above the majority class) is
listed apart and left out of the summary. A second study runs SST-2 at true noise rates 5, 10, 20 and 40 %:
Vote's κ from the advisor's noise estimate (κ = clip(f × rate, 0.05, 0.5)) against the fixed κ = 0.30, for the
default configuration, and a grid of factors f.

Writes ``OUT/results.json`` after every step and the tables into docs/advisor.md (between the markers
``<!-- validation:begin -->`` and ``<!-- validation:end -->``), so a run cut short keeps what finished.

    .venv/bin/python scripts/advisor_validation.py [--out runs/advisor-validation] [--glue ../shared/data/glue]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(model="minilm", max_length=64, progress=False)  # + the advisor's defaults: the small-data recipe
PAIR_MAX_LENGTH = 128  # sentence pairs (MRPC)
N_TRAIN, N_DEV, TRUE_RATE = 500, 200, 0.20
PROBE_RATE, PROBES, NOISE_FOLDS = 0.10, 3, None  # None: the estimate from the probes' own folds (the default)
KAPPA_NOISE_FOLDS = 2  # the κ study's estimate (no probes there): separate fold runs
TARGET_SEEDS = (0, 1, 2)  # 0: the data the advisor saw; 1, 2: held-out seeds
KAPPA_RATES = (0.05, 0.10, 0.20, 0.40)
KAPPA_GRID = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50)
FACTORS = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
BEGIN, END = "<!-- validation:begin -->", "<!-- validation:end -->"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def user_data(source: str, rate: float, folder: Path, seed: int = 0):
    """A noisy 'user' training file + clean dev file; returns (train file, dev file, hidden mask, prepared)."""
    from layerinf.data import prepare
    from layerinf.workflows.probe_data import write_source

    prepared = prepare(source, max_train=N_TRAIN, max_dev=N_DEV, noise_rate=rate, seed=seed)
    train = write_source(prepared, None, folder / "user_train.jsonl")
    dev = write_source(prepared, None, folder / "user_dev.jsonl", "dev")
    return train, dev, prepared.train["noisy"].to_numpy(bool), prepared


def file_options(prepared, train: Path, dev: Path, seed: int = 0) -> dict:
    pair = bool(prepared.train["text_pair"].notna().any())
    return dict(source=str(train), dev_source=str(dev), text_column="text", label_column="label",
                text_pair_column="text_pair" if pair else None, label_names=list(prepared.label_names),
                max_train=None, max_dev=None, seed=seed)


def max_length(prepared) -> int:
    return PAIR_MAX_LENGTH if prepared.train["text_pair"].notna().any() else SETTINGS["max_length"]


def hidden_mask(run, mask: np.ndarray) -> np.ndarray:
    """The hidden mask in the order of a run's training split (rows map back by source_idx)."""
    from layerinf.stages.data import load_data

    src = load_data(run).train["source_idx"].to_numpy()
    return mask[src]


def target_run(folder: Path, opts: dict, score_opts: dict, include_we: bool = True, length: int | None = None):
    """Fine-tune on the user's data as given, with the advisor's small-data recipe, and score (no mask: the scores
    are compared with it here)."""
    from layerinf.config import DataConfig, GradsConfig, ModelConfig, ScoreConfig, TrainConfig
    from layerinf.stages.data import DataStage
    from layerinf.stages.finetune import FinetuneStage
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.score import ScoreStage
    from layerinf.store.rundir import RunDir
    from layerinf.workflows.defaults import SMALL_DATA_RECIPE, small_data_recipe

    run = RunDir(folder)
    with run.locked():
        DataStage(run).run(DataConfig(**{k: v for k, v in opts.items()}, noise_rate=0.0), progress=False)
        given = {k: SETTINGS[k] for k in ("epochs", "min_steps") if k in SETTINGS}  # (--smoke)
        train = small_data_recipe(TrainConfig(**{**SMALL_DATA_RECIPE, **given}), SETTINGS["model"], {}, False)
        FinetuneStage(run).run(ModelConfig(name=SETTINGS["model"], max_length=length or SETTINGS["max_length"]),
                               train, progress=False)
        GradsStage(run).run(GradsConfig(include_we=include_we), progress=False)
        ScoreStage(run).run(ScoreConfig(**score_opts), progress=False)
    return run


def target_health(run) -> dict:
    """Did a target run's model learn? (its fine-tuning's health check: influence-set accuracy vs majority class)"""
    from layerinf.store.layout import FINETUNE

    health = (run.stage_info(FINETUNE).get("summary", {}).get("health") or {})
    infl = health.get("infl") or {}
    return {"learned": bool(health.get("learned")), "accuracy": infl.get("accuracy"), "majority": infl.get("majority")}


def seed_entry(table: pd.DataFrame, pick: str, default_key: str) -> dict:
    """The pick's and the default's NDR@30 on one target run's true flips, the pick's rank, the best, the loss."""
    influence = table[~table["key"].str.contains("/-/")].reset_index(drop=True)
    baselines = table[table["key"].str.contains("/-/")].set_index("key")["ndr_30"]
    return {"pick_true": float(influence.loc[influence["key"] == pick, "ndr_30"].iloc[0]),
            "pick_rank": int(influence.index[influence["key"] == pick][0]) + 1, "n_configs": len(influence),
            "default_true": float(influence.loc[influence["key"] == default_key, "ndr_30"].iloc[0]),
            "best_key": influence.loc[0, "key"], "best_true": float(influence.loc[0, "ndr_30"]),
            "baselines_true": {k: float(v) for k, v in baselines.items()}}


def true_ndr(run, mask: np.ndarray) -> pd.DataFrame:
    from layerinf.evaluation import detection
    from layerinf.stages.score import ScoreStage

    agg = ScoreStage(run).aggregated()
    rows = [{"key": c, "ndr_30": detection.ndr_at(agg[c].to_numpy(), mask, 0.30),
             "auc_ndr": detection.auc_ndr(agg[c].to_numpy(), mask)} for c in agg.columns if c != "idx"]
    return pd.DataFrame(rows).sort_values("ndr_30", ascending=False, kind="stable").reset_index(drop=True)


def vote_at(run, group: str, kappa: float, mask: np.ndarray) -> dict:
    """DataInf / group / Vote re-aggregated at ``kappa`` from the stored module matrices (cheap)."""
    from layerinf.config import ScoreConfig
    from layerinf.evaluation import detection
    from layerinf.influence.registry import resolve_groups
    from layerinf.stages.grads import GradsStage
    from layerinf.stages.score import ModuleScores, aggregate_group, method_applies
    from layerinf.store.layout import SCORES

    grads = GradsStage(run)
    train, infl = grads.load()
    members = resolve_groups([group], train.specs, grads.num_layers)[group]
    cfg = ScoreConfig(vote_kappa=kappa)
    store = ModuleScores("datainf", run.stage_path(SCORES))
    by_name = {s.name: s for s in train.specs}
    mats = [store.load(m) for m in members if method_applies("datainf", by_name[m], cfg) and store.has(m)]
    correct = infl.logits.argmax(1) == infl.labels
    s = aggregate_group(mats, "vote", correct, cfg)
    return {"ndr_30": detection.ndr_at(s, mask, 0.30), "auc_ndr": detection.auc_ndr(s, mask)}


# ------------------------------------------------------------------------------------------- markdown


def _p(v, pct=False):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def _learned(r: dict) -> bool:
    """Every model behind a dataset's row learned: the probes (cross-fitted accuracy above the majority class, the
    advisor's trust guard) and every target run (its health check)."""
    seeds = r.get("seeds", {})
    return bool(r.get("trusted")) and bool(seeds) and all(v.get("learned") for v in seeds.values())


def _mean_ci(values) -> str:
    """Mean and Student-t 95 % interval of paired differences (n/a when fewer than 2)."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) < 2:
        return f"{v.mean():+.3f}" if len(v) else "n/a"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():+.3f} [{v.mean() - half:+.3f}, {v.mean() + half:+.3f}]"


def tables(res: dict) -> str:
    out = [BEGIN, "", f"_Written by `scripts/advisor_validation.py` on {time.strftime('%Y-%m-%d %H:%M')}; "
           f"MiniLM, {N_TRAIN} training / {N_DEV} dev examples, max_length {SETTINGS['max_length']} "
           f"({PAIR_MAX_LENGTH} for pairs), the small-data recipe (3 epochs, at least 150 steps of batch 32, lr 1e-3), "
           f"{PROBES} cross-fitted probes at {PROBE_RATE:.0%} (the advisor's defaults), true noise {TRUE_RATE:.0%} "
           f"hidden from the advisor; target runs on the advisor's data (seed 0) and on held-out seeds "
           f"{', '.join(str(t) for t in TARGET_SEEDS[1:])}; 2 CPU cores._", ""]
    rows = res.get("datasets", {})
    learned = {n: r for n, r in rows.items() if _learned(r)}
    if rows:
        out += ["**Did the models learn?** The probes' cross-fitted accuracy against the given (noisy) labels, and "
                "each target run's influence-set accuracy, against the majority class. Only datasets where every "
                "model learned are in the comparison below.", "",
                "| data | probes' cross-fitted accuracy | majority class | target runs: accuracy (majority), learned | in the comparison |",
                "| --- | --- | --- | --- | --- |"]
        for name, r in rows.items():
            seeds = r.get("seeds", {})
            tgt = "; ".join(f"seed {k}: {_p(v.get('accuracy'), True)} ({_p(v.get('majority'), True)}) "
                            f"{'yes' if v.get('learned') else 'no'}" for k, v in seeds.items()) or "n/a"
            out.append(f"| {name} | {_p(r['noise'].get('accuracy'), True)} | {_p(r.get('majority'), True)} | {tgt} | "
                       f"{'yes' if name in learned else '**no** (did not learn)'} |")
        out.append("")
    if learned:
        out += ["**NDR@30 on the TRUE (hidden) flips** — the advisor's pick vs the paper's default, the best "
                "configuration in hindsight, the model's own loss and random, on the data the advisor saw (seed 0). "
                "Planted = the pick's NDR@30 on the advisor's own planted flips (mean [95 % t-interval over the "
                "probes]). The pick's rank is among all configurations on the true flips. The last column: pick − "
                "default on the held-out seeds (other rows, other flips, another training seed).", "",
                "| data | advisor's pick | planted NDR@30 | pick (true) | pick rank | default (true) | "
                "best in hindsight (true) | model's own loss (true) | random | ρ planted~true | held-out: pick − default | minutes |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in learned.items():
            pl = r["planted"]
            ci = f" [{_p(pl['low'])}, {_p(pl['high'])}]" if pl.get("low") is not None else ""
            held = ", ".join(f"{v['pick_true'] - v['default_true']:+.3f}" for k, v in r.get("seeds", {}).items()
                             if k != "0") or "n/a"
            out.append(f"| {name} | {r['pick']} | {_p(pl['mean'])}{ci} | **{_p(r['pick_true'])}** | "
                       f"{r['pick_rank']}/{r['n_configs']} | {_p(r['default_true'])} | "
                       f"{_p(r['best_true'])} ({r['best_key']}) | {_p(r.get('baselines_true', {}).get('loss/-/-'))} | "
                       f"0.300 | {_p(r.get('spearman'))} | {held} | {r['minutes']:.1f} |")
        same = [r["pick_true"] - r["default_true"] for r in learned.values()]
        held = [v["pick_true"] - v["default_true"] for r in learned.values() for k, v in r.get("seeds", {}).items()
                if k != "0"]
        loss = [v["pick_true"] - v["baselines_true"].get("loss/-/-", np.nan) for r in learned.values()
                for v in r.get("seeds", {}).values()]
        out += ["", f"Pick − default on the true flips, the advisor's own data: {', '.join(f'{w:+.3f}' for w in same)} "
                f"(mean {np.mean(same):+.3f} over {len(same)} dataset(s)); held-out seeds: "
                f"{_mean_ci(held)} over {len(held)} run(s). Pick − the model's own loss, every target run: "
                f"{_mean_ci(loss)} over {len(loss)} run(s).", ""]
    if rows:
        out += ["**Noise-rate estimate** (confident learning on cross-fitted probabilities; true rate 20 %). The "
                "advisor's estimate comes from its probes' held-out folds (models that also trained on the planted "
                "flips); the last column is the same estimate from 2 separate fold runs on the given labels alone "
                "(`--noise-folds 2`, two more fine-tunings), to show what sharing the fits costs in accuracy. The "
                "estimate sets κ = clip(1.5 × rate, 0.05, 0.5) only when the cross-fitted accuracy beats the "
                "majority class by 5 points; otherwise the advisor keeps κ = 0.30:", "",
                "| data | estimated rate [95 % bootstrap CI] | cross-fitted accuracy vs given labels | majority class | "
                "trusted | recommended κ | separate folds: rate (accuracy) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in rows.items():
            nz, sep = r["noise"], r.get("noise_separate") or {}
            sep_text = (f"{_p(sep['rate'], True)} [{_p(sep['low'], True)}, {_p(sep['high'], True)}] "
                        f"({_p(sep.get('accuracy'), True)})" if sep else "n/a")
            out.append(f"| {name} | {_p(nz['rate'], True)} [{_p(nz['low'], True)}, {_p(nz['high'], True)}] | "
                       f"{_p(nz['accuracy'], True)} | {_p(r.get('majority'), True)} | "
                       f"{'yes' if r.get('trusted') else 'no' if 'trusted' in r else 'n/a'} | {r['kappa']:.2f} | "
                       f"{sep_text} |")
        out.append("")
    kap = res.get("kappa", {})
    if kap:
        out += ["**Adaptive κ vs fixed κ = 0.30** (SST-2, DataInf / default group / Vote; NDR@30 and AUC-NDR on the "
                "true flips; the rate is the advisor's estimate):", "",
                "| true rate | estimated rate | cross-fitted acc. (majority) | adaptive κ | NDR@30 adaptive | "
                "NDR@30 κ=0.30 | AUC-NDR adaptive | AUC-NDR κ=0.30 | κ the advisor uses (guard) | "
                "best κ on the grid (NDR@30) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for rate, r in sorted(kap.items(), key=lambda kv: float(kv[0])):
            grid = r["grid"]
            best = max(grid, key=lambda k: (grid[k]["ndr_30"], grid[k]["auc_ndr"]))
            acc = f"{_p(r.get('accuracy'), True)} ({_p(r.get('majority'), True)})" if "accuracy" in r else "n/a"
            used = "n/a" if "trusted" not in r else (f"{r['kappa']:.2f} (trusted)" if r["trusted"] else
                                                     "0.30 (estimate not trusted)")
            out.append(f"| {float(rate):.0%} | {_p(r['est'], True)} | {acc} | {r['kappa']:.2f} | "
                       f"{_p(r['adaptive']['ndr_30'])} | {_p(r['fixed']['ndr_30'])} | {_p(r['adaptive']['auc_ndr'])} | "
                       f"{_p(r['fixed']['auc_ndr'])} | {used} | {float(best):.2f} ({_p(grid[best]['ndr_30'])}) |")
        if res.get("factors"):
            out += ["", "Factor f of κ = clip(f × estimated rate, 0.05, 0.5), mean over the rates above "
                    "(in-sample: the same runs choose and judge the factor):", "",
                    "| f | mean NDR@30 | mean AUC-NDR |", "| --- | --- | --- |"]
            for f, v in res["factors"].items():
                out.append(f"| {float(f):g} | {_p(v['ndr_30'])} | {_p(v['auc_ndr'])} |")
        out.append("")
    missing = res.get("missing", [])
    if missing:
        out += [f"Rows not run (time): {', '.join(missing)}.", ""]
    out.append(END)
    return "\n".join(out)


def write_docs(res: dict, doc: Path) -> None:
    text = doc.read_text(encoding="utf-8") if doc.is_file() else f"# The noise-probe advisor\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    a, b = text.index(BEGIN), text.index(END) + len(END)
    doc.write_text(text[:a] + tables(res) + text[b:], encoding="utf-8")


def kappa_entry(run, group: str, mask: np.ndarray, est: float, noise_dir: Path | None = None) -> dict:
    from layerinf.evaluation.noise_rate import adaptive_kappa

    kappa = adaptive_kappa(est)
    grid = {f"{k:.2f}": vote_at(run, group, k, mask) for k in sorted(set(KAPPA_GRID) | {kappa})}
    return {"true": float(mask.mean()), "est": est, "kappa": kappa, "adaptive": grid[f"{kappa:.2f}"],
            "fixed": grid["0.30"], "grid": grid, **trust(noise_dir)}


def planted_vs_true(advise_dir: Path, true_table: list[dict]) -> dict:
    """Spearman ρ between the configurations' mean planted NDR@30 and their NDR@30 on the true flips."""
    from scipy.stats import spearmanr

    planted = pd.read_csv(advise_dir / "advise" / "table.csv")
    planted["key"] = planted["method"] + "/" + planted["group"] + "/" + planted["aggregator"]
    both = planted.merge(pd.DataFrame(true_table), on="key", suffixes=("_planted", "_true"))
    both = both[both["kind"] == "influence"]
    rho, p = spearmanr(both["ndr_30_mean"], both["ndr_30"])
    return {"spearman": float(rho), "spearman_p": float(p), "spearman_n": int(len(both))}


def trust(noise_dir: Path | None) -> dict:
    """Whether the advisor's guard (report.advise.noise_trusted) lets this estimate set κ, from its estimate.json."""
    from layerinf.evaluation.noise_rate import NoiseEstimate
    from layerinf.workflows.advise_page import noise_trusted

    path = None if noise_dir is None else noise_dir / "noise" / "estimate.json"
    if path is None or not path.is_file():
        return {}
    est = NoiseEstimate(**json.loads(path.read_text()))
    return {"trusted": noise_trusted(est), "accuracy": est.extra.get("accuracy_vs_given_labels"),
            "majority": est.extra.get("majority_share")}


def fit_factors(kap: dict, run_for: dict, group: str) -> dict:
    from layerinf.evaluation.noise_rate import adaptive_kappa

    out = {}
    for f in FACTORS:
        vals = [vote_at(run_for[r][0], group, adaptive_kappa(kap[r]["est"], f), run_for[r][1]) for r in kap]
        out[f"{f:g}"] = {m: float(np.mean([v[m] for v in vals])) for m in ("ndr_30", "auc_ndr")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "advisor-validation")
    ap.add_argument("--glue", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "advisor.md")
    ap.add_argument("--budget-min", type=float, default=180.0, help="skip the remaining rows after this many minutes")
    ap.add_argument("--smoke", action="store_true", help="tiny settings, two rows (checks the script, not the advisor)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the docs tables from OUT/results.json")
    args = ap.parse_args(argv)
    if args.render_only:
        res = json.loads((args.out / "results.json").read_text())
        for name, r in res.get("datasets", {}).items():
            r.update(planted_vs_true(args.out / name / "advise", r["true_table"]))
            r.update(trust(args.out / name / "advise"))
        for rate, r in res.get("kappa", {}).items():
            folder = args.out / ("SST-2" if abs(float(rate) - TRUE_RATE) < 1e-9 else f"SST-2-noise{round(float(rate) * 100):02d}")
            r.update(trust(folder / "advise"))
        (args.out / "results.json").write_text(json.dumps(res, indent=1))
        write_docs(res, args.doc)
        return 0
    global N_TRAIN, N_DEV, KAPPA_RATES
    if args.smoke:
        N_TRAIN, N_DEV, KAPPA_RATES = 160, 40, (0.2, 0.4)
        SETTINGS.update(max_length=24, epochs=1, min_steps=None)

    import torch

    torch.set_num_threads(2)
    from layerinf.model import num_layers_of
    from layerinf.config import ModelConfig
    from layerinf.stages.rank import default_group
    from layerinf.workflows.advise import advise, estimate_noise

    group = default_group(num_layers_of(ModelConfig(name=SETTINGS["model"])))
    default_key = f"datainf/{group}/vote"
    args.out.mkdir(parents=True, exist_ok=True)
    res_file = args.out / "results.json"
    res = json.loads(res_file.read_text()) if res_file.is_file() else {}
    res.setdefault("datasets", {}), res.setdefault("kappa", {})
    t_start = time.time()
    datasets = [("demo", "demo"), ("SST-2", str(args.glue / "SST-2")), ("MRPC", str(args.glue / "MRPC")),
                ("CoLA", str(args.glue / "CoLA"))]
    if args.smoke:
        datasets = datasets[1:2]
    plan = [("dataset", *d) for d in datasets[:2]] + [("kappa", r) for r in KAPPA_RATES if r != TRUE_RATE] + \
        [("dataset", *d) for d in datasets[2:]]
    run_for: dict = {}

    def save():
        res["missing"] = [p[1] if p[0] == "dataset" else f"κ at {p[1]:.0%}" for p in plan
                          if (p[0] == "dataset" and p[1] not in res["datasets"])
                          or (p[0] == "kappa" and f"{p[1]:.2f}" not in res["kappa"])]
        res_file.write_text(json.dumps(res, indent=1))
        write_docs(res, args.doc)

    for step in plan:
        if (time.time() - t_start) / 60 > args.budget_min:
            log(f"time budget spent: skipping {step}")
            continue
        t0 = time.time()
        if step[0] == "dataset":
            _, name, source = step
            folder = args.out / name
            train, dev, mask, prepared = user_data(source, TRUE_RATE, folder)
            opts = file_options(prepared, train, dev)
            length = max_length(prepared)
            log(f"{name}: advise ({int(mask.sum())} hidden flips of {len(mask)})")
            adv = advise(folder / "advise", probe_rate=PROBE_RATE, probes=PROBES, noise_folds=NOISE_FOLDS,
                         echo=log, **opts, **{**SETTINGS, "max_length": length})
            pick, rec = adv.best["key"], adv.recommendation
            nz = rec["noise"]
            log(f"{name}: the noise estimate from separate fold runs (for comparison)")
            sep = estimate_noise(folder / "advise-separate", noise_folds=KAPPA_NOISE_FOLDS, **opts,
                                 **{**SETTINGS, "max_length": length})
            targets = {}
            for seed in TARGET_SEEDS:
                log(f"{name}: target run, seed {seed}")
                where = folder / ("target" if seed == 0 else f"target-seed{seed}")
                if seed == 0:
                    t_opts, t_mask = opts, mask
                else:
                    t_train, t_dev, t_mask, t_prep = user_data(source, TRUE_RATE, where / "user", seed)
                    t_opts = file_options(t_prep, t_train, t_dev, seed)
                run = target_run(where, t_opts, {}, length=length)
                truth = hidden_mask(run, t_mask)
                table = true_ndr(run, truth)
                targets[seed] = (run, truth, table)
            per_seed = {str(seed): {**seed_entry(table, pick, default_key), **target_health(run)}
                        for seed, (run, truth, table) in targets.items()}
            run, truth, table = targets[0]
            res["datasets"][name] = {
                "pick": pick, "planted": rec["best"]["ndr_30"], **per_seed["0"], "seeds": per_seed,
                "noise": {"rate": nz["rate"], "low": nz["low"], "high": nz["high"],
                          "accuracy": nz["extra"]["accuracy_vs_given_labels"]},
                "noise_separate": {"rate": sep.rate, "low": sep.low, "high": sep.high,
                                   "accuracy": sep.extra.get("accuracy_vs_given_labels")},
                "kappa": rec["vote_kappa"], "minutes": (time.time() - t0) / 60, "max_length": length,
                "true_table": table.to_dict("records"),
            }
            res["datasets"][name].update(planted_vs_true(folder / "advise", res["datasets"][name]["true_table"]))
            res["datasets"][name].update(trust(folder / "advise"))
            if name == "SST-2":
                res["kappa"][f"{TRUE_RATE:.2f}"] = kappa_entry(run, group, truth, nz["rate"], folder / "advise")
                run_for[f"{TRUE_RATE:.2f}"] = (run, truth)
            r = res["datasets"][name]
            held = ", ".join(f"{v['pick_true'] - v['default_true']:+.3f}" for k, v in per_seed.items() if k != "0")
            log(f"{name}: pick {pick} true NDR@30 {r['pick_true']:.3f}, default {r['default_true']:.3f}, best "
                f"{r['best_true']:.3f}; held-out seeds: pick − default {held} ({(time.time() - t0) / 60:.1f} min)")
        else:
            rate = step[1]
            folder = args.out / f"SST-2-noise{int(rate * 100):02d}"
            train, dev, mask, prepared = user_data(str(args.glue / "SST-2"), rate, folder)
            opts = file_options(prepared, train, dev)
            log(f"κ study at {rate:.0%}: noise estimate")
            est = estimate_noise(folder / "advise", noise_folds=KAPPA_NOISE_FOLDS, **opts, **SETTINGS)
            log(f"κ study at {rate:.0%}: estimated {est}; target run")
            run = target_run(folder / "target", opts, {"methods": ["datainf"], "groups": [group],
                                                       "aggregators": ["vote"]}, include_we=False)
            truth = hidden_mask(run, mask)
            res["kappa"][f"{rate:.2f}"] = kappa_entry(run, group, truth, est.rate, folder / "advise")
            res["kappa"][f"{rate:.2f}"]["minutes"] = (time.time() - t0) / 60
            run_for[f"{rate:.2f}"] = (run, truth)
            log(f"κ study at {rate:.0%}: {res['kappa'][f'{rate:.2f}']['adaptive']} vs fixed "
                f"{res['kappa'][f'{rate:.2f}']['fixed']}")
        if len(run_for) >= 2:
            res["factors"] = fit_factors({r: res["kappa"][r] for r in run_for}, run_for, group)
        save()
    save()
    log(f"done in {(time.time() - t_start) / 60:.1f} min → {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
