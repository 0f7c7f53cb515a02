"""Single-file export: the written checkpoint loads back through `load_pipeline` bit for bit, offline."""

from __future__ import annotations

import pytest
import torch

from unsee.errors import UnseeError
from unsee.export import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX, save_single_file
from unsee.models import load_pipeline
from unsee.testing import tiny_components, tiny_pipeline


def _deep_pipeline():
    """Two layers per level in UNet and VAE, and a three-level VAE: catches any hard-coded block count."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    c = tiny_components(sample_size=8, unet_channels=(32, 64, 64))
    torch.manual_seed(10)
    c["unet"] = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    c["vae"] = AutoencoderKL(
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    return StableDiffusionPipeline(**c, requires_safety_checker=False)


PIPELINES = {
    "two-levels": lambda: tiny_pipeline(),
    "three-levels": lambda: tiny_pipeline(sample_size=8, unet_channels=(32, 64, 64)),
    "linear-projection": lambda: tiny_pipeline(sd2=True),
    "two-layers-per-level": _deep_pipeline,
}


def _image(pipe):
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    z = initial_latents(pipe, [1, 2], size, size)
    cond, uncond = encode_text(pipe, ["a photo of a red cat", "a blue house"]), encode_text(pipe, [""] * 2)
    return decode(pipe, sample_latents(pipe, cond, uncond, z, torch.tensor([7.5, 7.5]), 4))


@pytest.mark.parametrize("kind", list(PIPELINES))
def test_single_file_loads_back_exactly(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = PIPELINES[kind]()
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    file = save_single_file(pipe, tmp_path / "out" / "model.safetensors")
    assert file == tmp_path / "out" / "model.safetensors"
    assert [p.name for p in file.parent.iterdir()] == ["model.safetensors"]  # no temp file left behind
    plain = tmp_path / "plain"
    plain.touch()
    assert file.stat().st_mode == plain.stat().st_mode  # umask mode, not safetensors' owner-only 0600

    loaded = load_pipeline(str(file), single_file_config=str(folder))
    for name in ("unet", "vae", "text_encoder"):
        want, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert want.keys() == got.keys(), name
        assert all(torch.equal(want[k], got[k]) for k in want), name

    # Same loader settings on both sides, so only the weights' path differs.
    reference = load_pipeline(str(folder))
    assert torch.allclose(_image(reference), _image(loaded), atol=1e-5)


def test_file_is_safetensors_in_ldm_layout(tmp_path):
    from safetensors import safe_open

    file = save_single_file(tiny_pipeline(), tmp_path / "m.safetensors")
    with safe_open(str(file), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
        # LDM keeps the VAE attention as 1x1 convolutions.
        assert f.get_tensor(VAE_PREFIX + "encoder.mid.attn_1.q.weight").ndim == 4
    assert all(k.startswith((UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX)) for k in keys)
    # The keys diffusers and A1111 use to recognise an SD 1.x checkpoint.
    assert UNET_PREFIX + "input_blocks.0.0.weight" in keys
    assert TEXT_PREFIX + "text_model.embeddings.position_embedding.weight" in keys
    # Names only A1111/ComfyUI check (diffusers' loader accepts an upsampler at `.1.conv` or `.2.conv`).
    assert {
        UNET_PREFIX + "input_blocks.2.0.op.weight",  # downsampler of level 0
        UNET_PREFIX + "input_blocks.3.1.proj_in.weight",  # attention of level 1
        UNET_PREFIX + "output_blocks.1.2.conv.weight",  # upsampler after an attention
        UNET_PREFIX + "output_blocks.3.0.skip_connection.weight",
        VAE_PREFIX + "encoder.down.0.downsample.conv.weight",
        VAE_PREFIX + "decoder.up.1.upsample.conv.weight",  # LDM counts decoder levels from the bottom
    } <= keys


def test_sd15_sized_pipeline_gets_the_original_key_names():
    """Full SD 1.5 architecture on the meta device (no memory): names and shapes of the original checkpoint."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from unsee.export import to_ldm_state_dict

    c = tiny_components()
    with init_empty_weights():
        c["unet"] = UNet2DConditionModel(cross_attention_dim=768)  # the defaults are SD 1.x's UNet
        c["vae"] = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
        )
        c["text_encoder"] = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
            )
        )
    sd = to_ldm_state_dict(StableDiffusionPipeline(**c, requires_safety_checker=False))
    assert len(sd) == 686 + 248 + 196  # every diffusers tensor, nothing dropped or added
    shapes = {
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.input_blocks.9.0.op.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.input_blocks.11.0.out_layers.3.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        "model.diffusion_model.middle_block.2.emb_layers.1.weight": (1280, 1280),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.encoder.down.2.downsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.mid.block_2.conv2.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.up.0.block.2.conv1.weight": (128, 128, 3, 3),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert "first_stage_model.encoder.down.3.downsample.conv.weight" not in sd  # last level keeps its size
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in sd


def test_refuses_what_is_not_sd1(tmp_path):
    with pytest.raises(UnseeError, match="StableDiffusionPipeline"):
        save_single_file(object(), tmp_path / "m.safetensors")
    pipe = tiny_pipeline()
    with pytest.raises(UnseeError, match="safetensors"):
        save_single_file(pipe, tmp_path / "m.ckpt")
    pipe.text_encoder.config.hidden_act = "gelu"  # SD 2.x's OpenCLIP text encoder
    with pytest.raises(UnseeError, match="SD 2.x"):
        save_single_file(pipe, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.torch

    file = tmp_path / "m.safetensors"
    file.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_single_file(tiny_pipeline(), file)
    assert file.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
