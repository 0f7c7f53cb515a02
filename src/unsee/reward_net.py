"""The reward network r_psi: an MLP on frozen CLIP image embeddings (see `unsee.reward_model`)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class RewardModel(ModelMixin, ConfigMixin):
    """CLIP image embedding (B, D) -> one score per label (B, L)."""

    @register_to_config
    def __init__(self, embed_dim: int, labels: tuple[str, ...], kind: str = "binary", clip: str = "toyworld",
                 hidden: int = 256, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        dims = [embed_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims, dims[1:], strict=False):
            blocks += [nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*blocks, nn.Linear(dims[-1], len(labels)))

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.mlp(embeds)

    @torch.no_grad()
    def score_images(self, images: torch.Tensor, clip=None) -> dict[str, torch.Tensor]:
        """{label: (B,)} for images in [0, 1]; loads the CLIP named in the config unless given."""
        from unsee.clip import load_clip

        clip = clip or load_clip(self.config.clip)
        return self.score_embeds(clip.image_embeds(images))

    @torch.no_grad()
    def score_embeds(self, embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """{label: (B,)} for CLIP image embeddings already computed (an ensemble on one CLIP embeds once)."""
        s = self.eval()(embeds.to(self.device, self.dtype)).float().cpu()
        return {label: s[:, i] for i, label in enumerate(self.config.labels)}
