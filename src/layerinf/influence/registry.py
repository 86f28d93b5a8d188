"""One place to add an influence method, an aggregator or a layer-group scheme.

The CLI, config validation, report and docs read these tables; the dispatchers here (:func:`score_module`,
:func:`aggregate`, :func:`all_groups`, :func:`resolve_groups`) look names up in them, so a registered entry works
end to end. Keys are lower-case names; tables keep registration order. The registry imports ``methods``,
``aggregate``, ``groups`` and ``we`` (for the built-ins); they import nothing of it.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from layerinf import config as _config
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
    "aggregate",
    "all_groups",
    "call_with_options",
    "group_scheme",
    "method",
    "register_aggregator",
    "register_group_scheme",
    "register_method",
    "resolve_groups",
    "score_module",
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


# ---------------------------------------------------------------------------------------------- dispatchers


def score_module(method: str, V, train_chunks: Any, n: int | None = None, *,
                 compute_dtype=None, lam: float | None = None, form: str = "factor",
                 legacy_datainf0: bool = False, chunk_rows: int = 4096, device=None,
                 device_chunk_rows: int | None = None, lrs: Sequence[float] | None = None) -> np.ndarray:
    """One module's score matrix S (m × n, helpful > 0) for any registered ``method`` (spec §3).

    Dispatches to ``method(method).score_dense``, passing only the options it accepts (``lam``, ``form`` and
    ``legacy_datainf0`` concern DataInf; ``device`` / ``device_chunk_rows`` the built-ins; ``lrs`` the
    multi-checkpoint methods such as ``tracin_cp``, whose ``V`` and ``train_chunks`` are then lists, one entry
    per checkpoint). ``train_chunks`` is a chunk source and ``device`` as in :mod:`layerinf.influence.methods`.
    ``n``, when given, is checked against the rows seen.
    """
    spec = _lookup(METHODS, method, "method")
    return call_with_options(spec.score_dense, V, train_chunks, n, compute_dtype=compute_dtype, lam=lam,
                             form=form, legacy_datainf0=legacy_datainf0, chunk_rows=chunk_rows, device=device,
                             device_chunk_rows=device_chunk_rows, lrs=lrs)


def aggregate(name: str, scores: Any, correct: Any = None, use_correct: bool | None = None,
              kappa: float = _agg.DEFAULT_KAPPA, tie_method: str = "min", normalize: bool = False) -> np.ndarray:
    """Dispatch to the registered aggregator ``name`` (``aggregate.mean``, ``rank``, ``vote``, …; spec §5).

    ``use_correct=None`` becomes the aggregator's ``default_use_correct`` (when a mask is given); ``kappa``,
    ``tie_method`` and ``normalize`` reach the aggregator only if its signature accepts them.
    """
    spec = aggregator(name)
    if use_correct is None:
        use_correct = spec.default_use_correct and correct is not None
    return call_with_options(spec.fn, scores, correct=correct, use_correct=use_correct, kappa=kappa,
                             tie_method=tie_method, normalize=normalize)


def all_groups(specs: Sequence, num_layers: int, patterns: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """The groups of every registered scheme (``GROUP_SCHEMES``: paper, types, layers, halves, …), in
    registration order, then the user ``patterns`` (a name clashing with a scheme's group is an error)."""
    groups: dict[str, list[str]] = {}
    for scheme in GROUP_SCHEMES.values():
        groups.update(scheme(specs, num_layers))
    if patterns:
        names = [s.name for s in specs]
        for group, pattern in patterns.items():
            if group in groups:
                raise LayerinfError(f"custom group name '{group}' clashes with a built-in group", "pick another name")
            groups[group] = _groups.pattern_members(pattern, names)
    return groups


def resolve_groups(
    names_or_patterns: Iterable[str] | str | None,
    specs: Sequence,
    num_layers: int,
    patterns: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Look up groups by name; ``None`` gives the default groups.

    Each entry is a group name (default, extra or from ``patterns``), a single module name (``L03.value.B``),
    ``''`` (= ``all``, the reference code's spelling), or a glob / ``re:`` pattern over module names (the group
    is named by the pattern). Unknown names are an error that lists the valid ones.
    """
    if names_or_patterns is None:
        return _groups.layer_groups(specs, num_layers)
    if isinstance(names_or_patterns, str):
        names_or_patterns = [n.strip() for n in names_or_patterns.split(",")] if names_or_patterns else [""]
    known = all_groups(specs, num_layers, patterns)
    module_names = [s.name for s in specs]
    out: dict[str, list[str]] = {}
    for raw in names_or_patterns:
        key = "all" if raw in ("", "ALL", "All") else raw
        if key in known:
            out[key] = known[key]
        elif key in module_names:
            out[key] = [key]
        elif _groups.is_pattern(key):
            out[key] = _groups.pattern_members(key, module_names)
        else:
            raise LayerinfError(
                f"unknown layer group '{raw}'",
                f"valid groups: {', '.join(known)}; or a module name, a glob (L0*.value.B) or re:<regex>",
            )
    return out


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

# the option checks of layerinf.config list a user's registered methods and aggregators through these
_config.REGISTERED.update(method=lambda: list(METHODS), aggregator=lambda: list(AGGREGATORS))
