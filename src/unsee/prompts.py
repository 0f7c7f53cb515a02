"""Prompt files: plain text (one prompt a line) or CSV with I2P columns.

I2P columns honoured (docs/design.md, "Algorithms": the evaluation protocol): `prompt`,
`categories`, `sd_seed` or `evaluation_seed`, `sd_guidance` or
`evaluation_guidance`, `sd_image_width`, `sd_image_height`, `case_number`.
A prompt's own seed, guidance and size override the command's flags.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from unsee.errors import UnseeError

_SEED_COLUMNS = ("sd_seed", "evaluation_seed", "seed")
_GUIDANCE_COLUMNS = ("sd_guidance", "evaluation_guidance", "guidance")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt with the settings its file fixes (None: the command's flag decides)."""

    text: str
    index: int  # position in the file (0-based, data rows only)
    seed: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    categories: str | None = None
    case_number: str | None = None


def _first(row: dict[str, str], columns: tuple[str, ...]) -> tuple[str, str] | None:
    for c in columns:
        v = row.get(c)
        if v is not None and v.strip() != "":
            return c, v.strip()
    return None


def _parse_number(kind: type, value: str, column: str, line: int, path: Path) -> int | float:
    try:
        x = float(value)
    except ValueError:
        raise UnseeError(f"{path}:{line}: column {column!r} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise UnseeError(f"{path}:{line}: column {column!r} must be finite, got {value!r}")
    if kind is int:
        if x != int(x):
            raise UnseeError(f"{path}:{line}: column {column!r} must be a whole number, got {value!r}")
        return int(x)
    return x


def _read_csv(path: Path) -> list[Prompt]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        if "prompt" not in columns:
            raise UnseeError(
                f"{path}: CSV prompt files need a 'prompt' column (found: {', '.join(columns) or 'none'}); "
                "rename the column or give a plain-text file with one prompt a line"
            )
        prompts = []
        for row in reader:
            line = reader.line_num
            text = (row.get("prompt") or "").strip()
            if not text:
                continue
            seed = guidance = width = height = None
            if hit := _first(row, _SEED_COLUMNS):
                seed = int(_parse_number(int, hit[1], hit[0], line, path))
                if seed < 0:
                    raise UnseeError(f"{path}:{line}: seed must be >= 0, got {seed}")
            if hit := _first(row, _GUIDANCE_COLUMNS):
                guidance = float(_parse_number(float, hit[1], hit[0], line, path))
            for col, name in (("sd_image_width", "width"), ("sd_image_height", "height")):
                if hit := _first(row, (col, name)):
                    v = int(_parse_number(int, hit[1], hit[0], line, path))
                    if v <= 0 or v % 8:
                        raise UnseeError(f"{path}:{line}: {hit[0]} must be a positive multiple of 8, got {v}")
                    if name == "width":
                        width = v
                    else:
                        height = v
            categories = (row.get("categories") or "").strip() or None
            case = (row.get("case_number") or "").strip() or None
            prompts.append(Prompt(text, len(prompts), seed, guidance, width, height, categories, case))
        return prompts


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read a prompt file; refuse a missing, unreadable or empty one with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise UnseeError(f"prompt file {str(path)!r} does not exist; give a .txt (one prompt a line) or .csv file")
    if path.is_dir():
        raise UnseeError(f"prompt file {str(path)!r} is a folder; give a .txt or .csv file")
    try:
        if path.suffix.lower() == ".csv":
            prompts = _read_csv(path)
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            texts = [ln.strip() for ln in lines]
            prompts = [Prompt(t, i) for i, t in enumerate(t for t in texts if t and not t.startswith("#"))]
    except UnicodeDecodeError:
        raise UnseeError(f"prompt file {str(path)!r} is not UTF-8 text") from None
    except csv.Error as e:
        raise UnseeError(f"prompt file {str(path)!r} is not valid CSV: {e}") from None
    if not prompts:
        raise UnseeError(
            f"prompt file {str(path)!r} has no prompts; write one prompt a line (lines starting with # are skipped)"
        )
    return prompts
