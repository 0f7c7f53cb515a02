"""Sampling speed of toy-world builds side by side, measured as `unsee toyworld check` measures it
(`check.generation_seconds`: 16 images, 25 DDIM steps, CFG 7.5, encode to decode; median of 3 after a warm-up).

Run: .venv/bin/python benchmarks/toyworld_speed.py --worlds OLD_BUILD [NEW_BUILD ...]   (default: the shipped one)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from unsee.toyworld import PIPELINE, assets_path
    from unsee.toyworld.check import generation_seconds

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", nargs="+", default=[str(assets_path())], help="toy-world build folders")
    for world in ap.parse_args().worlds:
        seconds = generation_seconds(Path(world) / PIPELINE)
        print(f"{seconds:6.2f} s for 16 images, 25 steps, CFG (median of 3)  {world}")


if __name__ == "__main__":
    main()
