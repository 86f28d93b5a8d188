"""Layer groups over influence modules (spec §2.2) — pure: ModuleSpecs in, ``{group: [module names]}`` out.

Default groups, in order: ``WE``, four contiguous attention groups named ``AA-BB`` (first and last layer,
zero-padded; ``numpy.array_split(range(L), 4)`` so the first ``L mod 4`` groups get one extra layer), ``CL``
and ``all``. Extra groups: per LoRA module type (``query_A`` … ``value_B``), per layer (``L03``), A-only /
B-only halves of each attention group (``00-05.A``), and user-defined groups matched by pattern over module
names (a glob such as ``L0[0-3].value.*``, or a regular expression written ``re:<regex>``). Group schemes are
registered in :mod:`layerinf.influence.registry` (``GROUP_SCHEMES``), whose ``all_groups`` and
``resolve_groups`` see every registered scheme.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from layerinf.errors import LayerinfError

LORA_KINDS = ("query_A", "query_B", "value_A", "value_B")
_GLOB_CHARS = set("*?[")


def _name(spec) -> str:
    return spec if isinstance(spec, str) else spec.name


def attention_groups(num_layers: int) -> list[tuple[str, list[int]]]:
    """The four contiguous layer splits as ``(name, layers)``; empty splits (L < 4) are left out."""
    if num_layers < 1:
        raise LayerinfError(f"a model needs at least one layer, got {num_layers}", "check the model config")
    width = max(2, len(str(num_layers - 1)))
    out = []
    for part in np.array_split(np.arange(num_layers), 4):
        if len(part):
            layers = [int(x) for x in part]
            out.append((f"{layers[0]:0{width}d}-{layers[-1]:0{width}d}", layers))
    return out


def layer_groups(specs: Sequence, num_layers: int) -> dict[str, list[str]]:
    """``WE``, the attention groups, ``CL`` and ``all`` (module names in inventory order; empty groups dropped)."""
    groups: dict[str, list[str]] = {"WE": [s.name for s in specs if s.kind == "we"]}
    for name, layers in attention_groups(num_layers):
        wanted = set(layers)
        groups[name] = [s.name for s in specs if s.layer is not None and s.layer in wanted]
    groups["CL"] = [s.name for s in specs if s.kind == "cl"]
    groups["all"] = [s.name for s in specs]
    return {k: v for k, v in groups.items() if v}


def pattern_members(pattern: str, names: Sequence[str]) -> list[str]:
    """Module names matching a glob / ``re:`` pattern; matching none is an error that shows real names."""
    members = match_modules(pattern, names)
    if not members:
        raise LayerinfError(
            f"group pattern {pattern!r} matches no module",
            f"module names look like {', '.join(names[:3])}…; use a glob (L0*.value.B) or re:<regex>",
        )
    return members


def match_modules(pattern: str, names: Iterable[str]) -> list[str]:
    """Module names matching a glob (``L0*.value.B``) or a regular expression written ``re:<regex>``."""
    names = list(names)
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as exc:
            raise LayerinfError(f"bad regular expression {pattern[3:]!r} ({exc})", "fix the group pattern") from None
        return [n for n in names if rx.fullmatch(n)]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def is_pattern(text: str) -> bool:
    return text.startswith("re:") or bool(_GLOB_CHARS & set(text))


def extra_groups(
    specs: Sequence,
    *,
    num_layers: int | None = None,
    kinds: bool = True,
    layers: bool = True,
    halves: bool = True,
    patterns: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Per-type (``query_A``…), per-layer (``L03``), A/B halves of attention groups (``00-05.A``), user patterns.

    ``patterns`` maps a new group name to a glob or ``re:`` pattern over module names; a pattern that matches
    nothing, or a name that clashes with a built-in group, is an error.
    """
    lora = [s for s in specs if s.layer is not None]
    if num_layers is None:
        num_layers = max((s.layer for s in lora), default=-1) + 1
    groups: dict[str, list[str]] = {}
    if kinds:
        present = [k for k in LORA_KINDS if any(s.kind == k for s in lora)]
        present += sorted({s.kind for s in lora} - set(LORA_KINDS))
        for kind in present:
            groups[kind] = [s.name for s in lora if s.kind == kind]
    if layers:
        width = max(2, len(str(max(num_layers - 1, 0))))
        for layer in sorted({s.layer for s in lora}):
            groups[f"L{layer:0{width}d}"] = [s.name for s in lora if s.layer == layer]
    if halves and num_layers > 0:
        for name, group_layers in attention_groups(num_layers):
            wanted = set(group_layers)
            for half in ("A", "B"):
                members = [s.name for s in lora if s.layer in wanted and s.kind.endswith(f"_{half}")]
                if members:
                    groups[f"{name}.{half}"] = members
    if patterns:
        builtin = set(groups) | set(layer_groups(specs, num_layers)) if num_layers > 0 else set(groups)
        names = [s.name for s in specs]
        for group, pattern in patterns.items():
            if group in builtin:
                raise LayerinfError(f"custom group name '{group}' clashes with a built-in group", "pick another name")
            groups[group] = pattern_members(pattern, names)
    return groups
