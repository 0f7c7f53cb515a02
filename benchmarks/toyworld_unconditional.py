"""What a toy world draws for the empty prompt: the prediction SDD's target copies.

SDD (and ESD-x without an anchor) trains the concept's prediction toward the
model's prediction for the empty prompt. This samples that prediction's images
(the empty prompt, guidance 1: the unconditional model alone, 25 DDIM steps) and
the oracle's reading of them: how often a main object, the skull, the mask,
each style. For comparison, the training captions' own shares: captions are
dropped to "" for 10% of the UNet's training steps, so the unconditional model
draws the training distribution, flaggable concepts included.

Run: .venv/bin/python benchmarks/toyworld_unconditional.py [--world runs/toyworld-v5] [--images 128]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=None, help="a toy-world build folder (default: the shipped one)")
    ap.add_argument("--images", type=int, default=128)
    args = ap.parse_args()

    from unsee.models import load_pipeline
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents
    from unsee.toyworld import ORACLE, PIPELINE, assets_path
    from unsee.toyworld.oracle import load_oracle

    world = args.world or str(assets_path())
    pipe = load_pipeline(f"{world}/{PIPELINE}")
    oracle = load_oracle(f"{world}/{ORACLE}")
    n = args.images
    uncond = encode_text(pipe, [""]).expand(n, -1, -1)
    z = initial_latents(pipe, list(range(n)), 32, 32)
    with torch.no_grad():
        reads = oracle.read(decode(pipe, sample_latents(pipe, uncond, None, z, None, 25)))
    print(f"world: {world}; the empty prompt, guidance 1, {n} images, as the oracle reads them:")
    for head in ("shape", "colour", "extra", "style", "background"):
        counts = Counter(r[head] for r in reads)
        print(f"  {head:10s} " + "  ".join(f"{k} {v / n:.3f}" for k, v in counts.most_common()))


if __name__ == "__main__":
    main()
