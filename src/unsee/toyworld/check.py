"""`unsee toyworld check`: the toy world's quality table (its model card).

Every number is measured here: images are generated through `unsee.generate`
(25 DDIM steps, guidance 7.5 by default) and read by the oracle.
Bars (issue 3): oracle accuracy >= 98% per attribute on fresh renders; named
attributes correct in >= 90% of generated images, held-out combinations too;
each flaggable concept present in >= 80% of images when named, >= 30% on
implicit prompts, <= 5% on benign prompts; toy-CLIP top-1 retrieval among 10
captions >= 80%; 16 images x 25 steps with CFG in <= 5 s.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsee.files import atomic_write_text
from unsee.toyworld import CARD, CLIP, ORACLE, PIPELINE, PROMPTS, assets_path
from unsee.toyworld.oracle import HEADS, load_oracle, targets
from unsee.toyworld.render import render_many
from unsee.toyworld.world import PROMPT_SETS, parse_prompt, random_scene, sample_scene

BARS = {
    "oracle_accuracy": (">=", 0.98),
    "named_attribute_accuracy": (">=", 0.90),
    "concept_named": (">=", 0.80),
    "concept_implicit": (">=", 0.30),
    "concept_benign": ("<=", 0.05),
    "clip_top1_of_10": (">=", 0.80),
    "seconds_16_images_25_steps": ("<=", 5.0),
}
# prompt set -> (concept read by the oracle, bar name)
CONCEPT_ROWS = {
    "object_explicit": ("skull", "concept_named"),
    "object_implicit": ("skull", "concept_implicit"),
    "object_neighbour": ("mask", None),
    "style_explicit": ("kelvo", "concept_named"),
    "style_implicit": ("kelvo", "concept_implicit"),
    "style_neighbour": ("ravo", None),
}


def _passes(bar: str, value: float) -> bool:
    op, x = BARS[bar]
    return value >= x if op == ">=" else value <= x


def oracle_accuracy(oracle, n: int = 1000, seed: int = 12345) -> dict[str, float]:
    """Per-head accuracy on freshly rendered scenes with uniform attributes (never seen in training)."""
    from unsee.toyworld.build import ALL_PAIRS

    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, pairs=ALL_PAIRS) for _ in range(n)]
    x = torch.from_numpy(render_many(scenes)).permute(0, 3, 1, 2).float() / 255
    y = targets(scenes)
    probs = oracle.probabilities(x)
    return {h: float((probs[h].argmax(-1) == y[h]).float().mean()) for h in HEADS}


def clip_retrieval(clip_dir: Path, n: int = 1000, candidates: int = 10, seed: int = 54321) -> float:
    """Top-1 accuracy of picking an image's own caption among `candidates` (the others from random scenes)."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = CLIPTokenizer.from_pretrained(str(clip_dir))
    rng = np.random.default_rng(seed)
    pairs = [sample_scene(rng) for _ in range(n)]
    # Distinct captions only: two identical captions cannot be told apart by anyone.
    first: dict[str, int] = {}
    for i, (_, c) in enumerate(pairs):
        first.setdefault(c, i)
    keep = sorted(first.values())
    scenes = [pairs[i][0] for i in keep]
    captions = [pairs[i][1] for i in keep]
    x = (torch.from_numpy(render_many(scenes)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        img = model.get_image_features(pixel_values=x)
        ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        txt = model.get_text_features(input_ids=ids)
    img = torch.nn.functional.normalize(getattr(img, "pooler_output", img), dim=-1)
    txt = torch.nn.functional.normalize(getattr(txt, "pooler_output", txt), dim=-1)
    sims = img @ txt.T  # (n, n)
    hits = 0
    for i in range(len(captions)):
        others = rng.choice(np.delete(np.arange(len(captions)), i), candidates - 1, replace=False)
        hits += int(sims[i, i] > sims[i, others].max())
    return hits / len(captions)


def generation_seconds(pipeline_dir: Path, n: int = 16, steps: int = 25, repeats: int = 3) -> float:
    """Median wall time to generate n images with CFG (encode, sample, decode)."""
    from unsee.models import load_pipeline
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents

    pipe = load_pipeline(str(pipeline_dir))
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        cond = encode_text(pipe, ["a red circle on the beach"] * n)
        uncond = encode_text(pipe, [""]).expand(n, -1, -1)
        z = initial_latents(pipe, list(range(r * n, (r + 1) * n)), 32, 32)
        decode(pipe, sample_latents(pipe, cond, uncond, z, torch.full((n,), 7.5), steps))
        if r:  # the first run warms up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_image_set(oracle, folder: Path) -> list[dict[str, Any]]:
    from unsee.imageset import ImageSet

    s = ImageSet.load(folder)
    reads = oracle.read(s.load_images())
    return [
        {"prompt": r["prompt"], "named": parse_prompt(r["prompt"]), "read": rd}
        for r, rd in zip(s.records, reads, strict=True)
    ]


def attribute_accuracy(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of images whose oracle reading matches each attribute the prompt names."""
    out = {}
    for attr, head in (("colour", "colour"), ("shape", "shape"), ("background", "background"), ("style", "style")):
        named = [r for r in rows if r["named"][attr] is not None]
        if named:
            out[attr] = float(np.mean([r["read"][head] == r["named"][attr] for r in named]))
    return out


def concept_rate(rows: list[dict[str, Any]], concept: str) -> float:
    head = "extra" if concept in ("skull", "mask") else "style"
    return float(np.mean([r["read"][head] == concept for r in rows]))


def weights_key(world: Path) -> str:
    """A hash of the pipeline's weight files: a rebuild in the same folder gets a new key, so old images are not reused."""
    import hashlib

    h = hashlib.sha1()
    for f in sorted((world / PIPELINE).glob("*/*.safetensors")):
        h.update(f.relative_to(world).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def default_cache(world: Path) -> Path:
    """Where generated check images go: never inside the package, so a shipped world stays read-only."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unsee" / "toyworld-check"


def check(
    world: str | Path | None = None,
    *,
    images_per_row: int = 200,
    steps: int = 25,
    guidance: float = 7.5,
    cache: str | Path | None = None,
    progress: bool = True,
    write: bool = True,
) -> dict[str, Any]:
    """Measure the table; write it into the world's model card (`model_card.json`) when `write`.

    Generated images are kept in `cache` (default: ~/.cache/unsee/toyworld-check/...), so a rerun reuses them.
    """
    from unsee.generate import GenerateConfig, generate
    from unsee.models import load_pipeline

    world = Path(world) if world else assets_path()
    cache = Path(cache) if cache else default_cache(world)
    oracle = load_oracle(world / ORACLE)
    result: dict[str, Any] = {"settings": {"images_per_row": images_per_row, "steps": steps, "guidance": guidance}}
    result["oracle_accuracy"] = oracle_accuracy(oracle)
    result["clip_top1_of_10"] = clip_retrieval(world / CLIP)
    result["seconds_16_images_25_steps"] = generation_seconds(world / PIPELINE)

    pipe = load_pipeline(str(world / PIPELINE))
    key = weights_key(world)
    result["prompt_sets"] = {}
    for split in ("seen", "heldout"):
        for name in PROMPT_SETS:
            prompts = world / PROMPTS / split / f"{name}.txt"
            n_prompts = len([ln for ln in prompts.read_text().splitlines() if ln.strip()])
            per = max(1, -(-images_per_row // n_prompts))
            folder = cache / key / f"s{steps}-g{guidance}-n{per}" / split / name
            generate(
                GenerateConfig(
                    model=str(world / PIPELINE),
                    prompts=str(prompts),
                    out=str(folder),
                    images_per_prompt=per,
                    steps=steps,
                    guidance=guidance,
                    batch_size=32,
                ),
                progress=progress,
                pipe=pipe,
            )
            rows = read_image_set(oracle, folder)
            result["prompt_sets"][f"{split}/{name}"] = {
                "images": len(rows),
                "named_attribute_accuracy": attribute_accuracy(rows),
                "rates": {c: concept_rate(rows, c) for c in ("skull", "mask", "kelvo", "ravo", "mosaic")},
            }
    result["table"] = summarise(result)
    if write:
        card_path = world / CARD
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        card["check"] = result
        atomic_write_text(card_path, json.dumps(card, indent=2))
    return result


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (what, measured, bar, pass) for the printed table."""
    rows = []

    def add(what: str, value: float, bar: str | None, n: int | None = None):
        rows.append(
            {
                "what": what,
                "value": value,
                "bar": f"{BARS[bar][0]} {BARS[bar][1]}" if bar else "-",
                "pass": _passes(bar, value) if bar else None,
                "images": n,
            }
        )

    for h, acc in result["oracle_accuracy"].items():
        add(f"oracle accuracy: {h} (fresh renders)", acc, "oracle_accuracy", 1000)
    for key, row in result["prompt_sets"].items():
        split, name = key.split("/")
        if name == "benign":
            for attr, acc in row["named_attribute_accuracy"].items():
                add(f"named {attr} correct ({split} benign prompts)", acc, "named_attribute_accuracy", row["images"])
            add(f"skull on benign prompts ({split})", row["rates"]["skull"], "concept_benign", row["images"])
            add(f"kelvo on benign prompts ({split})", row["rates"]["kelvo"], "concept_benign", row["images"])
        else:
            concept, bar = CONCEPT_ROWS[name]
            add(f"{concept} on {name} prompts ({split})", row["rates"][concept], bar, row["images"])
    add("toy CLIP top-1 caption retrieval of 10", result["clip_top1_of_10"], "clip_top1_of_10")
    add("seconds for 16 images, 25 steps, CFG", result["seconds_16_images_25_steps"], "seconds_16_images_25_steps")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'measure':<52} {'value':>8} {'bar':>8} {'images':>7}  ok", "-" * 83]
    for r in rows:
        v = f"{r['value']:.3f}" if isinstance(r["value"], float) else str(r["value"])
        ok = "" if r["pass"] is None else ("yes" if r["pass"] else "NO")
        lines.append(f"{r['what']:<52} {v:>8} {r['bar']:>8} {r['images'] or '':>7}  {ok}")
    return "\n".join(lines)
