"""Why an erasure that holds on its training template fails on new phrasings: the concept word's position.

For every model of an `unsee evaluate` run, this groups the images of one prompt set by where the concept word
sits in the prompt (its token index, start-of-text = 0) and prints the concept's rate at each position next to the
base model's. For the same positions it prints how far each model moved the word's cross-attention keys and
values, ||(W' - W) c_k|| / ||W c_k|| averaged over every key and value projection, c_k the word's text state at
index k in those prompts, and the cosine of c_k to the word's state at the positions the model trained on (from
the training prompts recorded in its unsee.json). An edit that lives at the trained positions shows a large
change and a low rate there, and neither where the word sits elsewhere.

Run: .venv/bin/python benchmarks/phrasing_probe.py runs/X/eval [--set novel-object_explicit] [--word skull]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def word_index(pipe, prompt: str, word: str) -> int | None:
    """Token index of `word` in `prompt` (start-of-text is 0), or None."""
    from unsee.sampling import token_ids

    ids = token_ids(pipe, [prompt])[0].tolist()
    wid = pipe.tokenizer.convert_tokens_to_ids(word + "</w>")
    return ids.index(wid) if wid in ids else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval", help="an `unsee evaluate` output folder (metrics.json, images/)")
    ap.add_argument("--set", default="novel-object_explicit", help="the prompt set to group by position")
    ap.add_argument("--word", default="skull", help="the concept word")
    ap.add_argument("--label", default=None, help="the oracle label to count (default: the word)")
    args = ap.parse_args()

    from unsee.imageset import ImageSet
    from unsee.models import load_pipeline
    from unsee.provenance import model_prompts
    from unsee.toyworld import ORACLE, assets_path
    from unsee.toyworld.oracle import load_oracle
    from unsee.uce import text_states

    label = args.label or args.word
    head = "extra" if label in ("skull", "mask") else "style"
    ev = Path(args.eval)
    metrics = json.loads((ev / "metrics.json").read_text())
    oracle = load_oracle(assets_path() / ORACLE)
    base_name = next(iter(metrics["models"]))
    base = load_pipeline(metrics["models"][base_name])
    w0 = [
        (m.to_k.weight.detach().double(), m.to_v.weight.detach().double())
        for n, m in base.unet.named_modules()
        if n.endswith("attn2")
    ]

    def states_at(prompts: list[str]) -> tuple[list[int], torch.Tensor]:
        ids, st = text_states(base, prompts)
        pos = [word_index(base, p, args.word) for p in prompts]
        keep = [i for i, k in enumerate(pos) if k is not None]
        return [pos[i] for i in keep], torch.stack([st[i, pos[i]] for i in keep])

    rates: dict[str, dict[int, list[bool]]] = {}
    for name in metrics["models"]:
        s = ImageSet.load(ev / "images" / name / args.set)
        reads = oracle.read(s.load_images())
        by_pos: dict[int, list[bool]] = defaultdict(list)
        for r, rd in zip(s.records, reads, strict=True):
            k = word_index(base, r["prompt"], args.word)
            by_pos[-1 if k is None else k].append(rd[head] == label)
        rates[name] = by_pos
    positions = sorted(rates[base_name])
    prompts = sorted({r["prompt"] for r in ImageSet.load(ev / "images" / base_name / args.set).records})
    pos_of, states = states_at(prompts)
    probe = {k: states[[i for i, p in enumerate(pos_of) if p == k]].mean(0) for k in set(pos_of)}

    print(f"{args.set}: share of images showing {label}, by the token index of '{args.word}' (images at that index)")
    print(f"{'model':14} " + " ".join(f"{('@' + str(k)) if k >= 0 else 'absent':>8}" for k in positions))
    print(f"{'images':14} " + " ".join(f"{len(rates[base_name][k]):>8}" for k in positions))
    for name, by_pos in rates.items():
        print(f"{name[:14]:14} " + " ".join(f"{np.mean(by_pos[k]):8.2f}" for k in positions))

    from unsee.toyworld.world import template

    by_template: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for name in metrics["models"]:
        s = ImageSet.load(ev / "images" / name / args.set)
        for r, rd in zip(s.records, oracle.read(s.load_images()), strict=True):
            by_template[template(r["prompt"])][name].append(rd[head] == label)
    print(f"\n{args.set}: the same shares by phrasing (the prompt's template), base model's rate first")
    for t, per in sorted(by_template.items(), key=lambda kv: -np.mean(kv[1][base_name])):
        print(f"{t:40} {len(per[base_name]):>4} " + " ".join(f"{name[:8]} {np.mean(v):.2f}" for name, v in per.items()))

    print(
        f"\nkey/value change of '{args.word}' at each index, and (in brackets) the cosine of its state there to its "
        "state at the indices the model trained on"
    )
    print(f"{'model':14} " + " ".join(f"{'@' + str(k):>13}" for k in sorted(probe)) + "  trained at")
    for name, folder in metrics["models"].items():
        if name == base_name:
            continue
        pipe = load_pipeline(folder)
        w1 = [
            (m.to_k.weight.detach().double(), m.to_v.weight.detach().double())
            for n, m in pipe.unet.named_modules()
            if n.endswith("attn2")
        ]
        trained = [p for p in model_prompts(folder) if word_index(base, p, args.word) is not None]
        t_pos, t_states = states_at(trained) if trained else ([], torch.zeros(0))
        cells = []
        for _, c in sorted(probe.items()):
            change = np.mean(
                [
                    float(((b - a) @ c).norm() / (a @ c).norm())
                    for p0, p1 in zip(w0, w1, strict=True)
                    for a, b in zip(p0, p1, strict=True)
                ]
            )
            cos = float(torch.nn.functional.cosine_similarity(t_states, c[None]).max()) if len(t_pos) else float("nan")
            cells.append(f"{change:.2f} ({cos:+.2f})")
        print(f"{name[:14]:14} " + " ".join(f"{c:>13}" for c in cells) + f"  {sorted(set(t_pos))}")


if __name__ == "__main__":
    main()
