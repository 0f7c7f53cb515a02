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

First, and alone with --probe-only (seconds, no images): a linear readout of
shape and colour from the text encoder's states, fitted on 3,000 training-style
captions of seen pairs and tested on 600 of held-out pairs (ridge regression
onto one-hot labels), from the mean state over all 77 positions, over the 40
padding positions, and from all states flattened. The UNet reads the states
through attention, close to a weighted mean: a readout that fails on held-out
pairs from the mean state foretells a UNet that draws them wrong.

Run: .venv/bin/python benchmarks/toyworld_composition.py [--world runs/toyworld-v3] [--probe-only]
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
    ap.add_argument("--probe-only", action="store_true", help="only the linear readout from the text encoder's states")
    args = ap.parse_args()

    from unsee.models import load_pipeline
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents
    from unsee.toyworld import ORACLE, PIPELINE, assets_path
    from unsee.toyworld.oracle import load_oracle
    from unsee.toyworld.world import BACKGROUND_PHRASE, HELDOUT_PAIRS, SEEN_PAIRS

    world = args.world or str(assets_path())
    pipe = load_pipeline(f"{world}/{PIPELINE}")
    print(f"world: {world} (text encoder layers: {pipe.text_encoder.config.num_hidden_layers})")
    linear_probe(pipe)
    if args.probe_only:
        return
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


def linear_probe(pipe) -> None:
    """Ridge readouts of shape and colour from the text encoder's states: seen pairs in, held-out pairs out."""
    from unsee.toyworld.world import COLOURS, HELDOUT_PAIRS, SEEN_PAIRS, SHAPES, sample_scene

    def captions(pairs, n, seed):
        rng, out = np.random.default_rng(seed), []
        while len(out) < n:
            scene, cap = sample_scene(rng, pairs=pairs, grammar="varied")
            if scene.shape is not None and scene.colour in cap.split():  # captions naming both
                out.append((cap, scene.colour, scene.shape))
        return out

    @torch.no_grad()
    def states(rows):
        ids = pipe.tokenizer(
            [r[0] for r in rows], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        return torch.cat([pipe.text_encoder(ids[k : k + 500])[0] for k in range(0, len(ids), 500)]).numpy()

    train, test = captions(SEEN_PAIRS, 3000, 1), captions(HELDOUT_PAIRS, 600, 2)
    s_train, s_test = states(train), states(test)
    print("linear readout from the text encoder's states (fit on seen pairs, test on held-out pairs):")
    for name, pool in (
        ("mean over the 77 positions", lambda x: x.mean(1)),
        ("mean over the 40 padding positions", lambda x: x[:, 37:].mean(1)),
        ("all positions, flattened", lambda x: x.reshape(len(x), -1)),
    ):
        x_train, x_test = pool(s_train), pool(s_test)
        mu = x_train.mean(0)
        x_train, x_test = x_train - mu, x_test - mu
        cells = []
        for attr, vocab, k in (("shape", SHAPES, 2), ("colour", COLOURS, 1)):
            y = np.eye(len(vocab))[[vocab.index(r[k]) for r in train]]
            w = np.linalg.solve(x_train.T @ x_train + np.eye(x_train.shape[1]), x_train.T @ y)
            seen = np.mean((x_train @ w).argmax(1) == y.argmax(1))
            held = np.mean((x_test @ w).argmax(1) == np.array([vocab.index(r[k]) for r in test]))
            cells.append(f"{attr} seen {seen:.3f} held-out {held:.3f}")
        print(f"  {name:36s}", " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
