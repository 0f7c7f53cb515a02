"""Image sets on disk: a folder of PNGs plus `manifest.jsonl` and `imageset.json`.

`manifest.jsonl` holds one JSON object per image (id, prompt, seed, guidance,
steps, height, width, model, file, ...). Lines are appended a batch at a time
with one write, so a crash loses at most the batch in flight; a torn last line
(a crash mid-write on a filesystem that allows it) is ignored on load.
`imageset.json` records the settings the set was made with, so a rerun into
the same folder resumes only when the settings match.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsee.errors import UnseeError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
INFO = "imageset.json"
REQUIRED_KEYS = ("id", "prompt", "seed", "file")


def repair_manifest(folder: str | Path) -> None:
    """Cut a torn last line (a crash mid-append) so the next append starts on a fresh line."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: removing an incomplete last line (%d bytes)", path, len(data) - keep)
        with path.open("r+b") as f:
            f.truncate(keep)


def read_manifest(folder: str | Path, *, strict: bool = True) -> list[dict[str, Any]]:
    """Records of an image set in id order; a torn final line is skipped, other bad lines refused."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        if strict:
            raise UnseeError(f"{str(folder)!r} is not an image set (no {MANIFEST}); make one with `unsee generate`")
        return []
    records: dict[str, dict[str, Any]] = {}
    lines = path.read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # torn last line: the batch that was in flight
                logger.warning("%s: ignoring an incomplete last line", path)
                continue
            raise UnseeError(f"{path}:{n}: not valid JSON") from None
        missing = [k for k in REQUIRED_KEYS if k not in rec]
        if missing:
            raise UnseeError(f"{path}:{n}: missing {', '.join(missing)}")
        records[rec["id"]] = rec  # a re-appended id (a resumed batch) replaces the older line
    return [records[k] for k in sorted(records)]


@dataclass
class ImageSet:
    """An image set read from disk."""

    folder: Path
    records: list[dict[str, Any]]
    info: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> ImageSet:
        folder = Path(folder)
        if not folder.is_dir():
            raise UnseeError(f"image set {str(folder)!r} does not exist; make one with `unsee generate`")
        records = read_manifest(folder)
        info_path = folder / INFO
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return cls(folder, records, info)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.records}

    def path(self, record: dict[str, Any]) -> Path:
        return self.folder / record["file"]

    def load_images(self, records: list[dict[str, Any]] | None = None) -> torch.Tensor:
        """Images as float (B, 3, H, W) in [0, 1]; all must share one size."""
        from PIL import Image

        records = self.records if records is None else records
        arrays = [np.asarray(Image.open(self.path(r)).convert("RGB")) for r in records]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise UnseeError(f"image set {str(self.folder)!r} mixes sizes {sorted(shapes)}; load one size at a time")
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
