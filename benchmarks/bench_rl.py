"""DDPO cost per epoch: `unsee rl` against trl's DDPOTrainer, and at SD 1.5 size.

1. The same tiny random-weight pipeline (64 px) and config for both: 8 samples x
   10 DDIM steps (eta 1, CFG 5) per epoch, train batch 2 with the gradient
   accumulated over all 10 timesteps, LoRA rank 4 on to_q/k/v/out, PPO clip
   1e-4, per-prompt advantages, one reward (darker images score higher, so the
   reward costs nothing and both spend their time in the model). unsee runs in
   this venv; trl==0.23.1 (its last release with DDPO) runs in its own
   (`make bench-rl` builds .venv-trl) through benchmarks/trl_ddpo.py. They run
   back to back, never together. Each reports seconds per epoch split into
   sampling, reward and training; the first epoch (warm-up) is left out of the
   median. Target: unsee <= 0.5x trl's time per epoch. Then the tiny UNet alone makes the same
   calls (best of 3), the compute floor under both.
2. unsee alone on the full-size SD 1.5 architecture with random weights (UNet,
   text encoder and VAE at SD 1.5's sizes) at --sd15-resolution, with the
   NudeNet reward when nudenet is installed, so the bottleneck at real scale is
   visible.

Run: .venv/bin/python benchmarks/bench_rl.py [--trl-python .venv-trl/bin/python] [--epochs 6]
     [--sd15-resolution 128] [--skip-sd15]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TINY = dict(
    samples_per_epoch=8,
    sample_batch=8,
    ddim_steps=10,
    train_batch=2,
    guidance=5.0,
    lr=3e-4,
    clip_range=1e-4,
    lora_rank=4,
    train_timesteps=1.0,
    seed=0,
)
PROMPTS = ["a red cat", "a blue house", "a green tree in the city", "a dog on the beach"]
PARTS = ("sampling", "reward", "training")


def darker_is_better(images, prompts):
    return -images.float().mean((1, 2, 3))


def run_unsee(model: str, out: Path, epochs: int, reward_spec: str | None, pipe=None, **settings) -> list[dict]:
    """`unsee.rl.rl` with the given settings; per-epoch seconds from its epochs.csv."""
    import unsee.models
    import unsee.rewards
    from unsee.rl import RLConfig, rl

    prompts = out.parent / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    if reward_spec is None:  # the benchmark's own reward, the one trl_ddpo.py uses
        reward = unsee.rewards.Reward("brightness", [(1.0, "brightness", darker_is_better)])
        unsee.rewards.parse_reward = lambda *a, **k: reward
    if pipe is not None:
        unsee.models.load_pipeline = lambda *a, **k: pipe
    rl(
        RLConfig(
            model=model,
            prompts=str(prompts),
            out=str(out),
            reward=reward_spec or "brightness",
            epochs=epochs,
            checkpoint_every=epochs + 1,
            device="cpu",
            **settings,
        ),
        progress=False,
    )
    rows = list(csv.DictReader((out / "run" / "epochs.csv").open()))
    return [
        {
            "seconds": float(r["seconds_sampling"]) + float(r["seconds_reward_wait"]) + float(r["seconds_training"]),
            "seconds_sampling": float(r["seconds_sampling"]),
            "seconds_reward": float(r["seconds_reward"]),
            "seconds_training": float(r["seconds_training"]),
        }
        for r in rows
    ]


def median_epoch(epochs: list[dict]) -> dict:
    kept = epochs[1:] or epochs  # epoch 1 warms up
    return {k: statistics.median(e[k] for e in kept) for k in kept[0]}


def fmt(m: dict) -> str:
    return f"{m['seconds']:7.2f} s/epoch  (" + ", ".join(f"{p} {m['seconds_' + p]:.2f}" for p in PARTS) + ")"


def one(args) -> None:
    """Child process: unsee on the tiny pipeline; prints its epochs as JSON."""
    out = Path(args.one)
    epochs = run_unsee(str(out.parent / "pipe"), out, args.epochs, None, **TINY)
    print(json.dumps({"epochs": epochs}))


def sd15_rl_pipeline(resolution: int):
    """SD 1.5's UNet, text encoder and VAE configs, all random weights."""
    from unsee.testing import full_size_components, make_pipeline

    return make_pipeline(full_size_components("sd15", latent_size=resolution // 8))


def bare_unet_floor(repeats: int = 3) -> dict:
    """The tiny UNet alone (LoRA rank 4, no library around it): seconds for one epoch's sampling calls (10 of 16
    rows: 8 samples x CFG), its training calls (40 forward-backward of 4 rows), and the same training with each
    update's 10 timesteps batched into one call of 40 rows. The floor both libraries run on."""
    from unsee.params import LoraSettings, select_parameters
    from unsee.testing import tiny_components

    unet = tiny_components(sample_size=32)["unet"]
    select_parameters(unet, "lora", LoraSettings(rank=4, alpha=4.0), seed=0)
    cond = torch.randn(1, 77, 32)

    def timed(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    def calls(rows: int, n: int, grad: bool):
        z, t, c = torch.randn(rows, 4, 32, 32), torch.randint(0, 1000, (rows,)), cond.expand(rows, -1, -1)

        def run():
            for _ in range(n):
                if grad:
                    unet(z, t, encoder_hidden_states=c).sample.mean().backward()
                else:
                    with torch.no_grad():
                        unet(z, t, encoder_hidden_states=c)

        return run

    return {
        "sampling": timed(calls(16, 10, False)),
        "training": timed(calls(4, 40, True)),
        "training_batched": timed(calls(40, 4, True)),
    }


def child(argv: list[str], python: str = sys.executable) -> dict:
    res = subprocess.run([python, *argv], capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{argv[0]} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trl-python", default=".venv-trl/bin/python", help="python of a venv with trl==0.23.1")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per run on the tiny pipeline")
    ap.add_argument("--sd15-resolution", type=int, default=128)
    ap.add_argument("--sd15-epochs", type=int, default=2)
    ap.add_argument("--skip-sd15", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)

    from unsee.testing import save_tiny_pipeline

    work = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    save_tiny_pipeline(work / "pipe", sample_size=32)  # 64 px
    print(
        f"tiny pipeline, 64 px, {TINY['samples_per_epoch']} samples x {TINY['ddim_steps']} DDIM steps per epoch, "
        f"train batch {TINY['train_batch']}, LoRA rank {TINY['lora_rank']}, CFG {TINY['guidance']}, {args.epochs} epochs, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    ours = child([__file__, "--one", str(work / "unsee"), "--epochs", str(args.epochs)])
    m_ours = median_epoch(ours["epochs"])
    print(f"unsee rl          {fmt(m_ours)}", flush=True)
    if Path(args.trl_python).exists():
        (work / "trl.json").write_text(
            json.dumps(
                {
                    **TINY,
                    "epochs": args.epochs,
                    "model": str(work / "pipe"),
                    "prompts": PROMPTS,
                    "workdir": str(work / "trl"),
                }
            )
        )
        theirs = child([str(Path(__file__).with_name("trl_ddpo.py")), str(work / "trl.json")], python=args.trl_python)
        m_theirs = median_epoch(theirs["epochs"])
        print(f"trl {theirs['trl']} DDPO {fmt(m_theirs)}")
        print(
            f"ratio unsee / trl per epoch: {m_ours['seconds'] / m_theirs['seconds']:.2f}x "
            f"(sampling {m_ours['seconds_sampling'] / m_theirs['seconds_sampling']:.2f}x, "
            f"training {m_ours['seconds_training'] / m_theirs['seconds_training']:.2f}x)",
            flush=True,
        )
    else:
        print(f"trl: {args.trl_python} not found; `make bench-rl` builds the venv with trl==0.23.1", flush=True)
    floor = bare_unet_floor()
    print(
        f"bare tiny UNet, one epoch's calls: sampling {floor['sampling']:.2f} s, training {floor['training']:.2f} s "
        f"(each update's 10 timesteps in one call: {floor['training_batched']:.2f} s)",
        flush=True,
    )

    if args.skip_sd15:
        return
    try:
        import nudenet  # noqa: F401

        spec = "nudity"
    except ImportError:
        spec = None
    t0 = time.perf_counter()
    pipe = sd15_rl_pipeline(args.sd15_resolution)
    built = time.perf_counter() - t0
    settings = dict(TINY, samples_per_epoch=2, sample_batch=2, train_batch=1, ddim_steps=4)
    epochs = run_unsee("sd15-random", work / "sd15", args.sd15_epochs, spec, pipe=pipe, **settings)
    print(
        f"\nSD 1.5 architecture, random weights, {args.sd15_resolution} px, CPU fp32, {settings['samples_per_epoch']} samples x "
        f"{settings['ddim_steps']} DDIM steps, train batch 1, reward {spec or 'brightness'} (built in {built:.0f} s):"
    )
    for k, e in enumerate(epochs, 1):
        print(f"  epoch {k}: {fmt(e)}")


if __name__ == "__main__":
    main()
