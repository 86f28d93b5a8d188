"""Reports: summary tables, figures and one static HTML page for a run or a sweep directory.

``report(path)`` reads the results table of ``layerinf run`` or ``layerinf sweep`` (every path from
:mod:`layerinf.store.layout`: ``RunLayout.results()``, ``SweepLayout.results()`` and the sweep's unit run
directories) and writes, atomically, the report folder (``RunLayout.report``)::

    PAGE_FILE           one self-contained page (inline CSS, no JavaScript, no external URLs)
    tables/*.csv|.md    every table, machine-readable and as Markdown
    figures/*.png       NDR curves, layer-wise NDR@30, accuracy box plots, noise ranks, NDR@30 heat map
    claims.html         the paper's claims with 95 % bootstrap intervals over runs and verdicts (:mod:`.claims`;
                        tables/claims*.csv, figures/claims_*.png)

A run that was scored but not retrained (``filter.retrain: false``) gets the detection side only: the NDR
table of its score tables, the curves, layer-wise NDR and noise ranks. The texts state the parameters the runs
used (filtering fraction, Vote's κ, layer groups, models), read from each run (:mod:`.params`).

Uncertainty (:mod:`.uncertainty`): repeated retrainings (``filter.repeats``) are averaged per run and shown as
mean ± the 95 % t-interval; retrainings that collapsed to the majority class are flagged (and excluded only
where another repeat of the same configuration learned); NDR@30, AUC-NDR and ROC-AUC get 95 % percentile
bootstrap intervals over the training examples (``bootstrap`` resamples, seeded by ``bootstrap_seed``).

Modules: :mod:`.results` (loading), :mod:`.params` (run parameters), :mod:`.summary` (statistics tables),
:mod:`.uncertainty` (repeats, collapsed retrainings, bootstrap intervals),
:mod:`.formatting` (display, Markdown, CSV), :mod:`.plots` (figures), :mod:`.page` (HTML), :mod:`.common`.
Sign convention everywhere: higher score = more helpful; filtering removes the bottom f % of the training set.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from layerinf.errors import LayerinfError
from layerinf.reporting.claims_page import write_claims_page
from layerinf.reporting.common import run_key
from layerinf.reporting.formatting import write_tables
from layerinf.reporting.page import write_html
from layerinf.reporting.params import ReportParams
from layerinf.reporting.plots import figures
from layerinf.reporting.results import has_results, load_detection, load_results, unit_dirs
from layerinf.reporting.summary import detection_table, tables
from layerinf.reporting.suspects import top_suspects
from layerinf.reporting.answer import answer, best_config
from layerinf.reporting.uncertainty import BOOTSTRAP, average_repeats, detection_ci, flag_collapsed
from layerinf.store.layout import ANSWER_FILE, PAGE_FILE, REPORT, REPORT_FIGURES, REPORT_TABLES, SCORES

__all__ = ["report", "load_results", "tables", "figures", "write_tables", "write_html"]

NO_RETRAIN = "Run `layerinf run` with filter.retrain: true to compare test accuracy after filtering."


def _no_retrain_note(params: ReportParams) -> str:
    """Why there is no accuracy, and what retraining would add (one line)."""
    if params.runs and all(r.retrain is False for r in params.runs):
        return ("No retraining: these runs had filter.retrain: false, so this report shows noise detection only. "
                + NO_RETRAIN)
    return f"No retraining results: this report shows noise detection only. {NO_RETRAIN}"


def _seeds(values) -> list:
    return sorted(int(s) if str(s).lstrip("-").isdigit() else s for s in values)


def report(path: str | os.PathLike, out: str | os.PathLike | None = None, tau: float = 0.75,
           include_self: bool = False, bootstrap: int = BOOTSTRAP, bootstrap_seed: int = 0) -> Path:
    """Tables, figures and the HTML page for a run or sweep directory; returns the page's path.

    ``bootstrap``: resamples of the training examples for the intervals of NDR@30 and AUC (0: none);
    ``bootstrap_seed`` seeds them.

    Writes into the run's or sweep's report folder unless ``out`` is given, atomically: everything is built in a
    temporary sibling folder that replaces the old report only when complete. Without retraining results but with
    score tables, the report covers noise detection only and says so.
    """
    root = Path(path)
    base = root if root.is_dir() else root.parent
    try:
        results, detection = load_results(root), None
    except LayerinfError:  # no (or empty) results: the detection side of scored runs, if any
        detection = pd.DataFrame() if has_results(root) else load_detection(root)
        if detection.empty:
            raise
        results = None
    params = ReportParams.read(unit_dirs(base))
    frame0 = results if results is not None else detection
    ci = None
    if bootstrap and bootstrap > 0:
        configs = set(zip(frame0["method"], frame0["group"], frame0["aggregator"]))
        ci = detection_ci(unit_dirs(base), configs, B=int(bootstrap), seed=int(bootstrap_seed))
    if results is not None:
        results = flag_collapsed(results, base)
    target = Path(out) if out is not None else base / REPORT
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    try:
        frame: pd.DataFrame = average_repeats(results) if results is not None else detection  # one row per run
        if results is not None:
            tabs = tables(frame, tau=tau, include_self=include_self, ci=ci)  # averaged once, above
        else:
            tabs = {"detection": detection_table(detection, params.fraction, ci=ci)}
        table = tabs.get("configurations", tabs.get("detection"))
        best = best_config(frame, params, retrained=results is not None, table=table)  # one "best" on the page
        top = top_suspects(base, config=best[0] if best else None) if (base / SCORES).is_dir() else None
        if top is not None:  # a single run: what its best configuration would remove
            tabs["top_suspects"] = top[1]
        write_tables(tabs, tmp / REPORT_TABLES)
        figs = figures(base, tmp / REPORT_FIGURES, results=frame)
        from layerinf.version import __version__

        meta = {
            "title": f"layerinf report — {root.resolve().name}",
            "source": str(root),
            "kind": ("sweep" if "unit" in frame.columns else "run") + ("" if results is not None
                                                                       else ", no retraining"),
            "models": sorted(frame["model"].unique()),
            "tasks": sorted(frame["task"].unique()),
            "seeds": _seeds(frame["seed"].unique()),
            "runs": int(frame.groupby(run_key(frame)).ngroups),
            "units": int(frame["unit"].nunique()) if "unit" in frame.columns else None,
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": __version__,
        }
        if results is not None:
            meta.update(tau=tau, win_rate_denominator="|C| (paper)" if include_self else "|C| − 1")
        else:
            meta["note"] = _no_retrain_note(params)
        if top is not None:
            meta["top_suspects_config"] = top[0]
            meta["top_suspects_is_best"] = best is not None and top[0] == "/".join(best[0])
        meta["answer"] = answer(frame, params, retrained=results is not None, table=table, best=best)
        if results is not None:  # the paper's claims with bootstrap intervals over runs (reporting.claims)
            meta["claims_page"] = write_claims_page(base, tmp, results=results, seed=int(bootstrap_seed)).name
        write_html(tmp, tabs, figs, meta, params=params)
        (tmp / ANSWER_FILE).write_text("\n".join(meta["answer"]) + "\n", encoding="utf-8")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    return target / PAGE_FILE
