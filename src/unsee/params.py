"""Which UNet parameters train: one helper for erase, RL and every later trainer.

- `xattn`: cross-attention (`attn2`) only (ESD-x; SDD's default, ~5% of SD 1.x).
- `xattn-kv`: cross-attention keys and values only (`attn2.to_k`, `attn2.to_v`): the
  only weights that read the prompt, so a prompt whose keys and values stay put
  is drawn exactly as before (what closed-form editors such as UCE change).
- `noxattn`: everything but cross-attention (ESD-u, for global concepts).
- `full`: every UNet parameter.
- `lora`: a PEFT LoRA adapter on attention projections; the base stays frozen
  and `unet.disable_adapters()` gives the original model back (docs/design.md,
  "The shared training loop").
  Saved so that diffusers' `pipe.load_lora_weights(dir)` reads it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch

from unsee.config import field
from unsee.errors import UnseeError

ParamSet = Literal["xattn", "xattn-kv", "noxattn", "full", "lora"]
PARAM_SETS: tuple[str, ...] = ("xattn", "xattn-kv", "noxattn", "full", "lora")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


# every attention projection, self- and cross-
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclasses.dataclass
class LoraSettings:
    rank: int = field(4, help="LoRA rank r.")
    alpha: float = field(4.0, help="LoRA alpha; the update is scaled by alpha / r.")
    target_modules: tuple[str, ...] = field(LORA_TARGETS, help="Module names that get LoRA layers.")

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise UnseeError(f"LoRA rank must be > 0, got {self.rank}")
        if not self.target_modules:
            raise UnseeError("LoRA needs at least one target module")


def _is_xattn(name: str) -> bool:
    return ".attn2." in f".{name}"


# What ESD-u leaves frozen besides cross-attention, as the public ESD and SDD code do ('time_embed' and the output
# block 'out.' in CompVis names): the timestep (and SDXL's size/text) embeddings and the output norm and convolution.
NOXATTN_FROZEN = ("time_embedding.", "add_embedding.", "conv_norm_out.", "conv_out.")


def _is_noxattn(name: str) -> bool:
    return not _is_xattn(name) and not name.startswith(NOXATTN_FROZEN)


def is_xattn_kv(name: str) -> bool:
    return ".attn2.to_k." in f".{name}" or ".attn2.to_v." in f".{name}"


def select_parameters(
    unet: torch.nn.Module, which: ParamSet, lora: LoraSettings | None = None, seed: int = 0
) -> list[torch.nn.Parameter]:
    """Freeze the UNet except the chosen set (adding a LoRA adapter for `lora`); return the trainable params.

    The LoRA initialisation draws from its own generator seeded by `seed`, not the global one, so a run is
    reproducible whatever ran before it in the process."""
    if which not in PARAM_SETS:
        raise UnseeError(f"params must be one of {', '.join(PARAM_SETS)}, got {which!r}")
    unet.requires_grad_(False)
    if which == "lora":
        from peft import LoraConfig

        lora = lora or LoraSettings()
        names = [n for n, _ in unet.named_modules()]
        missing = [t for t in lora.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
        if missing:
            raise UnseeError(
                f"LoRA target {', '.join(missing)} names no module of this UNet; give the end of a module's name, "
                "as to_k or attn2.to_v"
            )
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            init_lora_weights="gaussian",
            target_modules=list(lora.target_modules),
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            unet.add_adapter(config)
        params = [p for n, p in unet.named_parameters() if "lora_" in n]
    else:
        keep = {"xattn": _is_xattn, "xattn-kv": is_xattn_kv, "noxattn": _is_noxattn, "full": lambda n: True}[which]
        params = [p for n, p in unet.named_parameters() if keep(n)]
    if not params:
        raise UnseeError(f"params {which!r} selects no parameter of this UNet")
    for p in params:
        p.requires_grad_(True)
    return params


def trained_unet_params(
    pipe, which: ParamSet, lora_rank: int, seed: int, lora_targets: tuple[str, ...] | None = None
) -> dict[str, torch.nn.Parameter]:
    """The UNet parameters a training command updates, by name, as fp32 master weights whatever the frozen dtype;
    the VAE and text encoder are frozen. `lora_targets`: the modules that get LoRA layers (default: every attention
    projection)."""
    from unsee.trainer import fp32_master

    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    lora = LoraSettings(rank=lora_rank, alpha=float(lora_rank), target_modules=lora_targets or LORA_TARGETS)
    trained = select_parameters(pipe.unet, which, lora, seed=seed)
    names = {id(p): n for n, p in pipe.unet.named_parameters()}
    return fp32_master({names[id(p)]: p for p in trained})


def trainable_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Name -> tensor of the parameters that currently train (for checkpoints and EMA)."""
    return {n: p.detach() for n, p in unet.named_parameters() if p.requires_grad}


def save_lora(unet: torch.nn.Module, out_dir: str | Path) -> Path:
    """Save the UNet's LoRA adapter where `StableDiffusionPipeline.load_lora_weights(out_dir)` reads it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    config = unet.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    StableDiffusionPipeline.save_lora_weights(
        save_directory=str(out_dir),
        unet_lora_layers=state,
        safe_serialization=True,
        weight_name=LORA_WEIGHT_NAME,
        unet_lora_adapter_metadata=config,
    )
    return Path(out_dir) / LORA_WEIGHT_NAME


def save_trained_unet(pipe, base_model: str, params: ParamSet, out: Path) -> None:
    """The output of a fine-tune: LoRA weights for `load_lora_weights`, or the base pipeline (without any token
    the run added to its tokenizer) with the trained UNet, for `from_pretrained`."""
    if params == "lora":
        save_lora(pipe.unet, out)
        return
    from unsee.models import load_pipeline

    clean = load_pipeline(base_model, scheduler="pipeline")
    if all(p.dtype == torch.float32 for p in pipe.unet.parameters()):
        clean.unet.load_state_dict(pipe.unet.state_dict())
    else:  # mixed precision: only the fp32 master weights, so the frozen ones keep the base model's own precision
        clean.unet.load_state_dict(trainable_state_dict(pipe.unet), strict=False)
    clean.save_pretrained(out)


def merge_lora(base_model: str, lora_dir: str | Path, out: str | Path) -> Path:
    """A pipeline folder with LoRA weights fused into the base model's UNet, for tools that take a model folder
    (`unsee evaluate`, `unsee attack`). Written to a temporary folder first, then renamed."""
    from unsee.files import atomic_write_dir
    from unsee.models import load_pipeline
    from unsee.provenance import KEY, lineage
    from unsee.runinfo import write_run_info

    pipe = load_pipeline(base_model, scheduler="pipeline")
    pipe.load_lora_weights(str(lora_dir))
    pipe.fuse_lora()
    pipe.unload_lora_weights()

    def save(folder: Path) -> None:  # the fused model keeps the record of what trained the LoRA
        pipe.save_pretrained(folder)
        write_run_info(
            Path(folder) / "unsee.json",
            stage="merge_lora",
            base_model=base_model,
            lora=str(lora_dir),
            **{KEY: lineage([], model=str(lora_dir))},
        )

    return atomic_write_dir(out, save)
