"""How much of the simulated rank annotators' order an independent observer can see.

The rank annotators (`unsee annotate auto --kind rank`) order each group by the oracle's P(concept). Between a
kelvo and a plain image that order is the style itself; between two kelvo images (or two plain ones) it is how
sure this one oracle is, which may be its own quirk rather than something in the picture. This script trains
fresh oracles with the toy world build's own recipe (`stage_oracle`, same architecture, steps and data
distribution; only the seed differs) and asks how often they agree with the annotators' held-out judgements,
beside the annotators' own oracle and the HFI reward model. An independent oracle is an upper bound of sorts
for any reward model that did not see the annotators' detector: it reads the style with >= 99.9% accuracy.

Input: an HFI benchmark run (`benchmarks/hfi_toyworld.py --out runs/hfi5`): its kelvo images, feedback and
reward model; the held-out pairs are rebuilt from the reward run's own seed and held-out share.
Cost: about 100 s per seed on 2 cores (24,000 renders, 1000 oracle steps).

Run: .venv/bin/python benchmarks/rank_ceiling.py --hfi runs/hfi5 [--concept kelvo] [--seeds 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def independent_oracle(seed: int, work: Path, n_images: int):
    """An oracle trained like the shipped one (`unsee.toyworld.build.stage_oracle`) on its own renders, from `seed`."""
    from unsee.toyworld import PIPELINE, assets_path
    from unsee.toyworld.build import ALL_PAIRS, BuildConfig, stage_oracle
    from unsee.toyworld.oracle import load_oracle
    from unsee.toyworld.render import render_many
    from unsee.toyworld.world import random_scene

    out = work / f"oracle-seed{seed}"
    if not (out / "oracle" / "config.json").exists():
        (out / "work").mkdir(parents=True, exist_ok=True)
        (out / PIPELINE).mkdir(exist_ok=True)
        vae = out / PIPELINE / "vae"
        if not vae.exists():
            vae.symlink_to((assets_path() / PIPELINE / "vae").resolve())  # the shipped VAE, for the reconstructed views
        rng = np.random.default_rng(seed + 1)  # as the build's data stage draws its oracle scenes
        scenes = [random_scene(rng, pairs=ALL_PAIRS) for _ in range(n_images)]
        np.save(out / "work" / "oracle_images.npy", render_many(scenes))
        (out / "work" / "oracle_scenes.json").write_text(json.dumps([s.as_dict() for s in scenes]))
        stage_oracle(BuildConfig(out=str(out), seed=seed, oracle_images=n_images), out, lambda it, desc: it)
    return load_oracle(out / "oracle", "cpu")


def concept_view(oracle, x: torch.Tensor, concept: str) -> tuple[np.ndarray, np.ndarray]:
    """(does the oracle's head read `concept` as its most likely class, logit of P(concept)) per image, from one pass."""
    from unsee.toyworld.oracle import CONCEPTS, HEADS

    head, cls = CONCEPTS[concept]
    p = oracle.probabilities(x)[head]
    shown = (p.argmax(-1) == HEADS[head].index(cls)).numpy()
    return shown, torch.logit(p[:, HEADS[head].index(cls)].double(), eps=1e-12).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hfi", required=True, help="an HFI benchmark run folder (benchmarks/hfi_toyworld.py --out)")
    ap.add_argument("--concept", default="kelvo", help="the concept whose rank feedback is read (default kelvo)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds of the independent oracles")
    ap.add_argument("--oracle-images", type=int, default=24000, help="renders each oracle trains on (the build's)")
    ap.add_argument("--work", help="where the oracles are kept between runs (default: a temporary folder)")
    args = ap.parse_args()

    from hfi_toyworld import heldout_pairs_by_truth  # the split of HFI's figures (docs/results/hfi.md)
    from unsee.imageset import ImageSet
    from unsee.reward_model import load_reward
    from unsee.toyworld import ORACLE, assets_path
    from unsee.toyworld.oracle import CONCEPTS, load_oracle

    run = Path(args.hfi) / args.concept
    for need in ("images", "feedback.jsonl", "reward/unsee.json"):
        if not (run / need).exists():
            raise SystemExit(f"{run / need} is missing; run benchmarks/hfi_toyworld.py --out {args.hfi} first")
    if args.concept not in CONCEPTS:
        raise SystemExit(f"--concept must be one of {', '.join(CONCEPTS)}, got {args.concept!r}")
    images = ImageSet.load(run / "images")
    x = images.load_images(images.records)
    # "across" / "within" as in hfi_toyworld: by the class the annotators' oracle reads
    shown, annotators_logit = concept_view(load_oracle(assets_path() / ORACLE, "cpu"), x, args.concept)
    truth = dict(zip(images.ids, shown.tolist(), strict=True))

    def row(name: str, score: np.ndarray) -> dict:
        split = heldout_pairs_by_truth(run, truth, dict(zip(images.ids, score.tolist(), strict=True)))
        n_across, n_within = split["heldout pairs across n"], split["heldout pairs within n"]
        agree = (split["heldout pairs across"] * n_across + split["heldout pairs within"] * n_within) / (
            n_across + n_within
        )
        return {
            "observer": name,
            "all": agree,
            "across": split["heldout pairs across"],
            "within": split["heldout pairs within"],
            "n_across": n_across,
            "n_within": n_within,
        }

    rows = [row("the annotators' own oracle", annotators_logit)]
    reward = load_reward(run / "reward")
    rows.append(row("HFI reward model", reward.score_images(x)[args.concept].double().numpy()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for seed in args.seeds:
            t0 = time.time()
            oracle = independent_oracle(seed, work, args.oracle_images)
            their_shown, their_logit = concept_view(oracle, x, args.concept)
            r = row(f"independent oracle, seed {seed}", their_logit)
            r["class_agreement"] = float((their_shown == shown).mean())
            r["seconds"] = round(time.time() - t0, 1)
            rows.append(r)

    print(
        f"{run}: held-out pairs {rows[0]['n_across']} across (one image shows {args.concept}, by the annotators' "
        f"oracle), {rows[0]['n_within']} within (both or neither)"
    )
    print(f"{'observer':34} {'all':>6} {'across':>7} {'within':>7}  notes")
    for r in rows:
        note = (
            f"reads {args.concept} as the annotators' oracle does on {r['class_agreement']:.3f} of images; "
            f"{r['seconds']:.0f} s"
            if "class_agreement" in r
            else ""
        )
        print(f"{r['observer']:34} {r['all']:6.3f} {r['across']:7.3f} {r['within']:7.3f}  {note}")


if __name__ == "__main__":
    main()
