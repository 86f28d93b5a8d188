"""The suspects page: a static, self-contained HTML list of the most suspicious training examples."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

HTML_LIMIT = 300  # rows listed on the HTML page (the CSV / JSONL hold every example)
TEXT_LIMIT = 400  # characters of an SFT prompt / response shown on the page (the CSV / JSONL hold the whole text)


def _fmt(v: float) -> str:
    """The page's one number format: 4 significant digits (0.9731, 0.03125, -1.234e-05)."""
    return f"{float(v):.4g}"


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
.warn{background:#fff4e5;border:2px solid #e0a030;color:#5a3a00}
.cover{font-weight:600}
"""
_SFT_CSS = ".cut{color:#888} td.prompt,td.response{white-space:pre-wrap}\n"


def _cut(text, limit: int = TEXT_LIMIT) -> str:
    """``text`` escaped; beyond ``limit`` characters cut, with a visible "…" and how much was left out."""
    s = str(text)
    if len(s) <= limit:
        return html.escape(s)
    return (html.escape(s[:limit]) + f'<span class="cut" title="the whole text is in suspects.csv">… '
            f"(+{len(s) - limit:,} characters)</span>")


def _noisy_cell(result, row) -> str:
    if not result.mask_known:
        return ""
    return "<td>" + ('<span class="tag">noisy</span>' if row.noisy else "") + "</td>"


def _instruction_rows(result, shown) -> list[str]:
    return [f"<tr><td class=\"num\">{r.rank}</td><td class=\"num\">{r.source_idx}</td>"
            f"<td class=\"prompt\">{_cut(r.prompt)}</td><td class=\"response\">{_cut(r.response)}</td>"
            f"<td class=\"num\">{html.escape(_fmt(r.response_loss))}</td>"
            f"<td class=\"num\">{html.escape(_fmt(r.score))}</td>{_noisy_cell(result, r)}</tr>"
            for r in shown.itertuples(index=False)]


RANKING_TEXT = {
    "combined": "the rank average of influence, out-of-sample confidence and the embedding classifier's confidence",
    "influence": "influence (the configuration above)",
    "confidence": "out-of-sample confidence: p(given label) from the fine-tuned fold model that did not train on the row",
    "embedding": "the embedding classifier's out-of-sample p(given label) (logistic regression on the base model's "
                 "sentence embeddings; no fine-tuning)",
}


def detection_box(result) -> str:
    """Cross-fitting: which ranking orders the page and why, how many rows are flagged and why, and every ranking's
    score on the planted-flip probe side by side (empty for one fit)."""
    d = getattr(result, "detection", None) or {}
    if not d:
        return ""
    e = html.escape
    probe = d.get("probe_mean") or {}
    cells = "".join(f"<tr><td>{'<b>' if k == d['ranking'] else ''}{e(k)}{'</b>' if k == d['ranking'] else ''}</td>"
                    f"<td class=\"num\">{_fmt(v)}</td><td>{e(RANKING_TEXT.get(k, k))}</td></tr>"
                    for k, v in sorted(probe.items(), key=lambda kv: -kv[1]))
    table = ("<table><thead><tr><th>ranking</th><th>probe ROC-AUC</th><th>what it is</th></tr></thead>"
             f"<tbody>{cells}</tbody></table>") if cells else ""
    h = d.get("oos_health") or {}
    learned = (f"The fold models' out-of-sample accuracy on all {int(h['n']):,} rows: {h['accuracy']:.3f} (95 % CI "
               f"{h['ci95'][0]:.3f}–{h['ci95'][1]:.3f}) against {h['majority']:.3f} for the majority class. "
               if h else "")
    return (f'<div class="box"><b>Ranking used: {e(d["ranking"])}</b> — {e(RANKING_TEXT.get(d["ranking"], ""))}. '
            f"Why: {e(d['why'])}. {e(learned)}<b>Flagged {int(d['flagged']):,} rows</b>: {e(d['flagged_by'])} (--top overrides). "
            "Every ranking is a column of suspects.csv (score:&lt;ranking&gt;), with the out-of-sample class "
            "probabilities (p_oos:&lt;class&gt;; pred_probs.npy for cleanlab)."
            + (f" The probe flipped {d.get('probe_rate', 0):.0%} of each fold's training labels on purpose and "
               "scored each ranking at finding them (0.5 = chance):" if cells else "") + f"{table}</div>")


def _classification_rows(result, shown) -> list[str]:
    e = html.escape
    oos = "p_given_oos" in shown.columns
    rows = []
    for r in shown.itertuples(index=False):
        text = e(str(r.text))
        if r.text_pair is not None:
            text += f'<span class="pair">{e(str(r.text_pair))}</span>'
        pred = r.predicted_oos if oos else r.predicted_label
        pred_cls = ' class="diff"' if pred != r.given_label else ""
        rows.append(
            f"<tr><td class=\"num\">{r.rank}</td><td class=\"num\">{r.source_idx}</td><td>{text}</td>"
            f"<td>{e(str(r.given_label))}</td><td{pred_cls}>{e(str(pred))}</td>"
            f"<td class=\"num\">{e(_fmt(r.p_given_oos if oos else r.probability))}</td>"
            f"<td class=\"num\">{e(_fmt(r.score))}</td>"
            f"{_noisy_cell(result, r)}</tr>"
        )
    return rows


def render_html(result, limit: int = HTML_LIMIT) -> str:
    """A static, self-contained page (inline CSS, no scripts, no external resources; all texts escaped)."""
    e = html.escape
    t = result.table
    shown = t[t["suspect"]].head(limit)
    page = result.kind.page  # the task's parts of the page (``stages.task``)
    rows = page.rows(result, shown)
    method_names = {"datainf": "DataInf", "tracin": "TracIn", "cosine": "Cosine (gradient similarity)"}
    agg_names = {"vote": f"Vote (κ = {result.kappa:g})", "rank": "Rank", "mean": "Mean"}
    cover = getattr(result, "coverage", None) or {}
    crossfit = ""
    if cover.get("how") == "crossfit":
        k = int(cover.get("folds", 0))
        crossfit = (
            f"<b>Cross-fitting:</b> your rows were cut into {k} folds; each fold was once the validation set of a "
            f"model fine-tuned on the other {k - 1}, so every row was scored by the {k - 1} models that trained on "
            "it. Its score here is the <b>mean of its percentile ranks within those fits</b> (0 = the lowest score "
            "of a fit, 1 = the highest), so scores of different fits are comparable. ")
    ranking = getattr(result, "ranking", "influence")
    if ranking != "influence":
        crossfit += (f"The page is ordered by the <b>{e(ranking)}</b> ranking (below); its influence part is: ")
    explain = crossfit + (
        f"Each training example was scored by <b>{e(method_names.get(result.method, result.method))}</b> influence: "
        f"how much the example's gradient, on the LoRA modules of layer group <b>{e(result.group)}</b> of the "
        f"fine-tuned model <b>{e(result.model)}</b>, helps the model on held-out validation examples. "
        "The per-module, per-validation-example scores were combined by "
        f"<b>{e(agg_names.get(result.aggregator, result.aggregator))}</b>. "
        + page.loss_note
        + "Sign convention: <b>higher score = more helpful</b>; an example with a low score pushes the model away from "
        "what the validation data teach, which is typical of a wrong "
        + page.wrong
        + ". The page lists the lowest-scoring "
        f"{result.n_suspects / max(result.n, 1):.0%} of the training set ({result.n_suspects:,} of {result.n:,}), "
        "most suspicious first. "
        "This is a ranking, not a verdict: read the suspects, "
        + page.fix
        + " (or <b>drop</b> "
        "them when unsure), then <b>retrain</b> and run this again on the cleaned data."
    )
    ndr = ""
    if result.mask_known and result.ndr_30 is not None:
        ndr = (f'<div class="box ndr">A noise mask is known for this data: the suspects contain '
               f"<b>NDR@30 = {_fmt(result.ndr_30)}</b> of the known noisy examples (random ranking: 0.30), "
               f"AUC-NDR = {_fmt(result.auc_ndr)}.</div>")
    health = "".join(f'<div class="box warn"><b>Warning:</b> {e(w)}.</div>' for w in getattr(result, "health", []))
    coverage = f'<p class="cover">{e(result.coverage_text)}</p>' if hasattr(result, "coverage_text") else ""
    more = ""
    if len(shown) < result.n_suspects:
        more = (f'<p class="sub">Showing the first {len(shown)} of {result.n_suspects} suspects; '
                "every example is in suspects.csv.</p>")
    noisy_head = "<th>known</th>" if result.mask_known else ""
    src_head = '<th title="row number in your file, counting from 0 (header not counted)">source_idx</th>'
    head, what = page.head(result, src_head, noisy_head)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>layerinf suspects</title>
<style>{_CSS}{page.css}</style></head>
<body>
<h1>Training examples most likely to be wrong</h1>
<p class="sub">{e(result.config_key)} · {result.n:,} rows ranked · {e(what)}</p>
{health}
{coverage}
<div class="box">{explain}</div>
{detection_box(result)}
{ndr}
{more}
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<p class="sub">Made by layerinf (layer-wise influence for LoRA fine-tuned language models;
Vitel &amp; Chhabra, arXiv 2511.04715).</p>
</body></html>
"""


def _classification_head(result, src_head: str, noisy_head: str) -> tuple[str, str]:
    p_head = ("<th title=\"from the fold model that did not train on the row\">p(given), out of sample</th>"
              if "p_given_oos" in result.table.columns else "<th>p(given)</th>")
    head = (f"<th>rank</th>{src_head}<th>text</th><th>given label</th><th>predicted</th>{p_head}\n"
            f"<th>score</th>{noisy_head}")
    return head, "labels: " + ", ".join(result.label_names)


def _instruction_head(result, src_head: str, noisy_head: str) -> tuple[str, str]:
    head = (f"<th>rank</th>{src_head}<th>prompt</th><th>response</th>"
            '<th title="the fine-tuned model\'s mean loss on the response tokens">response loss</th>'
            f"<th>score</th>{noisy_head}")
    what = ("instruction data (prompt → response)" + (f"; class words: {', '.join(result.label_names)}"
                                                      if result.label_names else ""))
    return head, what


@dataclass(frozen=True)
class TaskPage:
    """A task's parts of the page: its rows and header, and the words that differ (``stages.task``: ``Task.page``)."""

    rows: Callable  # (result, shown rows) → one <tr> per row
    head: Callable  # (result, source_idx header, noisy header) → (header cells, what the data are)
    loss_note: str  # how the model's loss is read, or ""
    wrong: str  # what is wrong in a harmful example
    fix: str  # what to do with the suspects
    css: str = ""


CLASSIFICATION_PAGE = TaskPage(_classification_rows, _classification_head, "", "label",
                               "<b>relabel</b> the ones that are wrong")
INSTRUCTION_PAGE = TaskPage(
    _instruction_rows, _instruction_head,
    "For instruction data the model's loss is its mean loss on the response tokens (the prompt is context). ",
    "response (one that does not answer its prompt)", "<b>fix the responses</b> that are wrong", _SFT_CSS)
