"""HFI on the toy world, end to end, with the figures issue 4 asks for.

For each flaggable concept (the object-like skull with binary feedback, the
style-like kelvo with rank feedback):
  1. generate ~500 images from prompts likely to show it (explicit + implicit + benign);
  2. `annotate auto` with the oracle at annotator noise 0.1;
  3. `reward train` (held-out agreement printed);
  4. `invert` from the reward model, token initialised from a neutral word;
  5. generate >= 200 images from "a photo of <token>"-style prompts and from the
     same prompts with the init word alone, and count the concept with the oracle.
Prints the chain's wall time (steps 2-4 plus the 500-image generation).

Run: .venv/bin/python benchmarks/hfi_toyworld.py [--out runs/hfi] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# An object token is probed as a thing in a scene; a style token after a scene, as it was trained.
PROBE_TEMPLATES = {
    "skull": ("a photo of {}", "a {} on the beach", "a {} in the city", "a {} at night", "a {} in the forest"),
    "kelvo": ("a photo of {}", "a red circle on the beach {}", "a blue square in the city {}", "a yellow cross at night {}",
              "a green triangle in the snow {}"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/hfi")
    ap.add_argument("--steps", type=int, default=300, help="inversion updates")
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--probe-images", type=int, default=40, help="images per probe prompt (5 prompts)")
    args = ap.parse_args()

    from diffusers.utils import logging as dlog

    from unsee.annotate import AutoAnnotateConfig, auto_annotate
    from unsee.generate import GenerateConfig, generate
    from unsee.imageset import ImageSet
    from unsee.invert import InvertConfig, invert
    from unsee.reward_model import RewardTrainConfig, train_reward
    from unsee.toyworld import ORACLE, assets_path, prompts_path
    from unsee.toyworld.oracle import load_oracle

    dlog.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    oracle = load_oracle(assets_path() / ORACLE)
    results = {}
    for concept, kind, sets, init in (
        ("skull", "binary", ("object_explicit", "object_implicit", "benign"), "thing"),
        ("kelvo", "rank", ("style_explicit", "style_implicit", "benign"), "art"),
    ):
        d = out / concept
        d.mkdir(exist_ok=True)
        prompts = []
        for s in sets:
            prompts += [x for x in prompts_path(s).read_text().splitlines() if x.strip()]
        (d / "prompts.txt").write_text("\n".join(prompts) + "\n")
        t0 = time.time()
        images = generate(GenerateConfig(model="toyworld", prompts=str(d / "prompts.txt"), out=str(d / "images"),
                                         images_per_prompt=args.images_per_prompt, batch_size=32), progress=False)
        t_gen = time.time() - t0
        t1 = time.time()
        fb = auto_annotate(AutoAnnotateConfig(images=str(images), out=str(d / "feedback.jsonl"), kind=kind,
                                              labels=(concept,), noise=0.1, annotators=1 if kind == "binary" else 3))
        metrics = train_reward(RewardTrainConfig(images=str(images), feedback=str(fb), out=str(d / "reward")), progress=False)
        token = f"<{concept}-flagged>"
        emb = d / "token.safetensors"
        inv = invert(InvertConfig(model="toyworld", images=str(images), reward=str(d / "reward"), out=str(emb), token=token,
                                  init_word=init, top_k=args.top_k, steps=args.steps), progress=False)
        t_chain = time.time() - t1

        # Probe: the token alone vs the init word alone, same prompts and seeds.
        rates = {}
        init_key = f"init word '{init}'"
        for name, word in (("learned token", token), (init_key, init)):
            probe = d / f"probe-{'token' if word == token else 'init'}.txt"
            probe.write_text("\n".join(t.format(word) for t in PROBE_TEMPLATES[concept]) + "\n")
            gen_dir = d / f"probe-{'token' if word == token else 'init'}"
            from unsee.models import load_pipeline

            pipe = load_pipeline("toyworld")
            if word == token:
                pipe.load_textual_inversion(str(emb), token=token)
            generate(GenerateConfig(model="toyworld", prompts=str(probe), out=str(gen_dir),
                                    images_per_prompt=args.probe_images, batch_size=40), progress=False, pipe=pipe)
            reads = oracle.read(ImageSet.load(gen_dir).load_images())
            head = "extra" if concept == "skull" else "style"
            rates[name] = sum(r[head] == concept for r in reads) / len(reads)
            rates[f"{name} images"] = len(reads)
        results[concept] = {"feedback": kind, "images": len(ImageSet.load(images)),
                            "reward_heldout_agreement": metrics["heldout_agreement"], "reward_metric": metrics["metric"],
                            "rates": rates, "seconds_generate_500": round(t_gen, 1),
                            "seconds_annotate_reward_invert": round(t_chain, 1), "inversion": inv}
        print(f"[{concept}] {kind} feedback on {results[concept]['images']} images | reward held-out "
              f"{metrics['metric']} {metrics['heldout_agreement']:.3f} | {concept} rate: learned token "
              f"{rates['learned token']:.3f} vs {init_key} {rates[init_key]:.3f} "
              f"({rates['learned token images']} images each) | chain {t_gen + t_chain:.0f} s "
              f"(generate {t_gen:.0f} s + annotate/reward/invert {t_chain:.0f} s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results -> {out / 'results.json'}")


if __name__ == "__main__":
    main()
