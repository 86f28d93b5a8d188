"""One place to add an influence method, an aggregator or a layer-group scheme.

The CLI, config validation, report and docs read these tables; :func:`methods.score_module`,
:func:`aggregate.aggregate` and :func:`groups.resolve_groups` dispatch through them, so a registered entry works
end to end. Keys are lower-case names; tables keep registration order.

* :class:`MethodSpec` — ``score_dense(V, train_chunks, n=None, *, compute_dtype=None, **options) -> S (m × n)``
  on one dense module (options it does not accept are not passed); ``score_we(V_we, train_chunks, n=None, *,
  compute_dtype=None)`` on row-sparse WE gradients, or None; ``applies(kind, numel, threshold) -> bool``;
  ``checkpoints=True`` for a method over several checkpoints (``tracin_cp``): ``V`` and ``train_chunks`` are
  then lists with one entry per checkpoint, and ``lrs=[η_c]`` is passed too (the score stage reads them from
  the stores of ``GradsConfig.tracin_checkpoints``).
* :class:`AggregatorSpec` — ``fn(scores, correct=None, use_correct=None, **options) -> s (n,)``;
  ``default_use_correct`` is the voter filter used when the caller leaves ``use_correct=None`` (spec §4).
* ``GROUP_SCHEMES[name](specs, num_layers) -> {group: [module names]}``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from layerinf.errors import LayerinfError
from layerinf.influence import aggregate as _agg
from layerinf.influence import groups as _groups
from layerinf.influence import methods as _methods
from layerinf.influence import we as _we

__all__ = [
    "AGGREGATORS",
    "GROUP_SCHEMES",
    "METHODS",
    "AggregatorSpec",
    "GroupScheme",
    "MethodSpec",
    "aggregator",
    "call_with_options",
    "group_scheme",
    "method",
    "register_aggregator",
    "register_group_scheme",
    "register_method",
]

GroupScheme = Callable[[Sequence[Any], int], dict[str, list[str]]]


@dataclass(frozen=True)
class MethodSpec:
    """An influence method. ``applies=None`` means: every dense module, and WE only if ``score_we`` is set."""

    name: str
    title: str
    help: str
    score_dense: Callable[..., Any]
    score_we: Callable[..., Any] | None = None
    applies: Callable[[str, int, int | None], bool] | None = None
    checkpoints: bool = False  # scores the gradient stores of several checkpoints (lists of V, G; lrs=)

    def __post_init__(self) -> None:
        if self.applies is None:
            has_we = self.score_we is not None
            object.__setattr__(self, "applies", lambda kind, numel, threshold: kind != "we" or has_we)


@dataclass(frozen=True)
class AggregatorSpec:
    """An aggregator of voter columns into one score per training sample (higher = more helpful)."""

    name: str
    title: str
    help: str
    fn: Callable[..., Any]
    default_use_correct: bool


METHODS: dict[str, MethodSpec] = {}
AGGREGATORS: dict[str, AggregatorSpec] = {}
GROUP_SCHEMES: dict[str, GroupScheme] = {}


def _key(name: str, what: str) -> str:
    key = str(name).strip().lower()
    if not key:
        raise LayerinfError(f"a {what} needs a non-empty name", "give it a short lower-case name")
    return key


def _add(table: dict, name: str, value: Any, what: str, replace: bool) -> None:
    key = _key(name, what)
    if key in table and not replace:
        raise LayerinfError(f"{what} '{key}' is already registered", "pick another name or pass replace=True")
    table[key] = value


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    key = str(name).strip().lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, list(table), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise LayerinfError(f"unknown {what} '{name}'", f"use one of {', '.join(table)}{hint}")


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add an influence method under ``spec.name`` (lower-cased); an existing name needs ``replace=True``."""
    _add(METHODS, spec.name, spec, "method", replace)
    return spec


def method(name: str) -> MethodSpec:
    """The registered method ``name`` (case-insensitive); unknown → LayerinfError with a did-you-mean."""
    return _lookup(METHODS, name, "method")


def register_aggregator(spec: AggregatorSpec, *, replace: bool = False) -> AggregatorSpec:
    """Add an aggregator under ``spec.name`` (lower-cased); an existing name needs ``replace=True``."""
    _add(AGGREGATORS, spec.name, spec, "aggregator", replace)
    return spec


def aggregator(name: str) -> AggregatorSpec:
    """The registered aggregator ``name`` (case-insensitive); unknown → LayerinfError with a did-you-mean."""
    return _lookup(AGGREGATORS, name, "aggregator")


def register_group_scheme(name: str, fn: GroupScheme, *, replace: bool = False) -> GroupScheme:
    """Add a layer-group scheme ``fn(specs, num_layers) -> {group: [module names]}`` (specs are duck-typed:
    ``.name``, ``.kind``, ``.layer``); its groups become resolvable by name in ``resolve_groups``."""
    _add(GROUP_SCHEMES, name, fn, "layer-group scheme", replace)
    return fn


def group_scheme(name: str) -> GroupScheme:
    """The registered layer-group scheme ``name``; unknown → LayerinfError with a did-you-mean."""
    return _lookup(GROUP_SCHEMES, name, "layer-group scheme")


def call_with_options(fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """``fn(*args, **options)``, passing only the keyword options that ``fn``'s signature accepts."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: pass everything
        return fn(*args, **options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return fn(*args, **options)
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return fn(*args, **{k: v for k, v in options.items() if k in accepted})


# ------------------------------------------------------------------------------------------------ built-ins


def _datainf_applies(kind: str, numel: int, threshold: int | None) -> bool:
    """DataInf skips WE and modules with ≥ ``threshold`` parameters (spec §3.3; threshold None = no limit)."""
    return kind != "we" and _methods.datainf_applicable(numel, threshold)


register_method(MethodSpec("tracin", "TracIn", "gradient dot product v·g (one checkpoint, η = 1; TracIn-WE on WE)",
                           _methods.score_tracin, _we.tracin_we))
register_method(MethodSpec("cosine", "Cosine", "cosine of validation and training gradients (0 for a zero gradient)",
                           _methods.score_cosine, _we.cosine_we))
register_method(MethodSpec("datainf", "DataInf",
                           "closed-form inverse-Hessian influence (skips WE and modules ≥ datainf_threshold)",
                           _methods.score_datainf, None, _datainf_applies))
register_method(MethodSpec("tracin_cp", "TracInCP",
                           "Σ_c η_c v_c·g_c over the checkpoints of grads.tracin_checkpoints (η_c: the learning "
                           "rate there; TracIn-WE terms on WE)",
                           _methods.score_tracin_cp, _methods.score_tracin_cp_we, checkpoints=True))

register_aggregator(AggregatorSpec("mean", "Mean", "mean score over voters (all validation samples by default)",
                                   _agg.mean, False))
register_aggregator(AggregatorSpec("rank", "Rank",
                                   "mean ascending rank over voters (correctly predicted validation samples)",
                                   _agg.rank, True))
register_aggregator(AggregatorSpec("vote", "Vote",
                                   "decaying votes for each voter's bottom K = ⌊κ·n⌋ (correctly predicted samples)",
                                   _agg.vote, True))


def _extra(specs: Sequence[Any], num_layers: int, *, kinds: bool = False, layers: bool = False,
           halves: bool = False) -> dict[str, list[str]]:
    return _groups.extra_groups(specs, num_layers=num_layers, kinds=kinds, layers=layers, halves=halves)


register_group_scheme("paper", _groups.layer_groups)  # WE, the four attention groups, CL, all
register_group_scheme("types", partial(_extra, kinds=True))  # query_A, query_B, value_A, value_B, …
register_group_scheme("layers", partial(_extra, layers=True))  # L00, L01, …
register_group_scheme("halves", partial(_extra, halves=True))  # 00-05.A, 00-05.B, …
