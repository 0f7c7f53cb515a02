"""Simulated annotators: label an image set from a detector's scores, with noise.

This is how the feedback loop is tested end to end without people; the web app
(`unsee annotate serve`) writes the same `feedback.jsonl`.
- binary: an annotator checks each label whose score passes the threshold, and
  each check is flipped with probability `noise`;
- rank: images are split into groups of `group_size`, each ordered by the
  concept's score (most first); with probability `noise` one random adjacent
  pair of the group is swapped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from unsee.config import field
from unsee.detectors import make_detector
from unsee.errors import UnseeError
from unsee.feedback import Binary, Feedback, Rank, now, save_feedback
from unsee.imageset import ImageSet
from unsee.seeds import stream
from unsee.toyworld import FLAGGED_LABELS


@dataclasses.dataclass
class AutoAnnotateConfig:
    images: str = field(help="Image set folder (made by `unsee generate`).")
    out: str = field(help="Feedback file to write (feedback.jsonl).")
    detector: Literal["oracle", "nudenet"] = field("oracle", help="Who looks: the toy-world oracle or NudeNet.")
    kind: Literal["binary", "rank"] = field(
        "binary", help="binary: check labels per image; rank: order groups of images."
    )
    labels: tuple[str, ...] = field(
        (), help="Labels to annotate (repeatable). Default: skull + kelvo (oracle), nudity (nudenet)."
    )
    concept: str | None = field(None, help="rank: the concept to order by (default: the first label).")
    noise: float = field(0.1, help="Probability of flipping a check (binary) or swapping an adjacent pair (rank).")
    annotators: int = field(1, help="Simulated annotators; each judges every image once.")
    group_size: int = field(5, help="rank: images per group.")
    threshold: float | None = field(None, help="Score at which a label counts as present (default: the detector's).")
    seed: int = field(0, help="Seed of the noise and the grouping.")

    def __post_init__(self) -> None:
        if not 0 <= self.noise <= 1:
            raise UnseeError(f"--noise must be a probability in [0, 1], got {self.noise}")
        if self.annotators < 1:
            raise UnseeError(f"--annotators must be >= 1, got {self.annotators}")
        if self.kind == "rank" and not 2 <= self.group_size:
            raise UnseeError(f"--group-size must be >= 2, got {self.group_size}")


def score_image_set(image_set: ImageSet, detector: str, batch_size: int = 256):
    """({label: scores (N,)}, info) for every image of the set, in manifest order."""
    detect, info = make_detector(detector)
    parts: dict[str, list] = {}
    for k in range(0, len(image_set), batch_size):
        x = image_set.load_images(image_set.records[k : k + batch_size])
        for label, s in detect(x).items():
            parts.setdefault(label, []).append(s.float().cpu().numpy())
    return {label: np.concatenate(v) for label, v in parts.items()}, info


def auto_annotate(cfg: AutoAnnotateConfig) -> Path:
    s = ImageSet.load(cfg.images)
    scores, info = score_image_set(s, cfg.detector)
    labels = cfg.labels or (FLAGGED_LABELS if cfg.detector == "oracle" else ("nudity",))
    unknown = [x for x in labels if x not in scores]
    if unknown:
        raise UnseeError(
            f"detector {cfg.detector} has no label(s) {', '.join(unknown)}; it reports {', '.join(scores)}"
        )
    threshold = info.threshold if cfg.threshold is None else cfg.threshold
    rng = stream(cfg.seed, "annotate")
    ids = s.ids
    judgements: list = []
    for a in range(cfg.annotators):
        who = f"sim-{cfg.detector}-{a}"
        if cfg.kind == "binary":
            present = np.stack([scores[x] >= threshold for x in labels], 1)  # (N, L)
            flips = rng.random(present.shape) < cfg.noise
            checked = present ^ flips
            for i, image in enumerate(ids):
                judgements.append(
                    Binary(image, who, frozenset(x for x, c in zip(labels, checked[i], strict=True) if c), now())
                )
        else:
            concept = cfg.concept or labels[0]
            if concept not in scores:
                raise UnseeError(f"--concept {concept!r} is not a label of detector {cfg.detector}")
            order = rng.permutation(len(ids))
            for k in range(0, len(order) - 1, cfg.group_size):
                group = order[k : k + cfg.group_size]
                if len(group) < 2:
                    continue
                ranked = list(group[np.lexsort((rng.random(len(group)), -scores[concept][group]))])  # ties: random
                if rng.random() < cfg.noise:
                    j = int(rng.integers(len(ranked) - 1))
                    ranked[j], ranked[j + 1] = ranked[j + 1], ranked[j]
                judgements.append(Rank(tuple(ids[i] for i in ranked), concept, who, now()))
    all_labels = tuple(labels) if cfg.kind == "binary" else (cfg.concept or labels[0],)
    return save_feedback(cfg.out, Feedback(all_labels, judgements, str(Path(cfg.images).resolve())))
