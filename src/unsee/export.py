"""Write a Stable Diffusion 1.x pipeline as one original-format `.safetensors` checkpoint.

A1111, ComfyUI and most community tools load single CompVis/LDM-layout files,
not diffusers folders, so an edited model has to leave unsee in that form to be
used there. It also lets the single-file path of `load_pipeline` be tested
offline: export a tiny pipeline, load the file back, compare the weights.

This is the exact inverse of diffusers' single-file conversion
(`diffusers.loaders.single_file_utils`: `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`). The key map is
built from the modules themselves, so any number of levels and layers per
level works, not only SD 1.5's four.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import torch

from unsee.errors import UnseeError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

# First name after a resnet's prefix: diffusers name -> LDM name.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
# LDM's VAE attention (AttnBlock) is built from 1x1 convs named q/k/v/proj_out.
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

# (diffusers prefix -> (LDM prefix, renames of the first name(s) after the prefix))
_Map = dict[str, tuple[str, dict[str, str]]]


def _unet_map(unet) -> _Map:
    m: _Map = {
        "time_embedding.linear_1.": ("time_embed.0.", {}),
        "time_embedding.linear_2.": ("time_embed.2.", {}),
        "conv_in.": ("input_blocks.0.0.", {}),
        "conv_norm_out.": ("out.0.", {}),
        "conv_out.": ("out.2.", {}),
    }
    # LDM numbers input blocks flat: each resnet(+attention) is one block, each downsampler one more.
    n = 1
    for i, block in enumerate(unet.down_blocks):
        attentions = getattr(block, "attentions", None)
        for j in range(len(block.resnets)):
            m[f"down_blocks.{i}.resnets.{j}."] = (f"input_blocks.{n}.0.", _UNET_RESNET)
            if attentions is not None:
                m[f"down_blocks.{i}.attentions.{j}."] = (f"input_blocks.{n}.1.", {})
            n += 1
        if block.downsamplers is not None:
            m[f"down_blocks.{i}.downsamplers.0.conv."] = (f"input_blocks.{n}.0.op.", {})
            n += 1

    mid = unet.mid_block
    # diffusers reads middle_block.{0,1,2} only (resnet, attention, resnet): one layer, as in every SD.
    if mid is None or len(mid.resnets) != 2 or len(getattr(mid, "attentions", ())) != 1:
        raise UnseeError("this UNet's mid block is not SD's resnet-attention-resnet; it has no LDM layout")
    m["mid_block.resnets.0."] = ("middle_block.0.", _UNET_RESNET)
    m["mid_block.attentions.0."] = ("middle_block.1.", {})
    m["mid_block.resnets.1."] = ("middle_block.2.", _UNET_RESNET)

    # Output blocks: the upsampler sits in the level's last block, after the attention when there is one.
    n = 0
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        for j in range(len(block.resnets)):
            m[f"up_blocks.{i}.resnets.{j}."] = (f"output_blocks.{n}.0.", _UNET_RESNET)
            if attentions is not None:
                m[f"up_blocks.{i}.attentions.{j}."] = (f"output_blocks.{n}.1.", {})
            if j == len(block.resnets) - 1 and block.upsamplers is not None:
                m[f"up_blocks.{i}.upsamplers.0.conv."] = (
                    f"output_blocks.{n}.{2 if attentions is not None else 1}.conv.",
                    {},
                )
            n += 1
    return m


def _vae_map(vae) -> _Map:
    m: _Map = {}
    for part in ("encoder", "decoder"):
        for name in ("conv_in", "conv_out"):
            m[f"{part}.{name}."] = (f"{part}.{name}.", {})
        m[f"{part}.conv_norm_out."] = (f"{part}.norm_out.", {})
        mid = getattr(vae, part).mid_block
        for k in range(len(mid.resnets)):
            m[f"{part}.mid_block.resnets.{k}."] = (f"{part}.mid.block_{k + 1}.", _VAE_RESNET)
        m[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", _VAE_ATTENTION)
    for name in ("quant_conv", "post_quant_conv"):
        m[f"{name}."] = (f"{name}.", {})
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            m[f"encoder.down_blocks.{i}.resnets.{j}."] = (f"encoder.down.{i}.block.{j}.", _VAE_RESNET)
        if block.downsamplers is not None:
            m[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = (f"encoder.down.{i}.downsample.conv.", {})
    # LDM's decoder counts levels from the lowest resolution up; diffusers from the first block run.
    levels = len(vae.decoder.up_blocks)
    for i, block in enumerate(vae.decoder.up_blocks):
        ldm = levels - 1 - i
        for j in range(len(block.resnets)):
            m[f"decoder.up_blocks.{i}.resnets.{j}."] = (f"decoder.up.{ldm}.block.{j}.", _VAE_RESNET)
        if block.upsamplers is not None:
            m[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = (f"decoder.up.{ldm}.upsample.conv.", {})
    return m


def _convert(state: dict[str, torch.Tensor], mapping: _Map, prefix: str, what: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state.items():
        parts = key.split(".")
        for n in range(len(parts) - 1, 0, -1):  # longest known prefix wins
            head = ".".join(parts[:n]) + "."
            if head in mapping:
                ldm, renames = mapping[head]
                rest = key[len(head) :]
                for old, new in renames.items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old) :]
                        break
                out[prefix + ldm + rest] = value
                break
        else:
            unmapped.append(key)
    if unmapped:  # better no file than one that silently lacks weights
        raise UnseeError(f"the {what} has weights with no LDM name (first: {unmapped[0]!r}); it is not SD 1.x")
    return out


def _check(pipe) -> None:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    if not isinstance(pipe, StableDiffusionPipeline):
        raise UnseeError(f"can only export a StableDiffusionPipeline to a single file, got {type(pipe).__name__}")
    for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
        got = getattr(pipe, name, None)
        if not isinstance(got, cls):
            raise UnseeError(f"pipeline {name} is a {type(got).__name__}, not the {cls.__name__} of SD 1.x")
    # SD 2.x's OpenCLIP text encoder (gelu) is stored as cond_stage_model.model.*, a layout not written here.
    if pipe.text_encoder.config.hidden_act != "quick_gelu":
        raise UnseeError("this looks like SD 2.x (OpenCLIP text encoder); single-file export supports SD 1.x only")
    cfg = pipe.unet.config
    if cfg.class_embed_type or cfg.addition_embed_type or cfg.num_class_embeds:
        raise UnseeError("this UNet has class or addition embeddings (SDXL/upscaler); export supports SD 1.x only")
    for name in ("unet", "vae", "text_encoder"):
        if any(".base_layer." in k or "lora_" in k for k in getattr(pipe, name).state_dict()):
            raise UnseeError(
                f"the {name} has unfused adapters; fuse them first (pipe.fuse_lora(); pipe.unload_lora_weights())"
            )


def to_ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """UNet, VAE and text encoder weights under their original (CompVis/LDM) key names.

    Tensors stay on the pipeline's device and dtype (views of its weights, not copies).
    """
    _check(pipe)
    out = _convert(pipe.unet.state_dict(), _unet_map(pipe.unet), UNET_PREFIX, "UNet")
    vae = _convert(pipe.vae.state_dict(), _vae_map(pipe.vae), VAE_PREFIX, "VAE")
    for key, value in vae.items():
        # diffusers holds the VAE attention as Linear [C, C]; LDM as 1x1 Conv2d [C, C, 1, 1].
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            vae[key] = value[:, :, None, None]
    out.update(vae)
    for key, value in pipe.text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel (no `text_model.`); the original file keeps it.
        out[TEXT_PREFIX + (key if key.startswith("text_model.") else "text_model." + key)] = value
    return {k: v.detach() for k, v in out.items()}


def save_single_file(pipe, path: str | Path) -> Path:
    """Write `pipe` (SD 1.x) as one original-format `.safetensors` file, atomically; returns the path.

    Loadable by A1111/ComfyUI and by `load_pipeline(path, single_file_config=<diffusers folder>)`.
    """
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    if path.suffix.lower() != ".safetensors":
        raise UnseeError(f"{str(path)!r}: single files are written as .safetensors only (pickles can run code)")
    # safetensors writes contiguous CPU tensors; no two entries here share memory.
    tensors = {k: v.to("cpu").contiguous() for k, v in to_ldm_state_dict(pipe).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temp file in the same folder so os.replace is atomic: a crash never leaves a half-written checkpoint.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # safetensors >= 0.8 writes owner-only (0600); keep the mode a plain new file gets (umask),
        # so tools run by other users (a shared A1111/ComfyUI) can read the checkpoint.
        tmp.open("xb").close()
        mode = stat.S_IMODE(tmp.stat().st_mode)
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
