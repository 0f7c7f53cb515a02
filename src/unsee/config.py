"""Configs are dataclasses; the CLI is generated from them one-to-one.

Each field carries its help text in `metadata={"help": ...}`. `click_options`
turns a dataclass into click options (Literal -> Choice, bool -> flag,
tuple[str, ...] -> repeatable option), so a stage's CLI flags, defaults and
help can never drift from its config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import click

from unsee.errors import UnseeError


def field(default: Any = dataclasses.MISSING, *, help: str, cli: bool = True, **kwargs: Any) -> Any:
    """A dataclass field with help text (shown by `--help`)."""
    metadata = {"help": help, "cli": cli}
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple default, configs are immutable")
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _click_type(tp: Any) -> tuple[Any, bool]:
    """(click type, multiple) for a field annotation."""
    tp, _ = _unwrap_optional(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return click.Choice([str(a) for a in get_args(tp)]), False
    if origin is tuple:
        inner, _ = _click_type(get_args(tp)[0])
        return inner, True
    if tp in (int, float, str):
        return tp, False
    raise TypeError(f"no CLI type for annotation {tp!r}")


def click_options(
    cls: type, *, exclude: tuple[str, ...] = (), defer_required: bool = False
) -> Callable[[Callable], Callable]:
    """Decorator adding one `--flag` per field of dataclass `cls` (fields named in `exclude` are skipped).

    `defer_required`: required fields are optional to click, so a recipe may supply them; `require` checks them after.
    """
    hints = typing.get_type_hints(cls)

    def decorate(fn: Callable) -> Callable:
        # Required flags first (a subclass's own come after its base's fields otherwise), then in declaration order.
        fields = sorted(
            dataclasses.fields(cls),
            key=lambda f: f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in reversed(fields):
            if f.name in exclude or not f.metadata.get("cli", True):
                continue
            flag = "--" + f.name.replace("_", "-")
            tp = hints[f.name]
            default = None if f.default is dataclasses.MISSING else f.default
            required = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and not defer_required
            )
            help_text = f.metadata.get("help", "")
            if _unwrap_optional(tp)[0] is bool:
                opt = click.option(
                    f"{flag}/--no-{flag[2:]}", f.name, default=default, show_default=True, help=help_text
                )
            else:
                ctype, multiple = _click_type(tp)
                kw: dict[str, Any] = dict(type=ctype, multiple=multiple, required=required, help=help_text)
                if not required:  # click >= 8.2 counts an explicit default=None as a default
                    kw["default"] = default if not multiple else (default or ())
                    kw["show_default"] = default is not None and default != ()
                opt = click.option(flag, f.name, **kw)
            fn = opt(fn)
        return fn

    return decorate


def require(cls: type, kwargs: dict[str, Any]) -> None:
    """Fail as click does for a required flag that neither the command line nor a recipe gave."""
    for f in dataclasses.fields(cls):
        if (
            f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and kwargs.get(f.name) in (None, ())
        ):
            raise click.UsageError(f"Missing option '--{f.name.replace('_', '-')}'.")


def from_kwargs(cls: type, kwargs: dict[str, Any]) -> Any:
    """Build config `cls` from CLI kwargs, coercing Literal numbers back from strings."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for k, v in kwargs.items():
        if k not in names:
            continue
        tp, _ = _unwrap_optional(hints[k])
        if get_origin(tp) is Literal and v is not None:
            choices = {str(a): a for a in get_args(tp)}
            v = choices[str(v)]
        if get_origin(tp) is tuple and isinstance(v, list):
            v = tuple(v)
        values[k] = v
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a (nested) dataclass config."""
    return dataclasses.asdict(config)


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise UnseeError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def check_positive(name: str, value: float | int, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UnseeError(f"{name} must be {bound}, got {value}")
