"""`unsee generate`: prompts -> image set (PNGs + manifest.jsonl), resumable and shardable.

An image is fixed by (model, prompt, seed, guidance, steps, size, negative
prompt, scheduler): its initial noise comes from its own seed, so the batch
size never changes it. A rerun into the same folder skips finished images.
Under `accelerate launch` each process takes every world_size-th image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from unsee.config import check_positive, field, to_dict
from unsee.errors import StaleImageSet, UnseeError
from unsee.files import append_line_group, atomic_write, ensure_writable_dir
from unsee.imageset import INFO, MANIFEST, read_manifest, repair_manifest
from unsee.models import Dtype, SchedulerName, load_pipeline, model_id, weights_fingerprint
from unsee.prompts import Prompt, read_prompts
from unsee.runinfo import run_info
from unsee.runtime import process_state, resolve_device
from unsee.sampling import decode, encode_text, initial_latents, sample_latents, to_uint8

logger = logging.getLogger(__name__)

# Settings that change the pixels; an existing image set must match them to be resumed.
_IMAGE_SETTINGS = ("model", "steps", "guidance", "seed", "negative_prompt", "height", "width", "dtype", "scheduler")


@dataclasses.dataclass
class GenerateConfig:
    HELP_GROUPS = {  # sections of --help
        "What to draw": ("model", "prompts", "model_config", "images_per_prompt", "negative_prompt"),
        "Sampling": ("steps", "guidance", "height", "width", "scheduler", "seed", "batch_size", "dtype", "device"),
        "Output": ("out",),
    }

    model: str = field(help="Hub id, local diffusers folder, .safetensors file, or 'toyworld'.")
    prompts: str = field(help="Prompt file: .txt (one prompt a line) or .csv with I2P columns.")
    out: str = field(help="Output folder for the image set (PNGs + manifest.jsonl); a rerun resumes it.")
    model_config: str | None = field(
        None,
        help="For a .safetensors single file: a diffusers folder or hub id of the same architecture to read its configs from (needed offline).",
    )
    images_per_prompt: int = field(1, help="Images per prompt; image i of a prompt uses its own seed.")
    steps: int = field(25, help="Sampling steps.")
    guidance: float = field(7.5, help="CFG scale, unless the prompt file gives one per prompt; 1 disables CFG.")
    batch_size: int = field(8, help="Images per UNet batch; never changes the images.")
    seed: int = field(
        0,
        help="Base seed for prompts without their own; each image gets a seed derived from (seed, prompt index, image index).",
    )
    negative_prompt: str = field("", help="Negative prompt used as the CFG unconditional text.")
    height: int | None = field(None, help="Image height in px (default: the model's native size).")
    width: int | None = field(None, help="Image width in px (default: the model's native size).")
    dtype: Dtype = field("fp32", help="Weights dtype.")
    device: str = field("auto", help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    scheduler: SchedulerName = field("ddim", help="Sampler; 'pipeline' keeps the model's own scheduler.")

    def __post_init__(self) -> None:
        check_positive("--images-per-prompt", self.images_per_prompt)
        check_positive("--steps", self.steps)
        check_positive("--batch-size", self.batch_size)
        check_positive("--guidance", self.guidance, allow_zero=True)
        if self.seed < 0:
            raise UnseeError(f"--seed must be >= 0, got {self.seed}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (v <= 0 or v % 8):
                raise UnseeError(f"--{name} must be a positive multiple of 8, got {v}")


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to make."""

    id: str
    prompt: Prompt
    seed: int
    guidance: float
    height: int
    width: int


def image_seed(base_seed: int, prompt: Prompt, i: int) -> int:
    """Seed of image i of a prompt: the prompt's own seed + i (I2P convention), else a stable hash.

    The hash keeps seeds distinct across prompts (so a prompt set's images are
    independent samples) and independent of how many prompts or images there are.
    """
    if prompt.seed is not None:
        return prompt.seed + i
    return zlib.crc32(f"{base_seed}/{prompt.index}/{i}".encode()) & 0x7FFFFFFF


def plan_items(cfg: GenerateConfig, prompts: list[Prompt], native: int) -> list[Item]:
    items = []
    for p in prompts:
        h = p.height or cfg.height or native
        w = p.width or cfg.width or native
        g = p.guidance if p.guidance is not None else cfg.guidance
        for i in range(cfg.images_per_prompt):
            items.append(Item(f"{p.index:05d}-{i:03d}", p, image_seed(cfg.seed, p, i), g, h, w))
    return items


def _batches(items: list[Item], batch_size: int) -> Iterator[list[Item]]:
    """Batches of one image size and one CFG mode (guidance 1 = no CFG), in item order."""
    by_size: dict[tuple[int, int, bool], list[Item]] = {}
    for it in items:
        by_size.setdefault((it.height, it.width, it.guidance != 1.0), []).append(it)
    for group in by_size.values():
        for k in range(0, len(group), batch_size):
            yield group[k : k + batch_size]


def _record(it: Item, cfg: GenerateConfig, model: str) -> dict[str, Any]:
    rec = {
        "id": it.id,
        "prompt": it.prompt.text,
        "seed": it.seed,
        "guidance": it.guidance,
        "steps": cfg.steps,
        "height": it.height,
        "width": it.width,
        "negative_prompt": cfg.negative_prompt,
        "scheduler": cfg.scheduler,
        "model": model,
        "file": f"{it.id}.png",
        "prompt_index": it.prompt.index,
    }
    if it.prompt.categories is not None:
        rec["categories"] = it.prompt.categories
    if it.prompt.case_number is not None:
        rec["case_number"] = it.prompt.case_number
    return rec


def _settings(cfg: GenerateConfig, model: str, prompts: list[Prompt]) -> dict[str, Any]:
    s = {k: getattr(cfg, k) for k in _IMAGE_SETTINGS}
    s["model"] = model
    s["weights"] = weights_fingerprint(cfg.model)
    s["images_per_prompt"] = cfg.images_per_prompt
    s["prompts_sha256"] = hashlib.sha256(json.dumps([dataclasses.astuple(p) for p in prompts]).encode()).hexdigest()
    return s


def _check_resumable(out: Path, settings: dict[str, Any]) -> None:
    info_path = out / INFO
    if not info_path.exists():
        if (out / MANIFEST).exists():
            raise UnseeError(
                f"{str(out)!r} has a {MANIFEST} but no {INFO}; it was not made by this unsee, use another --out"
            )
        return
    old = json.loads(info_path.read_text()).get("settings", {})
    diff = [k for k in settings if k not in ("images_per_prompt", "prompts_sha256") and old.get(k) != settings[k]]
    if old.get("prompts_sha256") != settings["prompts_sha256"]:
        diff.append("prompts")
    if diff:
        what = ", ".join(
            f"{k} ({old.get(k)!r} there, {settings.get(k)!r} now)" if k != "prompts" else "prompts" for k in diff
        )
        raise StaleImageSet(f"{str(out)!r} holds an image set made with other settings: {what}; use another --out")


def _save_png(array, path: Path) -> None:
    from PIL import Image

    atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))


def _draw(pipe, batch: list[Item], negative: torch.Tensor | None, steps: int) -> Any:
    """One batch's images as uint8 arrays; a batch shares its size and guidance (`_batches` groups them so)."""
    cond = encode_text(pipe, [it.prompt.text for it in batch])
    use_cfg = batch[0].guidance != 1.0
    guidance = torch.tensor([it.guidance for it in batch], device=cond.device) if use_cfg else None
    uncond = negative.expand(len(batch), -1, -1) if use_cfg else None
    z = initial_latents(pipe, [it.seed for it in batch], batch[0].height, batch[0].width)
    return to_uint8(decode(pipe, sample_latents(pipe, cond, uncond, z, guidance, steps)))


def generate(cfg: GenerateConfig, *, progress: bool = True, pipe=None) -> Path:
    """Make the image set described by `cfg`; returns the output folder.

    `pipe` may be given to reuse a loaded pipeline (its weights must be what
    `cfg.model` names: that name is what the manifest records).
    """
    from tqdm.auto import tqdm

    # 1. Check inputs before touching the output folder.
    prompts = read_prompts(cfg.prompts)
    out = ensure_writable_dir(cfg.out)
    state = process_state()
    if pipe is None:
        device = state.device if state.num_processes > 1 else resolve_device(cfg.device)
        pipe = load_pipeline(
            cfg.model, dtype=cfg.dtype, device=device, scheduler=cfg.scheduler, single_file_config=cfg.model_config
        )
    model = model_id(cfg.model)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    items = plan_items(cfg, prompts, native)
    f = pipe.vae_scale_factor
    for it in items:
        if it.height % f or it.width % f:
            raise UnseeError(f"image size {it.height}x{it.width} must be divisible by {f} for this model")
    settings = _settings(cfg, model, prompts)

    # 2. Open (or resume) the image set; rank 0 writes its info while others wait.
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _check_resumable(out, settings)
        repair_manifest(out)
        info = run_info(to_dict(cfg), settings=settings, format="unsee.imageset", format_version=1)
        atomic_write(out / INFO, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
    state.wait_for_everyone()
    _check_resumable(out, settings)

    # 3. This rank's share: shard the full plan first, so ranks never race on what is done.
    done = {r["id"] for r in read_manifest(out, strict=False) if (out / r["file"]).exists()}
    mine = [it for k, it in enumerate(items) if k % state.num_processes == state.process_index and it.id not in done]
    logger.info("%d images planned, %d done, %d for this process", len(items), len(done), len(mine))

    # 4. Generate batch by batch: PNGs first (atomic), then one manifest append per batch.
    # The negative prompt's embedding is encoded once, and only when some image uses guidance.
    negative = encode_text(pipe, [cfg.negative_prompt]) if any(it.guidance != 1.0 for it in mine) else None
    bar = tqdm(total=len(mine), desc="generate", unit="img", disable=not (progress and state.is_local_main_process))
    for batch in _batches(mine, cfg.batch_size):
        arrays = _draw(pipe, batch, negative, cfg.steps)
        for it, a in zip(batch, arrays, strict=True):
            _save_png(a, out / f"{it.id}.png")
        append_line_group(out / MANIFEST, [json.dumps(_record(it, cfg, model)) for it in batch])
        bar.update(len(batch))
    bar.close()
    state.wait_for_everyone()
    return out
