"""The HFI choices behind unsee's defaults, measured on the chain benchmarks/hfi_toyworld.py leaves on disk.

1. Token: how the inversion captions its images and how many vectors and what
   step it uses. Each variant inverts from the same reward model and top-64
   images, then 100 probe images (the 5 probe prompts of hfi_toyworld.py, 20
   each) are read by the oracle.
2. Reward model (rank feedback, kelvo): held-out pairwise agreement with other
   Adam step counts, standardised embeddings, and the vision tower's
   pre-projection or mean-patch features instead of CLIP's image embeddings.

Run after `benchmarks/hfi_toyworld.py --out runs/hfi4`:
  .venv/bin/python benchmarks/hfi_ablations.py --hfi runs/hfi4 [--parts token,reward]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

HEAD = {"skull": "extra", "kelvo": "style"}
INIT = {"skull": "thing", "kelvo": "art"}
TOKEN_VARIANTS = {  # name: InvertConfig overrides
    "own prompt + token, 1 vector, lr 5e-3": dict(template="{prompt} {token}", vectors=1, lr=5e-3),
    "'a photo of', 1 vector, lr 5e-3": dict(template="a photo of {token}", vectors=1, lr=5e-3),
    "'a photo of', 4 vectors, lr 5e-3": dict(template="a photo of {token}", vectors=4, lr=5e-3),
    "'a photo of', 4 vectors, lr 2e-2 (toyworld-hfi)": dict(template="a photo of {token}", vectors=4, lr=2e-2),
}


def token_part(hfi: Path, work: Path) -> None:
    from hfi_toyworld import PROBE_TEMPLATES
    from unsee.generate import GenerateConfig, generate
    from unsee.imageset import ImageSet
    from unsee.invert import InvertConfig, invert
    from unsee.models import load_pipeline
    from unsee.toyworld import ORACLE, assets_path
    from unsee.toyworld.oracle import load_oracle

    oracle = load_oracle(assets_path() / ORACLE)
    for concept in ("skull", "kelvo"):
        d, token = hfi / concept, f"<{concept}-flagged>"
        probe = work / f"probe-{concept}.txt"
        probe.write_text("\n".join(t.format(token) for t in PROBE_TEMPLATES[concept]) + "\n")
        for name, kw in TOKEN_VARIANTS.items():
            run = work / concept / name.replace(" ", "_").replace("'", "").replace(",", "")
            shutil.rmtree(run, ignore_errors=True)
            invert(
                InvertConfig(
                    model="toyworld",
                    images=str(d / "images"),
                    reward=str(d / "reward"),
                    token=token,
                    out=str(run / "token.safetensors"),
                    init_word=INIT[concept],
                    top_k=64,
                    steps=300,
                    checkpoint_every=1000,
                    **kw,
                ),
                progress=False,
            )
            pipe = load_pipeline("toyworld")
            pipe.load_textual_inversion(str(run / "token.safetensors"), token=token)
            images = generate(
                GenerateConfig(
                    model="toyworld", prompts=str(probe), out=str(run / "probe"), images_per_prompt=20, batch_size=50
                ),
                progress=False,
                pipe=pipe,
            )
            reads = oracle.read(ImageSet.load(images).load_images())
            rate = sum(r[HEAD[concept]] == concept for r in reads) / len(reads)
            print(f"[token] {concept:5} {name:44} {concept} in {rate:.2f} of {len(reads)} probe images", flush=True)


def reward_part(hfi: Path, work: Path) -> None:
    import unsee.reward_model as rm

    d = hfi / "kelvo"
    base_embed = rm._embed

    def vision(kind: str):
        def embed(s, ids, clip):
            by_id = s.by_id()
            with torch.no_grad():
                out = clip.model.vision_model(pixel_values=clip.preprocess(s.load_images([by_id[i] for i in ids])))
            f = out.pooler_output if kind == "pooled" else out.last_hidden_state[:, 1:].mean(1)
            return standardised(f.float())

        return embed

    def standardised(x):
        return (x - x.mean(0)) / (x.std(0) + 1e-6)

    variants = {
        "600 steps": (base_embed, 600),
        "3000 steps (default)": (base_embed, 3000),
        "standardised embeddings, 600 steps": (lambda s, i, c: standardised(base_embed(s, i, c)), 600),
        "pre-projection features, 1500 steps": (vision("pooled"), 1500),
        "mean-patch features, 1500 steps": (vision("mean"), 1500),
    }
    try:
        for name, (embed, steps) in variants.items():
            rm._embed = embed
            m = rm.train_reward(
                rm.RewardTrainConfig(
                    images=str(d / "images"), feedback=str(d / "feedback.jsonl"), out=str(work / "reward"), steps=steps
                ),
                progress=False,
            )
            print(
                f"[reward] kelvo {name:38} held-out pairwise agreement {m['heldout_agreement']:.3f} "
                f"(train {m['train_agreement']:.3f})",
                flush=True,
            )
    finally:
        rm._embed = base_embed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hfi", default="runs/hfi4", help="output folder of benchmarks/hfi_toyworld.py")
    ap.add_argument("--out", default="runs/hfi-ablations")
    ap.add_argument("--parts", default="token,reward")
    args = ap.parse_args()
    from diffusers.utils import logging as dlog

    dlog.disable_progress_bar()
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    if "token" in parts:
        token_part(Path(args.hfi), work)
    if "reward" in parts:
        reward_part(Path(args.hfi), work)


if __name__ == "__main__":
    main()
