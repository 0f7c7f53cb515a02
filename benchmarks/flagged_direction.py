"""How far naming a concept after a flagged prompt moves the original model's prediction (what `--flagged` pushes off).

For each flagged prompt p and each concept c (a word, or a learned token from `unsee invert`), prints the relative
change ||eps(z, t, p c) - eps(z, t, p)|| / ||eps(z, t, p)|| over all prompts at a few timesteps, on one fixed latent
per prompt. `unsee erase --flagged` trains p toward eps*(p) - eta (eps*(p c) - eps*(p)): a concept whose naming
barely changes the prediction gives that guidance little to push away from.

Run: .venv/bin/python benchmarks/flagged_direction.py --token runs/X/skull/hfi/token.safetensors --word skull
     [--prompts FILE] [--model toyworld]   (default prompts: the toy world's held-out implicit skull prompts)
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--token", action="append", default=[], help="a learned token file (repeatable)")
    ap.add_argument("--word", action="append", default=[], help="a concept word (repeatable)")
    ap.add_argument("--prompts", default=None, help="flagged prompts, one a line")
    ap.add_argument("--timesteps", default="800,500,200")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.token and not args.word:
        ap.error("give --token FILE or --word TEXT (repeatable)")

    import torch
    from safetensors.torch import load_file

    from unsee.models import load_pipeline
    from unsee.prompts import read_prompts
    from unsee.sampling import encode_text
    from unsee.toyworld import prompts_path

    pipe = load_pipeline(args.model, device="cpu")
    concepts = list(args.word)
    for f in args.token:
        name = next(iter(load_file(f)))
        pipe.load_textual_inversion(f, token=name)
        concepts.append(name)
    path = args.prompts or str(prompts_path("object_implicit", "heldout"))
    prompts = [p.text for p in read_prompts(path)]
    cfg = pipe.unet.config
    z = torch.randn(
        len(prompts),
        cfg.in_channels,
        cfg.sample_size,
        cfg.sample_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    print(f"{len(prompts)} prompts from {path}; relative change of eps when the concept is named after each")
    print(f"{'t':>5} " + " ".join(f"{c:>18}" for c in concepts))
    for step in (int(x) for x in args.timesteps.split(",")):
        t = torch.full((len(prompts),), step)
        with torch.no_grad():
            eps = {
                c: pipe.unet(
                    z, t, encoder_hidden_states=encode_text(pipe, [f"{p} {c}".strip() for p in prompts])
                ).sample
                for c in ("", *concepts)
            }
        print(f"{step:>5} " + " ".join(f"{float((eps[c] - eps['']).norm() / eps[''].norm()):18.4f}" for c in concepts))


if __name__ == "__main__":
    main()
