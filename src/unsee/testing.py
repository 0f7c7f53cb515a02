"""Tiny random-weight Stable Diffusion pipelines, built offline, for tests and benchmarks.

Same approach as diffusers' own `get_dummy_components()`: real component
classes with tiny configs, so every code path that runs on Stable Diffusion
runs here in seconds on a CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import torch

TEST_WORDS = (
    "a photo of an the with and in on painting portrait landscape person cat dog tree house car "
    "red green blue yellow black white nude naked gore blood style artist flower sky sea mountain "
    "city street night day man woman child beach forest"
).split()


def tiny_tokenizer(cache_dir: str | Path | None = None, model_max_length: int = 77):
    from unsee.tokenizer import build_clip_tokenizer

    cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="unsee-tok-"))
    return build_clip_tokenizer(TEST_WORDS, cache_dir, model_max_length)


def tiny_components(
    *,
    seed: int = 0,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    sd2: bool = False,
    unet_channels: tuple[int, ...] = (32, 64),
    cross_attention_dim: int = 32,
    sample_size: int = 8,
) -> dict:
    """Components of a tiny `StableDiffusionPipeline`; images are 2 x `sample_size` px (16 px by default).

    `sd2=True` gives an SD 2.x-style UNet (linear projections, per-block head
    dims); `prediction_type="v_prediction"` an SD 2.x-768-style scheduler.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from unsee.models import sd_ddim_scheduler

    torch.manual_seed(seed)
    n = len(unet_channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=unet_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4) if sd2 and n == 2 else 8,
        use_linear_projection=sd2,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size * 2,
    )
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed + 2)
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": _tiny_text_encoder(tokenizer, cross_attention_dim),
        "tokenizer": tokenizer,
        "scheduler": sd_ddim_scheduler(prediction_type),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def _tiny_text_encoder(tokenizer, width: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=37,
            num_hidden_layers=5,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=width,
        )
    )


_SD_TEXT = {
    "sd15": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "sd21": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16),
}


def full_size_components(
    kind: Literal["sd15", "sd21"] = "sd15", *, latent_size: int | None = None, full_vae: bool = True, seed: int = 0
) -> dict:
    """SD 1.5's or SD 2.1's UNet, text encoder and VAE configs with random weights, for speed and memory benchmarks:
    the cost is the architecture's, not the weights'. `full_vae=False` gives a tiny VAE, for jobs that never decode.
    SD 2.1 predicts v, as the 768 px model does; the tokenizer is the tiny one (only ids up to 77 tokens matter)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from unsee.models import sd_ddim_scheduler

    sd2 = kind == "sd21"
    resolution = 768 if sd2 else 512
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=latent_size or resolution // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=1024 if sd2 else 768,
        attention_head_dim=(5, 10, 20, 20) if sd2 else 8,
        use_linear_projection=sd2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    torch.manual_seed(seed + 1)
    act = "gelu" if sd2 else "quick_gelu"
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act=act, **_SD_TEXT[kind]))
    torch.manual_seed(seed + 2)
    n = 4 if full_vae else 2
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512) if full_vae else (16, 32),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=2 if full_vae else 1,
        latent_channels=4,
        norm_num_groups=32 if full_vae else 8,
        sample_size=resolution,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text,
        "tokenizer": tiny_tokenizer(),
        "scheduler": sd_ddim_scheduler("v_prediction" if sd2 else "epsilon"),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def make_pipeline(components: dict):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**components, requires_safety_checker=False)


def tiny_pipeline(**kwargs):
    return make_pipeline(tiny_components(**kwargs))


def save_tiny_pipeline(path: str | Path, **kwargs) -> Path:
    """Save a tiny pipeline as a diffusers folder (what `unsee generate --model DIR` takes)."""
    path = Path(path)
    tiny_pipeline(**kwargs).save_pretrained(path)
    return path


def save_tiny_clip(path: str | Path, *, image_size: int = 16, width: int = 32, seed: int = 0) -> Path:
    """A tiny random-weight `CLIPModel` + tokenizer + image processor, saved as a folder (`--clip DIR`)."""
    import json

    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    tok = tiny_tokenizer(path)
    torch.manual_seed(seed)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=len(tok),
                hidden_size=width,
                intermediate_size=2 * width,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=tok.model_max_length,
                **ids,
            ),
            vision_config=dict(
                image_size=image_size,
                patch_size=4,
                hidden_size=width,
                intermediate_size=2 * width,
                num_hidden_layers=2,
                num_attention_heads=2,
            ),
            projection_dim=width,
        )
    )
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "crop_size": {"height": image_size, "width": image_size},
                "size": {"shortest_edge": image_size},
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
            }
        )
    )
    return path


def write_image_set(folder: str | Path, images, prompts: list[str]) -> Path:
    """An image set on disk from float (B, 3, H, W) images in [0, 1] (what `unsee generate` writes)."""
    import json

    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    lines = []
    for i, (a, p) in enumerate(zip(arr, prompts, strict=True)):
        rid = f"{i:05d}-000"
        Image.fromarray(a).save(folder / f"{rid}.png")
        lines.append(json.dumps({"id": rid, "prompt": p, "seed": i, "file": f"{rid}.png"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder
