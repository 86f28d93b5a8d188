"""The experiment parameters a report states, read from each run instead of assumed.

Per run directory: the filtering fraction and ``filter.retrain`` (the ``RETRAIN`` stage), Vote's κ and the layer
groups (the ``SCORES`` stage), the model (``FINETUNE``), task and seed (``DATA``). Each comes from the stage's
``STAGE_FILE`` record (its ``config``: what actually ran), else from the run's experiment config
(``RunLayout.config``), else from the defaults of :mod:`layerinf.config`. :class:`ReportParams` pools the runs
of a sweep and words a value that differs between units as such instead of printing one number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from layerinf.config import FilterConfig, ScoreConfig
from layerinf.reporting.common import group_order, pct
from layerinf.store.layout import (DATA, DATA_META_FILE, FINETUNE, RETRAIN, SCORES, STAGE_FILE, RunLayout)

DEFAULT_FRACTION = FilterConfig().fraction
DEFAULT_KAPPA = ScoreConfig().vote_kappa


def _json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _number(value: Any, kind: type = float) -> Any:
    """``kind(value)``, or ``None`` for a value that is not a number (a hand-edited config, say)."""
    try:
        return None if value is None or isinstance(value, bool) else kind(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RunParams:
    """What one run directory was run with (``None``: not recorded anywhere)."""

    fraction: float = DEFAULT_FRACTION
    kappa: float = DEFAULT_KAPPA
    groups: tuple[str, ...] | None = None
    model: str | None = None
    task: str | None = None
    seed: int | None = None
    retrain: bool | None = None
    health_warning: str | None = None  # set when the fine-tuned model did not clearly learn
    n_test: int | None = None  # test examples: one of them is the finest accuracy step


def run_params(run: str | Path) -> RunParams:
    """Read :class:`RunParams` of one run directory: stage records, then the experiment config, then defaults."""
    lay = RunLayout(run)
    stage = {name: _json(lay.stage(name) / STAGE_FILE) for name in (DATA, FINETUNE, SCORES, RETRAIN)}
    cfg = _json(lay.config)
    meta = _json(lay.stage(DATA) / DATA_META_FILE)
    fraction = _first(_number(_get(stage[RETRAIN], "config", "filter", "fraction")),
                      _number(_get(cfg, "filter", "fraction")), DEFAULT_FRACTION)
    kappa = _first(_number(_get(stage[SCORES], "config", "score", "vote_kappa")),
                   _number(_get(cfg, "score", "vote_kappa")), DEFAULT_KAPPA)
    groups = _first(_get(stage[SCORES], "config", "score", "groups"), _get(cfg, "score", "groups"))
    if not isinstance(groups, (list, tuple)):
        groups = None
    if groups is None:  # the default grid: the groups the scores table actually holds
        try:
            found = pd.read_parquet(lay.scores(), columns=["group"])["group"].astype(str).unique()
            groups = sorted(found, key=group_order) or None
        except Exception:  # noqa: BLE001 - no (readable) scores table: groups unknown
            groups = None
    model = _first(_get(stage[FINETUNE], "config", "model", "name"), _get(cfg, "model", "name"))
    task = _first(meta.get("task"), _get(stage[DATA], "config", "data", "task"), _get(cfg, "data", "task"),
                  _get(stage[DATA], "config", "data", "source"), _get(cfg, "data", "source"))
    seed = _first(_number(stage[DATA].get("seed"), int), _number(meta.get("seed"), int),
                  _number(_get(cfg, "data", "seed"), int))
    retrain = _first(_get(stage[RETRAIN], "config", "filter", "retrain"), _get(cfg, "filter", "retrain"))
    warning = _get(stage[FINETUNE], "summary", "health", "warning")
    n_test = _number(_get(stage[DATA], "summary", "test"), int)
    return RunParams(fraction=fraction, kappa=kappa, groups=tuple(str(g) for g in groups) if groups else None,
                     model=None if model is None else str(model), task=None if task is None else str(task),
                     seed=seed, retrain=None if retrain is None else bool(retrain),
                     health_warning=str(warning) if warning else None, n_test=n_test if n_test else None)


def _numbers(values: Iterable[float]) -> list[float]:
    return sorted({round(float(v), 9) for v in values})


@dataclass(frozen=True)
class ReportParams:
    """The parameters of the runs one report (or one figure) covers, worded for its text."""

    runs: tuple[RunParams, ...] = ()

    @classmethod
    def read(cls, runs: Sequence[str | Path]) -> "ReportParams":
        return cls(tuple(run_params(r) for r in runs))

    def _all(self) -> tuple[RunParams, ...]:
        return self.runs or (RunParams(),)

    @property
    def fractions(self) -> list[float]:
        """The distinct filtering fractions, ascending (the default when no run records one)."""
        return _numbers(r.fraction for r in self._all())

    @property
    def kappas(self) -> list[float]:
        return _numbers(r.kappa for r in self._all())

    @property
    def fraction(self) -> float | None:
        """The filtering fraction when every run used the same one, else ``None``."""
        f = self.fractions
        return f[0] if len(f) == 1 else None

    @property
    def percent(self) -> str:
        """``20 %``, or ``f %`` when the units differ (then :attr:`removed` says how)."""
        return pct(self.fraction) if self.fraction is not None else "f %"

    @property
    def removed(self) -> str:
        """``bottom 20 %``, or ``bottom f % (f differs between units: 20 %, 30 %)``."""
        if self.fraction is not None:
            return f"bottom {self.percent}"
        return f"bottom f % (f differs between units: {', '.join(pct(f) for f in self.fractions)})"

    @property
    def kappa(self) -> str:
        """``κ = 0.25``, or ``κ differs between units: 0.25, 0.3``."""
        k = self.kappas
        if len(k) == 1:
            return f"κ = {k[0]:g}"
        return "κ differs between units: " + ", ".join(f"{v:g}" for v in k)

    def groups(self, fallback: Iterable[str] = ()) -> str:
        """The layer groups, e.g. ``WE, 00-03, …, CL, all``; per unit when they differ."""
        sets = sorted({r.groups for r in self.runs if r.groups}, key=lambda g: (len(g), g))
        if not sets:
            found = sorted({str(g) for g in fallback if str(g) != "-"}, key=group_order)
            return ", ".join(found)
        if len(sets) == 1:
            return ", ".join(sets[0])
        return "differ between units: " + "; ".join(", ".join(s) for s in sets)

    @property
    def n_test(self) -> int | None:
        """The smallest test-set size of the runs (None when no run records one)."""
        sizes = [r.n_test for r in self.runs if r.n_test]
        return min(sizes) if sizes else None

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.runs if r.model})
