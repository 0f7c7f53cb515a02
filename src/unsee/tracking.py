"""Experiment trackers beside `train_log.csv`: TensorBoard or Weights & Biases through accelerate's trackers.

Every training command takes `--report-to none|tensorboard|wandb`. The CSV log is
always written; a tracker receives the same rows (loss, learning rate and each
method's own metrics) and, every `--sample-every` updates, a few images the model
draws at that point from fixed seeds, so a run can be watched while it trains.
TensorBoard writes event files under `<out>/logs` and needs no network; wandb
follows its own settings (`WANDB_MODE=offline` keeps it off the network).
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsee.errors import UnseeError

REPORT_TO = ("none", "tensorboard", "wandb")
_PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb"}

Preview = Callable[[], dict[str, np.ndarray]]


def _scalar(v: Any) -> bool | int | float | str:
    return v if isinstance(v, bool | int | float | str) else str(v)


class Reporter:
    """One accelerate tracker, opened on the main process only; `log` and `log_images` are no-ops elsewhere."""

    def __init__(self, report_to: str, out: str | Path, run_name: str, config: dict[str, Any] | None = None):
        if report_to not in REPORT_TO:
            raise UnseeError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
        package = _PACKAGE[report_to]
        if importlib.util.find_spec(package) is None:
            raise UnseeError(
                f"--report-to {report_to} needs the {package} package (pip install {package}, "
                "or pip install 'unsee[track]' for tensorboard); or use --report-to none"
            )
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        self.kind = report_to
        self.logging_dir = Path(out) / "logs"
        if report_to == "tensorboard":
            self.tracker = TensorBoardTracker(run_name, self.logging_dir)
        else:
            self.tracker = WandBTracker(run_name, dir=str(Path(out)))
        self.tracker.start()
        if config:
            flat = {k: _scalar(v) for k, v in config.items() if v is not None}
            self.tracker.store_init_configuration(flat)

    def log(self, values: dict[str, float], step: int) -> None:
        self.tracker.log({k: float(v) for k, v in values.items()}, step=step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        """`images`: name -> uint8 (N, H, W, 3)."""
        if self.kind == "tensorboard":
            self.tracker.log_images(images, step=step, dataformats="NHWC")
        else:
            self.tracker.log_images({k: list(v) for k, v in images.items()}, step=step)

    def finish(self) -> None:
        self.tracker.finish()


def open_reporter(
    report_to: str, out: str | Path, run_name: str, config: dict[str, Any] | None = None
) -> Reporter | None:
    """A Reporter, or None for `--report-to none`; only the main process opens one."""
    if report_to == "none":
        return None
    from unsee.runtime import process_state

    if not process_state().is_main_process:
        return None
    return Reporter(report_to, out, run_name, config)


def preview(
    pipe, prompts: Sequence[str], *, seed: int = 0, steps: int = 20, guidance: float = 7.5, mixed_precision: str = "no"
) -> Preview:
    """A function that draws one image per prompt with the pipeline's current weights, from fixed seeds.

    The scheduler is copied so a trainer that keeps its own timesteps on the pipeline's
    scheduler is not disturbed, and no global random state is consumed: the previews
    leave a run's weights, and so its digest, exactly as they were.
    """
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents, to_uint8
    from unsee.trainer import autocast

    prompts = list(prompts)

    def draw() -> dict[str, np.ndarray]:
        native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        scheduler = pipe.scheduler
        pipe.scheduler = copy.deepcopy(scheduler)
        device = pipe.unet.device
        try:  # a stochastic scheduler's noise must not move the run's own random stream
            with (
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
                torch.no_grad(),
                autocast(device, mixed_precision),
            ):
                cond = encode_text(pipe, prompts)
                uncond = encode_text(pipe, [""]).expand(len(prompts), -1, -1)
                z = initial_latents(pipe, [seed + i for i in range(len(prompts))], native, native)
                g = torch.full((len(prompts),), guidance, device=cond.device)
                images = to_uint8(decode(pipe, sample_latents(pipe, cond, uncond, z, g, steps)))
        finally:
            pipe.scheduler = scheduler
        return {"samples": images}

    return draw
