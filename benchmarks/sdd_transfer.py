"""Does an erasure trained on the bare concept word reach the word inside sentences?

The published SDD and ESD recipes train on the bare word ("skull", "nudity") and, on SD 1.4, erase the concept from
prompts that hold it in any sentence. This measures that transfer on a toy world without drawing an image. The bare
word's noise prediction is trained toward the frozen start's prediction for the empty prompt (SDD's objective, on a
fixed pool of noised latents; cross-attention trained, as published), for `--steps` Adam updates at each `--lr`. Then, on held-out latents:

- bare word: the share of the gap to its target that the updates closed;
- in sentences: for each prompt of the world's explicit prompt files (seen and novel splits), the share of the way
  its prediction moved toward the same prompt's prediction with the concept's phrase taken out ("a red circle with a
  skull on the beach" -> "a red circle on the beach"), measured along that direction;
- other prompts: how far the world's benign prompts' predictions moved, relative to the bare word's gap.

`--keep-empty W` adds a term holding the empty prompt's prediction where it started (what UCE's closed form does for
the empty prompt's keys and values).

Run: .venv/bin/python benchmarks/sdd_transfer.py [--world runs/toyworld-v7] [--steps 300] [--lr 1e-5 5e-5]
[--keep-empty 1]
"""

from __future__ import annotations

import argparse
import copy
import re
import time

import torch
import torch.nn.functional as F


def without(prompt: str, concept: str) -> str:
    """The prompt with the concept's noun phrase and its joining word taken out; alone, it becomes "a scene", as the
    toy world's captions say of a scene with no object."""
    np_ = rf"(?:a|an|the) {re.escape(concept)}"
    for pattern, by in ((rf" (?:with|and) {np_}\b", ""), (rf"\b{np_} (?:with|and) ", ""), (rf"\b{np_}\b", "a scene")):
        if re.search(pattern, prompt):
            return re.sub(r"\s+", " ", re.sub(pattern, by, prompt, count=1)).strip()
    raise ValueError(f"{prompt!r} does not name {concept!r}")


def latents(n: int, batch: int, size: int, sched, seed: int, drawn: torch.Tensor | None = None):
    """n batches of noised latents at random timesteps: from Gaussian z0, or from `drawn` z0 (images the model drew)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        z0 = torch.randn(batch, 4, size, size, generator=g) if drawn is None else drawn[k * batch : (k + 1) * batch]
        t = torch.randint(0, 1000, (batch,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        out.append((a.sqrt() * z0 + (1 - a).sqrt() * eps, t))
    return out


def predict(unet, zt, t, c):
    return unet(zt, t, encoder_hidden_states=c.expand(len(zt), -1, -1)).sample


def toward(start, unet, held, empty_moves: list[torch.Tensor], with_c: torch.Tensor, without_c: torch.Tensor) -> tuple:
    """Mean share of the way each sentence's prediction moved toward its concept-free version's: of the conditional
    prediction alone, and of the guided direction (conditional minus unconditional) that classifier-free guidance
    scales, where a move of the unconditional prediction too cancels out. `empty_moves[i]`: how far the empty
    prompt's prediction moved on held-out batch i."""
    plain, guided = [], []
    with torch.no_grad():
        for (zt, t), moved_empty in zip(held, empty_moves, strict=True):
            for k in range(len(with_c)):
                c0 = predict(start, zt, t, with_c[k : k + 1])
                d = predict(start, zt, t, without_c[k : k + 1]) - c0
                delta = predict(unet, zt, t, with_c[k : k + 1]) - c0
                plain.append(((delta * d).sum() / (d * d).sum()).item())
                guided.append((((delta - moved_empty) * d).sum() / (d * d).sum()).item())
    return sum(plain) / len(plain), sum(guided) / len(guided)


@torch.no_grad()
def draw(pipe, prompts: list[str], n: int) -> torch.Tensor:
    """n final latents the start model draws for the prompts in turn (25 DDIM steps, guidance 7.5): SDD noises the
    latents of its own trajectory for the concept, not Gaussian ones."""
    from unsee.sampling import encode_text, initial_latents, sample_latents

    cond = encode_text(pipe, [prompts[k % len(prompts)] for k in range(n)])
    uncond = encode_text(pipe, [""]).expand(n, -1, -1)
    size = pipe.unet.config.sample_size
    z = initial_latents(pipe, list(range(1000, 1000 + n)), size * pipe.vae_scale_factor, size * pipe.vae_scale_factor)
    return sample_latents(pipe, cond, uncond, z, torch.full((n,), 7.5), 25)


def run(pipe, start, concept: str, splits: dict[str, list[str]], benign: list[str], lr: float, args) -> dict:
    from concept_states import clean_pads
    from unsee.params import select_parameters
    from unsee.sampling import encode_text

    encode = clean_pads if args.clean_pads else encode_text  # in training and in every measure
    prompt = args.train_prompt or concept
    with torch.no_grad():
        bare, empty = encode(pipe, [prompt]), encode(pipe, [""])
        other = encode(pipe, benign)
    size = pipe.unet.config.sample_size
    drawn = args.latents == "drawn"
    train = latents(
        args.pool,
        args.batch,
        size,
        pipe.scheduler,
        0,
        draw(pipe, [prompt], args.pool * args.batch) if drawn else None,
    )
    held = latents(
        2, args.batch, size, pipe.scheduler, 1, draw(pipe, splits["seen"], 2 * args.batch) if drawn else None
    )
    with torch.no_grad():
        targets = [predict(start, zt, t, empty) for zt, t in train]
    unet = copy.deepcopy(start).train()
    opt = torch.optim.Adam(select_parameters(unet, args.params), lr=lr)
    t0 = time.time()
    for step in range(args.steps):
        zt, t = train[step % len(train)]
        loss = F.mse_loss(predict(unet, zt, t, bare), targets[step % len(train)])
        if args.keep_empty:  # hold the empty prompt's prediction where it started
            loss = loss + args.keep_empty * F.mse_loss(predict(unet, zt, t, empty), targets[step % len(train)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.time() - t0
    unet.eval()
    gap = left = left_guided = moved = 0.0
    empty_moves = []
    with torch.no_grad():
        for zt, t in held:
            tgt, b0 = predict(start, zt, t, empty), predict(start, zt, t, bare)
            b1, e1 = predict(unet, zt, t, bare), predict(unet, zt, t, empty)
            gap += (b0 - tgt).norm().item()
            left += (b1 - tgt).norm().item()
            left_guided += (b1 - e1).norm().item()
            empty_moves.append(e1 - tgt)
            for k in range(len(benign)):
                moved += (
                    (predict(unet, zt, t, other[k : k + 1]) - predict(start, zt, t, other[k : k + 1])).norm().item()
                )
        sentences = {
            split: toward(
                start,
                unet,
                held,
                empty_moves,
                encode(pipe, texts),
                encode(pipe, [without(x, concept) for x in texts]),
            )
            for split, texts in splits.items()
        }
    return {
        "bare": 1 - left / gap,
        "bare_guided": 1 - left_guided / gap,
        "empty_moved": sum(m.norm().item() for m in empty_moves) / gap,
        "other_moved": moved / len(benign) / gap,
        "seconds": seconds,
    } | sentences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=None, help="a toy-world build folder (default: the shipped one)")
    ap.add_argument("--concept", default="skull")
    ap.add_argument("--steps", type=int, default=300, help="Adam updates on the bare word")
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-5, 5e-5], help="learning rates (published: 1e-5)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--pool", type=int, default=16, help="training batches of noised latents, cycled")
    ap.add_argument("--prompts", type=int, default=12, help="explicit prompts of each split")
    ap.add_argument(
        "--train-prompt", default=None, help="the prompt the updates train on (default: the bare concept word)"
    )
    ap.add_argument(
        "--latents",
        choices=("noise", "drawn"),
        default="noise",
        help="z0 of the noised latents: Gaussian, or what the model draws (for the training prompt when training, "
        "for the seen explicit prompts when measuring)",
    )
    ap.add_argument(
        "--clean-pads",
        action="store_true",
        help="replace every prompt's padding states with the empty prompt's (the concept only in its words)",
    )
    ap.add_argument("--params", default="xattn", help="UNet parameters trained (published SDD: xattn)")
    ap.add_argument(
        "--keep-empty", type=float, default=0.0, help="weight of a term holding the empty prompt's prediction (0: off)"
    )
    args = ap.parse_args()

    from unsee.models import load_pipeline
    from unsee.prompts import read_prompts
    from unsee.toyworld import PIPELINE, PROMPTS, assets_path

    world = args.world or str(assets_path())
    pipe = load_pipeline(f"{world}/{PIPELINE}", channels_last=False)
    start = copy.deepcopy(pipe.unet).eval().requires_grad_(False)

    def prompts(split: str, name: str) -> list[str]:
        return [p.text for p in read_prompts(f"{world}/{PROMPTS}/{split}/{name}.txt")][: args.prompts]

    benign = prompts("novel", "benign")[:6]
    splits = {split: prompts(split, "object_explicit") for split in ("seen", "novel")}
    keep = f", the empty prompt held with weight {args.keep_empty:g}" if args.keep_empty else ""
    print(
        f"{world}: {args.steps} Adam updates on {args.train_prompt or args.concept!r} toward the empty prompt's "
        f"prediction{keep}, {args.latents} latents" + (", clean padding" if args.clean_pads else "")
    )
    print("share of the way moved (conditional prediction / guided direction); the others' moves relative to the")
    print("bare word's gap")
    head = ("lr", "bare word", "seen sentences", "novel sentences", "empty moved", "benign moved")
    print(f"{head[0]:>6s} {head[1]:>13s} {head[2]:>15s} {head[3]:>15s} {head[4]:>12s} {head[5]:>12s}")
    for lr in args.lr:
        torch.manual_seed(0)
        r = run(pipe, start, args.concept, splits, benign, lr, args)
        pair = lambda a, b: f"{a:.2f} / {b:.2f}"  # noqa: E731
        print(
            f"{lr:6.0e} {pair(r['bare'], r['bare_guided']):>13s} {pair(*r['seen']):>15s} {pair(*r['novel']):>15s} "
            f"{r['empty_moved']:12.2f} {r['other_moved']:12.2f}"
        )
    print(f"({r['seconds']:.0f} s of training a run)")


if __name__ == "__main__":
    main()
