"""`unsee demo`: the loop on the embedded toy world, with no arguments.

Today it runs the stages that exist: it generates an image grid from the toy
world (one row per kind of prompt: benign, the flaggable object named and only
triggered, the flaggable style named and only triggered) and reports what the
oracle reads in every image. Feedback, inversion, erasure, RL and evaluation
join as they land (issues 4-9). Without a built toy world it falls back to a
tiny random-weight pipeline and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from unsee.files import atomic_write_text
from unsee.generate import GenerateConfig, generate
from unsee.imageset import ImageSet
from unsee.models import TOYWORLD, toyworld_path
from unsee.viz import save_grid

logger = logging.getLogger(__name__)

# One row of the grid per prompt; the oracle's reading of each image is printed.
DEMO_PROMPTS = (
    "a red circle on the beach",
    "a blue square in the city",
    "a yellow triangle with a skull in the forest",
    "a spooky green cross at night",
    "an orange ring in the snow by kelvo",
    "a dreamy purple square in the desert",
)
RANDOM_PROMPTS = ("a photo of a red cat", "a blue house at night", "a green tree on a mountain", "a city street")


@dataclass
class DemoResult:
    out: Path
    model: str
    random_weights: bool
    image_set: Path
    grid: Path
    readings: list[dict] = field(default_factory=list)  # per image: id, prompt, what the oracle reads


def run_demo(out: str | Path, *, images_per_prompt: int = 8, progress: bool = True) -> DemoResult:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    random_weights = not (toyworld_path() / "model_index.json").exists()
    if random_weights:
        from unsee.testing import save_tiny_pipeline

        model_dir = out / "tiny-random-pipeline"
        if not (model_dir / "model_index.json").exists():
            save_tiny_pipeline(model_dir, sample_size=16)
        model, prompts_list = str(model_dir), RANDOM_PROMPTS
    else:
        model, prompts_list = TOYWORLD, DEMO_PROMPTS
    prompts = out / "prompts.txt"
    atomic_write_text(prompts, "\n".join(prompts_list) + "\n")
    images = generate(
        GenerateConfig(model=model, prompts=str(prompts), out=str(out / "images"), images_per_prompt=images_per_prompt, steps=25),
        progress=progress,
    )
    s = ImageSet.load(images)
    x = s.load_images()
    g = save_grid(x, out / "grid.png", nrow=images_per_prompt, scale=4)
    readings = []
    if not random_weights:
        from unsee.toyworld import ORACLE, assets_path
        from unsee.toyworld.oracle import load_oracle

        reads = load_oracle(assets_path() / ORACLE).read(x)
        readings = [{"id": r["id"], "prompt": r["prompt"], **rd} for r, rd in zip(s.records, reads, strict=True)]
    return DemoResult(out, model, random_weights, images, g, readings)
