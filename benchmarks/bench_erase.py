"""Cost of one erase update at real scale: unsee's SDD/ESD vs the public code's design, side by side.

The model is the full-size Stable Diffusion 1.5 architecture with random weights
(UNet 860M, CLIP ViT-L/14 text encoder): a step costs the same as with trained
weights. Erasure never decodes, so the VAE is a tiny stand-in. Each design runs
in its own subprocess so its peak memory is its own (peak RSS on CPU, peak
allocated on CUDA).

Designs (per update, ESD-x / SDD on cross-attention, 50-step DDIM, CFG):
- reference-sdd: the public SDD code's loop: a fresh teacher trajectory of k
  CFG steps (k uniform in 1..50) from a full EMA copy of the UNet, then two
  unbatched student passes, then an EMA over all UNet parameters.
- reference-esd: the public ESD code's loop: a fresh trajectory of k CFG steps
  from the trained model, then the frozen original copy's e(0) and e(c), then
  the student's e(c).
- unsee-sdd / unsee-esd: `unsee.erase.EraseMethod` on the shared `Trainer` with
  --batch-size and --reuse (default 4 and 16, the toy-world defaults).
k is drawn stratified (5 updates at k = 3, 13, 26, 38, 48: mean 25.6 against the
expected 25.5) so few reference updates give its average cost.

"UNet passes" count latents through the UNet: a CFG step on one latent is 2.
Prints per update and per trained latent: seconds, passes, and the ratio
unsee / reference. Example (CPU, 128 px): python benchmarks/bench_erase.py
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

REF_KS = (3, 13, 26, 38, 48)


def sd15_pipeline(latent_size: int, device: str):
    """SD 1.5's UNet and text encoder configs, random weights; a tiny VAE (erasure never decodes)."""
    from unsee.testing import full_size_components, make_pipeline

    pipe = make_pipeline(full_size_components("sd15", latent_size=latent_size, full_vae=False))
    pipe.unet.enable_gradient_checkpointing()  # as load_pipeline does for training
    return pipe.to(device)


def peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_unsee(pipe, method: str, args) -> dict:
    from unsee.erase import EraseConfig, EraseMethod
    from unsee.params import select_parameters
    from unsee.trainer import TrainConfig, Trainer

    cfg = EraseConfig(
        model="sd15-random",
        out="-",
        method=method,
        concept=("nudity",),
        batch_size=args.batch_size,
        reuse=args.reuse,
        checkpoint_every=args.reuse,
        device=args.device,
        lr=1e-5,
    )
    names = {id(p): n for n, p in pipe.unet.named_parameters()}
    params = {names[id(p)]: p for p in select_parameters(pipe.unet, "xattn")}
    m = EraseMethod(pipe, cfg, ["nudity"], params)
    updates = args.reuse  # one trajectory cycle: its sampling is amortised over exactly these updates
    tcfg = TrainConfig(steps=updates, lr=1e-5, ema_decay=0.999 if method == "sdd" else None, checkpoint_every=0)
    trainer = Trainer(m, tcfg, tempfile.mkdtemp(prefix="unsee-bench-erase-"), progress=False, device=args.device)
    m.trainer = trainer
    t = time.perf_counter()
    trainer.run()
    sync(args.device)
    return {
        "seconds_per_update": (time.perf_counter() - t) / updates,
        "passes_per_update": m.unet_passes / updates,
        "latents_per_update": args.batch_size,
        "updates_timed": updates,
    }


def run_reference(pipe, method: str, args) -> dict:
    """The public codes' per-update loop, on the same pipeline and DDIM schedule."""
    from unsee.params import select_parameters
    from unsee.sampling import cfg_noise, encode_text

    unet, sched, dev = pipe.unet, pipe.scheduler, args.device
    trained = select_parameters(unet, "xattn")
    opt = torch.optim.AdamW(trained, lr=1e-5)
    other = copy.deepcopy(unet).requires_grad_(False)  # SDD: the EMA teacher; ESD: the frozen original
    c, u = encode_text(pipe, ["nudity"]), encode_text(pipe, [""])
    sched.set_timesteps(50, device=dev)
    passes, g = 0, torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for k in REF_KS:
        sampler = other if method == "sdd" else unet
        z = torch.randn(1, 4, unet.config.sample_size, unet.config.sample_size, generator=g).to(dev)
        with torch.no_grad():
            for t in sched.timesteps[:k]:
                z = sched.step(
                    cfg_noise(_with(pipe, sampler), z, t, c, u, torch.tensor([3.0], device=dev)), t, z
                ).prev_sample
                passes += 2
        t = sched.timesteps[k - 1].view(1)
        if method == "sdd":
            with torch.no_grad():
                target = unet(z, t, encoder_hidden_states=u).sample
            pred = unet(z, t, encoder_hidden_states=c).sample
            passes += 2
        else:
            with torch.no_grad():
                e0 = other(z, t, encoder_hidden_states=u).sample
                ep = other(z, t, encoder_hidden_states=c).sample
            target = e0 - 1.0 * (ep - e0)
            pred = unet(z, t, encoder_hidden_states=c).sample
            passes += 3
        F.mse_loss(pred, target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if method == "sdd":  # the public code's EMA runs over every UNet parameter
            with torch.no_grad():
                for pe, p in zip(other.parameters(), unet.parameters(), strict=True):
                    pe.lerp_(p, 0.001)
    sync(dev)
    n = len(REF_KS)
    return {
        "seconds_per_update": (time.perf_counter() - t0) / n,
        "passes_per_update": passes / n,
        "latents_per_update": 1,
        "updates_timed": n,
    }


class _with:
    """A pipeline view whose UNet is another module (the reference samples with its second copy)."""

    def __init__(self, pipe, unet):
        self._pipe, self.unet = pipe, unet

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def one(args) -> None:
    pipe = sd15_pipeline(args.resolution // 8, args.device)
    design, method = args.one.split("-")
    out = (run_unsee if design == "unsee" else run_reference)(pipe, method, args)
    out["peak_memory_gb"] = peak_memory_gb(args.device)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=128, help="image size in px (latents are 1/8); 512 on a GPU")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=4, help="unsee: latents per update")
    ap.add_argument("--reuse", type=int, default=16, help="unsee: updates per batch of teacher trajectories")
    ap.add_argument("--methods", default="sdd,esd")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    rows = {}
    for method in args.methods.split(","):
        for design in ("reference", "unsee"):
            name = f"{design}-{method}"
            cmd = [sys.executable, __file__, "--one", name] + sys.argv[1:]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{name} failed:\n{r.stderr[-3000:]}")
            rows[name] = json.loads(r.stdout.strip().splitlines()[-1])
            print(name, rows[name], flush=True)
    print(
        f"\nSD 1.5 architecture, random weights, {args.resolution} px, {args.device}, fp32; "
        f"unsee: batch {args.batch_size}, reuse {args.reuse}"
    )
    print(f"{'design':16} {'s/update':>9} {'s/latent':>9} {'passes/update':>14} {'passes/latent':>14} {'peak GB':>8}")
    for name, r in rows.items():
        n = r["latents_per_update"]
        print(
            f"{name:16} {r['seconds_per_update']:9.2f} {r['seconds_per_update'] / n:9.2f} {r['passes_per_update']:14.1f} "
            f"{r['passes_per_update'] / n:14.1f} {r['peak_memory_gb']:8.2f}"
        )
    for method in args.methods.split(","):
        ref, ours = rows[f"reference-{method}"], rows[f"unsee-{method}"]
        per_update = ours["seconds_per_update"] / ref["seconds_per_update"]
        per_latent = per_update / ours["latents_per_update"]
        print(
            f"{method}: unsee / reference seconds per update {per_update:.2f}, per trained latent {per_latent:.2f}, "
            f"peak memory {ours['peak_memory_gb'] / ref['peak_memory_gb']:.2f}"
        )


if __name__ == "__main__":
    main()
