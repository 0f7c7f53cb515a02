"""Why a toy world draws held-out colour-shape pairs wrong: the text encoder or the UNet?

For the six held-out pairs (e.g. "a red triangle"), x 6 backgrounds x 4 seeds
(144 images a row, 25 DDIM steps, CFG 7.5, the oracle reads colour and shape):

- held-out prompt as written;
- no colour word ("a triangle on the beach");
- the held-out prompt with the shape word's state taken from a seen pair's
  prompt ("a blue triangle ..."): does the shape token carry the shape?
- the held-out prompt with every state from the shape word on taken from the
  seen pair's prompt: do the later positions carry it?
- seen pairs as written (one in four seen pairs, same count of images).

Then the cosine between the shape word's state in the held-out prompt and in a
seen prompt with the same shape (another colour), and with the same colour
(another shape). With a text encoder of 0 layers the states do not depend on
context and the splice rows equal the first.

Run: .venv/bin/python benchmarks/toyworld_composition.py [--world runs/toyworld-v3]
(default: the shipped world)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=None, help="a toy-world build folder (default: the shipped one)")
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()

    from unsee.models import load_pipeline
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents
    from unsee.toyworld import ORACLE, PIPELINE, assets_path
    from unsee.toyworld.oracle import load_oracle
    from unsee.toyworld.world import BACKGROUND_PHRASE, HELDOUT_PAIRS, SEEN_PAIRS

    world = args.world or str(assets_path())
    pipe = load_pipeline(f"{world}/{PIPELINE}")
    oracle = load_oracle(f"{world}/{ORACLE}")
    bgs = list(BACKGROUND_PHRASE.values())
    seen = set(SEEN_PAIRS)

    def donor_colour(c, s):  # another colour seen with shape s
        return next(cc for cc, ss in SEEN_PAIRS if ss == s and cc != c)

    def donor_shape(c, s):  # another shape seen with colour c
        return next(ss for cc, ss in SEEN_PAIRS if cc == c and ss != s)

    def enc(p):
        return encode_text(pipe, [p])

    def row(name, pairs, make):
        conds, want = [], []
        for c, s in pairs:
            for b in bgs:
                conds.append(make(c, s, b))
                want.append((c, s))
        cond = torch.cat(conds).repeat_interleave(args.seeds, 0)
        want = [w for w in want for _ in range(args.seeds)]
        uncond = encode_text(pipe, [""]).expand(len(cond), -1, -1)
        z = initial_latents(pipe, list(range(len(cond))), 32, 32)
        reads = oracle.read(decode(pipe, sample_latents(pipe, cond, uncond, z, torch.full((len(cond),), 7.5), 25)))
        colour = np.mean([r["colour"] == w[0] for r, w in zip(reads, want, strict=True)])
        shape = np.mean([r["shape"] == w[1] for r, w in zip(reads, want, strict=True)])
        print(f"{name:58s} colour {colour:.3f}  shape {shape:.3f}  ({len(reads)} images)", flush=True)

    # position of the shape word in "a <colour> <shape> ...": BOS, a, colour, shape
    pos = 3

    def splice(c, s, b, upto):
        e = enc(f"a {c} {s} {b}").clone()
        e[:, pos:upto] = enc(f"a {donor_colour(c, s)} {s} {b}")[:, pos:upto]
        return e

    print(f"world: {world} (text encoder layers: {pipe.text_encoder.config.num_hidden_layers})")
    row("held-out pair, as written", HELDOUT_PAIRS, lambda c, s, b: enc(f"a {c} {s} {b}"))
    row("held-out shape, no colour word", HELDOUT_PAIRS, lambda c, s, b: enc(f"a {s} {b}"))
    row(
        "held-out, shape word's state from a seen pair's prompt",
        HELDOUT_PAIRS,
        lambda c, s, b: splice(c, s, b, pos + 1),
    )
    row("held-out, all states from the shape word on from it", HELDOUT_PAIRS, lambda c, s, b: splice(c, s, b, None))
    row("seen pairs (every fourth), as written", SEEN_PAIRS[::4], lambda c, s, b: enc(f"a {c} {s} {b}"))
    same_shape, same_colour = [], []
    for c, s in HELDOUT_PAIRS:
        a = enc(f"a {c} {s} on the beach")[0, pos]
        same_shape.append(torch.cosine_similarity(a, enc(f"a {donor_colour(c, s)} {s} on the beach")[0, pos], 0).item())
        same_colour.append(torch.cosine_similarity(a, enc(f"a {c} {donor_shape(c, s)} on the beach")[0, pos], 0).item())
    assert all((donor_colour(c, s), s) in seen and (c, donor_shape(c, s)) in seen for c, s in HELDOUT_PAIRS)
    print(
        "cosine of the shape word's state in a held-out prompt to its state after a seen colour:",
        " ".join(f"{x:.2f}" for x in same_shape),
    )
    print(
        "  ... and to another shape's state after the same colour:                     ",
        " ".join(f"{x:.2f}" for x in same_colour),
    )


if __name__ == "__main__":
    main()
