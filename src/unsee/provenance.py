"""Which prompts trained a model, recorded with it, so that an evaluation can say when it measures on them.

Every training command (`erase`, `rl`, `invert`) writes `training_prompts` into its `unsee.json`: the prompts its
own updates used, plus those recorded with the model it started from and with the learned token it erased. An
erasure measured on the prompts it trained on, or on their phrasing, shows what it memorised rather than what it
removed; `unsee evaluate` marks each prompt set with how many of its prompts, and (on the toy world) how many of
its phrasings, a model's training used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

KEY = "training_prompts"
INFO = "unsee.json"


def _read(info: Path) -> list[str]:
    try:
        return list(json.loads(info.read_text()).get(KEY, []))
    except (OSError, ValueError, AttributeError):
        return []


def token_run_dir(token_file: str | Path) -> Path:
    """Where `unsee invert` keeps a token's checkpoints and unsee.json: `<token stem>.run` beside the file."""
    token_file = Path(token_file)
    return token_file.with_suffix("").with_name(token_file.stem + ".run")


def model_prompts(model: str | Path | None) -> set[str]:
    """The training prompts recorded with a model folder (or a token file); empty for a hub id, 'toyworld', or a
    model unsee did not train."""
    if model is None:
        return set()
    path = Path(model)
    if path.is_dir():
        return set(_read(path / INFO))
    if path.suffix == ".safetensors" and path.is_file():
        return set(_read(token_run_dir(path) / INFO))
    return set()


def lineage(own: Iterable[str], *, model: str | None = None, token: str | None = None) -> list[str]:
    """`own` plus what trained the starting model and the token: the record a training command writes."""
    return sorted(set(own) | model_prompts(model) | model_prompts(token))


def overlap(prompts: list[str], trained: set[str]) -> dict[str, int]:
    """How many of `prompts` a model trained on, word for word and (toy-world words) by phrasing."""
    from unsee.toyworld.world import template

    templates = {template(p) for p in trained}
    norm = {" ".join(p.split()) for p in trained}
    return {
        "prompts": len(prompts),
        "trained_prompts": sum(" ".join(p.split()) in norm for p in prompts),
        "trained_phrasings": sum(template(p) in templates for p in prompts),
    }
