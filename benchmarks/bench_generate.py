"""`unsee generate` throughput vs. a plain diffusers pipeline loop, side by side.

Both make the same images (same tiny pipeline weights and DDIM scheduler, prompts, seeds, steps, CFG,
batch size, 64 px) and both write PNGs; unsee also writes its manifest.
Runs alternate (reference, unsee, reference, ...) and the median of each is
compared, so machine noise hits both alike. Prints images/s and the ratio
unsee / reference (target >= 1.0).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="images per run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    ap.add_argument("--sample-size", type=int, default=32, help="latent size; images are 2x this")
    args = ap.parse_args()

    from diffusers.utils import logging as dlog

    from unsee.generate import GenerateConfig, generate
    from unsee.models import load_pipeline
    from unsee.testing import save_tiny_pipeline

    dlog.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="unsee-bench-"))
    model = save_tiny_pipeline(work / "pipe", sample_size=args.sample_size)
    from diffusers import StableDiffusionPipeline

    # The reference is diffusers as a user gets it; unsee loads through its own loader, as `unsee generate` does.
    ref_pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    ref_pipe.set_progress_bar_config(disable=True)
    pipe = load_pipeline(str(model), device="cpu")
    words = ["a red cat", "a blue house", "a green tree", "a city street at night"]
    prompts = [words[i % len(words)] for i in range(args.images)]
    (work / "prompts.txt").write_text("\n".join(prompts) + "\n")
    cfg = dict(
        model=str(model),
        prompts=str(work / "prompts.txt"),
        images_per_prompt=1,
        steps=args.steps,
        guidance=7.5,
        batch_size=args.batch_size,
        device="cpu",
    )
    # Seeds unsee uses, so the reference makes the very same images.
    from unsee.generate import image_seed
    from unsee.prompts import read_prompts

    seeds = [image_seed(0, p, 0) for p in read_prompts(work / "prompts.txt")]

    def reference() -> float:
        out = work / "ref"
        out.mkdir(exist_ok=True)
        t = time.perf_counter()
        for k in range(0, len(prompts), args.batch_size):
            gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[k : k + args.batch_size]]
            images = ref_pipe(
                prompts[k : k + args.batch_size], num_inference_steps=args.steps, guidance_scale=7.5, generator=gens
            ).images
            for j, im in enumerate(images):
                im.save(out / f"{k + j:05d}.png")
        return time.perf_counter() - t

    def ours() -> float:
        out = work / "ours"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        generate(GenerateConfig(out=str(out), **cfg), progress=False, pipe=pipe)
        return time.perf_counter() - t

    ours(), reference()  # warm-up
    ref_t, our_t = [], []
    for _ in range(args.repeats):
        ref_t.append(reference())
        our_t.append(ours())
    r, o = statistics.median(ref_t), statistics.median(our_t)
    print(
        f"pipeline: tiny SD ({args.sample_size * 2} px), {args.images} images, {args.steps} DDIM steps, CFG 7.5, "
        f"batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print(f"diffusers pipeline loop: {args.images / r:7.2f} img/s  (median of {args.repeats}: {r:.2f} s)")
    print(f"unsee generate:          {args.images / o:7.2f} img/s  (median of {args.repeats}: {o:.2f} s)")
    print(f"ratio unsee / diffusers: {r / o:.2f}  (target >= 1.0)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
