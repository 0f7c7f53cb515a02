"""The one explicit sampling loop over a pipeline's components.

unsee does not fork diffusers pipelines: it reads their components (tokenizer,
text encoder, UNet, VAE, scheduler) and runs its own loop, so generation,
evaluation and every trainer share the same steps. Images leave here as float
NCHW in [0, 1], the one image convention of unsee (rewards, detectors, metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_ids(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """(B, L) token ids of prompts padded to the tokenizer's max length, as SD's pipelines tokenize them."""
    tok = pipe.tokenizer
    prompts = list(prompts)
    if hasattr(pipe, "maybe_convert_prompt"):  # multi-vector textual-inversion tokens, as diffusers' pipelines do
        prompts = pipe.maybe_convert_prompt(prompts, tok)
    return tok(
        prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def encode_text(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states (B, L, D) for prompts padded to the tokenizer's max length, as SD does."""
    return pipe.text_encoder(token_ids(pipe, prompts).to(pipe.text_encoder.device))[0].to(pipe.unet.dtype)


def initial_latents(pipe, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """z_T (B, C, h, w): one CPU generator per seed, so an image depends on its seed alone, not on the batch."""
    f = pipe.vae_scale_factor
    if height % f or width % f:
        raise ValueError(f"height and width must be divisible by {f}, got {height} and {width}")
    shape = (pipe.unet.config.in_channels, height // f, width // f)
    z = torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])
    return z.to(pipe.unet.device, pipe.unet.dtype) * pipe.scheduler.init_noise_sigma


def cfg_noise(
    pipe,
    z: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: torch.Tensor | None,
) -> torch.Tensor:
    """CFG(c, s) = e(z, t, 0) + s * (e(z, t, c) - e(z, t, 0)); one UNet call on the doubled batch.

    `guidance` is per sample (B,), so prompts with their own scale share a batch.
    With `uncond=None` the conditional prediction alone is returned.
    """
    zin = pipe.scheduler.scale_model_input(z, t)
    if uncond is None:
        return pipe.unet(zin, t, encoder_hidden_states=cond).sample
    e_u, e_c = pipe.unet(torch.cat([zin, zin]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
    s = guidance.to(e_c.dtype).view(-1, 1, 1, 1)
    return e_u + s * (e_c - e_u)


@torch.no_grad()
def sample_latents(
    pipe,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    z: torch.Tensor,
    guidance: torch.Tensor | None,
    steps: int,
) -> torch.Tensor:
    """Run the pipeline's scheduler for `steps` steps from z_T and return z_0 (deterministic for DDIM, eta=0)."""
    sched = pipe.scheduler
    sched.set_timesteps(steps, device=z.device)
    for t in sched.timesteps:
        eps = cfg_noise(pipe, z, t, cond, uncond, guidance)
        z = sched.step(eps, t, z).prev_sample
    return z


@torch.no_grad()
def decode(pipe, z: torch.Tensor) -> torch.Tensor:
    """VAE decode z_0 -> images float (B, 3, H, W) in [0, 1]."""
    x = pipe.vae.decode(z.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
    return (x.float() / 2 + 0.5).clamp(0, 1)


def to_uint8(images: torch.Tensor):
    """(B, 3, H, W) in [0, 1] -> numpy uint8 (B, H, W, 3), rounding as diffusers' numpy_to_pil does."""
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
