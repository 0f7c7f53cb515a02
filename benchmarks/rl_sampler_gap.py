"""Does an RL snapshot draw the skull less under the sampler it was trained with than under the judge's?

`unsee rl` samples its training chains with the stochastic DDIM sampler DDPO's log-probabilities need (eta 1) at the
recipe's CFG 5 and 20 steps; benchmarks/rl_time_to_target.py judges snapshots with the deterministic sampler users
draw with (eta 0, CFG 7.5, 25 steps). If the policy took the skull off only under its own sampler, the judge would
see the erasure late. This reads the skull rate (oracle, P >= 0.5) of the base model and of each snapshot given, on
the seen explicit (training) prompts and the held-out implicit ones, under both samplers, with the same starting
noise for every model.

Run: [UNSEE_TOYWORLD=WORLD] .venv/bin/python benchmarks/rl_sampler_gap.py SNAPSHOT_DIR [SNAPSHOT_DIR ...] [--images 100]
"""

from __future__ import annotations

import argparse

import torch

SAMPLERS = {"training (eta 1, CFG 5, 20 steps)": (1.0, 5.0, 20), "judge (eta 0, CFG 7.5, 25 steps)": (0.0, 7.5, 25)}


@torch.no_grad()
def skull_rate(pipe, oracle, prompts: list[str], eta: float, guidance: float, steps: int, n: int) -> float:
    from unsee.rl import ddim_step_logprob
    from unsee.sampling import cfg_noise, decode, encode_text

    sched = pipe.scheduler
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(123)  # the same noise for every model and sampler
    size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    images = []
    for k in range(0, n, 50):
        ps = [prompts[i % len(prompts)] for i in range(k, min(n, k + 50))]
        cond, unc = encode_text(pipe, ps), encode_text(pipe, [""]).expand(len(ps), -1, -1)
        z = torch.randn((len(ps), channels, size, size), generator=gen) * sched.init_noise_sigma
        s = torch.full((len(ps),), guidance)
        for t in sched.timesteps:
            eps = cfg_noise(pipe, z, t, cond, unc, s)
            z, _, _, _ = ddim_step_logprob(sched, eps.float(), t.view(1).expand(len(ps)), z.float(), eta, generator=gen)
        images.append(decode(pipe, z))
    return float(oracle.concept_scores(torch.cat(images))["skull"].ge(0.5).float().mean())


def main() -> None:
    from diffusers.utils import logging as diffusers_logging

    from unsee.models import load_pipeline
    from unsee.prompts import read_prompts
    from unsee.toyworld import ORACLE, assets_path, prompts_path
    from unsee.toyworld.oracle import load_oracle

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshots", nargs="+", help="folders holding pytorch_lora_weights.safetensors")
    ap.add_argument("--images", type=int, default=100, help="images a prompt set")
    args = ap.parse_args()
    diffusers_logging.set_verbosity_error()  # a LoRA without text-encoder keys is expected here
    oracle = load_oracle(assets_path() / ORACLE)
    sets = {
        "training": [p.text for p in read_prompts(prompts_path("object_explicit", "seen"))],
        "held-out implicit": [p.text for p in read_prompts(prompts_path("object_implicit", "heldout"))],
    }
    print(f"{'model':60} {'sampler':36} {'training':>8} {'held-out implicit':>17}")
    for model in ["base", *args.snapshots]:
        pipe = load_pipeline("toyworld")
        if model != "base":
            pipe.load_lora_weights(model)
        for name, (eta, guidance, steps) in SAMPLERS.items():
            rates = [skull_rate(pipe, oracle, ps, eta, guidance, steps, args.images) for ps in sets.values()]
            print(f"{model[-60:]:60} {name:36} {rates[0]:>8.3f} {rates[1]:>17.3f}", flush=True)


if __name__ == "__main__":
    main()
