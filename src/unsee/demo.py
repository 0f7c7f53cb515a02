"""`unsee demo`: the whole loop on the embedded model, with no arguments.

Until the toy world (unsee.toyworld) is built into the package, the demo runs
the only stage that exists on a tiny random-weight pipeline: it generates an
image set and writes a grid. It says so when it runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from unsee.files import atomic_write_text
from unsee.generate import GenerateConfig, generate
from unsee.imageset import ImageSet
from unsee.models import TOYWORLD, toyworld_path
from unsee.viz import save_grid

logger = logging.getLogger(__name__)

DEMO_PROMPTS = ("a photo of a red cat", "a blue house at night", "a green tree on a mountain", "a city street")


@dataclass
class DemoResult:
    out: Path
    model: str
    random_weights: bool
    image_set: Path
    grid: Path


def run_demo(out: str | Path, *, progress: bool = True) -> DemoResult:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    random_weights = not (toyworld_path() / "model_index.json").exists()
    if random_weights:
        from unsee.testing import save_tiny_pipeline

        model_dir = out / "tiny-random-pipeline"
        if not (model_dir / "model_index.json").exists():
            save_tiny_pipeline(model_dir, sample_size=16)
        model = str(model_dir)
    else:
        model = TOYWORLD
    prompts = out / "prompts.txt"
    atomic_write_text(prompts, "\n".join(DEMO_PROMPTS) + "\n")
    images = generate(
        GenerateConfig(model=model, prompts=str(prompts), out=str(out / "images"), images_per_prompt=4, steps=20),
        progress=progress,
    )
    s = ImageSet.load(images)
    g = save_grid(s.load_images(), out / "grid.png", nrow=4, scale=4)
    return DemoResult(out, model, random_weights, images, g)
