"""How sure the toy-world oracle is: quantiles of P(LABEL) and of log(1 - P) over folders of images;
with --reward DIR, the same quantiles of an HFI reward model's score beside them.

Why `oracle:LABEL:log` exists (docs/results/rl.md): on the base model's explicit-prompt images P(skull) sits between
0.98 and 0.9998, so -P barely separates them while log(1 - P) spreads them over several nats.

With --per-prompt (image sets with a manifest.jsonl, as `unsee evaluate` writes them): per prompt, how many of its
images the oracle reads as LABEL (P > 0.5), the prompts that show it most first: which phrasings an erasure misses.

Run: .venv/bin/python benchmarks/oracle_scores.py runs/rl25/eval/images/base/object_explicit [more folders] [--label skull]
     [--reward runs/rl26/hfi/reward[,more reward model folders]] [--per-prompt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="folders of .png images")
    ap.add_argument("--label", default="skull")
    ap.add_argument(
        "--reward",
        help="an HFI reward model folder (unsee reward train) to score the same images; several "
        "comma-separated (an ensemble, as in learned:A,B) print each and their maximum",
    )
    ap.add_argument("--per-prompt", action="store_true", help="per prompt: images read as --label, most first")
    args = ap.parse_args()

    from unsee.detectors import oracle_detector

    detect, _ = oracle_detector()
    rewards, clips = {}, {}
    if args.reward:
        from unsee.reward_model import load_reward
        from unsee.reward_net import load_member_clips, member_scores

        rewards = {Path(d).name: load_reward(d) for d in args.reward.split(",")}
        clips = load_member_clips(rewards.values())  # each frozen CLIP loads once
    q = torch.tensor(QUANTILES)
    print(f"{'folder':60} {'images':>6}  P({args.label}) at quantiles {QUANTILES}  |  log(1 - P) at the same")
    for folder in args.folders:
        files = sorted(Path(folder).glob("*.png"))
        if not files:
            raise SystemExit(f"no .png images in {folder!r}")
        x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
        p = detect(x.float() / 255)[args.label].float()
        logs = (1 - p).clamp(min=1e-6).log()
        print(
            f"{folder:60} {len(p):>6}  {' '.join(f'{v:.4f}' for v in torch.quantile(p, q).tolist())}  |  "
            f"{' '.join(f'{v:.2f}' for v in torch.quantile(logs, q).tolist())}"
        )
        if args.per_prompt:
            print_per_prompt(Path(folder), files, (p > 0.5).tolist())
        scores = member_scores(rewards, x.float() / 255, args.label, clips) if rewards else {}
        if len(scores) > 1:
            scores["ensemble (max)"] = torch.stack(list(scores.values())).amax(0)
        for name, r in scores.items():
            print(
                f"{'  reward score: ' + name:60} {len(r):>6}  {' '.join(f'{v:.4f}' for v in torch.quantile(r, q).tolist())}"
            )


def print_per_prompt(folder: Path, files: list[Path], shown: list[bool]) -> None:
    from unsee.imageset import ImageSet

    prompt = {r["file"]: r["prompt"] for r in ImageSet.load(folder).records}
    counts: dict[str, list[bool]] = {}
    for f, s in zip(files, shown, strict=True):
        counts.setdefault(prompt[f.name], []).append(s)
    for text, v in sorted(counts.items(), key=lambda kv: -sum(kv[1])):
        if any(v):
            print(f"  {sum(v)}/{len(v)}  {text}")


if __name__ == "__main__":
    main()
