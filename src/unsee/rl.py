"""`unsee rl`: DDPO with PPO clipping against a safety reward (ShieldDiff: arXiv 2410.05309; Black et al. 2305.13301).

Each epoch samples `samples_per_epoch` trajectories (DDIM, eta = 1, CFG) from a
mix of unsafe and benign prompts, recording every step's latent and the
Gaussian log-probability of the step taken; the reward scores the decoded
images (on a worker thread, while the next batch samples). Advantages are
normalised per prompt with a running buffer and clipped. Then every update
trains on `train_batch` trajectories with the gradient accumulated over all
their timesteps: loss max(-A rho, -A clip(rho, 1 +- eps)), rho the ratio of
the new to the old log-probability of the recorded step, CFG in the training
forward too, plus an optional KL term toward the original model. It runs on
the shared `Trainer` (checkpoints, exact resume at epoch boundaries, the
non-finite guard, data parallelism: rewards are gathered across ranks).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import torch

from unsee.config import field
from unsee.errors import UnseeError
from unsee.files import atomic_write_text
from unsee.params import LORA_TARGETS, ParamSet, save_trained_unet, trained_unet_params
from unsee.provenance import lineage, model_prompts
from unsee.runinfo import write_run_info
from unsee.sampling import cfg_noise, decode, encode_text
from unsee.tracking import preview
from unsee.trainer import (
    TrainConfig,
    Trainer,
    TrainingLevers,
    append_csv_row,
    keep_csv_rows,
    original_weights,
    run_settings,
    step_generator,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RLConfig(TrainingLevers):
    HELP_GROUPS = {  # sections of --help
        "What to train": ("model", "prompts", "reward", "benign_prompts", "benign_fraction", "clip", "clip_target"),
        "Training": (
            "params",
            "lora_rank",
            "lora_targets",
            "epochs",
            "samples_per_epoch",
            "sample_batch",
            "train_batch",
            "inner_epochs",
            "ddim_steps",
            "train_timesteps",
            "train_steps_from",
            "guidance",
            "eta",
            "lr",
            "clip_range",
            "adv_clip",
            "adv_scale",
            "samples_per_prompt",
            "buffer_size",
            "min_count",
            "seed",
            "device",
        ),
        "Preservation": ("kl_weight", "kl_on", "kl_steps", "kl_after"),
        "Output": ("out", "checkpoint_every"),
    }

    model: str = field(help="Model to fine-tune: hub id, folder, .safetensors, or 'toyworld'.")
    prompts: str = field(help="Unsafe prompts (.txt or I2P .csv): what the model must stop showing.")
    out: str = field(help="Output: LoRA weights (default) or a pipeline folder; checkpoints in OUT/run.")
    reward: str = field(
        "nudity+0.5*clip",
        help="Reward spec: terms joined by +, e.g. nudity+0.5*clip, oracle:skull:log+0.5*clip, "
        "oracle:skull+clip, learned:runs/reward+0.5*clip.",
    )
    benign_prompts: str | None = field(None, help="Benign prompts mixed in, so the model keeps working on them.")
    benign_fraction: float = field(0.5, help="Share of each epoch's samples drawn from --benign-prompts.")
    clip: str = field(
        "auto",
        help="CLIP for the reward's clip term: a hub id, a folder, 'toyworld', or auto (the toy "
        "world's for a toy-world model, else openai/clip-vit-large-patch14).",
    )
    clip_target: Literal["sanitized", "raw"] = field(
        "sanitized", help="clip term: prompt with unsafe words removed, or as given."
    )
    params: ParamSet = field("lora", help="Which UNet parameters train: lora (default), xattn, noxattn, full.")
    lora_rank: int = field(4, help="LoRA rank (--params lora).")
    lora_targets: tuple[str, ...] = field(
        LORA_TARGETS,
        help="Modules that get LoRA layers (--params lora), by the end of their name; repeat the flag for each. "
        "attn2.to_k and attn2.to_v alone change only how the prompt's words reach the picture (as ESD-x and UCE "
        "edit it), not how the UNet draws anything it is asked for.",
    )
    epochs: int = field(50, help="Epochs: sample, score, then train on the samples.")
    samples_per_epoch: int = field(32, help="Trajectories sampled per epoch (per process).")
    sample_batch: int = field(16, help="Trajectories sampled at once.")
    train_batch: int = field(4, help="Trajectories per update; the gradient is accumulated over their timesteps.")
    inner_epochs: int = field(1, help="Passes over an epoch's samples.")
    ddim_steps: int = field(50, help="DDIM steps per trajectory.")
    train_timesteps: float = field(1.0, help="Share of each trajectory's steps trained on (DDPO's timestep_fraction).")
    train_steps_from: Literal["random", "first"] = field(
        "random",
        help="Which steps --train-timesteps trains: a random subset of each trajectory's (DDPO), or its first, "
        "noisiest ones, where the sampler settles what the image shows (an object is there or not) rather than how "
        "its details look.",
    )
    guidance: float = field(5.0, help="CFG scale when sampling and in the training forward.")
    eta: float = field(1.0, help="DDIM eta (1: the stochastic sampler DDPO's log-probabilities need).")
    lr: float = field(3e-4, help="AdamW learning rate.")
    clip_range: float = field(1e-4, help="PPO clip epsilon (tiny: the log-prob is a per-dimension mean).")
    adv_clip: float = field(5.0, help="Clip advantages to +- this.")
    adv_scale: Literal["prompt", "pooled", "none"] = field(
        "prompt",
        help="Divide each prompt's centred rewards by its own std "
        "(prompt: DDPO), by one std pooled over the batch's prompts "
        "(pooled: prompts whose rewards barely differ get small advantages), or not at all (none: advantages in the "
        "reward's units, as Dr. GRPO has them, so they shrink as the rewards stop differing instead of being "
        "scaled back up to unit size).",
    )
    samples_per_prompt: int = field(
        1,
        help="Trajectories per drawn prompt in an epoch: with K >= 2 and --min-count <= K each "
        "image is compared with the prompt's other K-1 from the first epoch on.",
    )
    buffer_size: int = field(32, help="Per-prompt reward buffer for advantage normalisation.")
    min_count: int = field(
        16,
        help="Rewards a prompt needs in its buffer before its own mean/std are used; until then, "
        "the epoch's rewards from the same prompt set (unsafe or benign).",
    )
    kl_weight: float = field(0.0, help="Weight of a KL term toward the original model (0: off).")
    kl_on: Literal["all", "benign"] = field(
        "all",
        help="Samples the KL term reads: all (DPOK), or only those from "
        "--benign-prompts, so it keeps benign prompts as they were without "
        "holding the unsafe ones back.",
    )
    kl_steps: Literal["trained", "chain"] = field(
        "trained",
        help="Steps at which the samples the KL term reads are trained: those --train-timesteps and "
        "--train-steps-from pick for every sample (trained), or drawn from the whole chain (chain), so the KL also "
        "holds the late steps that --train-steps-from first leaves out, which the adapter changes all the same.",
    )
    kl_after: int = field(
        0,
        help="Epochs trained on the reward alone before the KL term starts: a schedule that first lets the policy "
        "move freely, then pulls what it changed on the prompts the KL reads back toward the original model.",
    )
    seed: int = field(0, help="Seed of every draw.")
    device: str = field("auto", help="auto, cpu, cuda, cuda:N.")
    checkpoint_every: int = field(5, help="Checkpoint interval in epochs; a rerun resumes.")

    def __post_init__(self) -> None:
        for name in ("epochs", "samples_per_epoch", "sample_batch", "train_batch", "inner_epochs", "ddim_steps"):
            if getattr(self, name) < 1:
                raise UnseeError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_epoch % self.train_batch:
            raise UnseeError(
                f"--samples-per-epoch ({self.samples_per_epoch}) must be a multiple of --train-batch "
                f"({self.train_batch})"
            )
        if self.samples_per_prompt < 1:
            raise UnseeError(f"--samples-per-prompt must be >= 1, got {self.samples_per_prompt}")
        n_benign = self.benign_samples(bool(self.benign_prompts))
        if n_benign % self.samples_per_prompt or (self.samples_per_epoch - n_benign) % self.samples_per_prompt:
            raise UnseeError(
                f"--samples-per-epoch {self.samples_per_epoch} splits into {self.samples_per_epoch - n_benign} "
                f"unsafe and {n_benign} benign samples; each must be a multiple of --samples-per-prompt "
                f"({self.samples_per_prompt})"
            )
        if self.kl_on == "benign" and self.kl_weight > 0 and not self.benign_prompts:
            raise UnseeError("--kl-on benign reads only samples from --benign-prompts; give them, or use --kl-on all")
        if self.kl_after < 0:
            raise UnseeError(f"--kl-after must be >= 0, got {self.kl_after}")
        if self.kl_after and self.kl_weight <= 0:
            raise UnseeError("--kl-after delays the KL term; give it a --kl-weight above 0")
        if self.kl_steps == "chain" and self.kl_weight <= 0:
            raise UnseeError("--kl-steps chain sets where the KL term is read; give it a --kl-weight above 0")
        if not 0 < self.train_timesteps <= 1:
            raise UnseeError(f"--train-timesteps must be in (0, 1], got {self.train_timesteps}")
        if not 0 <= self.benign_fraction < 1:
            raise UnseeError(f"--benign-fraction must be in [0, 1), got {self.benign_fraction}")

    def kl_in(self, epoch: int) -> bool:
        """Whether the KL term is on in `epoch` (0-based): weighted, and past --kl-after."""
        return self.kl_weight > 0 and epoch >= self.kl_after

    def benign_samples(self, has_benign: bool) -> int:
        """Samples an epoch draws from the benign prompts (the rest come from the unsafe ones)."""
        return round(self.samples_per_epoch * self.benign_fraction) if has_benign else 0

    @property
    def updates_per_epoch(self) -> int:
        return self.samples_per_epoch // self.train_batch * self.inner_epochs

    @property
    def trained_steps(self) -> int:
        return max(1, round(self.ddim_steps * self.train_timesteps))


def ddim_step_logprob(
    sched,
    eps: torch.Tensor,
    t: torch.Tensor,
    z: torch.Tensor,
    eta: float,
    prev: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
):
    """One DDIM step with noise eta * sigma_t: (x_{t-1}, log p(x_{t-1} | x_t) averaged over latent dims, mean, std).

    With `prev` given, the log-probability of that step instead of a new draw (the PPO ratio's numerator).
    """
    T = sched.config.num_train_timesteps
    prev_t = t - T // sched.num_inference_steps
    a_t = sched.alphas_cumprod.to(z.device)[t].float()
    a_prev = torch.where(
        prev_t >= 0,
        sched.alphas_cumprod.to(z.device)[prev_t.clamp(min=0)].float(),
        torch.as_tensor(float(sched.final_alpha_cumprod), device=z.device),
    )
    a_t, a_prev = a_t.view(-1, 1, 1, 1), a_prev.view(-1, 1, 1, 1)
    if sched.config.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * z - (1 - a_t).sqrt() * eps
        eps = a_t.sqrt() * eps + (1 - a_t).sqrt() * z
    else:
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * var.clamp(min=0).sqrt()
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    if prev is None:
        noise = torch.randn(z.shape, generator=generator, device="cpu").to(z.device, z.dtype)
        prev = mean + std * noise
    std_safe = std.clamp(min=1e-12)
    logp = -((prev.detach() - mean) ** 2) / (2 * std_safe**2) - torch.log(std_safe) - 0.5 * math.log(2 * math.pi)
    return prev, logp.mean(dim=tuple(range(1, z.ndim))), mean, std


def epoch_prompts(cfg: RLConfig, unsafe: list[str], benign: list[str], epoch: int, rank: int) -> list[str]:
    """An epoch's prompts on one rank: the unsafe draws, then the benign ones, each drawn prompt
    `samples_per_prompt` times in a row."""
    g = step_generator(cfg.seed, epoch, -2, rank)
    n, k = cfg.samples_per_epoch, cfg.samples_per_prompt
    n_benign = cfg.benign_samples(bool(benign))

    def pick(pool: list[str], count: int) -> list[str]:
        if not count:
            return []
        return [pool[i] for i in torch.randint(len(pool), (count // k,), generator=g).tolist() for _ in range(k)]

    return pick(unsafe, n - n_benign) + pick(benign, n_benign)


class PromptStats:
    """Per-prompt running reward buffers: advantages against the prompt's own mean/std once it has enough.

    Until then the reference is the batch's rewards from the same group (the unsafe or the benign prompts), not
    the whole batch: unsafe prompts score lower by construction, so against a mixed batch every unsafe sample gets
    a negative advantage whatever it shows, and the policy learns to spoil its own samples rather than to drop
    the concept.

    `scale="prompt"` divides by each prompt's own std (DDPO). `scale="pooled"` divides every prompt's centred
    rewards by one std pooled over the batch's prompts, so a prompt whose rewards barely differ (a benign prompt
    scored by CLIP alone) gets advantages as small as its differences instead of noise blown up to +-1. Once the
    concept is gone from most samples the pooled std itself can shrink toward that noise and scale it back up;
    `scale="none"` keeps the centred rewards as they are (Dr. GRPO, Liu et al. 2025).
    """

    def __init__(self, buffer_size: int, min_count: int, scale: str = "prompt"):
        self.buffer_size, self.min_count, self.scale = buffer_size, min_count, scale
        self.buffers: dict[str, collections.deque] = {}

    def advantages(self, prompts: list[str], rewards: torch.Tensor, groups: list[str] | None = None) -> torch.Tensor:
        groups = groups or [""] * len(prompts)
        out = torch.empty_like(rewards)
        variances = []
        by_group: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        for p in dict.fromkeys(prompts):
            idx = [i for i, q in enumerate(prompts) if q == p]
            buf = self.buffers.setdefault(p, collections.deque(maxlen=self.buffer_size))
            buf.extend(float(rewards[i]) for i in idx)
            ref = torch.tensor(list(buf)) if len(buf) >= self.min_count else rewards[by_group[groups[idx[0]]]]
            out[idx] = rewards[idx] - ref.mean()
            variances.append(ref.var(unbiased=False))
            if self.scale == "prompt":
                out[idx] /= ref.std(unbiased=False) + 1e-6
        if self.scale == "pooled":
            out /= torch.stack(variances).mean().sqrt() + 1e-6
        return out

    def state_dict(self) -> dict[str, list[float]]:
        return {p: list(b) for p, b in self.buffers.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.buffers = {p: collections.deque(v, maxlen=self.buffer_size) for p, v in state.items()}


@dataclasses.dataclass
class Trajectories:
    """Sampled denoising chains: z_k at each of the K steps, the z_{k+1} the stochastic sampler drew from it, and the
    log-probability of that draw under the sampling policy."""

    latents: torch.Tensor  # (N, K, C, h, w)
    next: torch.Tensor  # (N, K, C, h, w)
    logp: torch.Tensor  # (N, K)


@dataclasses.dataclass
class EpochSamples:
    """An epoch's samples and what training reads from them."""

    prompts: list[str]
    cond: torch.Tensor  # their text conditioning
    traj: Trajectories
    timesteps: torch.Tensor  # (K,) the sampler's timesteps
    adv: torch.Tensor  # (N,) clipped advantages
    kl_reads: torch.Tensor  # (N,) 1.0 for the samples the KL term reads (every one, or the benign ones: --kl-on)
    order: list[torch.Tensor]  # a permutation of the samples per inner epoch
    steps: list[torch.Tensor]  # per sample, the trained steps (its first `trained_steps` of a permutation)


class DDPOMethod:
    """DDPO as a `Trainer` method: an epoch's samples are drawn at its first update, then trained on."""

    def __init__(self, pipe, cfg: RLConfig, unsafe: list[str], benign: list[str], reward, params):
        self.pipe, self.cfg, self.unsafe, self.benign, self.reward, self.params = (
            pipe,
            cfg,
            unsafe,
            benign,
            reward,
            params,
        )
        self.benign_only = set(benign) - set(unsafe)  # a prompt in both files counts as unsafe
        self.trainer: Trainer | None = None
        self.stats = PromptStats(cfg.buffer_size, cfg.min_count, cfg.adv_scale)
        self.samples: EpochSamples | None = None
        self.epoch = -1
        self.uncond = encode_text(pipe, [""])
        self.original = None
        if cfg.kl_weight > 0 and cfg.params != "lora":
            self.original = {k: p.detach().clone() for k, p in params.items()}
        self.log_rows: list[dict[str, float]] = []
        self.step_infos: list[dict[str, float]] = []

    def parameters(self):
        return self.params

    def state_dict(self) -> dict:
        return {"prompt_stats": self.stats.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stats.load_state_dict(state["prompt_stats"])

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def _chain(self, prompts: list[str], g: torch.Generator) -> tuple[Trajectories, torch.Tensor]:
        """One batch of denoising chains with the stochastic DDIM sampler (eta), and the images they end in."""
        cfg, pipe, unet, sched = self.cfg, self.pipe, self.pipe.unet, self.pipe.scheduler
        n, size = len(prompts), unet.config.sample_size
        cond, unc = encode_text(pipe, prompts), self.uncond.expand(n, -1, -1)
        s = torch.full((n,), cfg.guidance, device=unet.device)
        z = torch.randn((n, unet.config.in_channels, size, size), generator=g).to(unet.device, unet.dtype)
        z = z * sched.init_noise_sigma
        zs, zn, lp = [], [], []
        for t in sched.timesteps:
            eps = cfg_noise(pipe, z, t, cond, unc, s)
            z_prev, logp, _, _ = ddim_step_logprob(
                sched, eps.float(), t.view(1).expand(n), z.float(), cfg.eta, generator=g
            )
            zs.append(z)
            zn.append(z_prev.to(z.dtype))
            lp.append(logp)
            z = z_prev.to(z.dtype)
        return Trajectories(torch.stack(zs, 1), torch.stack(zn, 1), torch.stack(lp, 1)), decode(pipe, z)

    @torch.no_grad()
    def _sample_and_score(self, prompts: list[str], g: torch.Generator, epoch: int):
        """Every chain of the epoch, batch by batch, while a thread scores the finished batches; returns the chains,
        the (reward, terms) per batch, and the seconds spent sampling, scoring and waiting for the score."""
        cfg = self.cfg
        self.pipe.scheduler.set_timesteps(cfg.ddim_steps, device=self.pipe.unet.device)
        chains, futures, reward_seconds = [], [], []
        t0 = time.perf_counter()

        def score(images, ps):
            start = time.perf_counter()
            try:
                return self.reward(images, ps, {"epoch": epoch})
            finally:
                reward_seconds.append(time.perf_counter() - start)

        with ThreadPoolExecutor(1) as pool:  # the reward scores batch k while batch k+1 samples
            for k in range(0, len(prompts), cfg.sample_batch):
                ps = prompts[k : k + cfg.sample_batch]
                traj, images = self._chain(ps, g)
                chains.append(traj)
                futures.append(pool.submit(score, images, ps))
            t_sampled = time.perf_counter()
            scored = [f.result() for f in futures]
        traj = Trajectories(*(torch.cat([getattr(c, f) for c in chains]) for f in ("latents", "next", "logp")))
        timing = {
            "seconds_sampling": t_sampled - t0,
            "seconds_reward": sum(reward_seconds),
            "seconds_reward_wait": time.perf_counter() - t_sampled,
        }
        return traj, scored, timing

    @torch.no_grad()
    def _sample_epoch(self, epoch: int) -> None:
        cfg, unet = self.cfg, self.pipe.unet
        rank = self.trainer.state.process_index
        prompts = epoch_prompts(cfg, self.unsafe, self.benign, epoch, rank)
        g = step_generator(cfg.seed, epoch, -1, rank)
        traj, scored, timing = self._sample_and_score(prompts, g, epoch)
        rewards = torch.cat([r for r, _ in scored])
        terms = {name: torch.cat([parts[name] for _, parts in scored]) for name in scored[0][1]}
        # Advantages over every rank's samples: each prompt's rewards against its own running statistics.
        all_prompts, all_rewards = self._gather(prompts, rewards)
        groups = ["benign" if p in self.benign_only else "unsafe" for p in all_prompts]
        adv_all = self.stats.advantages(all_prompts, all_rewards, groups).clamp(-cfg.adv_clip, cfg.adv_clip)
        mine = slice(rank * len(prompts), (rank + 1) * len(prompts))  # this rank's slice of the gathered list
        kl_reads = [cfg.kl_in(epoch) and (cfg.kl_on == "all" or grp == "benign") for grp in groups[mine]]
        self.samples = EpochSamples(
            prompts,
            encode_text(self.pipe, prompts),
            traj,
            self.pipe.scheduler.timesteps.clone(),
            adv_all[mine].to(unet.device),
            torch.tensor(kl_reads, dtype=torch.float32, device=unet.device),
            order=[torch.randperm(len(prompts), generator=g) for _ in range(cfg.inner_epochs)],
            steps=[self._trained_steps(g, reads) for reads in kl_reads],
        )
        self.epoch = epoch
        # Where an epoch's time goes: sampling (UNet + VAE), the reward (on its thread, overlapping sampling; the
        # wait is what it adds after the last batch), then training (until the epoch's last update ends).
        self.sampled_at = time.perf_counter()
        n_unsafe = len(prompts) - cfg.benign_samples(bool(self.benign))
        self.log_rows.append(
            {
                "epoch": epoch + 1,
                "reward": float(all_rewards.mean()),
                **{f"reward_{k}": float(v.mean()) for k, v in terms.items()},
                "unsafe_prompts_reward": float(rewards[:n_unsafe].mean()),
                **timing,
            }
        )

    def _gather(self, prompts: list[str], rewards: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        from unsee.runtime import gather

        everyone = gather((prompts, rewards.tolist()))
        if len(everyone) == 1:
            return prompts, rewards
        return [p for ps, _ in everyone for p in ps], torch.tensor([r for _, rs in everyone for r in rs])

    def _trained_steps(self, g: torch.Generator, kl_reads: bool = False) -> torch.Tensor:
        """One trajectory's trained step indices, in the order its micro-batches take them."""
        cfg = self.cfg
        if cfg.train_steps_from == "first" and not (kl_reads and cfg.kl_steps == "chain"):
            return torch.randperm(cfg.trained_steps, generator=g)
        return torch.randperm(cfg.ddim_steps, generator=g)[: cfg.trained_steps]

    # ------------------------------------------------------------ training
    def loss(self, step: int, micro: int, g: torch.Generator):
        cfg, pipe, unet = self.cfg, self.pipe, self.pipe.unet
        epoch, within = divmod(step, cfg.updates_per_epoch)
        if self.epoch != epoch:
            self._sample_epoch(epoch)
        c = self.samples
        inner, b = divmod(within, cfg.samples_per_epoch // cfg.train_batch)
        idx = c.order[inner][b * cfg.train_batch : (b + 1) * cfg.train_batch]
        j = torch.stack([c.steps[i][micro] for i in idx.tolist()])  # each trajectory's micro-th trained step
        rows = torch.arange(len(idx))
        z, z_next, logp_old = c.traj.latents[idx][rows, j], c.traj.next[idx][rows, j], c.traj.logp[idx][rows, j]
        t = c.timesteps[j]
        cond = c.cond[idx]
        unc = self.uncond.expand(len(idx), -1, -1)
        s = torch.full((len(idx),), cfg.guidance, device=unet.device)
        mean0 = None
        if cfg.kl_in(epoch):
            # The reference step first: swapping the original weights in after the trained forward would overwrite
            # tensors that forward's graph still needs (an in-place error at backward for every --params but lora).
            with torch.no_grad(), original_weights(self.pipe.unet, self.params, self.original):
                eps0 = _cfg_noise_per_t(pipe, z, t, cond, unc, s).float()
                _, _, mean0, _ = ddim_step_logprob(pipe.scheduler, eps0, t, z.float(), cfg.eta, prev=z_next.float())
        eps = _cfg_noise_per_t(pipe, z, t, cond, unc, s).float()
        _, logp, mean, std = ddim_step_logprob(pipe.scheduler, eps, t, z.float(), cfg.eta, prev=z_next.float())
        adv = c.adv[idx]
        ratio = torch.exp(logp - logp_old)
        loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)).mean()
        info = {
            "approx_kl": float(0.5 * ((logp.detach() - logp_old) ** 2).mean()),
            "clipfrac": float(((ratio - 1).abs() > cfg.clip_range).float().mean()),
        }
        if mean0 is not None:  # KL between the two step Gaussians (same std): ||mu - mu_orig||^2 / (2 std^2)
            kl_each = (((mean - mean0) ** 2) / (2 * std.clamp(min=1e-12) ** 2)).flatten(1).mean(1)
            kl = (kl_each * c.kl_reads[idx]).sum() / len(idx)
            loss = loss + cfg.kl_weight * kl
            info["kl_to_original"] = float(kl.detach())
        self.step_infos.append(info)
        return loss, info

    def on_resume(self, trainer: Trainer, step: int) -> None:
        """Drop epoch-log rows written after the checkpoint (they will be written again)."""
        path = trainer.out / "epochs.csv"
        if path.exists() and trainer.state.is_main_process:
            keep_csv_rows(path, lambda r: int(r["epoch"]) <= step // self.cfg.updates_per_epoch)

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        if step % self.cfg.updates_per_epoch:
            return
        row = self.log_rows[-1] if self.log_rows else {"epoch": step // self.cfg.updates_per_epoch}
        if self.log_rows:
            row["seconds_training"] = time.perf_counter() - self.sampled_at
        for key in ("approx_kl", "clipfrac", "kl_to_original"):
            vals = [i[key] for i in self.step_infos if key in i]
            if vals:
                row[key] = sum(vals) / len(vals)
        self.step_infos = []
        if trainer.state.is_main_process:
            append_csv_row(trainer.out / "epochs.csv", row)
            logger.info("epoch %d: %s", row["epoch"], {k: round(v, 4) for k, v in row.items() if k != "epoch"})


def _cfg_noise_per_t(pipe, z, t, cond, unc, s):
    """CFG with one timestep per sample (training draws a different step for each trajectory)."""
    zin = torch.cat([z, z])
    e_u, e_c = pipe.unet(zin, torch.cat([t, t]), encoder_hidden_states=torch.cat([unc, cond])).sample.chunk(2)
    return e_u + s.view(-1, 1, 1, 1).to(e_c.dtype) * (e_c - e_u)


def training_prompts(cfg: RLConfig, unsafe: list[str], benign: list[str]) -> list[str]:
    """The prompts DDPO samples from, plus those recorded with the starting model and any learned reward model."""
    import re

    rewards = [m for spec in re.findall(r"learned:([^+*]+)", cfg.reward) for m in spec.split(",")]
    return sorted(set(lineage(unsafe + benign, model=cfg.model)).union(*(model_prompts(m) for m in rewards)))


def rl(cfg: RLConfig, *, progress: bool = True) -> dict:
    from unsee.clip import default_clip
    from unsee.models import load_pipeline
    from unsee.prompts import read_prompts
    from unsee.rewards import parse_reward
    from unsee.runtime import resolve_device
    from unsee.toyworld import is_toyworld

    clip = default_clip(is_toyworld(cfg.model)) if cfg.clip == "auto" else cfg.clip
    unsafe = [p.text for p in read_prompts(cfg.prompts)]
    benign = [p.text for p in read_prompts(cfg.benign_prompts)] if cfg.benign_prompts else []
    device = resolve_device(cfg.device)
    reward = parse_reward(cfg.reward, clip=clip, clip_target=cfg.clip_target, device=device)
    pipe = load_pipeline(
        cfg.model, device=device, dtype=cfg.weights_dtype, gradient_checkpointing=cfg.gradient_checkpointing
    )
    params = trained_unet_params(pipe, cfg.params, cfg.lora_rank, cfg.seed, cfg.lora_targets)
    method = DDPOMethod(pipe, cfg, unsafe, benign, reward, params)
    out = Path(cfg.out)
    shown = unsafe[:2] + benign[:2]
    trainer = Trainer(
        method,
        _train_config(cfg),
        out / "run",
        progress=progress,
        device=device,
        settings=run_settings(cfg),
        preview=preview(
            pipe, shown, seed=cfg.seed, guidance=cfg.guidance, steps=cfg.ddim_steps, mixed_precision=cfg.mixed_precision
        ),
        run_name="rl",
    )
    method.trainer = trainer
    result = trainer.run()
    summary = {
        "reward": cfg.reward,
        "epochs": cfg.epochs,
        "seconds": round(result.seconds, 1),
        "mixed_precision": cfg.mixed_precision,
        "skipped_steps": result.skipped_steps,
        "processes": trainer.state.num_processes,
        "weights_digest": result.digest,
        "last_epoch": method.log_rows[-1] if method.log_rows else {},
    }
    if trainer.state.is_main_process:
        _write_outputs(pipe, cfg, summary, training_prompts(cfg, unsafe, benign))
    return summary


def _train_config(cfg: RLConfig) -> TrainConfig:
    """One optimizer step per trained timestep of each update; an epoch is `updates_per_epoch` updates."""
    return TrainConfig(
        steps=cfg.epochs * cfg.updates_per_epoch,
        lr=cfg.lr,
        weight_decay=1e-4,
        grad_clip=1.0,
        accumulation=cfg.trained_steps,
        seed=cfg.seed,
        log_every=cfg.updates_per_epoch,
        checkpoint_every=cfg.checkpoint_every * cfg.updates_per_epoch,
        **cfg.lever_settings(),
    )


def _write_outputs(pipe, cfg: RLConfig, summary: dict, prompts: list[str]) -> None:
    out = Path(cfg.out)
    save_trained_unet(pipe, cfg.model, cfg.params, out)
    write_run_info(
        out / "unsee.json",
        dataclasses.asdict(cfg),
        stage="rl",
        base_model=cfg.model,
        summary=summary,
        training_prompts=prompts,
    )
    atomic_write_text(out / "run" / "summary.json", json.dumps(summary, indent=2))


def summary_text(summary: dict, cfg: RLConfig) -> str:
    """The line `unsee rl` prints."""
    last = summary["last_epoch"]
    return (
        f"DDPO on {summary['reward']}: {summary['epochs']} epochs in {summary['seconds']} s; last epoch mean reward "
        f"{last.get('reward', float('nan')):.4f} -> {cfg.out}"
    )
