"""Where an erased model's edit lives: the relative change of each token's cross-attention keys and values.

A prompt reaches the UNet only through every cross-attention layer's keys W_k c and values W_v c of its token
states c. For each probe prompt and each of its tokens (start, words, end of text, and one padding position
further on, which every prompt shares), this prints ||(W' - W) c|| / ||W c|| averaged over the key and value
projections of every layer, W from --base and W' from each model. An edit that moves the start, end or padding
states moves every prompt.

Run: .venv/bin/python benchmarks/kv_change.py runs/X/models/sdd-hfi runs/X/models/uce-text \
        [--base toyworld] [--token runs/X/hfi/token.safetensors] [--probe "a red cross with a skull in the city" ...]
"""

from __future__ import annotations

import argparse

import torch

PROBES = (
    "a red cross with a skull in the city",
    "a blue ring with a mask at night",
    "a spooky green square on the beach",
)
PAD_AT = 40  # a padding position no toy prompt reaches


def kv_weights(pipe) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (m.to_k.weight.detach().double(), m.to_v.weight.detach().double())
        for n, m in pipe.unet.named_modules()
        if n.endswith("attn2")
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="erased pipeline folders")
    ap.add_argument("--base", default="toyworld", help="the model they were erased from")
    ap.add_argument("--token", default=None, help="a learned token file, to load before encoding (probe it by name)")
    ap.add_argument("--probe", action="append", default=None, help="a probe prompt (repeatable)")
    args = ap.parse_args()

    from unsee.models import load_pipeline
    from unsee.uce import prompt_length, text_states

    base = load_pipeline(args.base)
    if args.token:
        from safetensors.torch import load_file

        base.load_textual_inversion(args.token, token=next(iter(load_file(args.token))))
    w0 = kv_weights(base)
    probes = args.probe or list(PROBES)
    ids, states = text_states(base, probes)
    eos = base.tokenizer.eos_token_id
    rows = []  # (label, state)
    for p, (row, st) in enumerate(zip(ids, states, strict=True)):
        end = prompt_length(row, eos)
        for i in [*range(end), PAD_AT]:
            word = base.tokenizer.convert_ids_to_tokens(int(row[i])).replace("</w>", "")
            rows.append((f"p{p}:{word}@{i}" if i < end else f"p{p}:pad@{i}", st[i]))
    print("probes:", "; ".join(f"p{i}: {p}" for i, p in enumerate(probes)))
    for folder in args.models:
        w1 = kv_weights(load_pipeline(folder))
        change = []
        for _, s in rows:
            r = [
                float(((b - a) @ s).norm() / (a @ s).norm())
                for pair0, pair1 in zip(w0, w1, strict=True)
                for a, b in zip(pair0, pair1, strict=True)
            ]
            change.append(sum(r) / len(r))
        print(f"\n{folder}")
        print("  " + "  ".join(f"{label} {c:.2f}" for (label, _), c in zip(rows, change, strict=True)))


if __name__ == "__main__":
    main()
