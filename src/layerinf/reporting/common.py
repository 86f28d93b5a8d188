"""Names, orderings and number formatting shared by the report's tables, figures and page (pure helpers)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

# the configurations' names and order (evaluation.names, shared with the advisor's page); the report's modules
# take them from here with the rest
from layerinf.evaluation.names import (AGG_NAMES, ATTN_RE, METHOD_NAMES, agg_order, group_order,  # noqa: F401
                                       method_order)

BASELINES = ("none", "random", "oracle")
CONFIG = ["method", "group", "aggregator"]
RUN_KEY = ["model", "task", "seed"]

KIND_NAMES = {"query_A": "Query A", "query_B": "Query B", "value_A": "Value A", "value_B": "Value B"}
METHOD_COLORS = {"tracin": "#1f77b4", "cosine": "#ff7f0e", "datainf": "#2ca02c",
                 "random": "#7f7f7f", "oracle": "#9467bd", "none": "#bcbd22"}


def config_label(method: str, group: str, aggregator: str) -> str:
    """Readable name of a configuration: ``TracIn · 04-07 · Vote`` or ``Random`` for a baseline."""
    if method in BASELINES or group == "-":
        return METHOD_NAMES.get(method, method)
    return f"{METHOD_NAMES.get(method, method)} · {group} · {AGG_NAMES.get(aggregator, aggregator)}"


def attention_groups(groups: Iterable[str]) -> list[str]:
    return sorted({g for g in groups if ATTN_RE.match(g)}, key=group_order)


def paper_groups(groups: Iterable[str]) -> list[str]:
    groups = set(groups)
    out = [g for g in groups if g in ("WE", "CL") or ATTN_RE.match(g)]
    return sorted(out, key=group_order)


def run_key(df: pd.DataFrame) -> list[str]:
    """(model, task, seed), plus ``unit`` when two sweep units share a triple for the same configuration."""
    if "unit" in df.columns and df.duplicated(RUN_KEY + CONFIG).any():
        return RUN_KEY + ["unit"]
    return list(RUN_KEY)


def run_name(key: Any) -> str:
    return "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))


def nanmean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or x is pd.NA or x is pd.NaT:
        return "–"
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "–" if np.isnan(x) else ("∞" if x > 0 else "−∞")
        return f"{x:.{digits}f}"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return str(x)


def fmt_p(p: Any) -> str:
    if p is None or p is pd.NA or not np.isfinite(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def pm(mean: Any, std: Any) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    return fmt(mean) + (f" ± {std:.3f}" if std is not None and np.isfinite(std) else "")


def pct(fraction: float) -> str:
    """A fraction as a percentage for prose: 0.3 → ``30 %``, 0.125 → ``12.5 %``."""
    return f"{round(100 * float(fraction), 6):g} %"
