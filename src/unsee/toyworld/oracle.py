"""The oracle: a CNN that reads every attribute off a toy-world image, with scores.

It is the toy world's NudeNet (a detector for the flaggable concepts) and, with
noise, its human annotator. Trained on rendered ground truth with uniform
attributes (so it cannot lean on co-occurrence) and on VAE reconstructions
(so generated images are not out of its distribution).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from unsee.toyworld.world import BACKGROUNDS, COLOURS, EXTRAS, SHAPES, STYLES

# head -> class names; "shape"/"colour" include "none" for scenes with no main object.
HEADS: dict[str, tuple[str, ...]] = {
    "background": BACKGROUNDS,
    "shape": ("none",) + SHAPES,
    "colour": ("none",) + COLOURS,
    "extra": EXTRAS,
    "style": STYLES,
}
# Flaggable concepts and their near neighbours, as (head, class).
CONCEPTS: dict[str, tuple[str, str]] = {
    "skull": ("extra", "skull"),
    "mask": ("extra", "mask"),
    "kelvo": ("style", "kelvo"),
    "ravo": ("style", "ravo"),
    "mosaic": ("style", "mosaic"),
}


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, 1, 1),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class Oracle(ModelMixin, ConfigMixin):
    """images float (B, 3, H, W) in [0, 1] -> logits per head."""

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (32, 64, 96, 128), image_size: int = 32):
        super().__init__()
        layers, cin = [], 3
        for i, c in enumerate(channels):
            layers.append(_block(cin, c, 1 if i == 0 else 2))
            cin = c
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({h: nn.Linear(2 * cin, len(names)) for h, names in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-1] != self.config.image_size:
            images = F.interpolate(images, size=self.config.image_size, mode="area")
        f = self.features(images * 2 - 1)
        f = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)  # mean: global looks; max: small objects
        return {h: head(f) for h, head in self.heads.items()}

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Per head (B, classes) softmax probabilities."""
        out: dict[str, list[torch.Tensor]] = {h: [] for h in HEADS}
        for k in range(0, len(images), batch_size):
            logits = self(images[k : k + batch_size].to(self.device, self.dtype))
            for h in HEADS:
                out[h].append(logits[h].float().softmax(-1).cpu())
        return {h: torch.cat(v) for h, v in out.items()}

    def read(self, images: torch.Tensor) -> list[dict[str, str]]:
        """The most likely class of every head, per image."""
        probs = self.probabilities(images)
        idx = {h: p.argmax(-1).tolist() for h, p in probs.items()}
        return [{h: HEADS[h][idx[h][i]] for h in HEADS} for i in range(len(images))]

    def concept_scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probability of each flaggable concept and neighbour, (B,) each: the detector view."""
        probs = self.probabilities(images)
        return {c: probs[h][:, HEADS[h].index(k)] for c, (h, k) in CONCEPTS.items()}


def targets(scenes) -> dict[str, torch.Tensor]:
    """Class indices per head for a list of Scenes."""
    return {
        "background": torch.tensor([BACKGROUNDS.index(s.background) for s in scenes]),
        "shape": torch.tensor([HEADS["shape"].index(s.shape or "none") for s in scenes]),
        "colour": torch.tensor([HEADS["colour"].index(s.colour or "none") for s in scenes]),
        "extra": torch.tensor([EXTRAS.index(s.extra) for s in scenes]),
        "style": torch.tensor([STYLES.index(s.style) for s in scenes]),
    }


def loss_fn(logits: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(F.cross_entropy(logits[h], y[h]) for h in HEADS)


def load_oracle(path: str | Path, device: str | torch.device = "cpu") -> Oracle:
    return Oracle.from_pretrained(str(path)).to(device).eval()
