"""Sampling speed of toy-world builds side by side: seconds for 16 images (25 DDIM steps, CFG 7.5), best of 3.

Run: .venv/bin/python benchmarks/toyworld_speed.py --worlds OLD_BUILD [NEW_BUILD ...]   (default: the shipped one)
"""

from __future__ import annotations

import argparse
import time

import torch


def seconds(world: str, repeats: int = 3) -> float:
    from unsee.models import load_pipeline
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents
    from unsee.toyworld import PIPELINE

    pipe = load_pipeline(f"{world}/{PIPELINE}")
    cond = encode_text(pipe, ["a red circle on the beach"] * 16)
    uncond = encode_text(pipe, [""]).expand(16, -1, -1)
    best = float("inf")
    for _ in range(repeats):
        z = initial_latents(pipe, list(range(16)), 32, 32)
        t0 = time.time()
        with torch.no_grad():
            decode(pipe, sample_latents(pipe, cond, uncond, z, torch.full((16,), 7.5), 25))
        best = min(best, time.time() - t0)
    return best


def main() -> None:
    from unsee.toyworld import assets_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", nargs="+", default=[str(assets_path())], help="toy-world build folders")
    for world in ap.parse_args().worlds:
        print(f"{seconds(world):6.2f} s for 16 images, 25 steps, CFG (best of 3)  {world}")


if __name__ == "__main__":
    main()
