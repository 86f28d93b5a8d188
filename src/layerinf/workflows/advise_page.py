"""The advisor's table, advice, figure and page: a group × aggregator heat map per method and a static,
self-contained HTML page (inline CSS, the figure embedded as a data URI, no scripts, no external resources, every
text escaped). The advise stage (``workflows.advise``) writes them, as the rank stage writes its page."""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from layerinf.errors import LayerinfError
from layerinf.evaluation.noise_rate import KAPPA_FACTOR, NoiseEstimate, adaptive_kappa, mean_ci
from layerinf.stages.task import task_named
from layerinf.evaluation.names import AGG_NAMES, METHOD_NAMES, agg_order, group_order, method_order

CONFIG = ["method", "group", "aggregator"]
METRICS = ("ndr_10", "ndr_30", "auc_ndr", "roc_auc")

METRIC_NAMES = {"ndr_30": "NDR@30", "ndr_10": "NDR@10", "auc_ndr": "AUC-NDR", "roc_auc": "ROC-AUC"}
DPI = 110


def _key(r) -> str:
    return f"{r['method']}/{r['group']}/{r['aggregator']}"


# ------------------------------------------------------------------------------- the table and the advice


def summarize(per_probe: pd.DataFrame, criterion: str = "ndr_30", level: float = 0.95) -> pd.DataFrame:
    """One row per configuration: mean and t-interval over probes (clipped to [0, 1]) of every metric, ranked by
    ``criterion`` (ties: AUC-NDR, then the usual method / group / aggregator order). ``kind`` is ``baseline``
    for the model's own rankings (loss, self-influence: group and aggregator ``-``), else ``influence``."""
    rows = []
    for (method, group, aggregator), g in per_probe.groupby(CONFIG, sort=False):
        row = {"method": method, "group": group, "aggregator": aggregator,
               "kind": "baseline" if group == "-" else "influence", "probes": int(len(g))}
        for m in METRICS:  # every metric lies in [0, 1]: so does its reported interval
            mean, low, high = mean_ci(g[m].to_numpy(), level)
            row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"] = mean, max(low, 0.0), min(high, 1.0)
            row[f"{m}_sd"] = float(g[m].std(ddof=1)) if len(g) > 1 else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    tie = "auc_ndr" if criterion != "auc_ndr" else "ndr_30"
    table["_order"] = [(method_order(m), group_order(g), agg_order(a)) for m, g, a in
                       zip(table["method"], table["group"], table["aggregator"])]
    table = table.sort_values("_order", kind="stable")
    table = table.sort_values([f"{criterion}_mean", f"{tie}_mean"], ascending=False, kind="stable")
    table = table.drop(columns="_order").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def paired_margin(per_probe: pd.DataFrame, a: str, b: str, metric: str, level: float = 0.95) -> dict[str, float]:
    """Mean over probes of metric(a) − metric(b), with a paired t-interval (NaN interval with one probe)."""
    wide = per_probe.assign(key=per_probe["method"] + "/" + per_probe["group"] + "/" + per_probe["aggregator"])
    wide = wide.pivot_table(index="seed", columns="key", values=metric)
    if a not in wide or b not in wide:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
    mean, low, high = mean_ci((wide[a] - wide[b]).to_numpy(), level)
    return {"mean": mean, "low": max(low, -1.0), "high": min(high, 1.0)}  # a difference of [0, 1] metrics


@dataclass(frozen=True)
class AdviceConfig:
    """What turns the probes' metrics into advice (the key of the advisor's output stage)."""

    probe_rate: float
    seeds: tuple[int, ...]
    criterion: str = "ndr_30"
    kappa_factor: float = KAPPA_FACTOR
    vote_kappa: float = 0.30  # the κ the probes scored Vote with (and the fallback without a noise estimate)
    level: float = 0.95
    default_key: str = ""  # the paper's default configuration for this model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry(table: pd.DataFrame, key: str | None) -> dict[str, Any] | None:
    if key is None:
        return None
    hit = table[(table["method"] + "/" + table["group"] + "/" + table["aggregator"]) == key]
    if hit.empty:
        return None
    r = hit.iloc[0]
    out = {"key": key, "method": r["method"], "group": r["group"], "aggregator": r["aggregator"],
           "rank": int(r["rank"])}
    for m in METRICS:
        out[m] = {"mean": _num(r[f"{m}_mean"]), "low": _num(r[f"{m}_low"]), "high": _num(r[f"{m}_high"])}
    return out


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


TRUST_MARGIN = 0.05  # cross-fitted accuracy must beat the majority class by this much to trust the noise estimate


def noise_trusted(noise: NoiseEstimate | None) -> bool:
    """Whether a noise estimate may set κ: finite, and made by models that learned something (cross-fitted
    accuracy against the given labels above the majority-class share + ``TRUST_MARGIN``). A model that learned
    nothing gives near-constant probabilities, and confident learning then reports ≈ 50 % noise for two classes."""
    if noise is None or not math.isfinite(noise.rate):
        return False
    acc, major = noise.extra.get("accuracy_vs_given_labels"), noise.extra.get("majority_share")
    return acc is None or major is None or acc >= major + TRUST_MARGIN


def recommend(table: pd.DataFrame, per_probe: pd.DataFrame, cfg: AdviceConfig, noise: NoiseEstimate | None,
              context: dict | None = None) -> dict[str, Any]:
    """The best configuration with its interval, its margins over the runner-up and the paper's default, and
    Vote's κ for the user's data (adaptive when the noise rate was estimated)."""
    if table.empty:
        raise LayerinfError("no configuration was scored in the probes", "check the score options (methods, groups)")
    usable = table[table["kind"] == "influence"]  # what `suspects` can rank with; baselines are for reference
    if usable.empty:
        raise LayerinfError("no influence configuration was scored in the probes", "check the methods and groups")
    best = _entry(table, _key(usable.iloc[0]))
    runner = _entry(table, _key(usable.iloc[1])) if len(usable) > 1 else None
    baselines = {_key(r): _entry(table, _key(r)) for r in table[table["kind"] == "baseline"].to_dict("records")}
    default = _entry(table, cfg.default_key or None)

    def margin(other):
        if other is None:
            return None
        return {m: {k: _num(v) for k, v in paired_margin(per_probe, best["key"], other["key"], m, cfg.level).items()}
                for m in (cfg.criterion, "auc_ndr")}

    trusted = noise_trusted(noise)
    kappa = adaptive_kappa(noise.rate, cfg.kappa_factor) if trusted else cfg.vote_kappa
    if noise is None:
        why = task_named((context or {}).get("task")).no_noise_estimate or "noise_folds=0"
        rule = f"no noise estimate ({why}): the configured vote_kappa {cfg.vote_kappa:g}"
    elif not trusted:
        rule = (f"the configured vote_kappa {cfg.vote_kappa:g}: the noise estimate is not used, its cross-fitted "
                f"models do not beat the majority class by {TRUST_MARGIN:.0%}")
    else:
        rule = f"clip({cfg.kappa_factor:g} × estimated noise rate, 0.05, 0.5)"
    return {
        "format": "layerinf-advise-v1",
        "criterion": cfg.criterion,
        "level": cfg.level,
        "probe_rate": cfg.probe_rate,
        "probes": len(cfg.seeds),
        "seeds": list(cfg.seeds),
        "configurations": int(len(table)),
        "best": best,
        "runner_up": runner,
        "default": default,
        "default_key": cfg.default_key,
        "margin_over_runner_up": margin(runner),
        "margin_over_default": margin(default) if default is not None and default["key"] != best["key"] else (
            {m: {"mean": 0.0, "low": 0.0, "high": 0.0} for m in (cfg.criterion, "auc_ndr")} if default else None),
        "baselines": baselines,
        "noise": noise.to_dict() if noise is not None else None,
        "vote_kappa": kappa,
        "noise_trusted": bool(trusted),
        "kappa_rule": rule,
        "probe_vote_kappa": cfg.vote_kappa,
        "rank_config": {"method": best["method"], "group": best["group"], "aggregator": best["aggregator"],
                        "vote_kappa": kappa},
        **(context or {}),
    }



# ---------------------------------------------------------------------------------------------- figure


def render_heatmap(table: pd.DataFrame, metric: str = "ndr_30", *, best: str | None = None,
                   default: str | None = None) -> bytes:
    """PNG bytes: one panel per method, rows = layer groups, columns = aggregators, colour = mean planted
    ``metric`` over probes (annotated with the mean and, with ≥ 2 probes, the half-width of the 95 % CI).
    The recommended configuration is framed in black, the paper's default in a dashed grey frame."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    table = table[table["group"] != "-"]  # the model's own rankings (loss, self-influence) have no layer group
    methods = sorted(table["method"].unique(), key=method_order)
    groups = sorted(table["group"].unique(), key=group_order)
    aggs = sorted(table["aggregator"].unique(), key=agg_order)
    col = f"{metric}_mean"
    vals = table[col].to_numpy(dtype=float)
    vmin = float(np.nanmin(vals)) if np.isfinite(vals).any() else 0.0
    vmax = float(np.nanmax(vals)) if np.isfinite(vals).any() else 1.0
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    width = 1.2 + 0.9 * len(aggs)
    fig, axes = plt.subplots(1, len(methods), figsize=(max(3.2, width) * len(methods) + 0.8, 0.45 * len(groups) + 1.6),
                             squeeze=False)
    im = None
    for ax, method in zip(axes[0], methods):
        grid = np.full((len(groups), len(aggs)), np.nan)
        half = np.full_like(grid, np.nan)
        sub = table[table["method"] == method]
        for r in sub.itertuples(index=False):
            i, j = groups.index(r.group), aggs.index(r.aggregator)
            grid[i, j] = getattr(r, col)
            lo, hi = getattr(r, f"{metric}_low"), getattr(r, f"{metric}_high")
            half[i, j] = (hi - lo) / 2 if np.isfinite(lo) and np.isfinite(hi) else np.nan
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(groups)):
            for j in range(len(aggs)):
                if np.isnan(grid[i, j]):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="#777")
                    continue
                txt = f"{grid[i, j]:.2f}" + (f"\n±{half[i, j]:.2f}" if np.isfinite(half[i, j]) else "")
                light = (grid[i, j] - vmin) / (vmax - vmin) > 0.6
                ax.text(j, i, txt, ha="center", va="center", fontsize=7.5, color="black" if light else "white")
                key = f"{method}/{groups[i]}/{aggs[j]}"
                if key == best:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
                elif key == default:
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, lw=1.8, ec="#bbbbbb",
                                           ls="--"))
        ax.set_xticks(range(len(aggs)), [AGG_NAMES.get(a, a) for a in aggs])
        ax.set_yticks(range(len(groups)), groups)
        ax.set_title(METHOD_NAMES.get(method, method))
        for s in ax.spines.values():
            s.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label=f"planted {METRIC_NAMES.get(metric, metric)}")
    fig.suptitle(f"Planted-flip {METRIC_NAMES.get(metric, metric)} (mean over probes); "
                 "black frame = recommended, dashed = paper's default", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em} .sub{color:#666;margin-top:0}
.box{background:#f5f7fa;border:1px solid #dde3ea;border-radius:6px;padding:.8em 1em;margin:1em 0}
.pick{background:#eef8ee;border-color:#bfe0bf}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border-bottom:1px solid #e3e3e3;padding:.3em .5em;text-align:left}
th{background:#fafafa} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{font-weight:600;background:#f3fbf3} tr.default td{background:#f7f7fb}
img{max-width:100%;height:auto;border:1px solid #eee}
"""


def _f(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def _ci(d: dict | None, pct: bool = False, short: bool = False) -> str:
    if not d:
        return "n/a"
    if d.get("low") is None:
        return _f(d["mean"], pct) + ("" if short else " (one probe: no interval)")
    return f"{_f(d['mean'], pct)} [{_f(d['low'], pct)}, {_f(d['high'], pct)}]"


def _label(entry: dict | None) -> str:
    if not entry:
        return "n/a"
    return (f"{METHOD_NAMES.get(entry['method'], entry['method'])} · {entry['group']} · "
            f"{AGG_NAMES.get(entry['aggregator'], entry['aggregator'])}")


def render_page(rec: dict, table: pd.DataFrame, per_probe: pd.DataFrame, png: bytes, limit: int = 40) -> str:
    """The advisor's page (static HTML string)."""
    e = html.escape
    crit = rec["criterion"]
    cname = METRIC_NAMES.get(crit, crit)
    best, runner, default = rec["best"], rec.get("runner_up"), rec.get("default")
    m_run = (rec.get("margin_over_runner_up") or {}).get(crit)
    m_def = (rec.get("margin_over_default") or {}).get(crit)
    noise = rec.get("noise")
    one = rec["probes"] < 2
    if noise:
        noise_html = (f"Estimated share of wrong labels in your data (as given): <b>{_ci({'mean': noise['rate'], 'low': noise['low'], 'high': noise['high']}, pct=True)}</b> — "
                      f"confident learning (Northcutt et al. 2021) on {e(str(noise['extra'].get('folds', '?')))}-fold "
                      "cross-fitted probabilities"
                      + (" (each fold predicted by the probe that did not train on it, whose training labels held the "
                         "planted flips too)" if rec.get("probe_folds") else "")
                      + "; the interval is a bootstrap over examples and ignores the model's "
                      "own uncertainty.")
        acc, major = noise["extra"].get("accuracy_vs_given_labels"), noise["extra"].get("majority_share")
        if acc is not None:
            noise_html += f" Cross-fitted accuracy against your labels: {acc:.1%}"
            noise_html += f" (majority class: {major:.1%})." if major is not None else "."
            if not rec.get("noise_trusted", True):
                noise_html += (" <b>The cross-fitted models barely beat the majority class: the estimate is not "
                               "trustworthy and does not set κ</b> — train longer or on more data"
                               + (", or lower --probe-rate or pass --noise-folds 2 (models trained on your labels "
                                  "alone, without the probes' planted flips)" if rec.get("probe_folds") else "")
                               + ".")
    elif task_named(rec.get("task")).no_noise_estimate:
        noise_html = (f"The noise rate is not estimated for {task_named(rec.get('task')).no_noise_estimate} (it needs "
                      "class probabilities).")
    else:
        noise_html = "The noise rate was not estimated (noise_folds = 0)."
    kappa_html = (f"Vote's κ for your data: <b>{rec['vote_kappa']:.2f}</b> ({e(rec['kappa_rule'])}). "
                  f"The probes scored Vote with κ = {rec['probe_vote_kappa']:g}.")
    default_line = (f"the paper's default ({e(_label(default))}, rank {default['rank']}): {cname} {_ci(default[crit])}; "
                    f"margin {_ci(m_def)}" if default else
                    f"the paper's default ({e(rec.get('default_key') or '?')}) was not scored")
    pick = (
        f"<p><b>Recommended: {e(_label(best))}</b> — planted {cname} {_ci(best[crit])}, "
        f"AUC-NDR {_ci(best['auc_ndr'])}.</p><ul>"
        f"<li>runner-up ({e(_label(runner))}): {cname} {_ci(runner[crit]) if runner else 'n/a'}; "
        f"margin (paired over probes) {_ci(m_run)}</li>"
        f"<li>{default_line}</li></ul>"
        f"<p>{noise_html}<br>{kappa_html}</p>"
        "<p>Use it: <code>layerinf suspects OUT --source YOUR_DATA "
        + (f"--model {e(str(rec['model']))} " if rec.get("model") else "") +
        f"--method {e(best['method'])} --group {e(best['group'])} --aggregator {e(best['aggregator'])} "
        f"--vote-kappa {rec['vote_kappa']:.2f}</code></p>"
    )
    planted = e(task_named(rec.get("task")).probe_text(rec["probe_rate"], rec.get("noise_kind")))
    caveat = (
        f"{planted} and the metrics count <b>only these planted flips</b> as noisy: examples that were "
        "already mislabelled in your data count as clean, so a configuration that also finds them is not rewarded "
        "for it. Intervals are Student-t 95 % intervals over "
        f"{rec['probes']} probe(s)" + (" — with one probe there is no interval; run more probes to compare "
                                        "configurations reliably." if one else
                                        "; with few probes they are wide: a margin whose interval contains 0 is "
                                        "not a reliable difference.")
    )
    show = table.head(limit)
    head = ("<tr><th>rank</th><th>method</th><th>group</th><th>aggregator</th>"
            f"<th>{e(cname)} (95 % CI)</th><th>AUC-NDR (95 % CI)</th><th>ROC-AUC</th><th>NDR@10</th></tr>")
    body = []
    for r in show.to_dict("records"):
        key = _key(r)
        cls = ' class="best"' if key == best["key"] else (' class="default"' if key == rec.get("default_key") else "")
        body.append(
            f"<tr{cls}><td class=\"num\">{r['rank']}</td><td>{e(METHOD_NAMES.get(r['method'], r['method']))}"
            f"{' (baseline: the model itself)' if r['kind'] == 'baseline' else ''}</td>"
            f"<td>{e(r['group'])}</td><td>{e(AGG_NAMES.get(r['aggregator'], r['aggregator']))}</td>"
            f"<td class=\"num\">{_ci({'mean': r[f'{crit}_mean'], 'low': _nn(r[f'{crit}_low']), 'high': _nn(r[f'{crit}_high'])}, short=True)}</td>"
            f"<td class=\"num\">{_ci({'mean': r['auc_ndr_mean'], 'low': _nn(r['auc_ndr_low']), 'high': _nn(r['auc_ndr_high'])}, short=True)}</td>"
            f"<td class=\"num\">{_f(r['roc_auc_mean'])}</td><td class=\"num\">{_f(r['ndr_10_mean'])}</td></tr>")
    probes = (per_probe.groupby("seed").agg(n=("n", "first"), planted=("n_planted", "first"))
              .reset_index().to_dict("records"))
    probe_rows = "".join(f"<tr><td class=\"num\">{p['seed']}</td><td class=\"num\">{p['n']}</td>"
                         f"<td class=\"num\">{p['planted']}</td></tr>" for p in probes)
    img = base64.b64encode(png).decode("ascii")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>layerinf advise — which layers to trust on {e(str(rec.get('source', 'your data')))}</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Which layers to trust on your data</h1>"
        f"<p class=\"sub\">model {e(str(rec.get('model', '?')))} · {rec.get('n_train', '?')} training examples · "
        f"{rec['probes']} probe(s) at {rec['probe_rate']:.0%} planted flips"
        + (f" (cross-fitted: each trained on {rec['probe_folds'] - 1} of {rec['probe_folds']} folds, at least "
           f"{rec.get('n_probe_train', '?')} examples)" if rec.get("probe_folds") else "")
        + f" · {rec['configurations']} configurations · "
        f"criterion: planted {e(cname)} (higher = better; random ≈ {0.3 if crit == 'ndr_30' else 0.1 if crit == 'ndr_10' else 0.5})</p>"
        f"<div class=\"box pick\">{pick}</div>"
        f"<div class=\"box\">{caveat}</div>"
        "<h2>Every configuration (mean over probes)</h2>"
        f"<img alt=\"heat map of planted {e(cname)} per method, layer group and aggregator\" "
        f"src=\"data:image/png;base64,{img}\">"
        f"<h2>Ranking (top {len(show)} of {len(table)}; all in table.csv)</h2>"
        f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
        "<h2>Probes</h2><table><thead><tr><th>seed</th><th>training examples</th><th>planted flips</th></tr></thead>"
        f"<tbody>{probe_rows}</tbody></table>"
        "<p class=\"sub\">Scores follow layerinf's convention: higher = more helpful; the bottom of a ranking is "
        "suspected. Files: table.csv (this ranking), probes.csv (every probe × configuration), "
        "recommendation.json, heatmap.png.</p>"
        "</body></html>\n"
    )


def _nn(v):
    v = float(v)
    return None if math.isnan(v) else v
