"""Feedback files: `feedback.jsonl`, one judgement a line, validated on load.

Schema (version 1). The first line may be a header; every other line is a judgement:

    {"kind": "meta", "version": 1, "labels": ["skull", "kelvo"], "images": "runs/base"}
    {"kind": "binary", "image": "00003-001", "annotator": "ann-1", "labels": ["skull"], "time": "2026-11-23T17:00:00Z"}
    {"kind": "binary", "image": "00003-002", "annotator": "ann-1", "labels": [], "time": "..."}   # "none of these"
    {"kind": "rank", "images": ["00001-000", "00007-003", "00002-001"], "concept": "kelvo", "annotator": "ann-2", "time": "..."}

- binary: the set of labels the annotator checked for one image (empty = none).
- rank: a group of images ordered from MOST to LEAST showing `concept`; ties
  are refused (a group names each image once).
Loading checks every line against the image set's manifest and the header's
labels; a bad line is refused with its line number.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from unsee.errors import UnseeError
from unsee.files import atomic_write_text

VERSION = 1


@dataclass(frozen=True)
class Binary:
    image: str
    annotator: str
    labels: frozenset[str]
    time: str
    kind: Literal["binary"] = "binary"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "binary",
            "image": self.image,
            "annotator": self.annotator,
            "labels": sorted(self.labels),
            "time": self.time,
        }


@dataclass(frozen=True)
class Rank:
    images: tuple[str, ...]  # most -> least
    concept: str
    annotator: str
    time: str
    kind: Literal["rank"] = "rank"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "rank",
            "images": list(self.images),
            "concept": self.concept,
            "annotator": self.annotator,
            "time": self.time,
        }


Judgement = Binary | Rank


@dataclass
class Feedback:
    labels: tuple[str, ...]
    judgements: list[Judgement] = field(default_factory=list)
    images: str | None = None  # the image set the judgements are about

    @property
    def binary(self) -> list[Binary]:
        return [j for j in self.judgements if isinstance(j, Binary)]

    @property
    def ranks(self) -> list[Rank]:
        return [j for j in self.judgements if isinstance(j, Rank)]

    def image_ids(self) -> set[str]:
        ids: set[str] = set()
        for j in self.judgements:
            ids.update([j.image] if isinstance(j, Binary) else j.images)
        return ids


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _str(d: dict, key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise UnseeError(f"{where}: '{key}' must be a non-empty string")
    return v


def parse_line(d: Any, where: str, labels: tuple[str, ...], known_ids: set[str] | None) -> Judgement:
    if not isinstance(d, dict):
        raise UnseeError(f"{where}: a judgement must be a JSON object")
    kind = d.get("kind")
    annotator = _str(d, "annotator", where)
    time = d.get("time") or ""
    if not isinstance(time, str):
        raise UnseeError(f"{where}: 'time' must be an ISO-8601 string")
    if kind == "binary":
        image = _str(d, "image", where)
        if known_ids is not None and image not in known_ids:
            raise UnseeError(f"{where}: unknown image id {image!r} (not in the image set's manifest)")
        got = d.get("labels")
        if not isinstance(got, list) or not all(isinstance(x, str) for x in got):
            raise UnseeError(f"{where}: 'labels' must be a list of label names ([] for none)")
        unknown = sorted(set(got) - set(labels))
        if unknown:
            raise UnseeError(f"{where}: unknown label(s) {', '.join(unknown)}; allowed: {', '.join(labels)}")
        if len(set(got)) != len(got):
            raise UnseeError(f"{where}: a label is checked twice")
        return Binary(image, annotator, frozenset(got), time)
    if kind == "rank":
        images = d.get("images")
        if not isinstance(images, list) or not all(isinstance(x, str) and x for x in images):
            raise UnseeError(f"{where}: 'images' must be a list of image ids")
        if len(images) < 2:
            raise UnseeError(f"{where}: a rank group needs at least 2 images, got {len(images)}")
        if len(set(images)) != len(images):
            dup = sorted({x for x in images if images.count(x) > 1})
            raise UnseeError(f"{where}: image(s) {', '.join(dup)} ranked twice in one group (ties are refused)")
        if known_ids is not None:
            missing = [x for x in images if x not in known_ids]
            if missing:
                raise UnseeError(f"{where}: unknown image id(s) {', '.join(missing)} (not in the image set's manifest)")
        concept = _str(d, "concept", where)
        if concept not in labels:
            raise UnseeError(f"{where}: unknown concept {concept!r}; allowed: {', '.join(labels)}")
        return Rank(tuple(images), concept, annotator, time)
    raise UnseeError(f"{where}: 'kind' must be 'binary' or 'rank', got {kind!r}")


def load_feedback(
    path: str | Path, *, image_ids: Iterable[str] | None = None, labels: Iterable[str] | None = None
) -> Feedback:
    """Read and validate a feedback file; `image_ids` (the manifest's ids) and `labels` are checked when given.

    Labels come from `labels`, else the header line; without either, every label seen is accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise UnseeError(f"feedback file {str(path)!r} does not exist")
    known = set(image_ids) if image_ids is not None else None
    lines = path.read_text(encoding="utf-8").splitlines()
    header: dict[str, Any] = {}
    rows: list[tuple[int, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise UnseeError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if isinstance(d, dict) and d.get("kind") == "meta":
            if rows or header:
                raise UnseeError(f"{path}:{n}: the 'meta' header must be the first line")
            if d.get("version", VERSION) != VERSION:
                raise UnseeError(
                    f"{path}:{n}: feedback version {d.get('version')} is not supported (this unsee reads {VERSION})"
                )
            header = d
            continue
        rows.append((n, d))
    if labels is not None:
        allowed = tuple(labels)
    elif "labels" in header:
        allowed = tuple(header["labels"])
    else:
        allowed = tuple(
            sorted(
                {x for _, d in rows if isinstance(d, dict) for x in (d.get("labels") or [])}
                | {d.get("concept") for _, d in rows if isinstance(d, dict) and d.get("concept")}
            )
        )
    judgements = [parse_line(d, f"{path}:{n}", allowed, known) for n, d in rows]
    if not judgements:
        raise UnseeError(f"feedback file {str(path)!r} has no judgements")
    return Feedback(allowed, judgements, header.get("images"))


def save_feedback(path: str | Path, fb: Feedback) -> Path:
    """Write atomically: header line, then one judgement a line."""
    header = {"kind": "meta", "version": VERSION, "labels": list(fb.labels)}
    if fb.images:
        header["images"] = fb.images
    lines = [json.dumps(header)] + [json.dumps(j.to_json()) for j in fb.judgements]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def binary_targets(fb: Feedback, label: str) -> dict[str, float]:
    """Per image, the share of its annotators who checked `label` (several annotators averaged)."""
    votes: dict[str, list[float]] = {}
    for j in fb.binary:
        votes.setdefault(j.image, []).append(float(label in j.labels))
    return {k: sum(v) / len(v) for k, v in votes.items()}


def rank_pairs(groups: Iterable[Rank]) -> list[tuple[str, str, str]]:
    """All ordered (more, less, concept) pairs implied by rank groups (a group of n gives n(n-1)/2)."""
    return [
        (g.images[a], g.images[b], g.concept)
        for g in groups
        for a in range(len(g.images))
        for b in range(a + 1, len(g.images))
    ]


def combine_feedback(parts: list[Feedback], paths: list[str]) -> Feedback:
    """Feedback on several image sets as one: image ids become 'K/ID', K the set's position (rounds of feedback,
    each on the images of its round). The files must name the same labels."""
    for p, path in zip(parts[1:], paths[1:], strict=True):
        if set(p.labels) != set(parts[0].labels):
            raise UnseeError(
                f"{path} has labels {', '.join(p.labels)} but {paths[0]} has {', '.join(parts[0].labels)}; "
                "feedback files trained together must use the same labels"
            )
    judgements: list[Judgement] = []
    for k, p in enumerate(parts):
        for j in p.judgements:
            judgements.append(
                replace(j, image=f"{k}/{j.image}")
                if isinstance(j, Binary)
                else replace(j, images=tuple(f"{k}/{i}" for i in j.images))
            )
    return Feedback(parts[0].labels, judgements)
