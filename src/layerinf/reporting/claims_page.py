"""The claims page of a report (``claims.html``, ``tables/claims_*.csv``, ``figures/claims_*.png``) and the
``docs/claims.md`` writer, from the verdict table of :mod:`layerinf.reporting.claims`.

Tables (CSV, for pandas): ``claims_verdicts`` (one row per claim), ``claims_win_rates`` (per influence
configuration), ``claims_layerwise`` (mean layer-wise NDR@30 per module kind and run), ``claims_points``
(NDR@30, cancellation and accuracy per configuration and run). Figures: win rate per group and aggregator;
NDR@30 against accuracy under Mean and under Vote; layer-wise NDR@30 by module type. Every file is written
atomically.
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from layerinf.reporting.claims import B_DEFAULT, CONFIG, Study, _influence, _spearman, _Wins, claims_from_dir
from layerinf.reporting.common import fmt, group_order
from layerinf.store.rundir import atomic_write_bytes


# ------------------------------------------------------------------------------------------------ tables, figures


def win_rate_table(study: Study) -> pd.DataFrame:
    """Win rate of every pooled influence configuration over all healthy runs."""
    wr = _Wins(study.acc).series(np.arange(len(study.runs)))
    return wr.rename("win_rate").reset_index() if len(wr) else pd.DataFrame(columns=[*CONFIG, "win_rate"])


def layerwise_table(study: Study) -> pd.DataFrame:
    """Mean layer-wise NDR@30 per module kind and run."""
    rows = [{"run": study.runs[i], "kind": k, "ndr_30": float(v)}
            for i, s in study.modules.items() for k, v in s.items()]
    return pd.DataFrame(rows, columns=["run", "kind", "ndr_30"])


def points_table(study: Study) -> pd.DataFrame:
    """NDR@30, cancellation and accuracy per (influence configuration, run): the scatter's points."""
    frames = {name: _influence(f) for name, f in (("best_accuracy", study.acc), ("ndr_30", study.ndr),
                                                    ("cancellation", study.canc))}
    rows = []
    for cfg in frames["best_accuracy"].index:
        for j, run in enumerate(study.runs):
            rows.append({**dict(zip(CONFIG, cfg)), "run": run,
                         **{k: float(f.loc[cfg].iloc[j]) if cfg in f.index else np.nan for k, f in frames.items()}})
    df = pd.DataFrame(rows, columns=[*CONFIG, "run", *frames])
    return df


def _figures(study: Study, out: Path) -> list[Path]:
    from layerinf.reporting.plots import DPI, _plt

    plt = _plt()

    def _save(fig, path: Path, plt) -> Path:  # atomically: a temporary sibling, then renamed
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", facecolor="white")
        plt.close(fig)
        os.replace(tmp, path)
        return path
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    wr = win_rate_table(study)
    if len(wr):
        per = wr.groupby(["group", "aggregator"])["win_rate"].mean().unstack()
        per = per.reindex(sorted(per.index, key=group_order))
        fig, ax = plt.subplots(figsize=(1.1 * len(per) + 3, 3.4))
        per.plot.bar(ax=ax, rot=0)
        ax.set_ylabel("mean win rate")
        ax.set_title("Win rate per layer group and aggregator (mean over methods)")
        ax.grid(alpha=0.3, axis="y")
        figs.append(_save(fig, out / "claims_winrate.png", plt))
    pts = points_table(study)
    aggs = [a for a in ("mean", "vote") if a in set(pts["aggregator"])]
    if len(pts) and aggs and pts[["ndr_30", "best_accuracy"]].notna().all(axis=1).any():
        fig, axes = plt.subplots(1, len(aggs), figsize=(4.6 * len(aggs), 3.6), squeeze=False, sharey=True)
        for ax, agg in zip(axes[0], aggs):
            sub = pts[pts["aggregator"] == agg]
            for method, s in sub.groupby("method"):
                ax.scatter(s["ndr_30"], s["best_accuracy"], s=12, alpha=0.7, label=method)
            rho = _spearman(sub["ndr_30"].to_numpy(float), sub["best_accuracy"].to_numpy(float))
            ax.set_title(f"{agg.capitalize()}: ρ = {fmt(rho, 2)} (pooled)")
            ax.set_xlabel("NDR@30")
            ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel("test accuracy after filtering")
        axes[0, -1].legend(fontsize=8)
        figs.append(_save(fig, out / "claims_ndr_vs_accuracy.png", plt))
    lw = layerwise_table(study)
    if len(lw):
        order = [k for k in ("we", "query_A", "query_B", "value_A", "value_B", "cl") if k in set(lw["kind"])]
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.boxplot([lw.loc[lw["kind"] == k, "ndr_30"].to_numpy(float) for k in order])
        ax.set_xticks(range(1, len(order) + 1), order)
        ax.axhline(0.30, color="#7f7f7f", lw=0.8, ls=":")
        ax.set_ylabel("layer-wise NDR@30 (mean per run)")
        ax.set_title("Layer-wise NDR@30 by module type (one point per run)")
        figs.append(_save(fig, out / "claims_layerwise.png", plt))
    return figs


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v) if isinstance(v, float) else str(v))}</td>"
                                    for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def summary_lines(study: Study, B: int, seed: int) -> list[str]:
    """What the verdicts rest on: runs, tasks × seeds, the bootstrap, and the runs left out."""
    lines = [f"{len(study.runs)} run(s): {len(set(study.tasks))} task(s) × {len(set(study.seeds))} seed(s). "
             f"Intervals: 95 % percentile bootstrap over runs ({B} resamples, seed {seed})."]
    if study.excluded:
        lines.append(f"{len(study.excluded)} run(s) left out because their unfiltered retraining did not beat the "
                     f"majority class (the model did not learn): {', '.join(study.excluded)}.")
    elif not study.acc.notna().any().any():
        lines.append("Detection only (nothing retrained): no run is checked for learning by its unfiltered "
                     "retraining, and the claims that need accuracy after filtering are not measured.")
    else:
        lines.append("No run was left out (no unfiltered retraining stayed at the majority class).")
    return lines


def write_claims_page(path, folder: str | os.PathLike, results: pd.DataFrame | None = None,
                      B: int = B_DEFAULT, seed: int = 0, title: str | None = None, with_study: bool = False):
    """``folder/claims.html`` + ``folder/tables/claims_*.csv`` + ``folder/figures/claims_*.png`` for a run or
    sweep folder (or a list of them, pooled)."""
    folder = Path(folder)
    if title is None:
        title = (Path(path).resolve().name if isinstance(path, (str, os.PathLike))
                 else ", ".join(Path(p).name for p in path))
    study, table = claims_from_dir(path, results, B=B, seed=seed)
    tables = {"claims_verdicts": table, "claims_win_rates": win_rate_table(study),
              "claims_layerwise": layerwise_table(study), "claims_points": points_table(study)}
    for name, df in tables.items():
        _write(folder / "tables" / f"{name}.csv", df.to_csv(index=False))
    figs = _figures(study, folder / "figures")
    shown = table[["claim", "statement", "paper", "ours", "n", "verdict", "rule", "detail"]]
    lines = summary_lines(study, B, seed)
    page = ("<!doctype html><meta charset='utf-8'><title>layerinf — the paper's claims</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px;font-size:13px;vertical-align:top}</style>"
            f"<h1>The paper's claims on {html.escape(title)}</h1>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in lines)
            + _html_table(shown)
            + "".join(f"<p><img src='figures/{f.name}' style='max-width:100%'></p>" for f in figs))
    _write(folder / "claims.html", page)
    return (folder / "claims.html", study) if with_study else folder / "claims.html"


def markdown_table(table: pd.DataFrame) -> str:
    cols = ["claim", "statement", "paper", "ours", "n", "verdict", "detail"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table[cols].itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join(lines)


def write_claims_md(groups: dict[str, Sequence[str | os.PathLike]], out: str | os.PathLike, command: str,
                    elapsed: str | None = None, tables_dir: str | os.PathLike | None = None, B: int = B_DEFAULT,
                    seed: int = 0, notes: str = "") -> Path:
    """``docs/claims.md`` from sweeps' results: the command and time at the top, then one verdict table per
    group of sweeps (``{title: [sweep folders]}``, their runs pooled); each group's CSV tables, figures and page
    go to ``tables_dir/<n>/`` (default ``docs/claims/``). ``notes``: Markdown appended at the end."""
    import re

    out = Path(out)
    tables_dir = Path(tables_dir) if tables_dir is not None else out.parent / "claims"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["# The paper's claims, tested\n", "Generated from the sweeps' result tables by "
             "`layerinf.reporting.claims.write_claims_md`; do not edit by hand.\n", f"- command: `{command}`",
             f"- generated: {now}"]
    if elapsed:
        parts.append(f"- time: {elapsed}")
    parts.append(f"\nEach interval is a 95 % percentile bootstrap over runs ({B} resamples, drawn with "
                 "replacement). A claim \"X > t\" holds when the interval lies above t, does not hold when it lies "
                 "below t + margin (an effect of at least the margin is ruled out), and is otherwise inconclusive "
                 "at this power; the row's rule gives t and the margin. Runs whose unfiltered retraining did not "
                 "beat the majority class are left out, and counted.\n")
    for title, sweeps in groups.items():
        slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower() or "claims"
        sub = tables_dir / slug
        present = [s_ for s_ in sweeps if Path(s_).is_dir()]
        parts.append(f"\n## {title}\n")
        if not present:
            parts.append("Not run yet: " + ", ".join(f"`{s_}`" for s_ in sweeps) + "\n")
            continue
        missing = [s_ for s_ in sweeps if s_ not in present]
        if missing:
            parts.append("Not run yet (left out of this table): " + ", ".join(f"`{s_}`" for s_ in missing) + "\n")
        page, study = write_claims_page(present, sub, B=B, seed=seed, title=title, with_study=True)
        table = pd.read_csv(sub / "tables" / "claims_verdicts.csv")
        rel = os.path.relpath(sub, out.parent)
        parts += ["\n\n".join(summary_lines(study, B, seed)) + "\n", markdown_table(table.fillna("")), ""]
        parts += [f"![{f.stem}]({rel}/figures/{f.name})" for f in sorted((sub / "figures").glob("*.png"))]
        parts.append(f"\nSweeps: {', '.join(f'`{s_}`' for s_ in present)}; tables: `{rel}/tables/`; page: "
                     f"`{os.path.relpath(page, out.parent)}`.")
    if notes:
        parts.append("\n" + notes.strip())
    _write(out, "\n".join(parts) + "\n")
    return out
