"""The one place pipelines are loaded: hub id, local folder, single file, or `toyworld`.

Every stage calls `load_pipeline`. It settles dtype, device, attention backend,
gradient checkpointing and the scheduler a stage needs, and refuses what unsee
does not support yet (SDXL, SD3, Flux, ...) with a one-line message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from unsee.errors import UnseeError, first_line

logger = logging.getLogger(__name__)

Dtype = Literal["fp32", "fp16", "bf16"]
SchedulerName = Literal["ddim", "pipeline", "dpm", "euler", "pndm"]
Attention = Literal["sdpa", "eager"]

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SUPPORTED_PIPELINES = ("StableDiffusionPipeline",)
TOYWORLD = "toyworld"
_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class ModelSource:
    """What a model argument resolved to."""

    kind: Literal["folder", "hub", "single_file"]
    location: str  # a path or a hub id


def toyworld_path() -> Path:
    """Folder of the toy-world pipeline: the shipped build, or UNSEE_TOYWORLD's (see `unsee.toyworld`)."""
    from unsee.toyworld import PIPELINE, assets_path

    return assets_path() / PIPELINE


def resolve_model(spec: str) -> ModelSource:
    """Map a model argument to a folder, a single file or a hub id, refusing what cannot work."""
    if not spec or not spec.strip():
        raise UnseeError("model is empty; give a hub id, a local diffusers folder, a .safetensors file, or 'toyworld'")
    if spec == TOYWORLD:
        path = toyworld_path()
        if not (path / "model_index.json").exists():
            raise UnseeError("the toy-world pipeline is not in this installation; build it with `unsee toyworld build`")
        return ModelSource("folder", str(path))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise UnseeError(
                f"folder {spec!r} is not a diffusers pipeline (no model_index.json); "
                "save one with pipe.save_pretrained(folder) or pass a hub id"
            )
        return ModelSource("folder", str(path))
    if path.is_file():
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise UnseeError(
                f"{spec!r} is a pickle checkpoint, which can run code when loaded; unsee only loads .safetensors "
                "single files (convert it on a trusted machine)"
            )
        if path.suffix.lower() != ".safetensors":
            raise UnseeError(f"{spec!r} is not a .safetensors file or a diffusers folder")
        return ModelSource("single_file", str(path))
    if not _HUB_ID.fullmatch(spec):
        raise UnseeError(
            f"model {spec!r} does not exist; give an existing folder, a .safetensors file, or a hub id like org/name"
        )
    return ModelSource("hub", spec)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint, so an offline machine fails in seconds, not after retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
        ):
            return True
    except OSError:
        return False


def _hub_offline(local_files_only: bool) -> str | None:
    """Why the hub cannot be used now, or None when it can."""
    if local_files_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return "offline mode is on"
    if not hub_reachable():
        return "the hub cannot be reached"
    return None


def _pipeline_class_name(source: ModelSource, offline_why: str | None) -> str:
    if source.kind == "folder":
        index = json.loads((Path(source.location) / "model_index.json").read_text())
        return index.get("_class_name", "?")
    from diffusers import DiffusionPipeline

    try:  # the local cache first: works offline and costs no request
        return DiffusionPipeline.load_config(source.location, local_files_only=True).get("_class_name", "?")
    except Exception:  # not cached
        pass
    if offline_why:
        why = f"not in the local cache and {offline_why}"
    else:
        try:
            return DiffusionPipeline.load_config(source.location).get("_class_name", "?")
        except Exception as e:  # hub errors come in many types; all mean "cannot get it"
            why = type(e).__name__ + (f": {first_line(e)}" if str(e).strip() else "")
    raise UnseeError(
        f"could not load {source.location!r} from the Hugging Face Hub ({why}); check the id, download it where "
        "there is network (`hf download ID`), or pass a local folder"
    )


# Key prefixes that mark single files of architectures unsee does not support yet.
_SINGLE_FILE_ARCHS = {
    "conditioner.embedders.": "Stable Diffusion XL",
    "model.diffusion_model.joint_blocks.": "Stable Diffusion 3",
    "double_blocks.": "Flux",
    "model.diffusion_model.double_blocks.": "Flux",
}


def _check_single_file(path: str) -> None:
    """Refuse single files of unsupported architectures from their header alone (no weights read)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:  # not a readable safetensors file
        raise UnseeError(f"{path!r} is not a readable .safetensors file ({type(e).__name__})") from None
    for prefix, arch in _SINGLE_FILE_ARCHS.items():
        if any(k.startswith(prefix) for k in keys):
            raise UnseeError(
                f"{path!r} is a {arch} checkpoint; unsee supports Stable Diffusion 1.x/2.x and not this architecture yet"
            )
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise UnseeError(f"{path!r} has no Stable Diffusion UNet weights (no model.diffusion_model.* keys)")


def sd_ddim_scheduler(prediction_type: str = "epsilon"):
    """A DDIM scheduler on Stable Diffusion 1.x/2.x's noise schedule (scaled-linear betas 0.00085 to 0.012), as
    the tiny test models, the benchmarks' random-weight models and the toy world use it."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def _make_scheduler(name: SchedulerName, config):
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
    )

    cls = {
        "ddim": DDIMScheduler,
        "dpm": DPMSolverMultistepScheduler,
        "euler": EulerDiscreteScheduler,
        "pndm": PNDMScheduler,
    }[name]
    return cls.from_config(config)


def _load_weights(spec: str, source, torch_dtype, offline_why: str | None, single_file_config: str | None):
    """The StableDiffusionPipeline of a folder, hub id or single file; every failure as one UnseeError line."""
    from diffusers import StableDiffusionPipeline

    common = dict(dtype=torch_dtype, safety_checker=None, requires_safety_checker=False)
    try:
        if source.kind != "single_file":
            return StableDiffusionPipeline.from_pretrained(
                source.location, local_files_only=offline_why is not None, **common
            )
        kw = dict(common)
        if single_file_config:
            kw["config"] = single_file_config
        elif offline_why:
            # diffusers would fetch its default config repo from the hub, even with local_files_only=True.
            raise UnseeError(
                f"{spec!r} is a single file and {offline_why}; pass a diffusers folder of the same architecture "
                "as its config (--model-config DIR) so its configs are read locally"
            )
        return StableDiffusionPipeline.from_single_file(source.location, local_files_only=offline_why is not None, **kw)
    except UnseeError:
        raise
    except (OSError, ValueError) as e:
        raise UnseeError(f"could not load model {spec!r}: {first_line(e)}") from None


def load_pipeline(
    spec: str,
    *,
    dtype: Dtype = "fp32",
    device: str | torch.device = "cpu",
    scheduler: SchedulerName = "ddim",
    attention: Attention = "sdpa",
    gradient_checkpointing: bool = False,
    channels_last: bool = True,
    single_file_config: str | None = None,
    local_files_only: bool = False,
):
    """Load a Stable Diffusion 1.x/2.x pipeline ready for unsee's own sampling and training loops.

    Args:
        spec: hub id (`CompVis/stable-diffusion-v1-4`), local diffusers folder,
            `.safetensors` single file, or `toyworld`.
        dtype: weights dtype; training code keeps trainable params in fp32 itself.
        scheduler: `ddim` (default: deterministic with eta=0, and the one DDPO and
            the erasers step through), `pipeline` keeps the pipeline's own.
        attention: `sdpa` (torch scaled-dot-product attention) or `eager`
            (plain matmuls, for debugging and double-backward).
        channels_last: UNet and VAE in channels-last memory format (~1.2x faster
            convolutions on CPU, and diffusers' advice on GPU; same results to ~1e-4).
        single_file_config: a diffusers folder or hub id whose configs a single
            file is read with (needed offline).
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if dtype not in DTYPES:
        raise UnseeError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    source = resolve_model(spec)
    torch_dtype = DTYPES[dtype]

    # 1. Refuse pipelines we do not support, before loading any weights.
    offline_why = _refuse_unsupported(spec, source, single_file_config, local_files_only)

    # 2. Load, without the safety checker: unsee measures and removes content itself.
    pipe = _load_weights(spec, source, torch_dtype, offline_why, single_file_config)
    pipe.set_progress_bar_config(disable=True)

    # 3. Scheduler, attention, checkpointing, device.
    if scheduler != "pipeline":
        pipe.scheduler = _make_scheduler(scheduler, pipe.scheduler.config)
    pipe.unet.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
    if gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        pipe.text_encoder.gradient_checkpointing_enable()
    pipe.to(device)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    logger.info("loaded %s (%s) as %s on %s", spec, source.kind, dtype, device)
    return pipe


def _refuse_unsupported(spec: str, source, single_file_config: str | None, local_files_only: bool) -> str | None:
    """Raise for a file or pipeline class unsee cannot load; returns why the hub is unreachable, if it is."""
    local_config = source.kind == "single_file" and bool(single_file_config) and Path(single_file_config).is_dir()
    offline_why = _hub_offline(local_files_only) if source.kind != "folder" and not local_config else None
    if source.kind == "single_file":
        _check_single_file(source.location)
        return offline_why
    cls_name = _pipeline_class_name(source, offline_why)
    if cls_name not in SUPPORTED_PIPELINES:
        raise UnseeError(
            f"{spec!r} is a {cls_name}; unsee supports Stable Diffusion 1.x/2.x (StableDiffusionPipeline) "
            "and not this architecture yet"
        )
    return offline_why


def model_id(spec: str) -> str:
    """A stable name for a model argument, recorded in manifests (absolute path for folders)."""
    if spec == TOYWORLD:
        return TOYWORLD
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def weights_fingerprint(spec: str) -> str | None:
    """Size and modification time of a local model's weight files, hashed: it changes when the weights are
    rewritten (an erase run into the same folder), so cached images of the old weights are not reused.
    None for hub ids (their revision pins them)."""
    import hashlib

    path = toyworld_path() if spec == TOYWORLD else Path(spec).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for pattern in ("*.safetensors", "*/*.safetensors") for f in path.glob(pattern))
    else:
        return None
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_text_encoder(spec: str, *, dtype: Dtype = "fp32", device: str | torch.device = "cpu"):
    """(tokenizer, text encoder) of a pipeline, without loading its UNet and VAE where the layout allows.

    Red-teaming by prompt search needs only these two (Ring-A-Bell). A single file
    holds everything in one blob, so for it the whole pipeline is loaded and taken apart.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    source = resolve_model(spec)
    if source.kind == "single_file":
        pipe = load_pipeline(spec, dtype=dtype, device=device)
        return pipe.tokenizer, pipe.text_encoder.eval()
    offline = _hub_offline(False) is not None if source.kind == "hub" else True
    try:
        if source.kind == "folder":
            tok = CLIPTokenizer.from_pretrained(str(Path(source.location) / "tokenizer"))
            te = CLIPTextModel.from_pretrained(Path(source.location) / "text_encoder", dtype=DTYPES[dtype])
        else:
            tok = CLIPTokenizer.from_pretrained(source.location, subfolder="tokenizer", local_files_only=offline)
            te = CLIPTextModel.from_pretrained(
                source.location, subfolder="text_encoder", dtype=DTYPES[dtype], local_files_only=offline
            )
    except (OSError, ValueError) as e:
        raise UnseeError(f"could not load the tokenizer and text encoder of {spec!r}: {first_line(e)}") from None
    return tok, te.to(device).eval()
