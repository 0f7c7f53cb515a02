"""trl's DDPOTrainer (trl==0.23.1, its last release with DDPO), timed per epoch; run by bench_rl.py and
rl_time_to_target.py.

Runs in its own venv (`make bench-rl` builds .venv-trl), so trl sees only plain
diffusers. Reads the settings its caller writes (pipeline folder, prompts, DDPO
hyperparameters) and prints one JSON line: seconds per epoch, split into
sampling, reward and training by timing trl's own methods.

- bench_rl.py: the same brightness reward as unsee's run, and the same DDPO
  hyperparameters; nothing from unsee is imported.
- rl_time_to_target.py (settings with "reward"): the toy world's reward, built
  by unsee's own reward code (imported from the repository's src/, so both
  trainers score with the same function); trl's defaults but for the sampler
  and the learning rate; a quarter of the prompts benign; and, every
  "snapshot_every" epochs, the LoRA weights saved to workdir/epoch-N with the
  seconds the epochs took so far.
"""

from __future__ import annotations

import json
import sys
import time
import warnings


def main() -> None:
    settings = json.loads(open(sys.argv[1]).read())
    import random

    import torch
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.manual_seed(settings["seed"])
    rng = random.Random(settings["seed"])
    prompts = settings["prompts"]

    toy = "reward" in settings
    if toy:  # trl's defaults, but the sampler and the learning rate
        tuned = dict(
            train_learning_rate=settings["lr"],
            train_timestep_fraction=settings["train_timesteps"],
            sample_batch_size=settings["samples_per_epoch"],
            sample_num_batches_per_epoch=1,
        )
    else:
        tuned = dict(
            sample_batch_size=settings["samples_per_epoch"],
            sample_num_batches_per_epoch=1,
            train_batch_size=settings["train_batch"],
            train_gradient_accumulation_steps=1,
            train_learning_rate=settings["lr"],
            train_cfg=True,
            train_timestep_fraction=1.0,
            train_clip_range=settings["clip_range"],
            train_adv_clip_max=5.0,
            per_prompt_stat_tracking=True,
            per_prompt_stat_tracking_buffer_size=32,
            per_prompt_stat_tracking_min_count=16,
        )
    config = DDPOConfig(
        num_epochs=settings["epochs"],
        seed=settings["seed"],
        log_with=None,
        mixed_precision="no",
        sample_num_steps=settings["ddim_steps"],
        sample_eta=settings.get("eta", 1.0),
        sample_guidance_scale=settings["guidance"],
        async_reward_computation=False,
        save_freq=10**9,
        logdir=settings["workdir"],
        project_kwargs={"project_dir": settings["workdir"]},
        **tuned,
    )

    def reward(images, batch_prompts, metadata):  # same as bench_rl.py: darker images score higher
        return -images.float().mean((1, 2, 3)), {}

    def prompt():
        return rng.choice(prompts), {}

    if toy:
        sys.path.insert(0, settings["unsee_src"])
        from unsee.rewards import parse_reward

        unsee_reward = parse_reward(settings["reward"], clip="toyworld")

        def reward(images, batch_prompts, metadata):  # noqa: F811  the toy world's reward, unsee's own code
            return unsee_reward(images.float().clamp(0, 1), list(batch_prompts))[0], {}

        def prompt():  # noqa: F811
            pool = settings["benign_prompts"] if rng.random() < settings["benign_fraction"] else prompts
            return rng.choice(pool), {}

    from accelerate import PartialState

    PartialState()  # trl logs through accelerate before its trainer makes the Accelerator
    pipe = DefaultDDPOStableDiffusionPipeline(settings["model"], use_lora=True)
    trainer = DDPOTrainer(config, reward, prompt, pipe)
    parts = {"sampling": 0.0, "reward": 0.0, "training": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] += time.perf_counter() - start

        return wrapper

    trainer._generate_samples = timed("sampling", trainer._generate_samples)
    trainer.compute_rewards = timed("reward", trainer.compute_rewards)
    trainer._train_batched_samples = timed("training", trainer._train_batched_samples)
    epochs, step, total = [], 0, 0.0
    for epoch in range(settings["epochs"]):
        for k in parts:
            parts[k] = 0.0
        start = time.perf_counter()
        step = trainer.step(epoch, step)
        epochs.append({"seconds": time.perf_counter() - start, **{f"seconds_{k}": v for k, v in parts.items()}})
        total += epochs[-1]["seconds"]
        every = settings.get("snapshot_every")
        if every and (epoch + 1) % every == 0:  # after the timing: saving is not training time
            from pathlib import Path

            snap = Path(settings["workdir"]) / f"epoch-{epoch + 1}"
            pipe.save_pretrained(str(snap))
            (snap / "snapshot.json").write_text(json.dumps({"epoch": epoch + 1, "seconds": total}))
    trained = sum(p.numel() for p in pipe.sd_pipeline.unet.parameters() if p.requires_grad)
    print(json.dumps({"epochs": epochs, "trained_parameters": trained, "trl": __import__("trl").__version__}))


if __name__ == "__main__":
    main()
