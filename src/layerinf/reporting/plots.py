"""The report's matplotlib figures (PNG, Agg backend).

From each run's score folder: NDR curves of the best configurations, layer-wise NDR@30 of single LoRA modules,
and the noisy-vs-benign rank per layer; from the results table: accuracy box plots per configuration and an
NDR@30 heat map (from the score tables when the run was not retrained). Filtering fractions shown come from
the runs (:mod:`layerinf.reporting.params`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from layerinf.errors import LayerinfError
from layerinf.reporting.common import (AGG_NAMES, BASELINES, KIND_NAMES, METHOD_COLORS, METHOD_NAMES, RUN_KEY,
                                    agg_order, config_label, group_order, method_order, pct)
from layerinf.reporting.params import ReportParams
from layerinf.reporting.results import load_detection, load_results, read_units, unit_dirs, unit_model
from layerinf.store.layout import SCORE_TABLE

DPI = 110


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
                         "figure.titlesize": 12, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _fig_curves(runs, out: Path, suffix: str, model: str, plt, params: ReportParams) -> Path | None:
    curves = read_units(runs, "curves")
    if curves.empty:
        return None
    grid = np.linspace(0, 1, 201)
    interp = {}
    for (cfg, unit), c in curves.groupby([(curves["method"] + "\t" + curves["group"] + "\t" + curves["aggregator"]),
                                          "_unit"]):
        c = c.sort_values("fraction")
        x = np.concatenate([[0.0], c["fraction"].to_numpy(float)])
        y = np.concatenate([[0.0], c["ndr"].to_numpy(float)])
        interp.setdefault(cfg, []).append(np.interp(grid, x, y))
    mean = {k: np.mean(v, axis=0) for k, v in interp.items()}
    auc = {k: float(np.trapezoid(v, grid)) if hasattr(np, "trapezoid") else float(np.trapz(v, grid))
           for k, v in mean.items()}
    ranked = sorted(auc, key=lambda k: -auc[k])
    chosen: list[str] = []
    for method in sorted({k.split("\t")[0] for k in ranked}, key=method_order):
        best = next(k for k in ranked if k.split("\t")[0] == method)
        chosen.append(best)
    for k in ranked:
        if len(chosen) >= 6:
            break
        if k not in chosen:
            chosen.append(k)
    chosen.sort(key=lambda k: -auc[k])
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    styles = ["-", "--", "-.", ":"]
    seen: dict[str, int] = {}
    for k in chosen:
        method, group, agg = k.split("\t")
        i = seen.get(method, 0)
        seen[method] = i + 1
        ax.plot(grid, mean[k], styles[i % 4], color=METHOD_COLORS.get(method), lw=2,
                label=f"{config_label(method, group, agg)} (area {auc[k]:.2f})")
    ax.plot([0, 1], [0, 1], color="#7f7f7f", lw=1.2, ls=":", label="random (diagonal)")
    table = read_units(runs, SCORE_TABLE)
    if not table.empty and {"n", "n_noisy"} <= set(table.columns):
        rate = float((table["n_noisy"] / table["n"]).mean())
        if 0 < rate < 1:
            ax.plot(grid, np.minimum(grid / rate, 1), color="#9467bd", lw=1.2, ls="--",
                    label=f"perfect detector ({rate:.0%} noisy)")
    for i, f in enumerate(params.fractions):
        ax.axvline(f, color="#444", lw=0.8, ls=":")
        ax.text(f + 0.005, 0.03 + 0.05 * i, f"{pct(f)} removed", fontsize=8, color="#444")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of training data removed (lowest scores first)")
    ax.set_ylabel("NDR: share of flipped labels found")
    ax.set_title(f"Noise detection curves, best configurations{model}\n"
                 "(scores: higher = more helpful; curve: higher = better detection)")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.text(0.01, 0.97, f"mean over {len(runs)} units", transform=ax.transAxes, fontsize=8, va="top")
    return _save(fig, out / f"ndr_curves{suffix}.png", plt)


def _layer_ticks(ax, max_pos: int):
    """x ticks at positions 0 = WE, 1..L = layers 0..L-1 (every step-th), L+1 = CL."""
    step = max(1, int(math.ceil((max_pos - 1) / 12)))
    inner = [t for t in range(1, max_pos)
             if (t - 1) % step == 0 and (step == 1 or step <= t - 1) and max_pos - t >= max(1, step // 2 + 1)]
    shown = [0] + inner + [max_pos]
    ax.set_xticks(shown)
    ax.set_xticklabels(["WE" if t == 0 else ("CL" if t == max_pos else str(t - 1)) for t in shown])


def _fig_layerwise(runs, out: Path, suffix: str, model: str, plt, params: ReportParams) -> Path | None:
    mods = read_units(runs, "modules")
    if mods.empty:
        return None
    per = mods.groupby(["method", "aggregator", "kind", "position"], as_index=False)["ndr_30"].mean()
    methods = sorted(per["method"].unique(), key=method_order)
    aggs = sorted(per["aggregator"].unique(), key=agg_order)
    max_pos = int(per["position"].max())
    fig, axes = plt.subplots(len(methods), len(aggs), figsize=(4.3 * len(aggs), 3.1 * len(methods)),
                             squeeze=False, sharex=True, sharey=True)
    colors = {"query_A": "#9ecae1", "query_B": "#3182bd", "value_A": "#fdae6b", "value_B": "#e6550d"}
    for i, method in enumerate(methods):
        for j, agg in enumerate(aggs):
            ax = axes[i, j]
            sub = per[(per["method"] == method) & (per["aggregator"] == agg)]
            for kind in ("query_A", "query_B", "value_A", "value_B"):
                k = sub[sub["kind"] == kind].sort_values("position")
                if len(k):
                    ax.plot(k["position"], k["ndr_30"], "-o", ms=3, lw=1.5, color=colors[kind],
                            label=KIND_NAMES[kind])
            for kind, marker, color, label in (("we", "s", "#2ca02c", "WE"), ("cl", "D", "#d62728", "CL")):
                k = sub[sub["kind"] == kind].groupby("position", as_index=False)["ndr_30"].mean()
                if len(k):
                    ax.plot(k["position"], k["ndr_30"], marker, ms=7, color=color, label=label, ls="none")
            ax.axhline(0.30, color="#7f7f7f", lw=0.8, ls=":")
            ax.set_title(f"{METHOD_NAMES.get(method, method)} · {AGG_NAMES.get(agg, agg)}")
            ax.grid(alpha=0.3)
            _layer_ticks(ax, max_pos)
            if j == 0:
                ax.set_ylabel("NDR@30")
            if i == len(methods) - 1:
                ax.set_xlabel("layer (WE = word embeddings, CL = head)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    handles.append(plt.Line2D([], [], color="#7f7f7f", ls=":"))
    labels.append("random (0.30)")
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    unit_note = f", mean over {len(runs)} units" if len(runs) > 1 else ""
    fig.suptitle(f"Layer-wise NDR@30 of single LoRA modules{model}{unit_note}\n"
                 "(each module's scores alone; higher score = more helpful; "
                 "lowest-scored 30 % checked for flipped labels)",
                 y=1.07)
    fig.tight_layout()
    return _save(fig, out / f"layerwise_ndr{suffix}.png", plt)


def _fig_noise_rank(runs, out: Path, suffix: str, model: str, plt, params: ReportParams) -> Path | None:
    nr = read_units(runs, "noise_rank")
    if nr.empty:
        return None
    cols = ["noisy_mean_rank", "clean_mean_rank", "top1_noisy_rank", "top1_clean_rank"]
    cols = [c for c in cols if c in nr.columns]
    per = nr.groupby(["method", "position"], as_index=False)[cols].mean()
    methods = sorted(per["method"].unique(), key=method_order)
    max_pos = int(per["position"].max())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 3.8), squeeze=False, sharey=True)
    for j, method in enumerate(methods):
        ax = axes[0, j]
        sub = per[per["method"] == method].sort_values("position")
        ax.plot(sub["position"], sub["noisy_mean_rank"], "-o", ms=3, color="#d62728", label="noisy (mean)")
        ax.plot(sub["position"], sub["clean_mean_rank"], "-o", ms=3, color="#1f77b4", label="benign (mean)")
        if "top1_noisy_rank" in sub:
            ax.plot(sub["position"], sub["top1_noisy_rank"], ":", color="#d62728", lw=1, label="top-1 noisy")
        if "top1_clean_rank" in sub:
            ax.plot(sub["position"], sub["top1_clean_rank"], ":", color="#1f77b4", lw=1, label="top-1 benign")
        for f in params.fractions:
            ax.axhline(f, color="#7f7f7f", lw=0.8, ls="--")
        ax.set_title(METHOD_NAMES.get(method, method))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        _layer_ticks(ax, max_pos)
        ax.set_xlabel("layer (WE = word embeddings, CL = head)")
        if j == 0:
            ax.set_ylabel("normalised rank (0 = lowest score)")
    axes[0, 0].legend(loc="upper left", frameon=False)
    unit_note = f", mean over {len(runs)} units" if len(runs) > 1 else ""
    fig.suptitle(f"Noise rank per layer{model}{unit_note}: where flipped examples sit in each layer's order\n"
                 f"(higher score = more helpful; ranks below the dashed line ({params.percent}) are removed)", y=1.04)
    fig.tight_layout()
    return _save(fig, out / f"noise_rank{suffix}.png", plt)


def _fig_boxplots(res: pd.DataFrame, out: Path, suffix: str, model: str, plt,
                      params: ReportParams) -> Path | None:
    res = res.dropna(subset=["best_accuracy"])
    if res.empty:
        return None
    keyed = res.assign(_label=[config_label(m, g, a)
                               for m, g, a in zip(res["method"], res["group"], res["aggregator"])])
    groups = {lab: g for lab, g in keyed.groupby("_label")}
    order = sorted(groups, key=lambda lab: (groups[lab]["best_accuracy"].median(), groups[lab]["best_accuracy"].mean()))
    data = [groups[lab]["best_accuracy"].to_numpy(float) for lab in order]
    fig, ax = plt.subplots(figsize=(8.5, 1.6 + 0.27 * len(order)))
    bp = ax.boxplot(data, vert=False, patch_artist=True, widths=0.6, showfliers=False,
                    medianprops={"color": "black", "lw": 1.4})
    for patch, lab in zip(bp["boxes"], order):
        method = groups[lab]["method"].iloc[0]
        patch.set_facecolor(METHOD_COLORS.get(method, "#cccccc"))
        patch.set_alpha(0.55)
        if method in BASELINES:
            patch.set_hatch("//")
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.plot(d, i + rng.uniform(-0.15, 0.15, len(d)), "o", ms=3, color="#333", alpha=0.7)
    ax.set_yticks(range(1, len(order) + 1))
    ax.set_yticklabels(order, fontsize=8.5)
    for lab, ls in (("No removal", "--"), ("Random", ":")):
        if lab in groups:
            ax.axvline(groups[lab]["best_accuracy"].median(), color="#555", lw=1, ls=ls, label=f"{lab} (median)")
    ax.set_xlabel("test accuracy after retraining (best over epochs)")
    n_runs = keyed.groupby(RUN_KEY + (["unit"] if "unit" in keyed else [])).ngroups
    ax.set_title(f"Accuracy after removing the {params.removed} per configuration{model}\n"
                 f"({n_runs} run{'s' if n_runs != 1 else ''}; higher = better; hatched = baselines)")
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", frameon=True, fontsize=8)
    return _save(fig, out / f"accuracy_boxplots{suffix}.png", plt)


def _fig_heatmap(res: pd.DataFrame, out: Path, suffix: str, model: str, plt,
                     params: ReportParams) -> Path | None:
    infl = res[(res["kind"] != "baseline")].dropna(subset=["ndr_30"])
    if infl.empty:
        return None
    piv = infl.pivot_table(index=["method", "aggregator"], columns="group", values="ndr_30", aggfunc="mean")
    piv = piv[sorted(piv.columns, key=group_order)]
    piv = piv.loc[sorted(piv.index, key=lambda t: (method_order(t[0]), agg_order(t[1])))]
    vals = piv.to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.1 * vals.shape[1] + 3.2, 0.48 * vals.shape[0] + 1.8))
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", vmin=0, vmax=max(1.0, np.nanmax(vals)), aspect="auto")
    ax.set_xticks(range(vals.shape[1]))
    ax.set_xticklabels(piv.columns, rotation=0)
    ax.set_yticks(range(vals.shape[0]))
    ax.set_yticklabels([f"{METHOD_NAMES.get(m, m)} · {AGG_NAMES.get(a, a)}" for m, a in piv.index])
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8.5,
                    color="white" if v < 0.6 else "black")
        else:
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="#888")
    ax.set_xlabel("layer group")
    ax.spines[:].set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("NDR@30 (random ≈ 0.30)")
    n_runs = res.groupby(RUN_KEY + (["unit"] if "unit" in res else [])).ngroups
    ax.set_title(f"NDR@30 by method × aggregator and layer group{model}\n"
                 f"(mean over {n_runs} run{'s' if n_runs != 1 else ''}; "
                 "higher = more flipped labels among the lowest-scored 30 %)")
    return _save(fig, out / f"ndr30_heatmap{suffix}.png", plt)


def figures(run_or_sweep_dir: str | os.PathLike, out_dir: str | os.PathLike,
            results: pd.DataFrame | None = None) -> list[Path]:
    """Write the report's PNG figures into ``out_dir``; returns their paths (missing inputs skip a figure).

    From each run's score folder: NDR curves of the best configurations with the random diagonal,
    layer-wise NDR@30 per LoRA module type, noisy-vs-benign rank per layer; from the results table: accuracy
    box plots per configuration (baselines included) and an NDR@30 heat map (``results`` may be the score
    tables of :func:`load_detection` instead: no box plots then; read from ``run_or_sweep_dir`` when None).
    Removal fractions come from each run. In a sweep, units of the same model are averaged; several models give
    one figure of each kind per model.
    """
    root = Path(run_or_sweep_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if results is None:
        try:
            results = load_results(root)
        except LayerinfError:
            results = load_detection(root)
    plt = _plt()
    by_model: dict[str, list[Path]] = {}
    for run in unit_dirs(root):
        by_model.setdefault(unit_model(run), []).append(run)
    models = sorted(set(by_model) | (set(results["model"].unique()) if len(results) else set()))
    several = len(models) > 1
    paths: list[Path] = []
    for model in models:
        suffix = f"_{_safe(model)}" if several else ""
        label = f" — {model}" if several else ""
        res = results[results["model"] == model] if len(results) else results
        runs = by_model.get(model, [])
        params = ReportParams.read(runs)
        makers = [
            lambda: _fig_curves(runs, out, suffix, label, plt, params) if runs else None,
            lambda: _fig_heatmap(res, out, suffix, label, plt, params) if len(res) else None,
            lambda: _fig_boxplots(res, out, suffix, label, plt, params) if len(res) else None,
            lambda: _fig_layerwise(runs, out, suffix, label, plt, params) if runs else None,
            lambda: _fig_noise_rank(runs, out, suffix, label, plt, params) if runs else None,
        ]
        for make in makers:
            p = make()
            if p is not None:
                paths.append(p)
    return paths

