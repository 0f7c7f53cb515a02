import dataclasses
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from unsee.config import click_options, field, from_kwargs


@dataclasses.dataclass
class Demo:
    name: str = field(help="A required name.")
    steps: int = field(3, help="Steps.")
    mode: Literal["a", "b"] = field("a", help="Mode.")
    level: Literal[1, 2] = field(1, help="A numeric choice.")
    scale: float | None = field(None, help="Optional float.")
    flag: bool = field(False, help="A switch.")
    tags: tuple[str, ...] = field((), help="Repeatable.")


def _run(args):
    seen = {}

    @click.command()
    @click_options(Demo)
    def cmd(**kw):
        seen["cfg"] = from_kwargs(Demo, kw)

    r = CliRunner().invoke(cmd, args)
    return r, seen.get("cfg")


def test_options_mirror_the_dataclass():
    r, cfg = _run(
        ["--name", "x", "--mode", "b", "--level", "2", "--scale", "0.5", "--flag", "--tags", "p", "--tags", "q"]
    )
    assert r.exit_code == 0, r.output
    assert cfg == Demo(name="x", steps=3, mode="b", level=2, scale=0.5, flag=True, tags=("p", "q"))


def test_defaults_required_and_choices():
    r, cfg = _run(["--name", "x"])
    assert cfg == Demo(name="x")
    r, _ = _run([])
    assert r.exit_code == 2 and "--name" in r.output
    r, _ = _run(["--name", "x", "--mode", "c"])
    assert r.exit_code == 2 and "'c' is not one of 'a', 'b'" in r.output


def test_help_shows_field_help_and_defaults():
    @click.command()
    @click_options(Demo)
    def cmd(**kw):
        pass

    out = CliRunner().invoke(cmd, ["--help"]).output
    assert "A required name." in out and "[default: 3]" in out and "--flag / --no-flag" in out


def test_mutable_defaults_are_refused():
    with pytest.raises(TypeError):
        field([], help="x")
