"""The CLI's options, made from the config dataclasses: one typer option per field, with the field's flat name
(``vote_kappa`` → ``--vote-kappa``), default and help text, so that the CLI, the API and the YAML cannot drift
apart (``layerinf.cli`` registers the commands)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Optional

import typer

from layerinf.config import option_name


def _cli_type(tp: Any) -> Any:
    """The typer annotation for a config field type (lists are given comma-separated)."""
    args = typing.get_args(tp)
    optional = type(None) in args
    inner = next((a for a in args if a is not type(None)), tp) if args and typing.get_origin(tp) is not list else tp
    if typing.get_origin(inner) is list:
        return Optional[str]
    return Optional[inner] if optional else inner


def _cli_default(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _options(*sections: type, exclude: set[str] = frozenset(), presets: dict[str, Any] | None = None
             ) -> list[inspect.Parameter]:
    """One typer option per config field of ``sections`` (flat name, default, help from the dataclass)."""
    presets = presets or {}
    params = []
    for cls in sections:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flat = option_name(cls.section(), f.name)
            if flat in exclude or f.metadata.get("hidden"):
                continue
            default = presets.get(flat, field_default(f))
            flag = "--" + flat.replace("_", "-")
            tp = _cli_type(hints[f.name])
            decls = [flag] if tp not in (bool, Optional[bool]) else [f"{flag}/--no-{flag[2:]}"]
            opt = typer.Option(_cli_default(default), *decls, help=f.metadata.get("help", ""), show_default=True)
            params.append(inspect.Parameter(flat, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=tp))
    return params


def given(fn: Callable, kwargs: dict[str, Any], *names: str) -> dict[str, Any]:
    """The config options of ``kwargs`` that differ from the command's defaults (others are the API's own)."""
    defaults = fn.option_defaults  # type: ignore[attr-defined]
    return {k: v for k, v in kwargs.items() if k in defaults and k not in names and v != defaults[k]}


def _arg(name: str, annotation: Any, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=typer.Argument(..., help=help),
                             annotation=annotation)


def _opt(name: str, annotation: Any, default: Any, help: str, *decls: str) -> inspect.Parameter:
    flag = decls or ("--" + name.replace("_", "-"),)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                             default=typer.Option(default, *flag, help=help), annotation=annotation)
