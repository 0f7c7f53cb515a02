"""`unsee invert`: reward-weighted textual inversion (HFI, step 4).

New token vector(s) v (initialised from --init-word) are the only thing that
trains; text encoder and UNet are frozen. Over the top-K images by weight:

    L(v) = sum_i w_i * || eps - eps_theta(z_t, t, tau(prompt_i with v)) ||^2      (HFI eq. for reward-weighted TI)

w_i comes from the reward model's score of image i, or from the feedback
(share of annotators who flagged it), normalised to mean 1 over the top K.
Every image is captioned "a photo of <token>" (--template), as in textual
inversion, so v stands for what the flagged images share. The other choice,
"{prompt} {token}" (the image's own prompt plus the token, so v would explain
only what the prompt leaves out), learned nothing measurable on the toy world:
its skull token drew the skull in 0 of 100 probe images against 99 of 100 for
"a photo of <token>" with 4 vectors (benchmarks/hfi_ablations.py; docs/results/superseded.md, "HFI"). The output
loads with diffusers' `load_textual_inversion`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unsee.config import field
from unsee.errors import UnseeError
from unsee.files import atomic_write
from unsee.imageset import ImageSet
from unsee.provenance import lineage, token_run_dir
from unsee.runinfo import write_run_info
from unsee.tracking import preview
from unsee.trainer import TrainConfig, Trainer, TrainingLevers, run_settings

logger = logging.getLogger(__name__)


@dataclasses.dataclass(kw_only=True)
class TokenTraining(TrainingLevers):
    """Settings of one textual-inversion run, shared by `unsee invert` and `unsee attack invert`."""

    HELP_GROUPS = {  # sections of --help
        "Training": ("token", "init_word", "vectors", "batch_size", "steps", "lr", "seed", "device"),
        "Output": ("checkpoint_every",),
    }

    token: str = field("<flagged>", help="The new token; multi-vector tokens become <flagged>, <flagged>_1, ...")
    init_word: str = field("object", help="Word whose embedding initialises every vector.")
    vectors: int = field(1, help="Number of embedding vectors behind the token.")
    batch_size: int = field(16, help="Images per micro-batch.")
    steps: int = field(300, help="Optimiser updates.")
    lr: float = field(5e-3, help="Learning rate of the token vectors.")
    seed: int = field(0, help="Seed of timesteps, noise and batches.")
    device: str = field("auto", help="auto, cpu, cuda, cuda:N.")
    checkpoint_every: int = field(100, help="Checkpoint interval (updates); a rerun resumes.")

    def __post_init__(self) -> None:
        if self.vectors < 1 or self.batch_size < 1:
            raise UnseeError("--vectors and --batch-size must be >= 1")


@dataclasses.dataclass(kw_only=True)
class InvertConfig(TokenTraining):
    HELP_GROUPS = {  # sections of --help
        "What to learn": ("model", "images", "feedback", "reward", "label", "top_k", "template", "weighting"),
        "Output": ("out",),
    }

    model: str = field(help="The model whose text encoder gets the token: hub id, folder, .safetensors, or 'toyworld'.")
    images: str = field(help="Image set the feedback is about (made by `unsee generate` from this model).")
    out: str = field(help="Output embedding file (.safetensors), loadable by diffusers' load_textual_inversion.")
    feedback: str | None = field(None, help="feedback.jsonl: weights = share of annotators who flagged each image.")
    reward: str | None = field(None, help="Reward model folder: weights = its scores (use this or --feedback).")
    label: str | None = field(None, help="Which label / reward output to invert (default: the first).")
    vectors: int = field(
        1,
        help="Embedding vectors behind the token (textual inversion's default; a concept that "
        "one word does not cover may need more: the toyworld-hfi recipe uses 4).",
    )
    lr: float | None = field(
        None, help="Learning rate of the token vectors; default 5e-4 x --batch-size, textual inversion's scaled rate."
    )
    top_k: int = field(64, help="Train on the K images with the highest weight.")
    template: str = field(
        "a photo of {token}", help="Prompt per image: {token} = the token(s), {prompt} = the image's own prompt."
    )
    weighting: Literal["linear", "uniform"] = field(
        "linear", help="linear: w ~ score (mean 1 over top K); uniform: w = 1."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr is None:
            self.lr = 5e-4 * self.batch_size
        if self.lr <= 0:
            raise UnseeError(f"--lr must be > 0, got {self.lr}")
        if (self.feedback is None) == (self.reward is None):
            raise UnseeError("give exactly one of --feedback FILE or --reward DIR")
        if self.top_k < 1:
            raise UnseeError("--top-k must be >= 1")
        if "{token}" not in self.template:
            raise UnseeError(f"--template must contain {{token}}, got {self.template!r}")
        if not self.out.endswith(".safetensors"):
            raise UnseeError(f"--out must be a .safetensors file, got {self.out!r}")


class TokenEmbedding(nn.Module):
    """The text encoder's token embedding with trainable rows for new ids >= first_id (the base stays frozen)."""

    def __init__(self, base: nn.Embedding, first_id: int, vectors: torch.Tensor):
        super().__init__()
        self.base, self.first_id = base, first_id
        self.vectors = nn.Parameter(vectors.float().clone())
        self.weight = base.weight  # transformers reads .weight for dtype/device

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base(ids.clamp(max=self.first_id - 1))
        new = ids >= self.first_id
        if new.any():
            rows = self.vectors[(ids - self.first_id).clamp(min=0, max=len(self.vectors) - 1)].to(out.dtype)
            out = torch.where(new.unsqueeze(-1), rows, out)
        return out


def token_names(token: str, n: int) -> list[str]:
    """diffusers' multi-vector naming: <t>, <t>_1, <t>_2, ..."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def add_token(pipe, token: str, init_word: str, n: int) -> TokenEmbedding:
    """Register the token(s) in the tokenizer and install trainable vectors initialised from `init_word`."""
    tok, te = pipe.tokenizer, pipe.text_encoder
    names = token_names(token, n)
    if any(t in tok.get_vocab() for t in names):
        raise UnseeError(f"token {token!r} is already in this model's vocabulary; choose another --token")
    init_ids = tok(init_word, add_special_tokens=False).input_ids
    if not init_ids:
        raise UnseeError(f"--init-word {init_word!r} tokenizes to nothing")
    base = te.get_input_embeddings()
    init = base.weight[init_ids].detach().float().mean(0)
    first = len(tok)
    tok.add_tokens(names)
    assert tok.convert_tokens_to_ids(names) == list(range(first, first + n))
    emb = TokenEmbedding(base, first, init.unsqueeze(0).repeat(n, 1))
    te.set_input_embeddings(emb)
    return emb


def expand_token(text: str, token: str, n: int) -> str:
    return text.replace(token, " ".join(token_names(token, n)))


def save_embedding(path: str | Path, token: str, vectors: torch.Tensor) -> Path:
    """Write {token: (n, D)} as safetensors: diffusers' load_textual_inversion reads it (n > 1: multi-vector)."""
    from safetensors.torch import save_file

    atomic_write(path, lambda p: save_file({token: vectors.detach().float().cpu().contiguous()}, str(p)))
    return Path(path)


def image_weights(cfg: InvertConfig, s: ImageSet) -> tuple[dict[str, float], str]:
    """Weight per image id (from feedback or the reward model) and the label it is for."""
    if cfg.feedback:
        from unsee.feedback import binary_targets, load_feedback

        fb = load_feedback(cfg.feedback, image_ids=s.ids)
        label = cfg.label or fb.labels[0]
        if label not in fb.labels:
            raise UnseeError(f"--label {label!r} is not in the feedback's labels ({', '.join(fb.labels)})")
        if fb.binary:
            return binary_targets(fb, label), label
        # rank feedback: an image's weight is the share of its group it outranks (Borda count)
        wins: dict[str, list[float]] = {}
        for g in fb.ranks:
            if g.concept == label:
                for pos, image in enumerate(g.images):
                    wins.setdefault(image, []).append((len(g.images) - 1 - pos) / (len(g.images) - 1))
        return {k: float(np.mean(v)) for k, v in wins.items()}, label
    from unsee.reward_model import load_reward, reward_scores

    reward = load_reward(cfg.reward)
    label = cfg.label or reward.config.labels[0]
    if label not in reward.config.labels:
        raise UnseeError(f"--label {label!r} is not an output of the reward model ({', '.join(reward.config.labels)})")
    return {i: sc[label] for i, sc in reward_scores(reward, s).items()}, label


class InversionMethod:
    """Reward-weighted textual inversion as a `Trainer` method."""

    def __init__(
        self, pipe, emb: TokenEmbedding, z0: torch.Tensor, prompts: list[str], weights: torch.Tensor, batch_size: int
    ):
        self.pipe, self.emb, self.z0, self.prompts, self.w, self.batch_size = (
            pipe,
            emb,
            z0,
            prompts,
            weights,
            batch_size,
        )
        self.alphas = pipe.scheduler.alphas_cumprod.to(z0.device)
        self.n_train = pipe.scheduler.config.num_train_timesteps

    def parameters(self) -> dict[str, nn.Parameter]:
        return {"vectors": self.emb.vectors}

    def loss(self, step: int, micro: int, g: torch.Generator):
        pipe = self.pipe
        idx = torch.randint(len(self.z0), (self.batch_size,), generator=g)
        z0 = self.z0[idx]
        eps = torch.randn(z0.shape, generator=g).to(z0)
        t = torch.randint(0, self.n_train, (len(idx),), generator=g).to(z0.device)
        a = self.alphas[t].view(-1, 1, 1, 1).to(z0.dtype)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps  # q(z_t | z_0)
        ids = pipe.tokenizer(
            [self.prompts[i] for i in idx],
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(z0.device)
        c = pipe.text_encoder(ids)[0].to(pipe.unet.dtype)
        pred = pipe.unet(zt.to(pipe.unet.dtype), t, encoder_hidden_states=c).sample.float()
        target = eps if pipe.scheduler.config.prediction_type == "epsilon" else pipe.scheduler.get_velocity(z0, eps, t)
        per_image = F.mse_loss(pred, target, reduction="none").mean((1, 2, 3))
        w = self.w[idx].to(per_image)
        return (w * per_image).mean(), {"mse": float(per_image.detach().mean())}


def invert(cfg: InvertConfig, *, progress: bool = True) -> dict:
    # 1. Inputs: image set, per-image weights, top K.
    s = ImageSet.load(cfg.images)
    weights, label = image_weights(cfg, s)
    by_id = s.by_id()
    ranked = sorted((i for i in weights if i in by_id), key=lambda i: (-weights[i], i))
    top = ranked[: cfg.top_k]
    if len(top) < 2:
        raise UnseeError(f"only {len(top)} weighted image(s) found; annotate more images")
    w = torch.tensor([weights[i] for i in top], dtype=torch.float32)
    w = torch.ones_like(w) if cfg.weighting == "uniform" else w.clamp(min=0)
    if float(w.sum()) <= 0:
        raise UnseeError(f"no image among the top {cfg.top_k} was flagged for {label!r}; nothing to invert")
    w = w / w.mean()

    token_text = " ".join(token_names(cfg.token, cfg.vectors))
    prompts = [cfg.template.format(prompt=by_id[i]["prompt"], token=token_text) for i in top]
    out = Path(cfg.out)
    run_dir = token_run_dir(out)
    summary = invert_images(
        cfg, model=cfg.model, images=s, ids=top, weights=w, prompts=prompts, out=out, run_dir=run_dir, progress=progress
    )
    summary = {
        "label": label,
        "top_k": len(top),
        "weights_min": float(w.min()),
        "weights_max": float(w.max()),
    } | summary
    write_run_info(
        run_dir / "unsee.json",
        dataclasses.asdict(cfg),
        stage="invert",
        summary=summary,
        training_prompts=lineage([by_id[i]["prompt"] for i in top], model=cfg.model),
    )
    (run_dir / "top_images.json").write_text(
        json.dumps([{"id": i, "weight": float(v)} for i, v in zip(top, w.tolist(), strict=True)])
    )
    return summary


def invert_images(
    cfg: TokenTraining,
    *,
    model: str,
    images: ImageSet,
    ids: list[str],
    weights: torch.Tensor,
    prompts: list[str],
    out: Path,
    run_dir: Path,
    progress: bool = True,
) -> dict:
    """Train the token on images `ids` of `images` with their training prompts and weights (mean 1); write it to `out`."""
    from unsee.models import load_pipeline
    from unsee.runtime import resolve_device

    device = resolve_device(cfg.device)
    pipe = load_pipeline(
        model, dtype=cfg.weights_dtype, device=device, gradient_checkpointing=cfg.gradient_checkpointing
    )
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    emb = add_token(pipe, cfg.token, cfg.init_word, cfg.vectors).to(device)
    by_id = images.by_id()
    with torch.no_grad():  # latents of the training images, encoded once
        x = images.load_images([by_id[i] for i in ids]).to(device, pipe.vae.dtype)
        z0 = torch.cat([pipe.vae.encode(x[k : k + 64] * 2 - 1).latent_dist.mean for k in range(0, len(x), 64)])
        z0 = (z0 * pipe.vae.config.scaling_factor).float()
    method = InversionMethod(pipe, emb, z0, prompts, weights, cfg.batch_size)
    tcfg = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
        grad_clip=0.0,
        **cfg.lever_settings(),
    )
    shown = list(dict.fromkeys(prompts))[:3]  # the token in its training prompts
    result = Trainer(
        method,
        tcfg,
        run_dir,
        progress=progress,
        device=device,
        settings=run_settings(cfg),
        preview=preview(pipe, shown, seed=cfg.seed, mixed_precision=cfg.mixed_precision),
        run_name="invert",
    ).run()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_embedding(out, cfg.token, emb.vectors)
    return {
        "seconds": round(result.seconds, 1),
        "final": result.last_logs,
        "example_prompt": prompts[0],
        "mixed_precision": cfg.mixed_precision,
        "skipped_steps": result.skipped_steps,
    }


def summary_text(summary: dict, cfg: InvertConfig) -> str:
    """The line `unsee invert` prints."""
    return (
        f"token {cfg.token} for {summary['label']!r} from the top {summary['top_k']} images "
        f"({summary['seconds']} s) -> {cfg.out}"
    )
