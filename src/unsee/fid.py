"""Inception features for FID, measured the clean-fid way (Parmar et al., arXiv 2104.11222).

- Resizing: each channel of the uint8 image, as a float32 PIL image, bicubic to
  299 x 299, clipped to 0..255, with no quantisation after (clean-fid's "clean" mode: resizing
  with a proper antialiasing filter, not the aliased resize of legacy FID code).
- Network: the TorchScript Inception-v3 of the TensorFlow FID release that
  clean-fid uses (`inception-2015-12-05.pt`); its `layers` applied to
  (x - 128) / 128 give the 2048-d pool features.
The file is never downloaded here (unsee runs offline): it is read from
UNSEE_INCEPTION, ~/.cache/unsee/, or clean-fid's own location (the temp folder).
Its SHA-256 is recorded with every result, so a figure names the weights it came from.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from unsee.errors import UnseeError, first_line

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
SIZE = 299


def inception_candidates() -> list[Path]:
    env = os.environ.get("UNSEE_INCEPTION")
    if env:
        return [Path(env).expanduser()]
    return [Path.home() / ".cache" / "unsee" / INCEPTION_FILE, Path(tempfile.gettempdir()) / INCEPTION_FILE]


def find_inception() -> Path:
    for path in inception_candidates():
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in inception_candidates())
    raise UnseeError(
        f"Inception FID needs clean-fid's {INCEPTION_FILE} at {where} (download it once from {INCEPTION_URL}, "
        "or set UNSEE_INCEPTION=FILE); or use --frechet-features clip"
    )


def clean_resize(images: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, 3) -> float32 (B, 299, 299, 3): per channel, float PIL bicubic, clipped, not quantised."""
    from PIL import Image

    out = np.empty((len(images), SIZE, SIZE, 3), np.float32)
    for i, im in enumerate(images):
        for c in range(3):
            channel = Image.fromarray(im[:, :, c].astype(np.float32), mode="F")
            out[i, :, :, c] = np.asarray(channel.resize((SIZE, SIZE), resample=Image.BICUBIC))
    # bicubic overshoots at hard edges (a noise image resizes to -42..292); clean-fid clips back to pixel values
    return out.clip(0, 255)


class InceptionFeatures:
    """images (B, 3, H, W) in [0, 1] -> (B, 2048) pool features, the clean-fid way."""

    name = "Inception-v3 pool features (clean-fid resizing)"

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 64):
        path = Path(path) if path else find_inception()
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self.path, self.device, self.batch_size = path, torch.device(device), batch_size
        try:
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except RuntimeError as e:
            raise UnseeError(f"{path} is not a TorchScript Inception ({first_line(e)})") from None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        feats = []
        for k in range(0, len(u8), self.batch_size):
            x = torch.from_numpy(clean_resize(u8[k : k + self.batch_size])).permute(0, 3, 1, 2).to(self.device)
            feats.append(self.model.layers.forward((x - 128) / 128).reshape(len(x), -1).double().cpu())
        return torch.cat(feats)
