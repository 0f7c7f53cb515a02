"""Image grids: the pictures every report and demo shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unsee.files import atomic_write


def grid(images: torch.Tensor, nrow: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> uint8 (rows*(H+pad)+pad, nrow*(W+pad)+pad, 3), row-major, white padding."""
    b, c, h, w = images.shape
    rows = (b + nrow - 1) // nrow
    out = np.full((rows * (h * scale + pad) + pad, nrow * (w * scale + pad) + pad, 3), 255, dtype=np.uint8)
    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(b):
        r, k = divmod(i, nrow)
        y, x = pad + r * (h * scale + pad), pad + k * (w * scale + pad)
        out[y : y + h * scale, x : x + w * scale] = arr[i]
    return out


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, pad: int = 2, scale: int = 1) -> Path:
    from PIL import Image

    path = Path(path)
    atomic_write(path, lambda p: Image.fromarray(grid(images, nrow, pad, scale)).save(p, format="PNG"))
    return path
