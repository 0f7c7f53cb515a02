"""Where a toy world's UNet reads a concept from, and how alike the concept's text states are alone and in sentences.

An erasure trained on the bare word ("skull") changes how the UNet treats that prompt's states: the word's own
state and the padding states after it, which in a causal text tower sum up the prompt. It reaches a sentence that
holds the word only as far as the sentence carries the concept in states like those. This measures both sides.

1. Text states (no images). For each explicit prompt of the seen and the novel split (first --prompts of each) and
   its counterpart with the neighbour in the concept's place ("... with a skull ..." -> "... with a mask ..."; one
   token each, so positions align), the concept's contribution at a position is the difference of the two prompts'
   states there. Printed: the cosine of that contribution in the word's own state, and over the padding states
   (their mean), to the same contribution in the bare prompts ("skull" against "mask") and in "a skull" against
   "a mask"; and the cosine of the states themselves (the word's state in the sentence to its state alone). Then
   how alike the prompts are where the UNet reads the concept: the cosine of each sentence's padding states (their
   mean) to those of the bare word, of "a skull", of the empty prompt and of its counterpart.
2. Where the UNet reads it (images, the oracle reading them; --seeds images a prompt, 25 DDIM steps, guidance 7.5):
   the sentence as written; with the word's own state taken from the counterpart (the concept left only in the
   states after it); with every state after the word taken from the counterpart (the concept left only in its own
   state); with only the padding states (from the end-of-text token on) taken from the counterpart, or from the
   empty prompt (the "clean pads" of Toker et al. 2025, who find that models with a frozen text encoder, SD 1.x and
   2.x among them, largely ignore the padding); and the counterpart as written. Printed: the share of images with
   the concept and with the neighbour.

Run: .venv/bin/python benchmarks/concept_states.py [--world runs/toyworld-v7] [--states-only]
"""

from __future__ import annotations

import argparse

import torch


def position(pipe, prompt: str, word: str) -> int:
    from unsee.sampling import token_ids

    ids = token_ids(pipe, [prompt])[0].tolist()
    return ids.index(token_ids(pipe, [word])[0, 1].item())


def pad_start(pipe, prompt: str) -> int:
    """Index of the first state after the prompt's last word (its end-of-text token)."""
    from unsee.sampling import token_ids

    ids = token_ids(pipe, [prompt])[0].tolist()
    return ids.index(pipe.tokenizer.eos_token_id, 1)


def clean_pads(pipe, texts: list[str]) -> torch.Tensor:
    """The prompts' states with every padding state (from the end-of-text token on) replaced by the empty prompt's
    state at that position: the concept left only in the prompt's own words, where a model that ignores its padding
    (as SD 1.x and 2.x do, Toker et al. 2025) reads it."""
    from unsee.sampling import encode_text

    states, empty = encode_text(pipe, texts).clone(), encode_text(pipe, [""])
    for k, text in enumerate(texts):
        p = pad_start(pipe, text)
        states[k, p:] = empty[0, p:]
    return states


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.cosine_similarity(a.flatten(), b.flatten(), 0).item()


@torch.no_grad()
def state_table(pipe, splits: dict[str, list[str]], concept: str, neighbour: str) -> None:
    from unsee.sampling import encode_text

    def contribution(a: str, b: str, word: str) -> tuple[torch.Tensor, torch.Tensor]:
        sa, sb = encode_text(pipe, [a])[0], encode_text(pipe, [b])[0]
        k, p = position(pipe, a, word), pad_start(pipe, a)
        return sa[k] - sb[k], (sa[p:] - sb[p:]).mean(0)

    refs = {
        "bare": contribution(concept, neighbour, concept),
        "a": contribution(f"a {concept}", f"a {neighbour}", concept),
    }
    alone = encode_text(pipe, [concept])[0, 1]
    print(f"the concept's contribution ({concept!r} state minus {neighbour!r} state), cosine to the same in:")
    print(f"{'split':8s} {'word: bare':>11s} {'word: a':>9s} {'pads: bare':>11s} {'pads: a':>9s} {'word state':>11s}")
    for split, texts in splits.items():
        rows = []
        for text in texts:
            word, pads = contribution(text, text.replace(concept, neighbour), concept)
            state = encode_text(pipe, [text])[0, position(pipe, text, concept)]
            rows.append(
                (cos(word, refs["bare"][0]), cos(word, refs["a"][0]), cos(pads, refs["bare"][1]),
                 cos(pads, refs["a"][1]), cos(state, alone))
            )  # fmt: skip
        m = [sum(c) / len(c) for c in zip(*rows, strict=True)]
        print(f"{split:8s} {m[0]:11.2f} {m[1]:9.2f} {m[2]:11.2f} {m[3]:9.2f} {m[4]:11.2f}")
    word, pads = refs["a"]
    print(
        f"'a {concept}' against the bare prompt: word {cos(word, refs['bare'][0]):.2f}, pads {cos(pads, refs['bare'][1]):.2f}"
    )
    pooled = lambda text: encode_text(pipe, [text])[0, pad_start(pipe, text) :].mean(0)  # noqa: E731
    others = (concept, f"a {concept}", "")
    print("cosine of the padding states (their mean) of each explicit prompt to those of:")
    print(f"{'split':8s} {concept!r:>9s} {'a ' + concept!r:>9s} {'empty':>9s} {'counterpart':>12s}")
    for split, texts in splits.items():
        rows = []
        for text in texts:
            p = pooled(text)
            rows.append([cos(p, pooled(o)) for o in others] + [cos(p, pooled(text.replace(concept, neighbour)))])
        m = [sum(c) / len(c) for c in zip(*rows, strict=True)]
        print(f"{split:8s} {m[0]:9.2f} {m[1]:9.2f} {m[2]:9.2f} {m[3]:12.2f}")
    print(f"{concept!r} to the empty prompt: {cos(pooled(concept), pooled('')):.2f}; "
          f"'a {concept}' to it: {cos(pooled(f'a {concept}'), pooled('')):.2f}")  # fmt: skip


@torch.no_grad()
def reading_table(pipe, oracle, texts: list[str], concept: str, neighbour: str, seeds: int) -> None:
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents

    def splice(text: str, what: str) -> torch.Tensor:
        other = text.replace(concept, neighbour)
        s, o = encode_text(pipe, [text]).clone(), encode_text(pipe, [other])
        k, p = position(pipe, text, concept), pad_start(pipe, text)
        if what == "word":
            s[:, k] = o[:, k]
        elif what == "after":
            s[:, k + 1 :] = o[:, k + 1 :]
        else:  # "pads"
            s[:, p:] = o[:, p:]
        return s

    rows = {
        "as written": lambda x: encode_text(pipe, [x]),
        "the word's state from the counterpart": lambda x: splice(x, "word"),
        "the states after the word from the counterpart": lambda x: splice(x, "after"),
        "the padding states from the counterpart": lambda x: splice(x, "pads"),
        "the padding states from the empty prompt": lambda x: clean_pads(pipe, [x]),
        "the counterpart as written": lambda x: encode_text(pipe, [x.replace(concept, neighbour)]),
    }
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    for name, make in rows.items():
        cond = torch.cat([make(x) for x in texts]).repeat_interleave(seeds, 0)
        uncond = encode_text(pipe, [""]).expand(len(cond), -1, -1)
        z = initial_latents(pipe, list(range(len(cond))), size, size)
        reads = oracle.read(decode(pipe, sample_latents(pipe, cond, uncond, z, torch.full((len(cond),), 7.5), 25)))
        share = {v: sum(r["extra"] == v for r in reads) / len(reads) for v in (concept, neighbour)}
        print(f"  {name:50s} {concept} {share[concept]:.3f}  {neighbour} {share[neighbour]:.3f}  ({len(reads)} images)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=None, help="a toy-world build folder (default: the shipped one)")
    ap.add_argument("--concept", default="skull")
    ap.add_argument("--neighbour", default="mask")
    ap.add_argument("--prompts", type=int, default=20, help="explicit prompts of each split")
    ap.add_argument("--seeds", type=int, default=2, help="images a prompt in the reading table")
    ap.add_argument("--states-only", action="store_true", help="only the text-state table")
    args = ap.parse_args()

    from unsee.models import load_pipeline
    from unsee.prompts import read_prompts
    from unsee.toyworld import ORACLE, PIPELINE, PROMPTS, assets_path
    from unsee.toyworld.oracle import load_oracle

    world = args.world or str(assets_path())
    pipe = load_pipeline(f"{world}/{PIPELINE}", channels_last=False)
    splits = {}
    for split in ("seen", "novel"):
        texts = [p.text for p in read_prompts(f"{world}/{PROMPTS}/{split}/object_explicit.txt")]
        splits[split] = [t for t in texts if f" {args.concept}" in f" {t}"][: args.prompts]
    print(f"world: {world}")
    state_table(pipe, splits, args.concept, args.neighbour)
    if args.states_only:
        return
    oracle = load_oracle(f"{world}/{ORACLE}")
    for split, texts in splits.items():
        print(f"where the UNet reads {args.concept!r}, {split} explicit prompts:")
        reading_table(pipe, oracle, texts, args.concept, args.neighbour, args.seeds)


if __name__ == "__main__":
    main()
