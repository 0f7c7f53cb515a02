"""`unsee erase`: remove a concept from the UNet with SDD, ESD or UCE, keyed on text or a learned token.

Both run on the shared `Trainer`; they differ only in their target:
- SDD (arXiv 2307.05977): student theta, teacher = EMA of the student. z_t comes
  from the teacher's CFG trajectory on the concept prompt c_p; loss
  || sg[eps_theta(z_t, t, 0)] - eps_theta(z_t, t, c_s) ||^2. The EMA model is the output.
- ESD (arXiv 2303.07345): frozen original theta*; z_t from the trained model's
  trajectory; target eps*(z_t, t, 0) - eta (eps*(z_t, t, c) - eps*(z_t, t, 0)).
With `--anchor TEXT` the concept is replaced by that text instead of by nothing
(as in Concept Ablation): SDD's target is the frozen original's eps*(z_t, t, a)
(the student's own prediction for a drifts with it, which a moving target cannot
hold), ESD's is eps*(z_t, t, a) - eta (eps*(z_t, t, c) - eps*(z_t, t, a)).
With `--context` the concept is trained where it sits in whole prompts, and the anchor is the same prompt with
the anchor text (or nothing) in its place; `--flagged` prompts show the concept without naming it and are trained
toward the original's prediction for themselves with the anchor named after them, pushed away from the concept
(ESD's guidance, keyed on the token named after the prompt, or the word without one). UCE (`--method uce`) is the
closed form in `unsee.uce`, no training.
Cost: by default (`reuse` 1) every update samples fresh trajectories up to the
step k it trains at, as the public codes do. With `reuse` N, `batch_size`
trajectories are sampled at once with every DDIM step kept and the next N updates
each draw a fresh random step k from them while the EMA teacher moves slowly:
1/N of the sampling, and N times fewer starting noises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from unsee.config import field
from unsee.errors import UnseeError
from unsee.files import atomic_write_text
from unsee.params import ParamSet, is_xattn_kv, save_trained_unet, trained_unet_params
from unsee.provenance import lineage
from unsee.runinfo import write_run_info
from unsee.sampling import cfg_noise, encode_text
from unsee.tracking import preview
from unsee.trainer import (
    TrainConfig,
    Trainer,
    TrainingLevers,
    original_weights,
    run_settings,
    step_generator,
)
from unsee.uce import distinct_states, fill

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EraseConfig(TrainingLevers):
    HELP_GROUPS = {  # sections of --help
        "What to erase": ("model", "method", "concept", "token", "anchor", "context", "flagged", "flagged_guidance"),
        "Training": (
            "params",
            "steps",
            "lr",
            "guidance",
            "timesteps",
            "ema_decay",
            "batch_size",
            "reuse",
            "ddim_steps",
            "lora_rank",
            "seed",
            "device",
        ),
        "Preservation": ("preserve", "preserve_weight", "preserve_on", "preserve_samples", "null_energy"),
        "Output": ("out", "checkpoint_every"),
    }

    model: str = field(help="Model to erase from: hub id, folder, .safetensors, or 'toyworld'.")
    out: str = field(help="Output: a diffusers pipeline folder, or LoRA weights with --params lora.")
    method: Literal["sdd", "esd", "uce"] = field(
        "sdd",
        help="sdd: self-distillation to the unconditional; esd: negative "
        "guidance; uce: a closed-form edit of the cross-attention keys and "
        "values (no training: seconds; the training settings are unused).",
    )
    concept: tuple[str, ...] = field((), help="Concept text (repeatable); several are joined by ', ' for sampling.")
    token: str | None = field(
        None,
        help="A learned token file from `unsee invert` to erase (HFI); with --concept too, "
        "both are erased, one per update in turn; with --flagged prompts as well, the word "
        "keys the contexts (where a prompt names the concept) and the token the flagged "
        "prompts (where it shows it unnamed).",
    )
    anchor: str | None = field(
        None,
        help="Erase toward this text instead of the empty prompt: SDD's target is the "
        "original model's prediction for it, ESD's negative guidance pushes away from "
        "the concept around it, uce maps the concept's token states to its (e.g. "
        "'mask' for 'skull': a neighbour the concept is entangled with then moves "
        "toward itself, not away; docs/results/erase.md).",
    )
    context: tuple[str, ...] = field(
        (),
        help="A prompt with {} where the concept goes (repeatable; @FILE reads one a line). "
        "sdd/esd train on these prompts (trajectories sampled from each, a batch row "
        "each in turn) toward the original model's prediction for the same prompt with "
        "the anchor, or nothing, in the concept's place; uce edits the concept's token "
        "states where it sits in each. An edit holds on the phrasings it was trained in: "
        "give contexts in many phrasings and positions, the bare '{}' among them "
        "(docs/results/novel-phrasings.md). Default: the concept alone.",
    )
    flagged: tuple[str, ...] = field(
        (),
        help="A prompt whose images show the concept without naming it (repeatable; "
        "@FILE reads one a line), e.g. the prompts of the images people flagged (HFI). "
        "sdd/esd train each such prompt p too, toward the original model's prediction for "
        "it guided away from the concept: eps*(b) - eta (eps*(p + ' ' + concept) - eps*(b)), "
        "b = p + ' ' + anchor with --anchor, else p; eta = --flagged-guidance. An edit "
        "keyed on the word or the token reaches a prompt that never holds either only "
        "through what the two share "
        "(docs/results/erase.md). The concept's own rows then train as with "
        "--context '{}' when no --context is given.",
    )
    flagged_guidance: float = field(1.0, help="--flagged: eta, how far each flagged prompt is pushed off the concept.")
    params: ParamSet = field(
        "xattn",
        help="Which UNet parameters train: xattn (ESD-x, SDD), xattn-kv (cross-"
        "attention keys and values only), noxattn (ESD-u: all but cross-attention, the time embedding and the "
        "output block, as ESD's code), full, lora.",
    )
    steps: int = field(1500, help="Updates.")
    lr: float = field(1e-5, help="AdamW learning rate.")
    guidance: float | None = field(
        None, help="SDD: teacher CFG scale (default 3.0); ESD: negative guidance eta (default 1.0)."
    )
    timesteps: Literal["uniform", "beta"] = field(
        "uniform", help="Which trajectory step to train on: uniform or Beta(3, 3)."
    )
    ema_decay: float = field(0.999, help="SDD: EMA decay of the teacher (also the output).")
    batch_size: int = field(1, help="Latents per update.")
    reuse: int = field(
        1,
        help="Updates drawn from one batch of teacher trajectories, each at a fresh random step. 1 "
        "(the published recipes): a fresh trajectory every update, sampled only up to the step "
        "it trains at; N > 1 divides the sampling by N and sees N times fewer starting noises.",
    )
    ddim_steps: int = field(50, help="DDIM steps K of a trajectory.")
    lora_rank: int = field(4, help="LoRA rank (--params lora).")
    seed: int = field(0, help="Seed of every draw.")
    device: str = field("auto", help="auto, cpu, cuda, cuda:N.")
    checkpoint_every: int = field(160, help="Checkpoint interval (a multiple of --reuse); a rerun resumes.")
    preserve: tuple[str, ...] = field(
        (),
        help="A prompt to keep as it was (repeatable; @FILE reads one a line): adds "
        "--preserve-weight x ||eps(z, t, c_keep) - eps_original(z, t, c_keep)||^2, "
        "an anchor against over-erasure that the original SDD and ESD do not have; "
        "uce holds these prompts' token states, or without any, the empty prompt's.",
    )
    preserve_weight: float | None = field(
        None,
        help="Weight of the --preserve term (default 1); uce: the kept states' "
        "weight in the closed form (default 0.1; a higher weight holds the "
        "edit back: docs/results/erase.md).",
    )
    preserve_on: Literal["concept", "own", "kv", "null"] = field(
        "concept",
        help="What the --preserve term compares: predictions on the concept's trajectories (concept, no extra "
        "passes) or on trajectories the original model samples from each kept prompt once at the start (own); or kv, "
        "the kept prompts' cross-attention keys and values (relative squared change, no UNet pass; with --params "
        "xattn-kv a prompt whose keys and values hold is drawn exactly as before). null is a constraint, not a term: "
        "after every update the change to the cross-attention keys' and values' weights is projected off the "
        "directions that hold --null-energy of the kept prompts' token states, so those states' keys and values "
        "barely move whatever the erase loss wants (AlphaEdit's null-space constraint; --preserve-weight is unused).",
    )
    preserve_samples: int = field(2, help="--preserve-on own: trajectories sampled per kept prompt.")
    null_energy: float = field(
        0.8,
        help="--preserve-on null: the share of the kept token states' energy (uncentred, "
        "over their distinct states) whose directions the keys and values may not change; "
        "1 freezes every direction the states span; a setting to sweep "
        "(docs/results/erase.md).",
    )

    def __post_init__(self) -> None:
        if not self.concept and not self.token:
            raise UnseeError("give --concept TEXT (repeatable), --token FILE, or both")
        for name in ("steps", "batch_size", "reuse", "ddim_steps", "preserve_samples"):
            if getattr(self, name) < 1:
                raise UnseeError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every % self.reuse:
            raise UnseeError(
                f"--checkpoint-every ({self.checkpoint_every}) must be a multiple of --reuse ({self.reuse}) "
                "so a resumed run samples the same trajectories"
            )
        if self.guidance is None:
            self.guidance = 3.0 if self.method == "sdd" else 1.0
        if self.preserve_weight is None:
            self.preserve_weight = 0.1 if self.method == "uce" else 1.0
        self._check_preservation()
        self._check_prompts()
        if self.method == "uce":
            self._check_uce()

    def _check_preservation(self) -> None:
        if self.preserve_weight < 0:
            raise UnseeError(f"--preserve-weight must be >= 0, got {self.preserve_weight}")
        # kv and null act on the cross-attention keys' and values' weights; null projects them, so it needs them plain
        if (self.preserve_on == "kv" and self.params == "noxattn") or (
            self.preserve_on == "null" and self.params in ("noxattn", "lora")
        ):
            raise UnseeError(
                f"--preserve-on {self.preserve_on} holds the cross-attention keys and values, which --params "
                f"{self.params} cannot change that way; use --params xattn-kv or xattn, or --preserve-on "
                "concept or own"
            )
        if self.preserve_on != "concept" and not self.preserve:
            raise UnseeError(
                f"--preserve-on {self.preserve_on} needs the prompts to keep: add --preserve PROMPT (repeatable) "
                "or --preserve @FILE"
            )
        if not 0 < self.null_energy <= 1:
            raise UnseeError(f"--null-energy must be in (0, 1], got {self.null_energy}")

    def _check_prompts(self) -> None:
        if bad := [c for c in self.context_prompts() if c.count("{}") != 1]:
            raise UnseeError(f"--context {bad[0]!r} must hold {{}} once, where the concept goes")
        if bad := [p for p in self.flagged_prompts() if "{}" in p]:
            raise UnseeError(
                f"--flagged {bad[0]!r} holds {{}}: flagged prompts are whole prompts without the concept; "
                "a prompt with {} where the concept goes is a --context"
            )
        if self.flagged_guidance < 0:
            raise UnseeError(f"--flagged-guidance must be >= 0, got {self.flagged_guidance}")

    def _check_uce(self) -> None:
        if self.flagged:
            raise UnseeError(
                "--method uce edits the concept's token states, which --flagged prompts do not hold; "
                "give their trigger words as --concept with the prompts as --context, or use sdd/esd"
            )
        if self.params not in ("xattn", "xattn-kv"):
            raise UnseeError(
                f"--method uce edits the cross-attention keys and values; --params {self.params} does "
                "not apply (use xattn or xattn-kv)"
            )
        if self.preserve_on != "concept":
            raise UnseeError(
                "--method uce keeps the --preserve prompts' token states in its closed form; "
                "--preserve-on does not apply"
            )
        if self.mixed_precision != "no" or self.gradient_checkpointing:
            raise UnseeError(
                "--method uce trains nothing (a closed form in float64): --mixed-precision and "
                "--gradient-checkpointing do not apply; leave them out"
            )

    def preserve_prompts(self) -> list[str]:
        return _expand(self.preserve)

    def flagged_prompts(self) -> list[str]:
        return _expand(self.flagged)

    def context_prompts(self) -> list[str]:
        return _expand(self.context) or ["{}"]


def row_keys(cfg: EraseConfig, concepts: list[str]) -> tuple[list[str], list[str]]:
    """Which concepts key the contexts' rows and which the flagged prompts' rows. With words, a learned token and
    flagged prompts together, the word where a prompt names the concept and the token where it shows it unnamed:
    crossing every context with the token too would spread a run's updates over twice the rows, and the token's
    rows in contexts add nothing the word's do not (docs/results/novel-phrasings.md). Otherwise every concept
    keys both."""
    if cfg.token and cfg.concept and cfg.flagged:
        return concepts[:-1], concepts[-1:]  # the token is loaded last
    return concepts, concepts


def training_prompts(cfg: EraseConfig, concepts: list[str]) -> list[str]:
    """Every prompt an erase run conditions on: the concept in each context and the anchor in its place, the flagged
    prompts alone, with the concept named after them and with the anchor, and the kept prompts."""
    if cfg.context_prompts() == ["{}"] and not cfg.flagged:  # the bare-concept run samples from all of them at once
        own = [*concepts, cfg.anchor or "", ", ".join(concepts)]
    else:
        own = [text for row in row_texts(cfg, concepts) for text in row if text]
    return lineage([p for p in own + cfg.preserve_prompts() if p], model=cfg.model, token=cfg.token)


def _expand(items: tuple[str, ...]) -> list[str]:
    """Prompts given one by one or as @FILE (one a line)."""
    out: list[str] = []
    for p in items:
        if p.startswith("@"):
            from unsee.prompts import read_prompts

            out += [x.text for x in read_prompts(p[1:])]
        else:
            out.append(p)
    return out


@dataclasses.dataclass
class Rows:
    """What erase trains on: without --context or --flagged, one training prompt per concept (cycled) and one
    sampling prompt naming them all; with them, one row per (context, concept) and per flagged prompt, each sampled
    from and trained on its own prompt."""

    prompt: torch.Tensor  # the conditioning each row trains on
    anchor: torch.Tensor  # the target's base: the row's prompt with the anchor (or nothing) in the concept's place
    sample: torch.Tensor | None = None  # without rows: the sampling prompt
    away: torch.Tensor | None = None  # --flagged: each row's prompt with the concept named after it
    flagged: torch.Tensor | None = None  # --flagged: which rows are flagged prompts

    @property
    def by_row(self) -> bool:
        return self.sample is None


def row_texts(cfg: EraseConfig, concepts: list[str]) -> list[tuple[str, str, str | None]]:
    """The in-context rows as text: (prompt, the target's base, the prompt to push away from, for a flagged row)."""
    # rows (context x concept): trajectories are sampled from each row's prompt and trained on it, toward the same
    # context with the anchor, or nothing, in the concept's place. A flagged prompt has no word to replace: its base
    # is itself with the anchor named after it (or itself alone), pushed away from itself with the concept named
    # after it (the third prompt). Against its own prediction as the base the push is weak where the prompt already
    # draws the concept, and those rows then hold the concept against the named rows' edit.
    words, tokens = row_keys(cfg, concepts)
    named = [(fill(ctx, x), fill(ctx, cfg.anchor or ""), None) for ctx in cfg.context_prompts() for x in words]
    unnamed = [(p, f"{p} {cfg.anchor}" if cfg.anchor else p, f"{p} {x}") for p in cfg.flagged_prompts() for x in tokens]
    # the two kinds alternate, so that a short run, which cycles through the rows in order, trains both
    return [r for pair in itertools.zip_longest(named, unnamed) for r in pair if r is not None]


def training_rows(pipe, cfg: EraseConfig, concepts: list[str], uncond: torch.Tensor) -> Rows:
    """The rows of `Rows` for these settings, encoded."""
    contexts, flagged = cfg.context_prompts(), cfg.flagged_prompts()
    if contexts == ["{}"] and not flagged:
        anchor = encode_text(pipe, [cfg.anchor]) if cfg.anchor is not None else uncond  # what the targets use
        # sampling prompt: all concepts; training prompts: one concept per update, cycled
        return Rows(encode_text(pipe, concepts), anchor, sample=encode_text(pipe, [", ".join(concepts)]))
    rows = row_texts(cfg, concepts)
    out = Rows(encode_text(pipe, [r[0] for r in rows]), encode_text(pipe, [r[1] for r in rows]))
    if flagged:
        out.away = encode_text(pipe, [r[2] or r[0] for r in rows])
        out.flagged = torch.tensor([r[2] is not None for r in rows])
    return out


@dataclasses.dataclass
class Draw:
    """Latents to train at: z_t, t, the conditioning, and (erased rows) the target's anchor and flagged rows."""

    z: torch.Tensor
    t: torch.Tensor
    c: torch.Tensor
    anchor: torch.Tensor | None = None
    flag: torch.Tensor | None = None  # which rows are flagged prompts (None: none of them)
    away: torch.Tensor | None = None  # their prompts with the concept named after them


class Preservation:
    """How erase keeps the --preserve prompts. The base keeps nothing; each --preserve-on mode is a subclass that
    either adds prompts whose original prediction is a target (`draw`), a penalty, or a step after each update."""

    keeps_original = False  # whether its targets need the original weights
    info: dict | None = None  # what it reports in the summary

    def draw(self, m: EraseMethod, batch: Draw, step: int, g: torch.Generator) -> Draw | None:
        return None

    def penalty(self, m: EraseMethod) -> torch.Tensor | None:
        return None

    def after_step(self, m: EraseMethod, trainer: Trainer) -> None:
        pass


class OnConcept(Preservation):
    """--preserve-on concept: the kept prompts, cycled, predict on the concept's own z_t what the original did."""

    keeps_original = True

    def __init__(self, c_keep: torch.Tensor):
        self.c_keep = c_keep

    def draw(self, m, batch, step, g):
        n = len(batch.z)
        keep = self.c_keep[(step * m.cfg.batch_size + torch.arange(n)) % len(self.c_keep)].to(batch.z.device)
        return Draw(batch.z, batch.t, keep)


class OnOwn(Preservation):
    """--preserve-on own: the kept prompts predict what the original did on their own trajectories, sampled from the
    original model once (`preserve_samples` per prompt)."""

    keeps_original = True

    def __init__(self, c_keep: torch.Tensor):
        self.c_keep = c_keep
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None  # trajectories, their prompt rows

    @torch.no_grad()
    def _sample(self, m: EraseMethod) -> None:
        g = step_generator(m.cfg.seed, -1, -2, m.trainer.state.process_index)
        rows = torch.arange(len(self.c_keep)).repeat(m.cfg.preserve_samples)
        with original_weights(m.pipe.unet, m.params, m.original):
            self.cache = (m.trajectories(g, self.c_keep[rows]), rows)

    def draw(self, m, batch, step, g):
        if self.cache is None:
            self._sample(m)
        z, t, rows = m.draw(self.cache[0], g, len(batch.z))
        return Draw(z, t, self.c_keep[self.cache[1][rows]].to(z.device))


class KeysValues(Preservation):
    """--preserve-on kv: a penalty on the change of the kept prompts' cross-attention keys and values."""

    def __init__(self, pipe, c_keep: torch.Tensor):
        self.c_keep, self.refs = c_keep, []  # (projection, its original output)
        dev = pipe.unet.device
        with torch.no_grad():
            for name, mod in pipe.unet.named_modules():
                if name.endswith("attn2"):
                    self.refs += [
                        (proj, proj(c_keep.to(dev, proj.weight.dtype)).float()) for proj in (mod.to_k, mod.to_v)
                    ]

    def penalty(self, m):
        """Mean over cross-attention projections of the relative squared change of the kept prompts' keys and values.
        They are the only route by which a prompt reaches the UNet: with --params xattn-kv, unchanged keys and values
        mean an unchanged prediction for every latent and timestep."""
        c = self.c_keep.to(m.pipe.unet.device, m.pipe.unet.dtype)
        return torch.stack([F.mse_loss(proj(c).float(), ref) / ref.pow(2).mean() for proj, ref in self.refs]).mean()


class NullSpace(Preservation):
    """--preserve-on null: after each update the keys' and values' weight change is projected off the span of the
    kept token states, so their keys and values stay exactly as they were."""

    def __init__(
        self,
        pipe,
        c_keep: torch.Tensor,
        energy: float,
        params: dict[str, torch.nn.Parameter],
        c_concept: torch.Tensor,
        uncond: torch.Tensor,
    ):
        kept = distinct_states(c_keep)
        proj, rank = _null_projector(kept, energy)
        self.proj = proj.to(pipe.unet.device)
        self.refs = [(k, p.detach().clone()) for k, p in params.items() if is_xattn_kv(k)]  # (name, original weight)
        # How much the edit may act on: the share of the concept's difference from the empty prompt, and of the kept
        # states, that lies outside the held directions (near 0 for the concept: lower --null-energy).
        self.info = {
            "held": f"{rank} of {len(proj)}",
            "free_share_concept": _free_share(c_concept - uncond, proj),
            "free_share_kept": _free_share(kept, proj),
        }
        logger.info("null-space constraint: %s", self.info)

    @torch.no_grad()
    def after_step(self, m, trainer):
        """W <- W0 + (W - W0)(I - P) for the keys' and values' weights (and the EMA; the map is affine, so projecting
        the EMA equals an EMA of projected weights)."""
        for name, w0 in self.refs:
            for w in (m.params[name], *((trainer.ema[name],) if trainer.ema is not None else ())):
                w.copy_(w0 + (w - w0) @ self.proj)


def make_preservation(
    pipe, cfg: EraseConfig, params: dict[str, torch.nn.Parameter], rows: Rows, uncond: torch.Tensor
) -> Preservation:
    keep = cfg.preserve_prompts()
    if not keep:
        return Preservation()
    c_keep = encode_text(pipe, keep)
    if cfg.preserve_on == "kv":
        return KeysValues(pipe, c_keep)
    if cfg.preserve_on == "null":
        return NullSpace(pipe, c_keep, cfg.null_energy, params, rows.prompt, uncond)
    return OnOwn(c_keep) if cfg.preserve_on == "own" else OnConcept(c_keep)


class EraseMethod:
    """SDD or ESD as a `Trainer` method: a trajectory cache, the method's target, and a preservation strategy."""

    def __init__(self, pipe, cfg: EraseConfig, concepts: list[str], params: dict[str, torch.nn.Parameter]):
        self.pipe, self.cfg, self.params = pipe, cfg, params
        self.trainer: Trainer | None = None
        self.uncond = encode_text(pipe, [""])
        self.rows = training_rows(pipe, cfg, concepts, self.uncond)
        self.cache_rows: torch.Tensor | None = None  # by row: which rows the cached trajectories belong to
        # the target's base prediction eps(anchor or 0) comes from the frozen original (ESD; SDD with --anchor or --context)
        self.from_original = cfg.method == "esd" or cfg.anchor is not None or self.rows.by_row
        self.preservation = make_preservation(pipe, cfg, params, self.rows, self.uncond)
        self.original = None
        if (self.from_original or self.preservation.keeps_original) and cfg.params != "lora":
            self.original = {k: p.detach().clone() for k, p in params.items()}
        self.cache: torch.Tensor | None = None  # (batch, K, C, h, w): z after k DDIM steps
        self.cache_cycle = -1
        self.sched = pipe.scheduler
        self.n_train = self.sched.config.num_train_timesteps
        self.unet_passes = 0

    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return self.params

    # ------------------------------------------------------------ sampling
    def trajectories(self, g: torch.Generator, cond: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """(len(cond), K, C, h, w): every z of a K-step DDIM trajectory (eta = 0, CFG) per conditioning row; with
        `stop`, only its first `stop` steps (the same z: the sampler is deterministic)."""
        cfg, pipe = self.cfg, self.pipe
        n = len(cond)
        shape = (n, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        z = torch.randn(shape, generator=g).to(pipe.unet.device, pipe.unet.dtype) * self.sched.init_noise_sigma
        unc = self.uncond.expand(n, -1, -1)
        s = torch.full((n,), cfg.guidance if cfg.method == "sdd" else 3.0, device=z.device)
        zs = []
        self.sched.set_timesteps(cfg.ddim_steps, device=z.device)
        for t in self.sched.timesteps[:stop]:
            zs.append(z)
            eps = cfg_noise(pipe, z, t, cond.to(z.device), unc, s)
            self.unet_passes += 2 * n
            z = self.sched.step(eps, t, z).prev_sample
        return torch.stack(zs, 1)  # z_k is the latent at the k-th DDIM timestep (descending)

    @torch.no_grad()
    def _sample_cache(self, cycle: int, stop: int | None = None) -> None:
        """`batch_size` trajectories on the sampling prompt, or on the next rows' prompts, from the teacher (SDD: the
        EMA; ESD: the trained model)."""
        # Each rank samples its own trajectories (data parallelism over latents), reproducibly per cycle.
        g = step_generator(self.cfg.seed, cycle, -1, self.trainer.state.process_index)
        teacher = self.trainer.ema_weights() if self.cfg.method == "sdd" else contextlib.nullcontext()
        bs, rows = self.cfg.batch_size, self.rows
        if rows.by_row:  # a batch row per row (context or flagged prompt), cycled; ranks take disjoint rows
            start = (cycle * self.trainer.state.num_processes + self.trainer.state.process_index) * bs
            self.cache_rows = (start + torch.arange(bs)) % len(rows.prompt)
        with teacher:
            cond = rows.prompt[self.cache_rows] if rows.by_row else rows.sample.expand(bs, -1, -1)
            self.cache = self.trajectories(g, cond, stop)
        self.cache_cycle = cycle

    def _steps(self, g: torch.Generator, n: int) -> torch.Tensor:
        """n random DDIM step indices k to train at."""
        cfg = self.cfg
        if cfg.timesteps == "beta":  # mid-trajectory (HFI's variant): Beta(3, 3) = the median of 5 uniforms
            u = torch.rand(n, 5, generator=g).median(1).values
            return (u * cfg.ddim_steps).long().clamp(max=cfg.ddim_steps - 1)
        return torch.randint(cfg.ddim_steps, (n,), generator=g)

    def draw(self, traj: torch.Tensor, g: torch.Generator, n: int | None = None, k: torch.Tensor | None = None):
        """z_t at a random DDIM step k (or the given one) of each trajectory (or of `n` random ones) and a training t
        inside its interval."""
        cfg = self.cfg
        rows = torch.arange(len(traj)) if n is None else torch.randint(len(traj), (n,), generator=g)
        if k is None:
            k = self._steps(g, len(rows))
        z = traj[rows, k]
        # a training timestep inside k's DDIM interval: t in [T - w(k+1), T - 1 - wk], w = T / K
        w = self.n_train // cfg.ddim_steps
        t = self.n_train - w * (k + 1) + torch.randint(w, (len(k),), generator=g)
        return z, t.to(z.device), rows

    def _batch(self, step: int, g: torch.Generator) -> Draw:
        """This update's latents and what they train on."""
        cfg, rows = self.cfg, self.rows
        if cfg.reuse == 1:
            # a fresh trajectory for every update, sampled only as far as the step it trains at, as the public codes
            # do; k is drawn first from the same stream, so the update is the one a full trajectory would give
            k = self._steps(g, cfg.batch_size)
            self._sample_cache(step, stop=int(k.max()) + 1)
            z, t, _ = self.draw(self.cache, g, k=k)
        else:
            if self.cache_cycle != step // cfg.reuse:
                self._sample_cache(step // cfg.reuse)
            z, t, _ = self.draw(self.cache, g)
        n = len(z)
        if not rows.by_row:
            c = rows.prompt[(step * cfg.batch_size + torch.arange(n)) % len(rows.prompt)].to(z.device)
            return Draw(z, t, c, rows.anchor.expand(n, -1, -1))  # the empty prompt, or --anchor
        r = self.cache_rows  # each trajectory trains on the prompt it was sampled from
        batch = Draw(z, t, rows.prompt[r].to(z.device), rows.anchor[r].to(z.device))
        if rows.flagged is not None and rows.flagged[r].any():
            batch.flag, batch.away = rows.flagged[r].to(z.device), rows.away[r].to(z.device)
        return batch

    # ------------------------------------------------------------ targets and loss
    @torch.no_grad()
    def _targets(self, b: Draw, keep: Draw | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The erase target for each row and, with prompts to keep, the original model's prediction for them.
        Every no-grad target comes before the trained forward: swapping in the original weights rewrites the
        parameters in place, which a graph already built would refuse."""
        cfg, unet = self.cfg, self.pipe.unet
        target = None
        if not self.from_original:
            target = unet(b.z, b.t, encoder_hidden_states=b.anchor).sample.float()  # SDD: sg[eps_theta(z_t, t, 0)]
            self.unet_passes += len(b.z)
            if keep is None:
                return target, None
        # (z, t, conditioning) per original-model prediction, one batched call
        calls = ([(b.z, b.t, b.anchor)] if self.from_original else []) + (
            [(b.z, b.t, b.c)] if cfg.method == "esd" else []
        )
        i_away = len(calls)
        if b.flag is not None:
            calls.append((b.z[b.flag], b.t[b.flag], b.away[b.flag]))
        if keep is not None:
            calls.append((keep.z, keep.t, keep.c))
        with original_weights(unet, self.params, self.original):
            out = unet(
                torch.cat([a[0] for a in calls]),
                torch.cat([a[1] for a in calls]),
                encoder_hidden_states=torch.cat([a[2] for a in calls]),
            ).sample.float()
        out = out.split([len(a[0]) for a in calls])
        self.unet_passes += sum(len(a[0]) for a in calls)
        if cfg.method == "esd":
            e_u, e_c = out[0], out[1]
            target = e_u - cfg.guidance * (e_c - e_u)  # ESD's negative guidance
        elif self.from_original:
            target = out[0]  # SDD with --anchor: eps*(z_t, t, anchor)
        if b.flag is not None:  # a flagged prompt p: eps*(p) - eta (eps*(p concept) - eps*(p))
            e_p = out[0][b.flag]
            target = target.clone()
            target[b.flag] = e_p - cfg.flagged_guidance * (out[i_away] - e_p)
        return target, (out[-1] if keep is not None else None)

    def loss(self, step: int, micro: int, g: torch.Generator):
        cfg, unet = self.cfg, self.pipe.unet
        b = self._batch(step, g)
        keep = self.preservation.draw(self, b, step, g)
        target, keep_target = self._targets(b, keep)
        n = len(b.z)
        if keep is None:
            pred = unet(b.z, b.t, encoder_hidden_states=b.c).sample.float()
            self.unet_passes += n
            loss = F.mse_loss(pred, target)
            keep_loss = self.preservation.penalty(self)
            if keep_loss is None:
                return loss, {}
        else:
            # Preservation: the prompts to keep predict what the original model predicted (on the concept's z_t, or their own).
            pred, keep_pred = (
                unet(torch.cat([b.z, keep.z]), torch.cat([b.t, keep.t]), encoder_hidden_states=torch.cat([b.c, keep.c]))
                .sample.float()
                .chunk(2)
            )
            self.unet_passes += 2 * n
            loss, keep_loss = F.mse_loss(pred, target), F.mse_loss(keep_pred, keep_target)
        return loss + cfg.preserve_weight * keep_loss, {
            "erase_loss": float(loss.detach()),
            "keep_loss": float(keep_loss.detach()),
        }

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        self.preservation.after_step(self, trainer)


def _null_projector(states: torch.Tensor, energy: float) -> tuple[torch.Tensor, int]:
    """(I - V_r V_r^T, r): V_r the fewest top eigenvectors of the token states' (rows, each distinct state once)
    second moment that hold `energy` of it. A weight change dW projected this way leaves dW s near zero for every
    kept state s."""
    s = states.double()
    ev, vecs = torch.linalg.eigh(s.T @ s)
    ev, vecs = ev.flip(0).clamp(min=0), vecs.flip(1)
    r = int((ev.cumsum(0) / ev.sum() < energy - 1e-12).sum()) + 1
    r = min(r, len(ev))
    v = vecs[:, :r]
    return (torch.eye(len(ev), dtype=torch.float64) - v @ v.T).float(), r


def _free_share(x: torch.Tensor, proj: torch.Tensor) -> float:
    """||x (I - VV^T)||^2 / ||x||^2 over the rows of x: the part of these text states a projected edit can reach."""
    x = x.reshape(-1, proj.shape[0]).double().cpu()
    return round(float((x @ proj.double()).pow(2).sum() / x.pow(2).sum().clamp(min=1e-30)), 4)


def load_token(pipe, path: str) -> str:
    """Add a learned token (`unsee invert`'s file, one embedding) to the pipeline; returns its name."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UnseeError(f"--token {path!r} does not exist; make one with `unsee invert`")
    embeddings = load_file(path)
    if len(embeddings) != 1:
        raise UnseeError(f"--token {path!r} holds {len(embeddings)} embeddings; expected one (from `unsee invert`)")
    name = next(iter(embeddings))
    pipe.load_textual_inversion(path, token=name)
    return name


def _trainer(cfg: EraseConfig, pipe, method: EraseMethod, concepts: list[str], device, progress: bool) -> Trainer:
    """The shared loop, set for SDD (an EMA teacher) or ESD, with previews of the concept as trained on, a flagged
    prompt and a kept prompt."""
    tcfg = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        weight_decay=1e-4,
        grad_clip=1.0,
        seed=cfg.seed,
        ema_decay=cfg.ema_decay if cfg.method == "sdd" else None,
        checkpoint_every=cfg.checkpoint_every,
        **cfg.lever_settings(),
    )
    shown = (
        [fill(cfg.context_prompts()[0], c) for c in concepts[:2]]
        + cfg.flagged_prompts()[:1]
        + cfg.preserve_prompts()[:1]
    )
    return Trainer(
        method,
        tcfg,
        Path(cfg.out) / "run",
        progress=progress,
        device=device,
        settings=run_settings(cfg),
        preview=preview(pipe, shown, seed=cfg.seed, mixed_precision=cfg.mixed_precision),
        run_name=f"erase-{cfg.method}",
    )


def erase(cfg: EraseConfig, *, progress: bool = True) -> dict:
    from unsee.models import load_pipeline
    from unsee.runtime import resolve_device

    # 1. Model, concept, trainable parameters.
    device = resolve_device(cfg.device)
    pipe = load_pipeline(
        cfg.model, device=device, dtype=cfg.weights_dtype, gradient_checkpointing=cfg.gradient_checkpointing
    )
    concepts = list(cfg.concept) + ([load_token(pipe, cfg.token)] if cfg.token else [])
    if cfg.method == "uce":
        return _erase_closed_form(pipe, cfg, concepts)
    params = trained_unet_params(pipe, cfg.params, cfg.lora_rank, cfg.seed)

    # 2. Train on the shared loop.
    out = Path(cfg.out)
    method = EraseMethod(pipe, cfg, concepts, params)
    trainer = _trainer(cfg, pipe, method, concepts, device, progress)
    method.trainer = trainer
    result = trainer.run()

    # 3. Output: the EMA (SDD) or trained (ESD) weights, as LoRA or as a full pipeline without the token.
    # Every rank holds the same weights (checked by the trainer); only the main process writes.
    summary = {
        "method": cfg.method,
        "concepts": concepts,
        "seconds": round(result.seconds, 1),
        "mixed_precision": cfg.mixed_precision,
        "skipped_steps": result.skipped_steps,
        "unet_passes_per_update": method.unet_passes / max(1, cfg.steps - result.resumed_from),
        "processes": trainer.state.num_processes,
        "weights_digest": result.digest,
        "final": result.last_logs,
    }
    if method.preservation.info is not None:
        summary["null_space"] = method.preservation.info
    if not trainer.state.is_main_process:
        return summary
    with trainer.ema_weights() if cfg.method == "sdd" else contextlib.nullcontext():
        _write_output(pipe, cfg, concepts, summary)
    atomic_write_text(out / "run" / "summary.json", json.dumps(summary, indent=2))
    return summary


def _write_output(pipe, cfg: EraseConfig, concepts: list[str], summary: dict) -> None:
    """The erased model (LoRA or a pipeline folder) and its unsee.json, what every method writes."""
    out = Path(cfg.out)
    save_trained_unet(pipe, cfg.model, cfg.params, out)
    write_run_info(
        out / "unsee.json",
        dataclasses.asdict(cfg),
        stage="erase",
        base_model=cfg.model,
        summary=summary,
        training_prompts=training_prompts(cfg, concepts),
    )


def _erase_closed_form(pipe, cfg: EraseConfig, concepts: list[str]) -> dict:
    """--method uce: W <- W M on every cross-attention key and value projection, then the same outputs as training."""
    import time

    from unsee.trainer import weights_digest
    from unsee.uce import uce_edit

    t0 = time.time()
    info = uce_edit(
        pipe, concepts, cfg.anchor or "", cfg.context_prompts(), cfg.preserve_prompts(), cfg.preserve_weight
    )
    logger.info("uce: %s", info)
    kv = {f"param.{k}": p for k, p in pipe.unet.named_parameters() if is_xattn_kv(k)}  # the training runs' naming
    summary = {
        "method": "uce",
        "concepts": concepts,
        "seconds": round(time.time() - t0, 1),
        "unet_passes_per_update": 0.0,
        "processes": 1,
        "weights_digest": weights_digest(kv),
        "final": {},
        "uce": info,
    }
    from accelerate import PartialState

    if PartialState().is_main_process:  # the edit is deterministic: under `accelerate launch` one process writes
        _write_output(pipe, cfg, concepts, summary)
    return summary


def summary_text(summary: dict, cfg: EraseConfig) -> str:
    """The line `unsee erase` prints: what was erased, how long it took and what it cost."""
    cost = (
        f"edit residual {summary['uce']['edit_residual']}, kept states moved {summary['uce']['keep_drift']}"
        if summary["method"] == "uce"
        else f"{summary['unet_passes_per_update']:.1f} UNet evaluations per update"
    )
    return (
        f"{summary['method']} erased {', '.join(summary['concepts'])} in {summary['seconds']} s ({cost}) -> {cfg.out}"
    )
