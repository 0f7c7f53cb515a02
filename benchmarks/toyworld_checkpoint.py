"""A toy-world build's UNet before the build finishes: its latest checkpoint's EMA weights as a pipeline folder.

`unsee toyworld build` saves the UNet only at the end; this assembles the build's VAE, text encoder and tokenizer
with the EMA weights of `work/unet_checkpoint`, so `unsee evaluate` can screen a long build part way (a screen,
not the build's quality table: `unsee toyworld check` measures that on the finished build).

Run: .venv/bin/python benchmarks/toyworld_checkpoint.py runs/toyworld-v5 --out runs/toyworld-v5-screen
     .venv/bin/unsee evaluate --model runs/toyworld-v5-screen --prompts ... --out runs/screen-eval
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("world", help="a build folder whose UNet stage has a checkpoint")
    ap.add_argument("--out", required=True, help="pipeline folder to write")
    args = ap.parse_args()

    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    from unsee.checkpoint import load_checkpoint
    from unsee.toyworld.build import BuildConfig, make_scheduler, make_unet

    world = Path(args.world)
    saved = json.loads((world / "build_config.json").read_text())
    names = {f.name for f in dataclasses.fields(BuildConfig)}
    cfg = BuildConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})
    tensors, meta = load_checkpoint(world / "work" / "unet_checkpoint")
    unet = make_unet(cfg)
    unet.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    p = world / "pipeline"
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(p / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(p / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(str(p / "tokenizer")),
        unet=unet,
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out)
    print(f"UNet EMA at step {meta['step']} of {cfg.unet_steps} -> {out}")


if __name__ == "__main__":
    main()
