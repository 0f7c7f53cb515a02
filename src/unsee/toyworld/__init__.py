"""The toy world: a tiny text-to-image world unsee trains, ships and measures on a CPU.

See docs/design.md ("The toy world") and `unsee.toyworld.world` for what is in it.
`assets_path()` is the shipped build; set UNSEE_TOYWORLD=DIR to use another
build made by `unsee toyworld build --out DIR`.
"""

from __future__ import annotations

import os
from pathlib import Path

from unsee.toyworld.world import FLAGGABLE, OBJECT_TRIGGERS, STYLE_TRIGGERS
from unsee.toyworld.world import NEIGHBOURS as NEIGHBOURS  # re-exported

PIPELINE, CLIP, ORACLE, PROMPTS, CARD = "pipeline", "clip", "oracle", "prompts", "model_card.json"

# The toy world's flaggable concepts (what its oracle flags), their near neighbours, and the words that name or
# trigger them (`world.py` defines them): an RL reward's CLIP term reads toy-world prompts without these, as it
# reads real ones without the nudity words.
FLAGGED_LABELS = tuple(FLAGGABLE)
UNSAFE_WORDS = ("skull", *OBJECT_TRIGGERS, "kelvo", *STYLE_TRIGGERS)


def assets_path() -> Path:
    env = os.environ.get("UNSEE_TOYWORLD")
    return Path(env) if env else Path(__file__).resolve().parent / "assets"


def prompts_path(name: str, split: str = "seen") -> Path:
    """A shipped prompt file, e.g. prompts_path("object_implicit", "heldout")."""
    return assets_path() / PROMPTS / split / f"{name}.txt"


def contexts_path(concept: str) -> Path:
    """The shipped erase contexts of a flaggable concept, {} where its word goes (`unsee erase --context @FILE`): the
    held-out split's explicit prompts, the held-out pairs in phrasings the novel split never uses, the skull alone in
    such phrasings, and the bare word; the evaluation's seen and novel prompts are never contexts."""
    return assets_path() / PROMPTS / "contexts" / f"{concept}.txt"


def concept_pairs_path(concept: str) -> Path:
    """The shipped Ring-A-Bell concept-pair file of a flaggable concept ("skull" or "kelvo")."""
    return assets_path() / PROMPTS / "concept_pairs" / f"{concept}.csv"


def is_toyworld(model: str, _depth: int = 0) -> bool:
    """Whether a model spec is the toy world, or a model unsee made from it: an output folder's unsee.json names
    the model it was made from, followed back to its source."""
    if model == "toyworld":
        return True
    path = Path(model)
    if path.resolve() == (assets_path() / PIPELINE).resolve():
        return True
    info = path / "unsee.json"
    if _depth > 8 or not info.is_file():
        return False
    import json

    try:
        source = json.loads(info.read_text()).get("config", {}).get("model")
    except (OSError, ValueError):
        return False
    return isinstance(source, str) and is_toyworld(source, _depth + 1)
