"""How the configurations being compared are named and ordered, in every table that compares them (the report's
and the advisor's): display names of methods and aggregators, and the canonical order of methods, layer groups
and aggregators (pure helpers)."""

from __future__ import annotations

import re

METHOD_NAMES = {"tracin": "TracIn", "cosine": "Cosine", "datainf": "DataInf",
                "random": "Random", "oracle": "Oracle (Full)", "none": "No removal"}
AGG_NAMES = {"mean": "Mean", "rank": "Rank", "vote": "Vote", "-": ""}
ATTN_RE = re.compile(r"^(\d+)-(\d+)$")


def group_order(group: str) -> tuple:
    """WE, attention groups by first layer, CL, all, then anything else by name."""
    m = ATTN_RE.match(group)
    if group == "WE":
        return (0, 0, group)
    if m:
        return (1, int(m.group(1)), group)
    if group == "CL":
        return (2, 0, group)
    if group == "all":
        return (3, 0, group)
    if group == "-":
        return (5, 0, group)
    return (4, 0, group)


def method_order(m: str) -> tuple:
    order = ["tracin", "cosine", "datainf", "none", "random", "oracle"]
    return (order.index(m) if m in order else len(order), m)


def agg_order(a: str) -> tuple:
    order = ["mean", "rank", "vote", "-"]
    return (order.index(a) if a in order else len(order), a)
