"""Any transformers CLIP, on unsee's image convention (float (B, 3, H, W) in [0, 1]).

`load_clip("toyworld")` gives the toy world's CLIP; a hub id or a local folder
gives a real one (e.g. openai/clip-vit-base-patch32). Images are resized and
normalised as the model's image processor says, in torch, without a PIL round trip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from unsee.errors import UnseeError, first_line


@dataclass
class Clip:
    model: object  # transformers.CLIPModel
    tokenizer: object
    spec: str
    size: int
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return preprocess(images.to(self.device), self.size, self.mean, self.std)

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised image embeddings (B, D)."""
        out = []
        for k in range(0, len(images), batch_size):
            f = self.model.get_image_features(pixel_values=self.preprocess(images[k : k + batch_size]))
            out.append(F.normalize(getattr(f, "pooler_output", f).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_embeds(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings (B, D)."""
        out = []
        for k in range(0, len(texts), batch_size):
            ids = self.tokenizer(
                texts[k : k + batch_size],
                padding="max_length",
                truncation=True,
                max_length=self.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids
            f = self.model.get_text_features(input_ids=ids.to(self.device))
            out.append(F.normalize(getattr(f, "pooler_output", f).float(), dim=-1).cpu())
        return torch.cat(out)


def preprocess(images: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Resize the short side to `size` (bicubic, antialiased), centre-crop, normalise."""
    x = images.to(dtype=torch.float32)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        x = F.interpolate(
            x, size=(round(h * scale), round(w * scale)), mode="bicubic", antialias=True, align_corners=False
        )
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    return (x - mean.to(x.device).view(1, 3, 1, 1)) / std.to(x.device).view(1, 3, 1, 1)


# The CLIP of CLIP scores on real models (the one the CLIP-score literature and torchmetrics use).
REAL_CLIP = "openai/clip-vit-large-patch14"


def default_clip(toyworld: bool) -> str:
    """What --clip auto means: the toy world's CLIP for the toy world, the real default otherwise."""
    return "toyworld" if toyworld else REAL_CLIP


def resolve_clip(spec: str) -> str:
    if spec == "toyworld":
        from unsee.toyworld import CLIP, assets_path

        path = assets_path() / CLIP
        if not (path / "config.json").exists():
            raise UnseeError("the toy-world CLIP is not in this installation; build it with `unsee toyworld build`")
        return str(path)
    return spec


def load_clip(spec: str = "toyworld", device: str | torch.device = "cpu") -> Clip:
    from transformers import CLIPModel, CLIPTokenizer

    location = resolve_clip(spec)
    try:
        model = CLIPModel.from_pretrained(location).to(device).eval()
        tokenizer = CLIPTokenizer.from_pretrained(location)
    except OSError as e:
        raise UnseeError(f"could not load CLIP {spec!r}: {first_line(e)}") from None
    proc_path = Path(location) / "preprocessor_config.json"
    size, mean, std = (
        model.config.vision_config.image_size,
        [0.48145466, 0.4578275, 0.40821073],
        [0.26862954, 0.26130258, 0.27577711],
    )
    if proc_path.exists():  # local folder: read the processor's own numbers
        proc = json.loads(proc_path.read_text())
        mean, std = proc.get("image_mean", mean), proc.get("image_std", std)
        crop = proc.get("crop_size", size)
        size = crop.get("height", size) if isinstance(crop, dict) else crop
    else:  # hub id: the processor config comes with it
        from transformers import CLIPImageProcessor

        try:
            proc = CLIPImageProcessor.from_pretrained(location)
            mean, std = proc.image_mean, proc.image_std
            size = proc.crop_size["height"] if isinstance(proc.crop_size, dict) else proc.crop_size
        except OSError:
            pass  # OpenAI CLIP's defaults above
    return Clip(
        model, tokenizer, spec, int(size), torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    )
