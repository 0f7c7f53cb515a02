"""The one training loop: textual inversion, SDD, ESD and DDPO all run through `Trainer`.

A method supplies only what differs (the `Method` protocol; docs/design.md, "The shared training loop"):
- `parameters()`: the tensors that train (named, for checkpoints);
- `loss(step, micro, generator) -> (loss, logs)`: one micro-batch's loss;
- optionally `on_step_end(trainer, step)`.
The trainer owns the optimiser (AdamW), gradient accumulation, clipping, the
learning-rate schedule, an optional EMA of the trained tensors, checkpoints,
exact resume, the non-finite guard, the metrics log and the progress bar.

Randomness: every micro-step draws from a generator seeded by (seed, step,
micro, rank), so a resumed run makes exactly the draws an uninterrupted one
would, and no RNG state needs saving. Under `accelerate launch` gradients are
averaged across processes before each update, so every rank keeps the same weights.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from unsee.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from unsee.config import field
from unsee.errors import UnseeError
from unsee.files import as_json, atomic_write
from unsee.runtime import average_gradients, distributed, gather
from unsee.tracking import Preview, open_reporter

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    steps: int = field(500, help="Optimiser updates.")
    lr: float = field(1e-4, help="Peak learning rate (AdamW).")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    grad_clip: float = field(1.0, help="Clip the gradient norm to this (0 disables).")
    accumulation: int = field(1, help="Micro-batches per update (gradient accumulation).")
    lr_schedule: Literal["constant", "cosine"] = field("constant", help="constant, or cosine decay to 10% of --lr.")
    warmup: int = field(0, help="Linear warm-up updates.")
    ema_decay: float | None = field(None, help="Keep an EMA of the trained tensors with this decay (SDD's teacher).")
    checkpoint_every: int = field(100, help="Checkpoint interval in updates (0: only at the end).")
    log_every: int = field(10, help="Metrics-log interval in updates.")
    seed: int = field(0, help="Seed of every random draw of the run.")
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        "no", help="Forward passes under autocast in this dtype; fp16 scales the loss (a GradScaler)."
    )
    optimizer: Literal["adamw", "adamw8bit"] = field("adamw", help="AdamW, or bitsandbytes' 8-bit AdamW (CUDA only).")
    report_to: Literal["none", "tensorboard", "wandb"] = field("none", help="Also send the log rows to this tracker.")
    sample_every: int = field(0, help="Send preview images to the tracker every this many updates (0: never).")

    def __post_init__(self) -> None:
        for name in ("steps", "accumulation"):
            if getattr(self, name) < 1:
                raise UnseeError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UnseeError(f"--lr must be > 0, got {self.lr}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise UnseeError(f"--ema-decay must be in (0, 1), got {self.ema_decay}")


@dataclasses.dataclass(kw_only=True)
class MemoryLevers:
    """Memory and speed levers every training command offers, as diffusers' training scripts do."""

    HELP_GROUPS = {  # sections of --help
        "Memory": ("mixed_precision", "gradient_checkpointing", "optimizer"),
    }

    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        "no",
        help="Frozen weights in this dtype and forward passes under autocast; the trained tensors stay fp32 "
        "master weights. On a GPU pick bf16 (Ampere or newer) or fp16 (older cards: the loss is scaled, and a step "
        "whose gradients overflow is skipped and counted); keep no on a CPU.",
    )
    gradient_checkpointing: bool = field(
        False,
        help="Recompute the UNet's (and a trained text encoder's) activations "
        "in the backward pass instead of storing them: less memory, ~30% "
        "more compute per update.",
    )
    optimizer: Literal["adamw", "adamw8bit"] = field(
        "adamw",
        help="adamw8bit: bitsandbytes' 8-bit AdamW, optimizer state in a quarter of the memory (CUDA only; "
        "pip install bitsandbytes).",
    )

    @property
    def weights_dtype(self) -> str:
        """The dtype the frozen weights load in (`unsee.models.load_pipeline(dtype=...)`)."""
        return {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}[self.mixed_precision]


@dataclasses.dataclass(kw_only=True)
class TrainingLevers(MemoryLevers):
    """The memory levers, and a tracker beside train_log.csv, for the commands on the shared training loop."""

    HELP_GROUPS = {  # sections of --help
        "Tracking": ("report_to", "sample_every"),
    }

    report_to: Literal["none", "tensorboard", "wandb"] = field(
        "none",
        help="Send the training log (loss, learning rate, the method's metrics) to TensorBoard (event files "
        "under OUT/logs, offline) or Weights & Biases, as well as to train_log.csv.",
    )
    sample_every: int = field(
        0,
        help="With --report-to: every this many updates, send a few images the model draws "
        "from fixed seeds (0: none). Each preview costs one sampling run per prompt.",
    )

    def lever_settings(self) -> dict[str, Any]:
        """The levers as `TrainConfig` keyword arguments."""
        return {
            "mixed_precision": self.mixed_precision,
            "optimizer": self.optimizer,
            "report_to": self.report_to,
            "sample_every": self.sample_every,
        }


def fp32_master(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.nn.Parameter]:
    """Keep the trained tensors in fp32 inside a model whose frozen weights are fp16 or bf16 (mixed precision)."""
    with torch.no_grad():
        for p in params.values():
            if p.dtype != torch.float32:
                p.data = p.data.float()
    return params


def autocast(device: torch.device, mixed_precision: str) -> contextlib.AbstractContextManager:
    """Autocast to the mixed-precision dtype on `device`, or nothing for 'no'."""
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.float16 if mixed_precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(
    kind: str, params: list, device: torch.device, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW, whose kernels run only on CUDA; `params` may be parameter groups."""
    if kind == "adamw8bit":
        if device.type != "cuda":
            raise UnseeError(
                f"--optimizer adamw8bit runs only on a CUDA GPU, not on {device.type}; use --optimizer adamw"
            )
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UnseeError(
                "--optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes); use --optimizer adamw"
            ) from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def apply_update(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    params: list[torch.nn.Parameter],
    grad_clip: float,
) -> tuple[bool, float | None]:
    """Unscale (fp16), clip, and step unless a gradient is not finite; returns (finite, gradient norm before clipping).

    A non-finite step is never applied: the scaler skips it (and lowers its scale), and without a scaler it is
    skipped here. The caller counts it.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients
    norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if grad_clip > 0 else None
    # one device sync for all tensors; the norm alone would not do, since large finite gradients overflow it
    finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    elif finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return finite, norm


class Method(Protocol):
    def parameters(self) -> dict[str, torch.nn.Parameter]: ...

    def loss(self, step: int, micro: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclasses.dataclass
class TrainResult:
    steps: int
    resumed_from: int
    seconds: float
    last_logs: dict[str, float]
    digest: str = ""  # of the trained (and EMA) tensors; equal on every rank, checked at the end
    skipped_steps: int = 0  # updates not applied because a gradient was not finite


def step_generator(seed: int, step: int, micro: int, rank: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator whose draws depend only on (seed, step, micro, rank)."""
    h = hashlib.blake2b(f"{seed}/{step}/{micro}/{rank}".encode(), digest_size=8).digest()
    return torch.Generator(device).manual_seed(int.from_bytes(h, "little") & ((1 << 63) - 1))


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors' fp32 bytes: equal weights, equal digest."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def swapped(params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily load `values` into `params` (an EMA teacher, a frozen original), restoring them after."""
    saved = {k: p.detach().clone() for k, p in params.items()}
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(values[k])
    try:
        yield
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])


@contextlib.contextmanager
def original_weights(
    unet: torch.nn.Module, params: dict[str, torch.nn.Parameter], original: dict[str, torch.Tensor] | None
) -> Iterator[None]:
    """The model as it was before training: `original` swapped into `params`, or, when there is no copy
    (LoRA: the base weights never change), the LoRA adapters switched off."""
    if original is None:
        unet.disable_adapters()
        try:
            yield
        finally:
            unet.enable_adapters()
    else:
        with swapped(params, original):
            yield


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV log's header and rows, without the values some old logs wrote past their header."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: v for k, v in r.items() if k is not None} for r in reader]
        return list(reader.fieldnames or []), rows


def _rewrite_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row to a CSV log, writing the header when the file is new. A row with a column the file lacks (a
    term that starts part-way through a run) rewrites the file with that column added, empty in the earlier rows."""
    row = {k: v for k, v in row.items() if k is not None}  # a value past a short header, read back from an old log
    header: list[str] = []
    if path.exists():
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    if header and not set(row) <= set(header):
        header, rows = _read_csv(path)
        header += [k for k in row if k not in header]
        _rewrite_csv(path, header, rows)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header or list(row), extrasaction="ignore")
        if not header:
            w.writeheader()
        w.writerow(row)


def keep_csv_rows(path: Path, keep) -> None:
    """Rewrite a CSV log with only the rows `keep(row)` accepts (on resume: drop what came after the checkpoint)."""
    header, rows = _read_csv(path)
    rows = [r for r in rows if keep(r)]
    if rows:
        _rewrite_csv(path, header, rows)
    else:
        path.unlink()


# Settings a rerun may change and still resume: a longer run, another checkpoint interval, device, progress bar, or
# gradient checkpointing (it recomputes the same activations).
RESUME_MAY_CHANGE = frozenset(
    {"steps", "epochs", "checkpoint_every", "device", "out", "gradient_checkpointing", "report_to", "sample_every"}
)


class RunSettings(dict):
    """The settings a resumed run must share, with each one's default: a checkpoint written before a setting existed
    resumes when the setting is at its default, which is what that run used."""

    def __init__(self, values: dict[str, Any], defaults: dict[str, Any]):
        super().__init__(values)
        self.defaults = defaults


def run_settings(cfg: Any) -> RunSettings:
    """A command's dataclass config as the settings a resumed run must share (`Trainer(settings=...)`)."""
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cfg)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    return RunSettings({k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_MAY_CHANGE}, defaults)


class Trainer:
    def __init__(
        self,
        method: Method,
        cfg: TrainConfig,
        out: str | Path,
        *,
        progress: bool = True,
        device: str | torch.device = "cpu",
        settings: dict[str, Any] | None = None,
        preview: Preview | None = None,
        run_name: str = "train",
    ):
        from unsee.runtime import process_state

        self.method, self.cfg, self.out = method, cfg, Path(out)
        self.preview, self.run_name = preview, run_name
        if cfg.sample_every < 0:
            raise UnseeError(f"--sample-every must be >= 0, got {cfg.sample_every}")
        # the command's settings, kept in each checkpoint: a rerun with other ones is refused, not silently mixed
        self.settings = as_json(settings) if settings is not None else None
        self.settings_defaults = as_json(getattr(settings, "defaults", {}))
        self.state = process_state()
        self.device = torch.device(device)
        self.params = method.parameters()
        if not self.params:
            raise UnseeError("the method has no trainable parameters")
        for p in self.params.values():
            if p.dtype != torch.float32:  # train in fp32 whatever the frozen weights' dtype (fp32_master)
                raise UnseeError(
                    f"trainable tensors must be float32, got {p.dtype}; keep them as fp32 master weights "
                    "(unsee.trainer.fp32_master) or load the model in fp32"
                )
        self.optimizer = make_optimizer(
            cfg.optimizer, list(self.params.values()), self.device, lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.mixed_precision == "fp16" else None
        self.skipped = 0  # updates skipped because a gradient was not finite (fp16 overflow)
        self.ema = {k: p.detach().clone() for k, p in self.params.items()} if cfg.ema_decay else None
        self.progress = progress
        self.ckpt = self.out / "checkpoint"
        self.step = 0

    # ------------------------------------------------------------ helpers for methods
    def ema_weights(self) -> contextlib.AbstractContextManager[None]:
        """Temporarily put the EMA tensors in place of the trained ones (SDD samples with its EMA teacher)."""
        return swapped(self.params, self.ema) if self.ema is not None else contextlib.nullcontext()

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        if cfg.lr_schedule == "cosine":
            p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))
        return cfg.lr

    # ------------------------------------------------------------ checkpoints
    def save(self, folder: Path | None = None) -> None:
        tensors = {f"param.{k}": p for k, p in self.params.items()}
        if self.ema is not None:
            tensors |= {f"ema.{k}": v for k, v in self.ema.items()}
        meta: dict[str, Any] = {"step": self.step, "skipped_steps": self.skipped}
        if self.scaler is not None:
            meta["grad_scaler"] = self.scaler.state_dict()
        if self.settings is not None:
            meta["settings"] = self.settings
        if hasattr(self.method, "state_dict"):  # a method's own state (DDPO's reward buffers), JSON only
            meta["method"] = self.method.state_dict()
        if self.state.is_main_process:
            save_checkpoint(folder or self.ckpt, tensors, optimizer=self.optimizer, meta=meta)
        self.state.wait_for_everyone()

    def resume(self) -> int:
        if not has_checkpoint(self.ckpt):
            return 0
        tensors, meta = load_checkpoint(self.ckpt, optimizer=self.optimizer, restore_rng=False)
        if self.settings is not None and "settings" in meta:  # checkpoints from before settings were kept: no check
            # a setting added since that run is missing from its checkpoint: it ran at the default
            old = {k: v for k, v in self.settings_defaults.items() if k in self.settings} | meta["settings"]
            if diff := sorted(k for k in old.keys() | self.settings.keys() if old.get(k) != self.settings.get(k)):
                k = diff[0]
                raise UnseeError(
                    f"{self.out} holds a run made with other settings ({k}: {old.get(k)!r} there, "
                    f"{self.settings.get(k)!r} now{f'; {len(diff) - 1} more' if len(diff) > 1 else ''}); "
                    "rerun with the same settings to resume, or give a new --out"
                )
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(tensors[f"param.{k}"])
            if self.ema is not None:
                self.ema = {k: tensors[f"ema.{k}"].to(self.device) for k in self.params}
        for st in self.optimizer.state.values():  # optimizer tensors back on the training device
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":
                    st[k] = v.to(self.device)
        self.step = int(meta["step"])
        self.skipped = int(meta.get("skipped_steps", 0))
        if self.scaler is not None and "grad_scaler" in meta:
            self.scaler.load_state_dict(meta["grad_scaler"])
        if "method" in meta and hasattr(self.method, "load_state_dict"):
            self.method.load_state_dict(meta["method"])
        if hasattr(self.method, "on_resume"):
            self.method.on_resume(self, self.step)
        logger.info("resumed from %s at step %d", self.ckpt, self.step)
        return self.step

    # ------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, dist = self.cfg, distributed()
        self.out.mkdir(parents=True, exist_ok=True)
        start = self.resume()
        log_path = self.out / "train_log.csv"
        if start and log_path.exists() and self.state.is_main_process:  # drop rows logged after the checkpoint
            keep_csv_rows(log_path, lambda r: int(r["step"]) <= start)
        reporter = open_reporter(cfg.report_to, self.out, self.run_name, self.settings)
        t0, logs = time.time(), {}
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            desc="train",
            unit="step",
            disable=not (self.progress and self.state.is_local_main_process),
        )
        while self.step < cfg.steps:
            step = self.step
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr_at(step)
            logs = self._accumulate(step)
            average_gradients(dist, self.params.values())
            self._update(step, logs)
            self.step += 1
            if hasattr(self.method, "on_step_end"):
                self.method.on_step_end(self, self.step)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            self._report(reporter, log_path, step, logs)
            # The end too: a rerun asking for more steps (a longer run) continues from there, not from the last interval.
            if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                self.save()
        bar.close()
        if reporter is not None:
            reporter.finish()
        return TrainResult(cfg.steps, start, time.time() - t0, logs, self._check_ranks_agree(), self.skipped)

    def _accumulate(self, step: int) -> dict[str, float]:
        """Forward and backward over the step's micro-batches; returns the step's mean loss and method logs."""
        cfg, sums = self.cfg, {}
        for micro in range(cfg.accumulation):
            gen = step_generator(cfg.seed, step, micro, self.state.process_index)
            with autocast(self.device, cfg.mixed_precision):
                loss, info = self.method.loss(step, micro, gen)
            loss = loss.float()
            if not torch.isfinite(loss):
                where = f"; the last good checkpoint is {self.ckpt}" if has_checkpoint(self.ckpt) else ""
                raise UnseeError(
                    f"the loss became {loss.item()} at step {step}: training stopped (try a lower --lr){where}"
                )
            scaled = loss / cfg.accumulation
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            for k, v in {"loss": float(loss.detach()), **info}.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.accumulation
        return sums

    def _update(self, step: int, logs: dict[str, float]) -> None:
        """Apply the step's gradients (or skip them when not finite) and move the EMA; adds to `logs`."""
        cfg = self.cfg
        finite, norm = apply_update(self.optimizer, self.scaler, list(self.params.values()), cfg.grad_clip)
        if norm is not None:
            logs["grad_norm"] = norm
        if not finite:  # never applied, and counted: the log and the result say how many
            self.skipped += 1
            logger.warning("step %d: a gradient was not finite; the update was skipped (%d so far)", step, self.skipped)
        if self.scaler is not None or self.skipped:
            logs["skipped_steps"] = float(self.skipped)
        if self.ema is not None and finite:
            with torch.no_grad():
                for k, p in self.params.items():
                    self.ema[k].lerp_(p.detach(), 1 - cfg.ema_decay)

    def _report(self, reporter, log_path: Path, step: int, logs: dict[str, float]) -> None:
        """The CSV log and the tracker on their intervals (main process only), preview images on theirs."""
        cfg = self.cfg
        if self.state.is_main_process and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
            append_csv_row(log_path, {"step": self.step, "lr": self.lr_at(step), **logs})
            if reporter is not None:
                reporter.log({"lr": self.lr_at(step), **logs}, self.step)
        if (
            reporter is not None
            and self.preview is not None
            and cfg.sample_every
            and (self.step % cfg.sample_every == 0 or self.step == cfg.steps)
        ):
            reporter.log_images(self.preview(), self.step)

    def digest(self) -> str:
        return weights_digest(
            {f"param.{k}": p for k, p in self.params.items()} | {f"ema.{k}": v for k, v in (self.ema or {}).items()}
        )

    def _check_ranks_agree(self) -> str:
        """Data parallelism keeps every rank's weights equal; a difference means a rank skipped an update."""
        mine = self.digest()
        everyone = gather(mine)
        if len(set(everyone)) != 1:
            raise UnseeError(
                f"the {len(everyone)} processes ended with different weights ({everyone}); rerun single-process "
                "and report this as a bug"
            )
        return mine
