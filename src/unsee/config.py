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


class GroupedOption(click.Option):
    """A click option that remembers which section of `--help` it belongs to."""

    def __init__(self, *args: Any, help_group: tuple[int, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.help_group = help_group  # (rank of the section, its title)


class GroupedCommand(click.Command):
    """A command whose `--help` lists its options in sections (a config's `HELP_GROUPS`): the config's own sections
    first, its base classes' after, then the options no section names."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        rank: dict[str, int] = {}
        params = self.get_params(ctx)
        rest = "Other options" if any(getattr(p, "help_group", None) for p in params) else "Options"
        for param in params:
            record = param.get_help_record(ctx)
            if record is not None:
                r, title = getattr(param, "help_group", None) or (1 << 30, rest)
                sections.setdefault(title, []).append(record)
                rank[title] = min(rank.get(title, r), r)  # a title a base class repeats joins the first one
        for title in sorted(sections, key=rank.__getitem__):
            with formatter.section(title):
                formatter.write_dl(sections[title])


def help_group(cls: type, name: str) -> tuple[int, str] | None:
    """The `--help` section of field `name` as (rank, title): the first of `cls.HELP_GROUPS` (title -> field names,
    the class's own before its bases') that lists it."""
    rank = 0
    for klass in cls.__mro__:
        for title, names in vars(klass).get("HELP_GROUPS", {}).items():
            if name in names:
                return rank, title
            rank += 1
    return None


def click_options(
    cls: type, *, exclude: tuple[str, ...] = (), defer_required: bool = False
) -> Callable[[Callable], Callable]:
    """Decorator adding one `--flag` per field of dataclass `cls` (fields named in `exclude` are skipped).

    `defer_required`: required fields are optional to click, so a recipe may supply them; `require` checks them after.
    A field named in the class's `HELP_GROUPS` (title -> field names; a base class's count too) is listed under that
    title by `GroupedCommand`'s help.
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
            group = {"cls": GroupedOption, "help_group": help_group(cls, f.name)}
            if _unwrap_optional(tp)[0] is bool:
                opt = click.option(
                    f"{flag}/--no-{flag[2:]}", f.name, default=default, show_default=True, help=help_text, **group
                )
            else:
                ctype, multiple = _click_type(tp)
                kw: dict[str, Any] = dict(type=ctype, multiple=multiple, required=required, help=help_text, **group)
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
