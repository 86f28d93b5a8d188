"""The paper's claims (spec §10, issue #22), tested on a sweep's results: one row per claim with the paper's
number, ours with a 95 % bootstrap interval over runs, n, and a verdict decided from the interval alone.

Inputs are the tables the report already loads: the per-run results (``best_accuracy``, ``ndr_30``,
``cancellation`` per (method, group, aggregator), baselines included) and each run's layer-wise ``modules``
score frame. A *run* is one unit of the sweep (model, task, seed and noise kind); repeated retrainings are
averaged first; runs whose no-filtering retraining never beat the majority class (did not learn) are left out,
and the table says how many.

**Interval.** Each claim's statistic is recomputed on ``B`` resamples of the runs, drawn with replacement
(seeded); the 95 % interval is the 2.5 / 97.5 percentiles. **Verdict rule** (stated in each row):

* a claim "X > t" *holds* when the interval lies above ``t``; it *does not hold* when the interval lies below
  ``t + margin`` (an effect of at least the margin in the claimed direction is ruled out); otherwise it is
  *inconclusive at this power*;
* a claim "X lies in [a, b]" holds when the interval lies inside, does not hold when it lies wholly outside;
* fewer than ``MIN_RUNS`` runs, or no input for the claim: *not measured*, with the reason.

:func:`claims_table` computes the table from frames (so a test can feed it synthetic numbers);
:func:`claims_from_dir` reads one or more sweeps (pooled); :mod:`.claims_page` writes the report's ``claims.html``
with CSV tables and figures, and ``docs/claims.md`` with the command and time at its top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from layerinf.reporting.common import BASELINES, CONFIG, attention_groups, fmt, paper_groups
from layerinf.reporting.claims_inputs import load_study_inputs, run_ids

B_DEFAULT = 1000
LEVEL = 0.95
MIN_RUNS = 2  # fewer runs: no interval, "not measured"
HOLDS, NOT_HOLDS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive at this power", "not measured"
CLAIM_COLUMNS = ["claim", "statement", "paper", "estimate", "ci_low", "ci_high", "ours", "n_runs", "n_tasks",
                 "n_seeds", "n", "verdict", "rule", "detail"]
ADVISE_PICKS = "advise_picks.csv"  # optional, in the sweep folder: task, seed, config (method/group/aggregator)
CL_METHODS = ("confident_learning", "confidence")  # a confident-learning ranking, when a run scored one


# ------------------------------------------------------------------------------------------------ per-run data


@dataclass
class Study:
    """The per-run inputs of the claims, one entry per healthy run (in the same order everywhere)."""

    runs: list[str]  # run names (run_ids)
    tasks: list[str]
    seeds: list[str]
    acc: pd.DataFrame  # configurations (MultiIndex method, group, aggregator) × runs: best accuracy
    ndr: pd.DataFrame  # the same, NDR@30
    canc: pd.DataFrame  # the same, cancellation
    modules: dict[int, pd.Series]  # run position → mean NDR@30 per module kind
    advise: dict[int, tuple] | None  # run position → advise's pick (method, group, aggregator)
    excluded: list[str]  # runs left out (did not learn)



def _per_run(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per (run, configuration), repeats averaged; runs whose ``none`` retraining collapsed left out."""
    df = results.copy()
    df["_run"] = run_ids(df)
    excluded: list[str] = []
    if "collapsed" in df.columns:
        base = df[df["method"] == "none"].groupby("_run")["collapsed"].all()
        bad = set(base[base].index)
        excluded = sorted(bad)
        df = df[~df["_run"].isin(bad)]
    num = ["best_accuracy", "ndr_30", "cancellation"]
    for c in num:
        df[c] = pd.to_numeric(df.get(c, np.nan), errors="coerce")
    keep = ["_run", "model", "task", "seed", "kind", *CONFIG]
    out = df.groupby(keep, dropna=False, sort=False)[num].mean().reset_index()
    return out, excluded


def make_study(results: pd.DataFrame, modules: pd.DataFrame | None = None, advise: pd.DataFrame | None = None
               ) -> Study:
    """The claims' inputs from a results table (``load_results``; ``collapsed`` optional), the stacked
    ``modules`` frames (column ``_run``: the run's name, :func:`run_ids`) and advise's picks."""
    df, excluded = _per_run(results)
    runs = list(dict.fromkeys(df["_run"]))
    first = df.drop_duplicates("_run").set_index("_run")

    def wide(col: str) -> pd.DataFrame:
        w = df.pivot_table(index=CONFIG, columns="_run", values=col, aggfunc="mean", dropna=False)
        return w.reindex(columns=runs)

    mods: dict[int, pd.Series] = {}
    if modules is not None and len(modules):
        per = modules.groupby(["_run", "kind"])["ndr_30"].mean()
        for i, r in enumerate(runs):
            if r in per.index.get_level_values("_run"):
                mods[i] = per.loc[r]
    tasks = [str(first.loc[[r], "task"].iloc[0]) for r in runs]
    seeds = [str(first.loc[[r], "seed"].iloc[0]) for r in runs]
    picks = None
    if advise is not None and len(advise):
        picks = {}
        a = advise.astype(str)
        for i in range(len(runs)):
            hit = a[(a["task"] == tasks[i]) & (a["seed"] == seeds[i])]
            if len(hit):
                picks[i] = tuple(hit["config"].iloc[0].split("/"))
    return Study(runs=runs, tasks=tasks, seeds=seeds, acc=wide("best_accuracy"),
                 ndr=wide("ndr_30"), canc=wide("cancellation"), modules=mods, advise=picks, excluded=excluded)


# ------------------------------------------------------------------------------------------------ statistics


def _influence(frame: pd.DataFrame) -> pd.DataFrame:
    methods = frame.index.get_level_values("method")
    groups = frame.index.get_level_values("group")
    return frame[~methods.isin(BASELINES) & (groups != "-")]


class _Wins:
    """Win rates over any multiset of runs: per run, how many other pool configurations each one strictly beats
    (the pool: influence configurations present on every run); the win rate over runs ``cols`` is the sum over
    them / (|cols| × (pool − 1)), as ``statistics.win_rate`` computes it."""

    def __init__(self, acc: pd.DataFrame):
        pool = _influence(acc).dropna(how="any")
        self.index = list(pool.index)
        self.size = len(pool)
        self.beats = (pool.rank(axis=0, method="min") - 1.0).to_numpy(float) if len(pool) else np.zeros((0, 0))
        self.pos = {c: i for i, c in enumerate(self.index)}

    def rates(self, cols: np.ndarray) -> np.ndarray:
        return self.beats[:, cols].sum(axis=1) / (len(cols) * (self.size - 1))

    def rows(self, test: Callable[[tuple], bool]) -> np.ndarray:
        return np.array([i for i, c in enumerate(self.index) if test(c)], dtype=int)

    def series(self, cols: np.ndarray) -> pd.Series:
        if self.size < 2 or len(cols) == 0:
            return pd.Series(dtype=float)
        return pd.Series(self.rates(cols), index=pd.MultiIndex.from_tuples(self.index, names=CONFIG))


def paper_default(groups: Sequence[str]) -> tuple | None:
    """The paper's pick, DataInf · the second attention group · Vote (``02-03`` on MiniLM), when scored."""
    attn = attention_groups(groups)
    return ("datainf", attn[1], "vote") if len(attn) >= 2 else None


def _middle(groups: Sequence[str]) -> list[str]:
    attn = attention_groups(groups)
    return attn[1:-1] if len(attn) >= 3 else attn


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 5 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(stats.spearmanr(x, y)[0])


class _Rho:
    """Spearman ρ of a proxy and accuracy, pooled over the paper's groups and the given runs, per method, then
    the mean over methods (the report's Spearman table; DataInf × WE skipped, spec §7.3). Rows are looked up
    once, so that a bootstrap resample costs a few array slices."""

    def __init__(self, proxy: pd.DataFrame, acc: pd.DataFrame, aggregator: str | None):
        p = _influence(proxy)
        a = _influence(acc).reindex(p.index)
        keep = set(paper_groups(p.index.get_level_values("group")))
        self.parts = []
        for method in sorted(set(p.index.get_level_values("method"))):
            rows = [j for j, i in enumerate(p.index) if i[0] == method and i[1] in keep
                    and (aggregator is None or i[2] == aggregator) and not (method == "datainf" and i[1] == "WE")]
            if rows:
                self.parts.append((p.to_numpy(float)[rows], a.to_numpy(float)[rows]))

    def __call__(self, cols: np.ndarray) -> float:
        rhos = [_spearman(x[:, cols].ravel(), y[:, cols].ravel()) for x, y in self.parts]
        rhos = [r for r in rhos if np.isfinite(r)]
        return float(np.mean(rhos)) if rhos else float("nan")


def _row_mean(values: np.ndarray, cols: np.ndarray) -> float:
    v = values[cols]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


# ------------------------------------------------------------------------------------------------ the claims


@dataclass
class Claim:
    key: str
    statement: str
    paper: str
    stat: Callable[[np.ndarray], float] | None  # run positions (with repeats) → the statistic
    kind: str = "greater"  # greater: X > threshold; within: threshold ≤ X ≤ upper
    threshold: float = 0.0
    margin: float = 0.0
    upper: float = 0.0
    runs: np.ndarray | None = None  # the runs the statistic uses (default: all)
    reason: str = ""  # why not measured
    detail: str = ""
    fmt: str = "{:+.3f}"


def _claims(st: Study) -> list[Claim]:
    n = len(st.runs)
    every = np.arange(n)
    W = _Wins(st.acc)
    size = W.size
    groups = list(dict.fromkeys(st.acc.index.get_level_values("group")))
    pool_groups = {c[1] for c in W.index}
    aggs = set(st.acc.index.get_level_values("aggregator"))
    out: list[Claim] = []

    # 1. Vote vs Mean
    pairs = [(W.pos[(m, g, "vote")], W.pos[(m, g, "mean")]) for (m, g, a) in W.index
             if a == "vote" and (m, g, "mean") in W.pos]
    iv, im = (np.array([p[k] for p in pairs], dtype=int) for k in (0, 1))

    def vote_vs_mean(cols):
        wr = W.rates(cols)
        return float(np.mean(wr[iv] - wr[im]))
    c = Claim("1", "Vote raises the win rate over Mean (mean over the (method, group) pairs of Vote − Mean)",
              "0.71 → 0.84 (best config, Mistral-7B)", vote_vs_mean if pairs and size >= 2 else None,
              margin=0.05, reason="needs Mean and Vote configurations retrained on every run")
    if c.stat is not None:
        agg = W.series(every).groupby(level="aggregator")
        c.detail = f"best Mean {fmt(agg.max().get('mean'))}, best Vote {fmt(agg.max().get('vote'))}; pool {size}"
    out.append(c)

    # 2a. middle attention groups vs WE and CL; 2b. CL worst
    middle = _middle(groups)
    ends = [g for g in ("WE", "CL") if g in pool_groups]
    by_group = {g: W.rows(lambda c, g=g: c[1] == g) for g in pool_groups}

    def group_rates(cols) -> dict[str, float]:
        wr = W.rates(cols)
        return {g: float(wr[r].mean()) for g, r in by_group.items()}

    def middle_vs_ends(cols):
        by = group_rates(cols)
        return float(np.mean([by[g] for g in middle]) - max(by[g] for g in ends))
    ok = size >= 2 and middle and ends and set(middle) <= pool_groups
    c = Claim("2a", f"The middle attention groups ({', '.join(middle) or '–'}) beat WE and CL (their mean win rate "
              "− the better of WE, CL)", "attention groups 1–2 often top-ranked", middle_vs_ends if ok else None,
              margin=0.05, reason="needs ≥ 1 attention group and WE or CL retrained on every run")
    out.append(c)
    others = [g for g in paper_groups(pool_groups) if g != "CL"]

    def cl_worst(cols):
        by = group_rates(cols)
        return float(min(by[g] for g in others) - by["CL"])
    c = Claim("2b", "CL is the worst group (the worst other group's mean win rate − CL's)",
              "CL worst for every model; TracIn-CL win rate 0.17–0.21",
              cl_worst if size >= 2 and "CL" in ends and others else None, margin=0.05,
              reason="needs CL and another group retrained on every run")
    if c.stat is not None:
        tcl = W.rows(lambda c: c[0] == "tracin" and c[1] == "CL")
        c.detail = f"TracIn-CL win rate {fmt(float(W.rates(every)[tcl].mean()))}" if len(tcl) else ""
    out.append(c)

    # 3. NDR@30 predicts accuracy, more under Vote than Mean
    has_rho = ({"vote", "mean"} <= aggs and _influence(st.ndr).notna().any().any()
               and _influence(st.acc).notna().any().any())
    rho_vote, rho_mean = (_Rho(st.ndr, st.acc, a) if has_rho else None for a in ("vote", "mean"))
    c = Claim("3a", "NDR@30 predicts post-filtering accuracy under Vote (Spearman ρ, pooled per method, mean)",
              "ρ 0.8–0.9 under Vote", rho_vote, margin=0.1,
              reason="needs Vote configurations with NDR@30 and accuracy", fmt="{:+.2f}")
    out.append(c)
    c = Claim("3b", "… and more strongly under Vote than under Mean (ρ Vote − ρ Mean)",
              "0.8–0.9 vs 0.5–0.7 (Δ ≈ +0.2)",
              (lambda cols: rho_vote(cols) - rho_mean(cols)) if has_rho else None,
              margin=0.1, reason="needs Mean and Vote configurations", fmt="{:+.2f}")
    out.append(c)

    # 4. cancellation predicts accuracy only weakly
    has_c = _influence(st.canc).notna().any().any() and _influence(st.acc).notna().any().any()
    out.append(Claim("4", "The cancellation effect C predicts accuracy only weakly (Spearman ρ within ±0.3)",
                     "ρ −0.3 to 0.2", _Rho(st.canc, st.acc, None) if has_c else None,
                     kind="within", threshold=-0.3, upper=0.3,
                     reason="needs cancellation values and accuracy after retraining on the runs", fmt="{:+.2f}"))

    # 5. Value-B highest layer-wise NDR
    mod_runs = np.array(sorted(st.modules))
    lora = ("query_A", "query_B", "value_A", "value_B")
    vb = np.full(n, np.nan)
    for i, s in st.modules.items():
        if all(k in s.index for k in lora):
            vb[i] = s["value_B"] - max(s[k] for k in lora[:3])
    out.append(Claim("5", "Value-B modules have the highest layer-wise NDR@30 (Value-B − the best other LoRA "
                     "module type, mean over layers, methods and aggregators)", "Value-B highest for all four models",
                     (lambda cols: _row_mean(vb, cols)) if np.isfinite(vb).any() else None, margin=0.02,
                     runs=mod_runs[np.isfinite(vb[mod_runs])] if len(mod_runs) else mod_runs,
                     reason="no layer-wise (modules) score frames with the four LoRA module types"))

    # 6. influence filtering beats Random and no filtering
    a = st.acc
    base = {b: a.loc[(b, "-", "-")].to_numpy(float) if (b, "-", "-") in a.index else None for b in ("none", "random")}
    infl = _influence(a)
    if base["none"] is not None and base["random"] is not None and len(infl):
        gap = infl.to_numpy(float) - np.maximum(base["none"], base["random"])[None, :]
        per_run = np.nanmean(np.where(np.isfinite(gap), gap, np.nan), axis=0) if np.isfinite(gap).any() else gap[0]
        share = float(np.nanmean(gap > 0))
        c = Claim("6", "Filtering by influence beats Random and no filtering (accuracy of the mean influence "
                  "configuration − the better of Random, none)", "yes, except Llama-3.2-1B (not better than Random)",
                  lambda cols: _row_mean(per_run, cols), margin=0.01, detail=f"{share:.0%} of (configuration, run) "
                  "pairs beat both", fmt="{:+.4f}")
    else:
        c = Claim("6", "Filtering by influence beats Random and no filtering", "yes, except Llama-3.2-1B", None,
                  reason="needs the none and random baselines and influence configurations retrained")
    out.append(c)

    # 7. influence vs the model's own loss / confident learning (the paper's default configuration)
    default = paper_default(groups)

    def versus(frame: pd.DataFrame, other: str) -> np.ndarray | None:
        rows = [i for i in frame.index if i[0] == other]
        if default is None or default not in frame.index or not rows:
            return None
        return frame.loc[default].to_numpy(float) - frame.loc[rows[0]].to_numpy(float)
    label = "/".join(default) if default else "datainf/<2nd attention group>/vote"
    for key, frame, what, margin, f in (("7a", st.ndr, "NDR@30", 0.02, "{:+.3f}"),
                                        ("7b", st.acc, "accuracy after filtering", 0.01, "{:+.4f}")):
        d = versus(frame, "loss")
        out.append(Claim(key, f"Influence ({label}) beats the model's own loss: {what} (influence − loss)",
                         "– (ours)", (lambda cols, d=d: _row_mean(d, cols)) if d is not None and np.isfinite(d).any()
                         else None, margin=margin, fmt=f,
                         reason=f"needs {label} and the loss baseline ({what}) on the runs"))
    cl = next((m for m in CL_METHODS if m in set(st.ndr.index.get_level_values("method"))), None)
    d = versus(st.ndr, cl) if cl else None
    out.append(Claim("7c", f"Influence ({label}) beats confident learning: NDR@30 (influence − confident learning)",
                     "– (ours)",
                     (lambda cols: _row_mean(d, cols)) if d is not None and np.isfinite(d).any() else None,
                     margin=0.02, reason="the runs hold no confident-learning ranking (add confident_learning to "
                     "score.model_baselines: p(given label) under 2 cross-fitted fold models)"))

    # 8. advise's pick vs the paper's default, on held-out seeds
    d8 = np.full(n, np.nan)
    if st.advise and default is not None and default in a.index:
        for i, pick in st.advise.items():
            if pick in a.index:
                d8[i] = a.loc[pick].iloc[i] - a.loc[default].iloc[i]
    out.append(Claim("8", f"advise's pick beats the paper's default ({label}) on held-out seeds (accuracy)",
                     "– (ours)", (lambda cols: _row_mean(d8, cols)) if np.isfinite(d8).any() else None, margin=0.01,
                     runs=np.flatnonzero(np.isfinite(d8)), fmt="{:+.4f}",
                     reason=f"no advise picks ({ADVISE_PICKS}: task, seed, config chosen on other seeds) "
                     "for retrained runs"))
    return out


def verdict(claim: Claim, est: float, lo: float, hi: float, n: int) -> str:
    """The verdict from the interval (module docstring)."""
    if claim.stat is None or n < MIN_RUNS or not (np.isfinite(lo) and np.isfinite(hi)):
        return NOT_MEASURED
    if claim.kind == "within":
        if claim.threshold <= lo and hi <= claim.upper:
            return HOLDS
        if hi < claim.threshold or lo > claim.upper:
            return NOT_HOLDS
        return INCONCLUSIVE
    if lo > claim.threshold:
        return HOLDS
    if hi < claim.threshold + claim.margin:
        return NOT_HOLDS
    return INCONCLUSIVE


def _rule(claim: Claim) -> str:
    if claim.kind == "within":
        return (f"holds if the 95 % CI ⊂ [{claim.threshold:g}, {claim.upper:g}]; does not hold if it lies wholly "
                "outside; else inconclusive")
    return (f"holds if CI low > {claim.threshold:g}; does not hold if CI high < {claim.threshold + claim.margin:g} "
            f"(an effect ≥ {claim.margin:g} ruled out); else inconclusive")


def claims_table(study: Study, B: int = B_DEFAULT, seed: int = 0) -> pd.DataFrame:
    """One row per claim (``CLAIM_COLUMNS``): estimate on all runs, 95 % percentile bootstrap interval over runs
    (``B`` resamples with replacement, seeded), n, and the verdict by :func:`verdict`."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in _claims(study):
        runs = np.arange(len(study.runs)) if c.runs is None else np.asarray(c.runs, dtype=int)
        est = lo = hi = float("nan")
        reason = c.reason
        if c.stat is not None and len(runs) >= MIN_RUNS:
            est = c.stat(runs)
            boots = np.array([c.stat(rng.choice(runs, size=len(runs), replace=True)) for _ in range(B)])
            boots = boots[np.isfinite(boots)]
            if boots.size >= 0.9 * B and np.isfinite(est):
                lo, hi = (float(q) for q in np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
            else:
                reason = "the statistic is undefined on too many resamples (too little variation)"
        elif c.stat is not None:
            reason = f"{len(runs)} run(s); an interval needs ≥ {MIN_RUNS}"
        v = verdict(c, est, lo, hi, len(runs) if c.stat is not None else 0)
        tasks = sorted({study.tasks[i] for i in runs})
        seeds = sorted({study.seeds[i] for i in runs})
        ours = (c.fmt.format(est) + f" [{c.fmt.format(lo)}, {c.fmt.format(hi)}]") if v != NOT_MEASURED else "–"
        rows.append({"claim": c.key, "statement": c.statement, "paper": c.paper, "estimate": est, "ci_low": lo,
                     "ci_high": hi, "ours": ours, "n_runs": int(len(runs)), "n_tasks": len(tasks),
                     "n_seeds": len(seeds), "n": f"{len(tasks)} tasks × {len(seeds)} seeds = {len(runs)} runs",
                     "verdict": v, "rule": _rule(c),
                     "detail": "; ".join(x for x in (c.detail, reason if v == NOT_MEASURED else "") if x)})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


# ------------------------------------------------------------------------------------------------ reading, writing


def claims_from_dir(path: str | os.PathLike | Sequence[str | os.PathLike], results: pd.DataFrame | None = None,
                    B: int = B_DEFAULT, seed: int = 0) -> tuple[Study, pd.DataFrame]:
    """The study and its claims table for a run or sweep folder, or several pooled (``results``: the report's
    frame of a single folder, if already loaded). Advise's picks are read from ``ADVISE_PICKS`` in a folder."""
    paths = [Path(p) for p in ([path] if isinstance(path, (str, os.PathLike)) else path)]
    loaded, mods = load_study_inputs(paths)
    if results is None:
        results = loaded
    picks = [pd.read_csv(p / ADVISE_PICKS) for p in paths if (p / ADVISE_PICKS).is_file()]
    study = make_study(results, mods, pd.concat(picks, ignore_index=True) if picks else None)
    return study, claims_table(study, B=B, seed=seed)
