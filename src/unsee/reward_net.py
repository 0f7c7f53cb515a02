"""The reward network r_psi: an MLP on CLIP image embeddings (see `unsee.reward_model`).

The CLIP is frozen and named in the config (`clip`), or, when the model was trained with `--tune-vision N`, a
fine-tuned copy of its vision tower lives inside the reward model (`vision`, with the preprocessing it needs) and
scores images without the original CLIP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class RewardModel(ModelMixin, ConfigMixin):
    """CLIP image embedding (B, D) -> one score per label (B, L)."""

    @register_to_config
    def __init__(
        self,
        embed_dim: int,
        labels: tuple[str, ...],
        kind: str = "binary",
        clip: str = "toyworld",
        hidden: int = 256,
        layers: int = 2,
        dropout: float = 0.1,
        vision_config: dict | None = None,
        image_size: int = 224,
        image_mean: tuple[float, ...] = (),
        image_std: tuple[float, ...] = (),
    ):
        super().__init__()
        dims = [embed_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims, dims[1:], strict=False):
            blocks += [nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*blocks, nn.Linear(dims[-1], len(labels)))
        self.vision = None
        if vision_config is not None:  # a tuned tower of its own
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            self.vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config))

    @property
    def frozen_clip(self) -> str | None:
        """The CLIP whose image embeddings this model reads, or None when it embeds with its own tuned tower."""
        return self.config.clip if self.vision is None else None

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.mlp(embeds)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the own tower's pixel values (only for a model with a tuned tower)."""
        from unsee.clip import preprocess

        c = self.config
        return preprocess(images.to(self.device), c.image_size, torch.tensor(c.image_mean), torch.tensor(c.image_std))

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings from the own tower, differentiable (training calls it)."""
        return F.normalize(self.vision(pixel_values=pixels.to(self.device, self.dtype)).image_embeds.float(), dim=-1)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, clip=None) -> torch.Tensor:
        """The embeddings this model scores: its own tower's, or the frozen CLIP's (loaded from the config unless given)."""
        if self.vision is not None:
            return self.eval().embed_pixels(self.preprocess(images)).cpu()
        from unsee.clip import load_clip

        return (clip or load_clip(self.config.clip)).image_embeds(images)

    @torch.no_grad()
    def score_images(self, images: torch.Tensor, clip=None) -> dict[str, torch.Tensor]:
        """{label: (B,)} for images in [0, 1]."""
        return self.score_embeds(self.embed_images(images, clip))

    @torch.no_grad()
    def score_embeds(self, embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """{label: (B,)} for embeddings already computed (an ensemble on one frozen CLIP embeds once)."""
        s = self.eval()(embeds.to(self.device, self.dtype)).float().cpu()
        return {label: s[:, i] for i, label in enumerate(self.config.labels)}


def load_member_clips(members, device: str | torch.device = "cpu") -> dict:
    """Each frozen CLIP the members read, loaded once."""
    from unsee.clip import load_clip

    return {c: load_clip(c, device) for c in {m.frozen_clip for m in members} if c is not None}


@torch.no_grad()
def member_scores(
    members: dict[str, RewardModel], images: torch.Tensor, label: str, clips: dict
) -> dict[str, torch.Tensor]:
    """{name: (B,) score of `label`}: members on the same frozen CLIP share one embedding pass; tuned ones embed alone."""
    embeds = {c: clip.image_embeds(images) for c, clip in clips.items()}
    return {
        name: (m.score_embeds(embeds[m.frozen_clip]) if m.frozen_clip else m.score_images(images))[label]
        for name, m in members.items()
    }
