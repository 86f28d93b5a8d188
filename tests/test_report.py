"""Report layer: tables, figures and the HTML page on synthetic run and sweep directories.

The synthetic tables follow docs/internals.md ("Per-run outputs used by reports") column for column. One
configuration (TracIn · 04-07 · Vote) is built to beat every other one in every run, so its win rate is 1.0
and its Pareto rank 1; the spec's worked example E5 checks win rates and Pareto ranks by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import layerinf.reporting as rp
from layerinf.reporting import formatting, summary
from layerinf.reporting.params import ReportParams
from layerinf.errors import LayerinfError
from layerinf.store.layout import RETRAIN, SCORES, STAGE_FILE, RunLayout

from helpers import chromium_driver

pytestmark = pytest.mark.slow  # writes many reports with figures (minutes on 2 cores)

L = 16
METHODS = ("tracin", "datainf")
GROUPS = ("WE", "00-03", "04-07", "08-11", "12-15", "CL")
AGGS = ("mean", "rank", "vote")
GROUP_EFFECT = {"WE": 0.0, "00-03": 0.02, "04-07": 0.035, "08-11": 0.03, "12-15": 0.01, "CL": -0.03}
AGG_EFFECT = {"mean": 0.0, "rank": 0.004, "vote": 0.012}
WINNER = ("tracin", "04-07", "vote")
NDR_LEVELS = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90)
N_TRAIN, N_NOISY = 400, 80


def _configs():
    for m in METHODS:
        for g in GROUPS:
            if m == "datainf" and g == "WE":  # DataInf does not apply to WE (as in the toolkit)
                continue
            for a in AGGS:
                yield m, g, a


def _curve_ndr(ndr30: float, t: np.ndarray) -> np.ndarray:
    """A concave detection curve through (0.3, ndr30): 1 - (1 - t)^a."""
    a = np.log(max(1e-6, 1 - ndr30)) / np.log(0.7)
    return 1 - (1 - t) ** a


def synth_results(model: str, task: str, seed: int) -> pd.DataFrame:
    """retrain/results rows of one run: 2 methods × 6 groups × 3 aggregators (no DataInf × WE) + 3 baselines."""
    rng = np.random.default_rng(1000 + seed)
    cancel = {g: float(rng.uniform(2, 40)) for g in GROUPS}
    rows = []
    for m, g, a in _configs():
        effect = GROUP_EFFECT[g] + AGG_EFFECT[a] + (0.005 if m == "tracin" else 0.0)
        acc = 0.86 + effect + rng.uniform(-0.004, 0.004)
        if (m, g, a) == WINNER:
            acc = 0.99  # beats everything, baselines included, in every run
        ndr30 = float(np.clip(0.30 + 6 * effect + rng.uniform(-0.03, 0.03), 0.05, 0.99))
        auc = float(np.clip(0.5 + 0.8 * (ndr30 - 0.3), 0, 1))
        rows.append({"model": model, "task": task, "seed": seed, "method": m, "group": g, "aggregator": a,
                     "kind": "influence", "ndr_30": ndr30, "auc_ndr": auc, "roc_auc": auc - 0.01,
                     "cancellation": cancel[g], "removed": int(0.3 * N_TRAIN),
                     "best_accuracy": acc, "accuracy_at_best_epoch": acc - rng.uniform(0.0, 0.01)})
    for b, acc, ndr in (("none", 0.85, np.nan), ("random", 0.845, 0.30), ("oracle", 0.95, 1.0)):
        rows.append({"model": model, "task": task, "seed": seed, "method": b, "group": "-", "aggregator": "-",
                     "kind": "baseline", "ndr_30": ndr, "auc_ndr": np.nan if np.isnan(ndr) else 0.5 + (ndr - 0.3) / 1.4,
                     "roc_auc": np.nan, "cancellation": np.nan,
                     "removed": 0 if b == "none" else int(0.3 * N_TRAIN),
                     "best_accuracy": acc + rng.uniform(-0.003, 0.003), "accuracy_at_best_epoch": acc - 0.005})
    return pd.DataFrame(rows)


def make_run_dir(root: Path, model: str = "tiny-bert", task: str = "sst2", seed: int = 0) -> Path:
    """A run directory with config.json, scores/{table,curves,modules,noise_rank}.parquet, retrain/results."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "scores").mkdir(exist_ok=True)
    (root / "retrain").mkdir(exist_ok=True)
    (root / "config.json").write_text(json.dumps({"name": "run", "model": {"name": model}, "data": {"seed": seed}}))
    res = synth_results(model, task, seed)
    res.to_parquet(root / "retrain" / "results.parquet", index=False)
    res.to_csv(root / "retrain" / "results.csv", index=False)
    rng = np.random.default_rng(seed)

    infl = res[res["kind"] == "influence"]
    t = np.unique(np.linspace(1, N_TRAIN, 201).round().astype(int)) / N_TRAIN
    table_rows, curve_rows = [], []
    for r in infl.itertuples():
        curve = _curve_ndr(r.ndr_30, t)
        row = {"method": r.method, "group": r.group, "aggregator": r.aggregator}
        row.update({f"ndr_{k}": float(_curve_ndr(r.ndr_30, np.array([k / 100]))[0]) for k in NDR_LEVELS})
        row.update({"precision_30": r.ndr_30 * N_NOISY / (0.3 * N_TRAIN), "auc_ndr": r.auc_ndr,
                    "roc_auc": r.roc_auc, "cancellation": r.cancellation, "n": N_TRAIN, "n_noisy": N_NOISY})
        table_rows.append(row)
        curve_rows.append(pd.DataFrame({"method": r.method, "group": r.group, "aggregator": r.aggregator,
                                        "fraction": t, "ndr": curve}))
    table = pd.DataFrame(table_rows)
    table.to_parquet(root / "scores" / "table.parquet", index=False)
    table.to_csv(root / "scores" / "table.csv", index=False)
    pd.concat(curve_rows, ignore_index=True).to_parquet(root / "scores" / "curves.parquet", index=False)

    modules = [("WE", "we", 0)] + [
        (f"L{layer:02d}.{proj}.{ab}", f"{proj}_{ab}", layer + 1)
        for layer in range(L) for proj in ("query", "value") for ab in ("A", "B")
    ] + [("CL.classifier.weight", "cl", L + 1), ("CL.classifier.bias", "cl", L + 1)]
    mod_rows, rank_rows = [], []
    for m in METHODS:
        for name, kind, pos in modules:
            if m == "datainf" and kind == "we":
                continue
            bump = 0.15 if kind == "value_B" else (0.05 if kind == "value_A" else 0.0)
            layer_shape = 0.1 * np.sin(np.pi * pos / (L + 1))
            for a in AGGS:
                ndr = float(np.clip(0.3 + bump + layer_shape + AGG_EFFECT[a] * 3 + rng.uniform(-0.02, 0.02), 0, 1))
                mod_rows.append({"method": m, "aggregator": a, "module": name, "kind": kind, "position": pos,
                                 "ndr_30": ndr, "auc_ndr": 0.5 + 0.8 * (ndr - 0.3)})
            noisy = float(np.clip(0.35 - bump - layer_shape + rng.uniform(-0.02, 0.02), 0, 1))
            rank_rows.append({"method": m, "module": name, "kind": kind, "position": pos,
                              "noisy_mean_rank": noisy, "clean_mean_rank": 0.53 + rng.uniform(-0.01, 0.01),
                              "top1_noisy_rank": float(rng.uniform(0, 0.3)),
                              "top1_clean_rank": float(rng.uniform(0.5, 1.0))})
    pd.DataFrame(mod_rows).to_parquet(root / "scores" / "modules.parquet", index=False)
    pd.DataFrame(rank_rows).to_parquet(root / "scores" / "noise_rank.parquet", index=False)
    return root


def make_sweep_dir(root: Path, seeds=(0, 1), model: str = "tiny-bert") -> Path:
    """A sweep over data.seed: units/seed=<s>/ run directories plus the combined results with a unit column."""
    frames = []
    for s in seeds:
        unit = f"seed={s}"
        run = make_run_dir(root / "units" / unit, model=model, seed=s)
        df = pd.read_parquet(run / "retrain" / "results.parquet")
        df.insert(0, "unit", unit)
        df["seed"] = s
        frames.append(df)
    res = pd.concat(frames, ignore_index=True)
    res.to_parquet(root / "results.parquet", index=False)
    res.to_csv(root / "results.csv", index=False)
    (root / "sweep.json").write_text(json.dumps({"grid": {"data.seed": list(seeds)},
                                                 "units": [f"seed={s}" for s in seeds]}))
    return root


TABLES = ("claims", "configurations", "spearman", "wilcoxon")
FIGURES = ("ndr_curves", "ndr30_heatmap", "accuracy_boxplots", "layerwise_ndr", "noise_rank")


def _row(conf: pd.DataFrame, method, group, agg) -> pd.Series:
    sel = conf[(conf["method"] == method) & (conf["group"] == group) & (conf["aggregator"] == agg)]
    assert len(sel) == 1, (method, group, agg)
    return sel.iloc[0]


def _check_report_dir(html_path: Path, removed: str = "bottom 30 %") -> Path:
    out = html_path.parent
    assert html_path.name == "index.html" and html_path.exists()
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
        assert (out / "tables" / f"{name}.md").read_text().startswith(f"# {name}")
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    page = html_path.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(srcs) == sorted(f"figures/{n}.png" for n in FIGURES)
    assert "<script" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    for needle in ("higher score = more helpful", removed, "NDR@30", "AUC-NDR", "Win rate", "Pareto rank",
                   "Cancellation", "optimistic"):
        assert needle in page, needle
    assert not list(out.parent.glob(".report.*")), "temporary folders left behind"
    return out


# ------------------------------------------------------------------------------------------------- tests


def test_report_on_run_dir(tmp_path):
    run = make_run_dir(tmp_path / "run")
    html_path = rp.report(run)
    assert html_path == run / "report" / "index.html"
    out = _check_report_dir(html_path)
    conf = pd.read_csv(out / "tables" / "configurations.csv", keep_default_na=False, na_values=[""])
    n_cfg = len(list(_configs())) + 3
    assert len(conf) == n_cfg and set(conf["runs_compared"]) == {1}
    best = conf.iloc[0]
    assert (best["method"], best["group"], best["aggregator"]) == WINNER
    assert best["win_rate"] == 1.0 and best["pareto_rank"] == 1
    assert conf["win_rate"].is_monotonic_decreasing
    assert {"none", "random", "oracle"} <= set(conf["method"])
    assert not (out / "tables" / "configurations_by_model.csv").exists()
    wil = pd.read_csv(out / "tables" / "wilcoxon.csv")
    assert len(wil) == 2 * (len(GROUPS) * len(METHODS) - 1) and wil["p_value"].isna().all()
    assert set(wil["note"]) == {f"too few runs (n<{summary.MIN_WILCOXON})"} and set(wil["n"]) == {1}
    claims = pd.read_csv(out / "tables" / "claims.csv")
    # one run: win-rate claims lack runs; the Spearman claim pools 6 groups (≥ 5 points) and is decided
    assert list(claims["verdict"])[:2] == ["too little data"] * 2
    assert claims["verdict"].iloc[2] in ("supported", "not supported")


def test_report_on_sweep_dir_and_rewrite(tmp_path):
    sweep = make_sweep_dir(tmp_path / "sweep")
    html_path = rp.report(sweep)
    out = _check_report_dir(html_path)
    conf = pd.read_csv(out / "tables" / "configurations.csv")
    assert set(conf["runs_compared"]) == {2} and set(conf["runs"]) == {2}
    w = _row(conf, *WINNER)
    assert w["win_rate"] == 1.0 and w["pareto_rank"] == 1
    # mean/std over the two units, by hand
    res = pd.read_parquet(sweep / "results.parquet")
    sel = res[(res["method"] == "datainf") & (res["group"] == "CL") & (res["aggregator"] == "mean")]
    r = _row(conf, "datainf", "CL", "mean")
    assert r["best_accuracy_mean"] == pytest.approx(sel["best_accuracy"].mean())
    assert r["best_accuracy_std"] == pytest.approx(sel["best_accuracy"].std(ddof=1))
    assert r["ndr_30_mean"] == pytest.approx(sel["ndr_30"].mean())
    assert r["acc_at_best_epoch_mean"] == pytest.approx(sel["accuracy_at_best_epoch"].mean())
    # the oracle beats every configuration but the winner in both runs
    o = _row(conf, "oracle", "-", "-")
    assert o["win_rate"] == pytest.approx((len(conf) - 2) / (len(conf) - 1))
    # a second report replaces the first in place: the new content, nothing of the old folder left
    assert "Pareto τ: <b>0.75</b>" in (out / "index.html").read_text()
    (out / "stale.txt").write_text("from the first report")
    rp.report(sweep, tau=0.5)
    page = (out / "index.html").read_text()
    assert "Pareto τ: <b>0.5</b>" in page and "Pareto τ: <b>0.75</b>" not in page
    assert not (out / "stale.txt").exists()
    rewritten = pd.read_csv(out / "tables" / "configurations.csv")
    expected = rp.tables(rp.load_results(sweep), tau=0.5)["configurations"]
    assert rewritten["pareto_rank"].tolist() == expected["pareto_rank"].astype(int).tolist()
    assert not list(sweep.glob(".report.*"))
    # a custom output folder
    other = rp.report(sweep, out=tmp_path / "elsewhere")
    assert other == tmp_path / "elsewhere" / "index.html" and other.exists()


def test_load_results_errors(tmp_path):
    with pytest.raises(LayerinfError, match="layerinf run"):
        rp.load_results(tmp_path)
    with pytest.raises(LayerinfError, match="does not exist"):
        rp.load_results(tmp_path / "nope")
    (tmp_path / "units").mkdir()
    with pytest.raises(LayerinfError, match="layerinf sweep"):
        rp.load_results(tmp_path)
    with pytest.raises(LayerinfError, match="layerinf run"):
        rp.report(tmp_path / "nope")
    with pytest.raises(LayerinfError, match="layerinf sweep"):
        rp.report(tmp_path)  # a sweep with neither results nor score tables
    run = tmp_path / "r"
    (run / "retrain").mkdir(parents=True)
    pd.DataFrame({"model": ["m"], "task": ["t"]}).to_parquet(run / "retrain" / "results.parquet")
    with pytest.raises(LayerinfError, match="lacks the column"):
        rp.load_results(run)


def _e5_results() -> pd.DataFrame:
    """Spec §7.4 example E5 as a results frame: configurations A, B, C (as groups) over 4 runs (seeds)."""
    acc = {"A": [.80, .75, .90, .60], "B": [.78, .75, .92, .55], "C": [.70, .70, .85, .65]}
    rows = [{"model": "m", "task": "t", "seed": s, "method": "tracin", "group": g, "aggregator": "mean",
             "kind": "influence", "best_accuracy": a[s], "ndr_30": 0.3, "auc_ndr": 0.5, "cancellation": 1.0,
             "accuracy_at_best_epoch": a[s]}
            for g, a in acc.items() for s in range(4)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("tau, ranks", [(0.75, (1, 1, 1)), (0.5, (1, 1, 2)), (0.4, (1, 2, 3))])
def test_win_rate_and_pareto_e5(tau, ranks):
    conf = rp.tables(_e5_results(), tau=tau)["configurations"]
    got = {g: (w, r) for g, w, r in zip(conf["group"], conf["win_rate"], conf["pareto_rank"])}
    assert got["A"][0] == pytest.approx(0.625) and got["B"][0] == pytest.approx(0.5)
    assert got["C"][0] == pytest.approx(0.25)
    assert (got["A"][1], got["B"][1], got["C"][1]) == ranks
    assert list(conf["group"]) == ["A", "B", "C"]  # sorted by win rate
    paper = rp.tables(_e5_results(), include_self=True)["configurations"]
    assert paper.set_index("group").loc["A", "win_rate"] == pytest.approx(0.416667, abs=1e-6)


def test_missing_configurations_and_runs():
    res = _e5_results()
    # D exists in one run of four: no win rate for it; C misses run 3: run 3 leaves the comparison
    extra = res[(res["group"] == "A") & (res["seed"] == 0)].assign(group="D", best_accuracy=0.99)
    res = pd.concat([res, extra], ignore_index=True)
    res = res[~((res["group"] == "C") & (res["seed"] == 3))]
    conf = rp.tables(res, tau=0.5)["configurations"]
    d = conf[conf["group"] == "D"].iloc[0]
    assert np.isnan(d["win_rate"]) and d["runs"] == 1 and conf.iloc[-1]["group"] == "D"
    assert set(conf["runs_compared"]) == {3}
    notes = " ".join(conf.attrs["notes"])
    assert "no win rate" in notes and "m/t/3" in notes
    # over runs 0-2: A beats B in 1 of 3 runs (ties in run 1), A beats C 3/3, B beats C 3/3, ...
    got = conf.set_index("group")["win_rate"]
    assert got["A"] == pytest.approx((1 / 3 + 1) / 2) and got["B"] == pytest.approx((1 / 3 + 1) / 2)
    assert got["C"] == pytest.approx(0.0)


def test_tables_many_runs_statistics():
    res = pd.concat([synth_results("tiny-bert", "sst2", s) for s in range(8)], ignore_index=True)
    tabs = rp.tables(res)
    assert list(tabs) == ["claims", "configurations", "spearman", "wilcoxon"]
    conf = tabs["configurations"]
    assert _row(conf, *WINNER)["win_rate"] == 1.0 and set(conf["runs_compared"]) == {8}
    assert _row(conf, *WINNER)["friedman_avg_rank"] == 1.0  # best in every run
    assert any(n.startswith("Friedman test over") for n in conf.attrs["notes"])

    # Spearman: (tracin, vote) pools 6 groups × 8 runs; DataInf pools 5 groups (no WE)
    sp = tabs["spearman"].set_index(["method", "aggregator"])
    assert len(sp) == len(METHODS) * len(AGGS)
    assert sp.loc[("tracin", "vote"), "n_points"] == 6 * 8 and sp.loc[("datainf", "mean"), "n_points"] == 5 * 8
    assert "WE" not in sp.loc[("datainf", "mean"), "groups"]
    pts = res[(res["method"] == "tracin") & (res["aggregator"] == "vote")]
    rho, p = stats.spearmanr(pts["ndr_30"], pts["best_accuracy"])
    assert sp.loc[("tracin", "vote"), "rho_ndr_30"] == pytest.approx(rho)
    assert sp.loc[("tracin", "vote"), "p_ndr_30"] == pytest.approx(p)
    assert sp["rho_ndr_30"].min() > 0.5  # built in: NDR@30 follows the accuracy effect
    md = formatting.display("spearman", tabs["spearman"])
    for disp, pv in zip(md["ρ cancellation"], tabs["spearman"]["p_cancellation"]):
        assert disp.endswith("*") == (pv > 0.05)

    # Wilcoxon: n = 8 runs, Vote beats Mean by construction in every run of (datainf, 04-07)
    wil = tabs["wilcoxon"].set_index(["method", "group", "comparison"])
    assert len(wil) == 2 * (len(GROUPS) * len(METHODS) - 1) and set(wil["n"]) == {8}
    row = wil.loc[("datainf", "04-07", "mean vs vote")]
    sub = res[(res["method"] == "datainf") & (res["group"] == "04-07")].pivot(index="seed", columns="aggregator",
                                                                                 values="best_accuracy")
    assert row["difference"] == pytest.approx((sub["vote"] - sub["mean"]).mean())
    ref = stats.wilcoxon(sub["mean"], sub["vote"])
    assert row["p_value"] == pytest.approx(ref.pvalue) and bool(row["significant"])

    # claims: all three hold on this synthetic data (middle groups 04-07, 08-11 carry the largest effects)
    claims = tabs["claims"]
    assert list(claims["verdict"]) == ["supported", "supported", "supported"], claims.to_dict("records")
    assert "04-07, 08-11" in claims.iloc[0]["measured"]


def test_claims_not_supported_when_reversed():
    res = pd.concat([synth_results("tiny-bert", "sst2", s) for s in range(4)], ignore_index=True)
    res = res[~((res["method"] == WINNER[0]) & (res["group"] == WINNER[1]) & (res["aggregator"] == WINNER[2]))]
    flip = res["aggregator"] == "vote"
    res.loc[flip, "best_accuracy"] -= 0.05  # Vote now always loses to Mean
    verdicts = rp.tables(res)["claims"]["verdict"].tolist()
    assert verdicts[1] == "not supported"


def test_several_models_table_and_figures(tmp_path):
    sweep = tmp_path / "sw"
    frames = []
    for model in ("tiny-bert", "tiny-llama"):
        for s in (0, 1):
            unit = f"model={model},seed={s}"
            run = make_run_dir(sweep / "units" / unit, model=model, seed=s)
            frames.append(pd.read_parquet(run / "retrain" / "results.parquet").assign(unit=unit))
    pd.concat(frames, ignore_index=True).to_parquet(sweep / "results.parquet", index=False)
    tabs = rp.tables(rp.load_results(sweep))
    by = tabs["configurations_by_model"]
    assert set(by["model"]) == {"tiny-bert", "tiny-llama"} and set(by["runs_compared"]) == {2}
    assert set(tabs["configurations"]["runs_compared"]) == {4}
    figs = rp.figures(sweep, tmp_path / "figs")
    names = {p.name for p in figs}
    assert {f"{f}_tiny-bert.png" for f in FIGURES} | {f"{f}_tiny-llama.png" for f in FIGURES} == names


def test_write_html_copies_outside_figures(tmp_path):
    run = make_run_dir(tmp_path / "run")
    figs = rp.figures(run, tmp_path / "elsewhere")
    page = rp.write_html(tmp_path / "rep", rp.tables(rp.load_results(run)), figs, {"title": "T <&>"})
    assert (tmp_path / "rep" / "figures" / "ndr_curves.png").exists()
    text = page.read_text()
    assert "<title>T &lt;&amp;&gt;</title>" in text and 'src="figures/ndr_curves.png"' in text


def _write_stage(run: Path, stage: str, config: dict) -> None:
    """A ``stage.json`` as the run directory writes it (only the fields the report reads)."""
    (run / stage).mkdir(parents=True, exist_ok=True)
    (run / stage / STAGE_FILE).write_text(json.dumps({"stage": stage, "config": config, "seed": 0}))


def _set_params(run: Path, fraction: float | None = None, kappa: float | None = None, retrain: bool = True) -> None:
    if fraction is not None:
        _write_stage(run, RETRAIN, {"scores": "h", "filter": {"fraction": fraction, "retrain": retrain}, "train": {}})
    if kappa is not None:
        _write_stage(run, SCORES, {"grads": "h", "score": {"vote_kappa": kappa, "groups": None}})


def test_report_states_the_runs_parameters(tmp_path):
    run = make_run_dir(tmp_path / "run")
    cfg = json.loads(RunLayout(run).config.read_text())
    cfg.update(filter={"fraction": 0.4}, score={"vote_kappa": 0.5})  # the config asked; the stages say what ran
    RunLayout(run).config.write_text(json.dumps(cfg))
    _set_params(run, fraction=0.2, kappa=0.25)
    out = _check_report_dir(rp.report(run), removed="bottom 20 %")
    page = (out / "index.html").read_text()
    assert "κ = 0.25" in page and "κ = 0.5" not in page and "κ = 0.3" not in page
    assert "bottom 30 %" not in page and "40 %" not in page
    assert "the vertical line marks the 20 % that is actually removed" in page
    assert "after removing each configuration&#x27;s bottom 20 % and retraining" in page
    assert "removing the bottom 20 % and retraining" in page  # the configurations section
    assert "layer groups: <b>WE, 00-03, 04-07, 08-11, 12-15, CL</b>" in page
    assert "models: <b>tiny-bert</b>" in page
    # the tables are those of the same results, whatever the fraction
    conf = pd.read_csv(out / "tables" / "configurations.csv")
    assert (conf.iloc[0]["method"], conf.iloc[0]["group"], conf.iloc[0]["aggregator"]) == WINNER

    # without stage records the experiment config is read, without either the defaults
    for stage in (RETRAIN, SCORES):
        (run / stage / STAGE_FILE).unlink()
    params = ReportParams.read([run])
    assert (params.removed, params.kappa, params.models) == ("bottom 40 %", "κ = 0.5", ["tiny-bert"])
    RunLayout(run).config.write_text(json.dumps({"data": {"seed": 0}}))
    params = ReportParams.read([run])
    assert (params.removed, params.kappa, params.models) == ("bottom 30 %", "κ = 0.3", [])


def test_sweep_units_with_different_parameters(tmp_path):
    sweep = make_sweep_dir(tmp_path / "sweep")
    for unit, fraction in (("seed=0", 0.2), ("seed=1", 0.3)):
        _set_params(sweep / "units" / unit, fraction=fraction, kappa=0.25)
    page = rp.report(sweep).read_text()
    assert "bottom f % (f differs between units: 20 %, 30 %)" in page
    assert "κ = 0.25" in page and "κ differs" not in page
    _set_params(sweep / "units" / "seed=1", kappa=0.5)
    params = ReportParams.read(sorted((sweep / "units").iterdir()))
    assert params.kappa == "κ differs between units: 0.25, 0.5" and params.fraction is None


def _drop_results(run: Path) -> None:
    """What `layerinf run` leaves with filter.retrain false: a retrain stage without results."""
    for ext in ("parquet", "csv"):
        RunLayout(run).results(ext).unlink()
    _set_params(run, fraction=0.25, retrain=False)


def test_report_without_retraining_shows_detection(tmp_path):
    run = make_run_dir(tmp_path / "run")
    _drop_results(run)
    html_path = rp.report(run)
    out = html_path.parent
    page = html_path.read_text()
    assert "No retraining: these runs had filter.retrain: false" in page and "bottom 25 %" in page
    assert "Run `layerinf run` with filter.retrain: true to compare test accuracy after filtering." in page
    assert not (out / "tables" / "configurations.csv").exists() and not (out / "tables" / "claims.csv").exists()
    det = pd.read_csv(out / "tables" / "detection.csv")
    assert (out / "tables" / "detection.md").read_text().startswith("# detection")
    table = pd.read_parquet(RunLayout(run).scores())
    assert len(det) == len(table) and set(det["runs"]) == {1}
    assert [c for c in det.columns if re.fullmatch(r"ndr_\d+", c)] == ["ndr_10", "ndr_20", "ndr_25", "ndr_30",
                                                                         "ndr_50"]
    # bootstrap interval columns are there, empty: a synthetic run has no aggregated scores (and the note says so)
    assert det["ndr_30_lo"].isna().all() and "no bootstrap intervals" in page
    assert det["ndr_25"].is_monotonic_decreasing  # sorted by NDR at the filtering fraction
    merged = det.merge(table, on=["method", "group", "aggregator"], suffixes=("", "_t"))
    for c in ("ndr_25", "ndr_30", "auc_ndr", "cancellation"):
        np.testing.assert_allclose(merged[c], merged[f"{c}_t"])
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert names == set(FIGURES) - {"accuracy_boxplots"}
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(f"figures/{n}.png" for n in names)
    assert "Win rate" not in page and "NDR@30" in page and "AUC-NDR" in page
    # broken results are an error, not a reason to fall back to detection
    pd.DataFrame({"model": ["m"], "task": ["t"]}).to_parquet(RunLayout(run).results())
    with pytest.raises(LayerinfError, match="lacks the column"):
        rp.report(run)

    # a sweep of such runs pools their score tables (one whose units have results must finish first)
    sweep = make_sweep_dir(tmp_path / "sweep")
    for ext in ("parquet", "csv"):
        (sweep / f"results.{ext}").unlink()
    with pytest.raises(LayerinfError, match="layerinf sweep"):
        rp.report(sweep)
    for unit in ("seed=0", "seed=1"):
        _drop_results(sweep / "units" / unit)
    det = pd.read_csv(rp.report(sweep).parent / "tables" / "detection.csv")
    assert set(det["runs"]) == {2}
    both = pd.concat([pd.read_parquet(RunLayout(sweep / "units" / u).scores()) for u in ("seed=0", "seed=1")])
    mean = both.groupby(["method", "group", "aggregator"])["ndr_30"].mean()
    got = det.set_index(["method", "group", "aggregator"])["ndr_30"]
    np.testing.assert_allclose(got.loc[mean.index], mean)


# ----------------------------------------------------------------------------------------- browser check


def test_html_images_load_in_chromium(tmp_path):
    sweep = make_sweep_dir(tmp_path / "sweep")
    page = rp.report(sweep)
    driver = chromium_driver()
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        status = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        title = driver.title
        n_tables = driver.execute_script("return document.querySelectorAll('table').length;")
    finally:
        driver.quit()
    assert len(status) == len(FIGURES)
    assert all(complete and width > 0 for _, complete, width in status), status
    assert title.startswith("layerinf report") and n_tables >= 4


def test_first_screen_states_the_answer_and_the_health_warning(tmp_path):
    run = make_run_dir(tmp_path)
    page = rp.report(run).read_text()
    head = page[: page.index("How to read this report")]  # the answer comes before the glossary
    assert "What this run found" in head
    assert f"Best configuration by test accuracy after removing the bottom 30 %: {'/'.join(WINNER)}" in head
    assert "no filtering" in head and "random removal" in head and "single measurements" in head
    assert "not clearly learned" not in head
    _write_stage(run, "finetune", {"model": {"name": "tiny-bert"}})
    info = json.loads((run / "finetune" / STAGE_FILE).read_text())
    info["summary"] = {"health": {"learned": False, "warning": "the fine-tuned model has not clearly learned the task"}}
    (run / "finetune" / STAGE_FILE).write_text(json.dumps(info))
    head = rp.report(run).read_text()
    head = head[: head.index("How to read this report")]
    assert "Warning: in 1 of 1 run(s) the fine-tuned model has not clearly learned the task" in head
