"""The report's one static HTML page: inline CSS, no JavaScript, no external URLs.

Its texts (reading guide, section introductions, figure captions, footer) state the parameters the runs
actually used (:class:`~layerinf.reporting.params.ReportParams`: filtering fraction, Vote's κ, layer groups);
a report of runs that were scored but not retrained shows the detection side and says what retraining adds.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from layerinf.reporting.common import group_order, pct
from layerinf.reporting.formatting import display
from layerinf.reporting.params import ReportParams
from layerinf.store.layout import PAGE_FILE, REPORT_FIGURES, REPORT_TABLES

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2329;
background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:1.6em;margin:0 0 4px} h2{font-size:1.25em;margin:36px 0 8px;border-bottom:2px solid #e3e6ea;
padding-bottom:4px} h3{font-size:1.05em;margin:20px 0 6px}
.meta{color:#5a6570;font-size:.92em;margin:0 0 16px}
.guide{background:#f2f6fb;border-left:4px solid #3b7dd8;padding:10px 16px;font-size:.93em}
.guide dt{font-weight:600;margin-top:6px} .guide dd{margin:0 0 0 16px}
.caveat{background:#fff7e6;border-left:4px solid #e0a030;padding:8px 16px;font-size:.93em;margin-top:10px}
.answer{background:#eef6ee;border-left:4px solid #3a9a3a;padding:4px 16px;margin:12px 0} .answer h2{margin-top:8px}
table{border-collapse:collapse;font-size:.86em;margin:6px 0;width:auto}
th,td{padding:4px 9px;border-bottom:1px solid #e6e8eb;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#eef1f4;position:sticky;top:0;font-weight:600}
td.t,th.t{text-align:left} td.wrap{white-space:normal;max-width:420px;text-align:left}
tr.baseline td{background:#faf7ef;font-style:italic}
tr:hover td{background:#f3f8ff}
.scroll{max-height:560px;overflow:auto;border:1px solid #e6e8eb;display:inline-block;max-width:100%}
.v-supported{background:#e3f4e1;color:#1d6b1a;font-weight:600}
.v-not-supported{background:#fbe4e2;color:#9b2219;font-weight:600}
.v-too-little-data{background:#eeeeee;color:#555;font-weight:600}
.notes{font-size:.85em;color:#5a6570;margin:4px 0 0 0;padding-left:18px}
figure{margin:18px 0 28px} figure img{max-width:100%;height:auto;border:1px solid #e6e8eb}
figcaption{font-size:.9em;color:#38424c;max-width:900px;margin-top:4px}
footer{margin-top:40px;font-size:.85em;color:#6b7680}
code{background:#f0f2f4;padding:0 3px;border-radius:3px}
"""


def captions(p: ReportParams) -> dict[str, str]:
    """Figure captions by file-name stem, worded with the runs' filtering fraction(s)."""
    ndr30 = ("the removed bottom 30 %" if p.fraction == 0.3
             else f"the 30 % lowest-scored examples (the filter removes the {p.removed})")
    if p.fraction is None:
        marks = "the vertical lines mark the fractions the units remove (" + ", ".join(map(pct, p.fractions)) + ")"
    else:
        marks = f"the vertical line marks the {p.percent} that is actually removed" + (" (NDR@30)" if p.fraction == 0.3
                                                                                  else "")
    return {
        "ndr_curves": "Share of the flipped (noisy) training labels found when the training examples are removed "
                      "from the lowest score upwards. The dotted diagonal is a random order, the dashed purple line a "
                      f"perfect detector; {marks}. "
                      "The area under each curve, normalised, is AUC-NDR.",
        "ndr30_heatmap": "NDR@30 of every method × aggregator (rows) and layer group (columns): the share of flipped "
                         f"labels inside {ndr30}. A random removal scores about 0.30; n/a = not computed "
                         "(e.g. DataInf on WE).",
        "accuracy_boxplots": f"Test accuracy after removing each configuration's {p.removed} and retraining from the "
                             "same initial checkpoint, one point per run. Hatched boxes are the baselines (no removal, "
                             "random removal, oracle removal of the noisy examples first).",
        "layerwise_ndr": "NDR@30 of each single LoRA module (Query/Value × A/B) against its layer; word embeddings "
                         "(WE) at the left end and the classification head (CL) at the right. The paper finds "
                         "Value-B modules the most informative.",
        "noise_rank": "Mean normalised rank of the noisy (red) and benign (blue) training examples in each layer's "
                      "score order (0 = lowest score = removed first; the dashed line marks the "
                      f"{p.percent} removed). The further the red line lies below the blue one, the better that layer "
                      "separates flipped labels.",
    }


def guide(p: ReportParams, groups: str, retrained: bool = True) -> str:
    """The "How to read this report" definitions (HTML), with the runs' parameters."""
    e = html.escape
    ndr30 = ("inside the removed bottom 30 %" if p.fraction == 0.3
             else f"among the 30 % lowest-scored training examples (the filter removes the {e(p.removed)})")
    then = ("the model is then retrained from the same initial checkpoint and tested" if retrained
            else "these runs stopped before that retraining")
    items = [
        ("Sign convention", "Every influence score is oriented <b>higher = more helpful</b>. Filtering removes the "
         f"<b>{e(p.removed)}</b> (lowest scores) of the training set; {then}."),
        ("Configuration", "influence method (TracIn, Cosine, DataInf) × layer group (here: "
         f"<b>{e(groups or 'none found')}</b>; WE = word embeddings, attention-layer groups are named by their "
         "first–last layer, CL = classification head) × aggregator (Mean, Rank, Vote over the per-module, "
         "per-validation-sample scores; Vote gives each training example linearly decaying votes from the voters "
         f"that rank it in their bottom κ share, <b>{e(p.kappa)}</b>)"
         + ("; baselines: no removal, random removal, oracle (noisy examples first)." if retrained else ".")),
        ("NDR@30", f"Noise detection rate: the share of the flipped (noisy) labels that fall {ndr30}. "
         "Random ≈ 0.30; 1.0 = every flipped label found."),
        ("AUC-NDR", "Area under the whole NDR curve (all removal fractions), normalised so that a perfect ranking "
         "scores 1; random ≈ 0.5."),
        ("Cancellation", "Σ‖gᵢ‖₁ / ‖Σgᵢ‖₁ over a group's per-example gradients: how much the gradients cancel out. "
         "The paper argues it is <i>not</i> a reliable guide for choosing layers."),
    ]
    if retrained:
        items += [
            ("Win rate", "For each run (model, task, seed), configuration c beats c′ if its accuracy after filtering "
             "is strictly higher; the win rate is the fraction of such wins averaged over all other configurations "
             "(0–1). wstd is the spread of c's pairwise win fractions."),
            ("Pareto rank", "Keep only pairwise win fractions above τ; rank 1 = not dominated by any other "
             "configuration, rank 2 = dominated only by rank-1 ones, and so on. Smaller is better. \"avg. rank\" is "
             "the Friedman average accuracy rank within a run (1 = best)."),
        ]
    return "<dl>" + "".join(f"<dt>{t}</dt><dd>{d}</dd>" for t, d in items) + "</dl>"


def sections(p: ReportParams) -> list[tuple[str, str, str]]:
    """(table name, heading, introduction) of the known tables, in page order."""
    return [
        ("claims", "The paper's claims, checked on this data",
         "Verdicts compare the measured numbers only; with few runs they are indicative, not significant."),
        ("configurations", "Configurations ranked by win rate",
         f"Accuracy is the test accuracy after removing the {p.removed} and retraining: best over epochs (as in "
         "the paper) and at the epoch with the lowest influence-set loss; ± is the half-width of its 95 % Student "
         "t-interval (over the repeated retrainings of one run, or over runs; none for a single retraining). "
         "[lo, hi] after NDR@30, AUC-NDR and ROC-AUC is the 95 % bootstrap interval over the training examples. "
         "⚠ marks retrainings that collapsed to the majority class. Baselines in italics."),
        ("configurations_by_model", "Configurations per model",
         "Win rates and Pareto ranks computed within each model."),
        ("detection", "Noise detection per configuration (no retraining)",
         f"How many flipped labels each configuration puts among its lowest scores (NDR@k: share of them in the "
         f"bottom k %), averaged over runs; the filter would remove the {p.removed}. [lo, hi]: 95 % bootstrap "
         "interval over the training examples."),
        ("top_suspects", "The most suspicious training examples",
         "The lowest-scored training examples of {config}: what filtering would remove first. 'noisy' marks "
         "the examples whose label (or response) was corrupted, "
         "with the original next to it."),
        ("spearman", "Do the proxies predict accuracy? (Spearman ρ)",
         "One ρ per method × aggregator, pooling the layer groups × runs (DataInf × WE skipped); "
         "* = p > 0.05 (not significant)."),
        ("wilcoxon", "Mean vs Rank / Vote (paired Wilcoxon over runs)",
         "difference = accuracy with Rank/Vote minus accuracy with Mean; positive favours Rank/Vote."),
    ]


def _html_table(name: str, df: pd.DataFrame, max_rows: int | None = None) -> str:
    disp = display(name, df)
    if max_rows is not None and len(disp) > max_rows:
        disp = disp.iloc[:max_rows]
    text_cols = {"claim", "paper", "measured", "verdict", "method", "group", "aggregator", "kind", "model",
                 "comparison", "note", "groups", "significant"}
    wrap_cols = {"claim", "paper", "measured"}
    cols = list(disp.columns)
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">{html.escape(str(c))}</th>' for c in cols)
    body = []
    kinds = df["kind"].tolist() if "kind" in df.columns else [None] * len(df)
    kinds = kinds[: len(disp)]
    for i, row in enumerate(disp.itertuples(index=False)):
        cells = []
        for c, v in zip(cols, row):
            cls = "wrap" if c in wrap_cols else ("t" if c in text_cols else "")
            if c == "verdict":
                cls += " v-" + str(v).replace(" ", "-")
            cells.append(f'<td class="{cls.strip()}">{html.escape(str(v))}</td>')
        tr = ' class="baseline"' if i < len(kinds) and kinds[i] == "baseline" else ""
        body.append(f"<tr{tr}>" + "".join(cells) + "</tr>")
    notes = df.attrs.get("notes") or []
    note_html = ('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    scroll = len(disp) > 18
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if scroll:
        table = f'<div class="scroll">{table}</div>'
    return table + note_html


def _caption(path: Path, caps: dict[str, str]) -> str:
    stem = path.stem
    for key in sorted(caps, key=len, reverse=True):
        if stem == key or stem.startswith(key + "_"):
            extra = stem[len(key) + 1:]
            return caps[key] + (f" Model: {extra}." if extra else "")
    return stem.replace("_", " ")


def _table_groups(tables: dict[str, pd.DataFrame]) -> list[str]:
    found = {str(g) for df in tables.values() if "group" in df.columns for g in df["group"]}
    return sorted(found - {"-", "nan"}, key=group_order)


META_LABELS = (("source", "source"), ("kind", "type"), ("models", "models"), ("tasks", "tasks"),
               ("seeds", "seeds"), ("runs", "runs"), ("units", "units"), ("filtering", "filtering"),
               ("vote", "Vote"), ("groups", "layer groups"), ("tau", "Pareto τ"),
               ("win_rate_denominator", "win rate ÷"), ("generated", "generated"), ("version", "layerinf"))


def write_html(out_dir: str | os.PathLike, tables: dict[str, pd.DataFrame], figures: Sequence[Path | str],
               meta: dict[str, Any] | None = None, params: ReportParams | None = None) -> Path:
    """Write ``out_dir/PAGE_FILE``: one static page (inline CSS, no JavaScript, no external URLs).

    ``figures`` are PNG paths; those outside ``out_dir/figures`` are copied there and referenced by relative
    path. ``meta`` may hold ``title``, ``source``, ``kind``, ``runs``, ``units``, ``models``, ``tasks``,
    ``seeds``, ``tau``, ``include_self``, ``generated``, ``version`` and ``note`` (a line shown above the
    tables); ``params`` (default: the defaults of :mod:`layerinf.config`) words the texts and fills
    ``filtering``, ``vote`` and ``groups``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    p = params or ReportParams()
    groups = p.groups(_table_groups(tables))
    meta.setdefault("filtering", f"{p.removed} removed")
    meta.setdefault("vote", p.kappa)
    meta.setdefault("groups", groups)
    fig_dir = out / REPORT_FIGURES
    rel_figs = []
    for f in figures:
        f = Path(f)
        try:
            rel = f.resolve().relative_to(out.resolve())
        except ValueError:
            fig_dir.mkdir(exist_ok=True)
            shutil.copy2(f, fig_dir / f.name)
            rel = Path(REPORT_FIGURES) / f.name
        rel_figs.append(rel)
    retrained = "configurations" in tables
    title = meta.get("title") or "layerinf report"
    bits = []
    for key, label in META_LABELS:
        if meta.get(key) not in (None, "", []):
            v = meta[key]
            v = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            bits.append(f"{label}: <b>{html.escape(str(v))}</b>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{" · ".join(bits)}</p>',
    ]
    if meta.get("answer"):
        parts.append('<section class="answer"><h2>What this run found</h2>'
                     + "".join(f"<p>{html.escape(str(line))}</p>" for line in meta["answer"]) + "</section>")
    if meta.get("note"):
        parts.append(f'<div class="caveat">{html.escape(str(meta["note"]))}</div>')
    if meta.get("claims_page"):
        parts.append(f'<p>The paper\'s claims, tested on these runs: <a href="{html.escape(meta["claims_page"])}">'
                     "verdicts with 95 % intervals</a>.</p>")
    parts += ["<h2>How to read this report</h2>", '<div class="guide">' + guide(p, groups, retrained) + "</div>"]
    if retrained:
        parts.append(
            '<div class="caveat"><b>Caveats.</b> "best_accuracy" is the maximum test accuracy over retraining '
            "epochs, which is optimistic (it is what the paper reports); the accuracy at the epoch with the lowest "
            "influence-set loss is shown next to it. Win rates over few runs are coarse: with one run every pairwise "
            "comparison is 0 or 1. Correlations and tests with few points are marked or left out.</div>")
    known = sections(p)
    for name, heading, intro in known:
        if name not in tables:
            continue
        parts.append(f'<h2 id="{name}">{html.escape(heading)}</h2>')
        if name == "top_suspects" and meta.get("top_suspects_config"):
            why = (", the best configuration named at the top of this page" if meta.get("top_suspects_is_best") else
                   ", the configuration with the best NDR@30 in this run (the best one named at the top has no stored "
                   "scores)")
            intro = intro.replace("{config}", str(meta["top_suspects_config"]) + why)
        parts.append(f"<p>{html.escape(intro)}</p>")
        parts.append(_html_table(name, tables[name]))
    for name, df in tables.items():
        if name not in {s[0] for s in known}:
            parts.append(f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>')
            parts.append(_html_table(name, df))
    if rel_figs:
        caps = captions(p)
        parts.append('<h2 id="figures">Figures</h2>')
        for i, rel in enumerate(rel_figs, start=1):
            src = html.escape(rel.as_posix(), quote=True)
            cap = html.escape(_caption(rel, caps))
            parts.append(f'<figure><img src="{src}" alt="{html.escape(rel.stem)}">'
                         f"<figcaption><b>Figure {i}.</b> {cap}</figcaption></figure>")
    csvs = ", ".join(f'<a href="{REPORT_TABLES}/{html.escape(n)}.csv"><code>{html.escape(n)}.csv</code></a> '
                     f'(<a href="{REPORT_TABLES}/{html.escape(n)}.md">md</a>)' for n in tables)
    parts.append(f"<footer>All tables as CSV and Markdown: {csvs}. Sign convention: higher score = more helpful; "
                 f"the {html.escape(p.removed)} is removed.</footer>")
    parts.append("</main></body></html>")
    path = out / PAGE_FILE
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
