"""HFI on the toy world, end to end, with the figures issue 4 asks for.

For each flaggable concept (the object-like skull with binary feedback, the
style-like kelvo with rank feedback):
  1. generate 480 images from prompts likely to show it (explicit + implicit + benign);
  2. `annotate auto`: 3 simulated annotators (the oracle at noise 0.1);
  3. `reward train` (agreement with the annotators on held-out images, and with
     the oracle's truth on all images: AUC, and accuracy for binary);
  4. `invert` from the reward model, token initialised from a neutral word;
  5. generate >= 200 images from "a photo of <token>"-style prompts and from the
     same prompts with the init word alone, and count the concept with the oracle.
Steps 1-4 are `unsee.demo.hfi_token` (what `unsee demo` runs); the chain's wall
time is printed (0 when its outputs were already on disk).

Run: .venv/bin/python benchmarks/hfi_toyworld.py [--out runs/hfi] [--concepts skull,kelvo]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# An object token is probed as a thing in a scene; a style token after a scene, as it was trained.
PROBE_TEMPLATES = {
    "skull": ("a photo of {}", "a {} on the beach", "a {} in the city", "a {} at night", "a {} in the forest"),
    "kelvo": (
        "a photo of {}",
        "a red circle on the beach {}",
        "a blue square in the city {}",
        "a yellow cross at night {}",
        "a green triangle in the snow {}",
    ),
}


def auc(scores, truth) -> float:
    """P(score of a random positive > score of a random negative), ties half (Mann-Whitney)."""
    import numpy as np

    scores, truth = np.asarray(scores, float), np.asarray(truth, bool)
    pos, neg = scores[truth], scores[~truth]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def heldout_pairs_by_truth(d: Path, truth: dict[str, bool], score: dict[str, float]) -> dict[str, float]:
    """Held-out pairwise agreement split by the oracle's truth: pairs of one flagged and one clean image ("across"),
    and pairs of two flagged or two clean images ("within", ordered by how strongly the oracle sees the concept)."""
    from unsee.feedback import load_feedback, rank_pairs
    from unsee.reward_model import heldout_split

    ranks = load_feedback(d / "feedback.jsonl").ranks
    cfg = json.loads((d / "reward" / "unsee.json").read_text())["config"]
    held = [
        g
        for g, part in zip(ranks, heldout_split(cfg["seed"], len(ranks), cfg["heldout"]), strict=True)
        if part == "test"
    ]
    out = {}
    for name, keep in (("across", lambda a, b: truth[a] != truth[b]), ("within", lambda a, b: truth[a] == truth[b])):
        pairs = [(a, b) for a, b, _ in rank_pairs(held) if keep(a, b)]
        out[f"heldout pairs {name}"] = sum(score[a] > score[b] for a, b in pairs) / max(len(pairs), 1)
        out[f"heldout pairs {name} n"] = len(pairs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/hfi")
    ap.add_argument("--probe-images", type=int, default=40, help="images per probe prompt (5 prompts)")
    ap.add_argument("--concepts", default="skull,kelvo")
    args = ap.parse_args()

    from diffusers.utils import logging as dlog

    from unsee.demo import HFI_SETUP, hfi_token
    from unsee.generate import GenerateConfig, generate
    from unsee.imageset import ImageSet
    from unsee.models import load_pipeline
    from unsee.reward_model import load_reward, reward_scores
    from unsee.toyworld import ORACLE, assets_path
    from unsee.toyworld.oracle import load_oracle

    dlog.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    oracle = load_oracle(assets_path() / ORACLE)
    results = {}
    for concept in args.concepts.split(","):
        d = out / concept
        setup = HFI_SETUP[concept]
        head = "extra" if concept == "skull" else "style"
        t0 = time.time()
        token_file = hfi_token(d, concept, progress=False)
        seconds = time.time() - t0  # generate + annotate + reward + invert (0 if all were on disk)
        metrics = json.loads((d / "reward" / "metrics.json").read_text())
        token = f"<{concept}-flagged>"

        # The reward model against the truth (the oracle's reading), not only against the noisy annotators.
        images = ImageSet.load(d / "images")
        truth = [r[head] == concept for r in oracle.read(images.load_images())]
        scores = reward_scores(load_reward(d / "reward"), images)
        s = [scores[i][concept] for i in images.ids]
        vs_truth = {"auc": auc(s, truth)}
        if setup["kind"] == "binary":
            vs_truth["accuracy"] = sum((x > 0.5) == t for x, t in zip(s, truth, strict=True)) / len(truth)
        else:
            vs_truth |= heldout_pairs_by_truth(
                d, dict(zip(images.ids, truth, strict=True)), {i: scores[i][concept] for i in images.ids}
            )

        # Probe: the token alone vs the init word alone, same prompts and seeds.
        rates = {}
        init = setup["init_word"]
        init_key = f"init word '{init}'"
        for name, word in (("learned token", token), (init_key, init)):
            tag = "token" if word == token else "init"
            probe = d / f"probe-{tag}.txt"
            probe.write_text("\n".join(t.format(word) for t in PROBE_TEMPLATES[concept]) + "\n")
            pipe = load_pipeline("toyworld")
            if word == token:
                pipe.load_textual_inversion(str(token_file), token=token)
            gen_dir = generate(
                GenerateConfig(
                    model="toyworld",
                    prompts=str(probe),
                    out=str(d / f"probe-{tag}"),
                    images_per_prompt=args.probe_images,
                    batch_size=40,
                ),
                progress=False,
                pipe=pipe,
            )
            reads = oracle.read(ImageSet.load(gen_dir).load_images())
            rates[name] = sum(r[head] == concept for r in reads) / len(reads)
            rates[f"{name} images"] = len(reads)
        results[concept] = {
            "feedback": setup["kind"],
            "images": len(images),
            "annotators": 3,
            "noise": 0.1,
            "reward_heldout_agreement": metrics["heldout_agreement"],
            "reward_metric": metrics["metric"],
            "reward_vs_oracle_truth": vs_truth,
            "rates": rates,
            "seconds_chain": round(seconds, 1),
        }
        print(
            f"[{concept}] {setup['kind']} feedback (3 annotators, noise 0.1) on {len(images)} images | reward held-out "
            f"{metrics['metric']} {metrics['heldout_agreement']:.3f}, vs oracle truth "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in vs_truth.items())
            + f" | {concept} rate: learned token {rates['learned token']:.3f} vs {init_key} {rates[init_key]:.3f} "
            f"({rates['learned token images']} images each) | chain {seconds:.0f} s",
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results -> {out / 'results.json'}")


if __name__ == "__main__":
    main()
