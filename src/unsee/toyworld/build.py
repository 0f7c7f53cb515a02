"""`unsee toyworld build`: train the whole toy world from scratch, with fixed seeds.

Stages, each skipped when its output exists (a rerun resumes):
  1. data       render the training scenes and their captions
  2. tokenizer  CLIPTokenizer files for the world's vocabulary
  3. vae        AutoencoderKL (32 px <-> 4x16x16 latents), scaling factor measured
  4. oracle     CNN on uniform random scenes, raw and VAE-reconstructed
  5. clip       CLIPModel trained contrastively; its text tower is the text encoder
  6. latents    the training images encoded once
  7. unet       UNet2DConditionModel, eps-prediction, min-SNR weighting, EMA; checkpointed
  8. pipeline   StableDiffusionPipeline folder (DDIM), plus the prompt files
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from unsee.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from unsee.config import field
from unsee.files import as_json, atomic_write_text
from unsee.toyworld import CARD, CLIP, ORACLE, PIPELINE, PROMPTS
from unsee.toyworld.render import SIZE, render_many
from unsee.toyworld.world import (
    BACKGROUNDS,
    CO_OCCURRENCE,
    COLOURS,
    FLAGGABLE,
    HELDOUT_PAIRS,
    OBJECT_TRIGGERS,
    PROMPT_SETS,
    SEEN_PAIRS,
    SHAPES,
    STYLE_TRIGGERS,
    Rates,
    alone_contexts,
    concept_pairs,
    novel_prompt_set,
    novel_split_templates,
    part_prompts,
    prompt_set,
    random_scene,
    sample_scene,
    template,
    varied_contexts,
    vocabulary,
)

logger = logging.getLogger(__name__)
ALL_PAIRS = SEEN_PAIRS + HELDOUT_PAIRS
CLIP_LAYERS = 4  # layers of each toy CLIP tower


@dataclasses.dataclass
class BuildConfig:
    out: str = field(help="Output folder for the built world (pipeline/, clip/, oracle/, prompts/).")
    seed: int = field(0, help="Seed of everything: scenes, initialisations, batches.")
    train_images: int = field(40000, help="Rendered training scenes (captioned) for VAE, CLIP and UNet.")
    oracle_images: int = field(24000, help="Rendered uniform scenes for the oracle.")
    vae_steps: int = field(600, help="VAE training steps.")
    vae_batch: int = field(32, help="VAE batch size.")
    oracle_steps: int = field(1000, help="Oracle training steps.")
    oracle_batch: int = field(128, help="Oracle batch size.")
    clip_steps: int = field(600, help="CLIP training steps.")
    clip_batch: int = field(256, help="CLIP batch size.")
    unet_steps: int = field(9000, help="UNet training steps.")
    unet_batch: int = field(32, help="UNet batch size (on 2 cores, more small steps beat fewer large ones).")
    unet_lr: float = field(6e-4, help="UNet peak learning rate (warm-up then cosine to 10%).")
    unet_channels: tuple[int, ...] = field((32, 64, 96), help="UNet block_out_channels.")
    unet_ema_decay: float = field(0.997, help="EMA decay of the saved UNet weights (a window of ~1/(1-decay) steps).")
    text_width: int = field(64, help="CLIP width = the UNet's cross-attention dim.")
    # The defaults are the shipped world's recipe (the twelfth build); docs/results/toyworld.md says why each is so.
    text_encoder_layers: int = field(
        4,
        help="Layers of the CLIP text tower the pipeline's text encoder keeps, 0-4: 4 mixes context into every "
        "state, causally, as CLIP's does; 0 keeps token and position embeddings and the final norm only, so a "
        "word's state does not depend on its neighbours.",
    )
    captions: Literal["template", "varied"] = field(
        "varied",
        help="Caption grammar: varied (prefixes, 'the', objects joined by 'with' or 'and' in either order, background "
        "and style first or last; world.caption_varied) or template (every caption 'a [photo of a] COLOUR SHAPE "
        "[with a EXTRA] [BACKGROUND] [by STYLE]').",
    )
    clip_attribute_loss: float = field(
        3.0,
        help="Weight of an auxiliary loss in the CLIP stage: linear heads read, from the "
        "text tower's state at every position (padding included), each attribute the caption has "
        "named so far (colour, shape, background, extra object, style, trigger word). It keeps what a "
        "contextual tower's states say linearly readable, so colour and shape stay apart in them for pairs no "
        "caption held; 0 trains CLIP's contrastive loss alone.",
    )
    pad_attributes: Literal["named", "none", "scene"] = field(
        "scene",
        help="What the attribute loss asks of the padding states after the end-of-text token: 'named' (every "
        "attribute the caption named, so the padding sums up the caption), 'none' (no attribute: the padding "
        "carries no attribute linearly and the UNet must read each one at its words, as models with a frozen CLIP "
        "text encoder, SD 1.x and 2.x among them, largely ignore their padding; Toker et al. 2025) or 'scene' (the "
        "colour, shape and background only: the padding sums up the scene, and the extra object, the style and "
        "the trigger words must be read where they are said).",
    )
    caption_drop_colour: float = field(
        0.25, help="Fraction of training captions that leave out the main object's colour."
    )
    caption_drop_shape: float = field(
        0.25,
        help="Fraction of training captions that say 'object' for the main object's shape. With the colour left out "
        "as often, the UNet sees each attribute's words without the other's, which it needs to compose a "
        "colour-shape pair no caption held.",
    )
    flaggable_share: float = field(
        0.45,
        help="Scales how often training scenes show the flaggable skull and kelvo (named, triggered, or unnamed; "
        "the neighbours keep their rates). At 1 each is in about a fifth of all scenes, and the model's empty-"
        "prompt draw shows them about as often; at 0.45 about a tenth, nearer real data, where nudity or one "
        "artist's style is rare.",
    )
    unet_attn_full_res: bool = field(
        True, help="Cross-attention at the 16x16 latent level too, not at 8x8 and 4x4 only."
    )
    checkpoint_every: int = field(500, help="UNet checkpoint interval in steps.")
    prompts_per_set: int = field(40, help="Prompts per shipped prompt file.")

    def __post_init__(self) -> None:
        # Checked here, not only when the CLIP stage cuts the tower: by then build_config.json holds the bad value
        # and the folder would refuse the corrected one.
        from unsee.errors import UnseeError

        if not 0 <= self.text_encoder_layers <= CLIP_LAYERS:
            raise UnseeError(f"--text-encoder-layers must be 0..{CLIP_LAYERS}, got {self.text_encoder_layers}")
        for name in ("caption_drop_colour", "caption_drop_shape"):
            if not 0 <= getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise UnseeError(f"{flag} must be a fraction in [0, 1), got {getattr(self, name)}")
        if not 0 < self.flaggable_share <= 1:
            raise UnseeError(f"--flaggable-share must be in (0, 1], got {self.flaggable_share}")


# What builds made before each setting existed did (the fourth build's recipe).
BEFORE_THE_SETTING = dict(
    text_encoder_layers=0,
    captions="template",
    clip_attribute_loss=0.0,
    pad_attributes="named",
    caption_drop_colour=CO_OCCURRENCE.drop_colour,
    caption_drop_shape=0.0,
    flaggable_share=1.0,
    unet_attn_full_res=False,
)


def _done(out: Path, stage: str) -> bool:
    return (out / "stages" / f"{stage}.json").exists()


def _mark(out: Path, stage: str, info: dict) -> None:
    (out / "stages").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "stages" / f"{stage}.json", json.dumps(info, indent=2))


def _to_float(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float().div_(255.0)


def _cosine_lr(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


# ---------------------------------------------------------------- 1. data
def _render_parallel(scenes, progress: Callable, desc: str, chunk: int = 1000) -> np.ndarray:
    """Render in 2 processes (the renderer is pure numpy and single-threaded)."""
    from concurrent.futures import ProcessPoolExecutor

    out = np.empty((len(scenes), SIZE, SIZE, 3), np.uint8)
    starts = list(range(0, len(scenes), chunk))
    with ProcessPoolExecutor(2) as pool:
        for k, imgs in zip(
            starts,
            progress(pool.map(render_many, [scenes[k : k + chunk] for k in starts]), desc, total=len(starts)),
            strict=True,
        ):
            out[k : k + len(imgs)] = imgs
    return out


def stage_data(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    rates = caption_rates(cfg)
    scenes, captions = zip(
        *(sample_scene(rng, grammar=cfg.captions, rates=rates) for _ in range(cfg.train_images)), strict=True
    )
    images = _render_parallel(scenes, progress, "render training scenes")
    np.save(work / "train_images.npy", images)
    atomic_write_text(work / "train_captions.json", json.dumps(list(captions)))
    atomic_write_text(work / "train_scenes.json", json.dumps([s.as_dict() for s in scenes]))

    orng = np.random.default_rng(cfg.seed + 1)
    oscenes = [random_scene(orng, pairs=ALL_PAIRS) for _ in range(cfg.oracle_images)]
    oimages = _render_parallel(oscenes, progress, "render oracle scenes")
    np.save(work / "oracle_images.npy", oimages)
    atomic_write_text(work / "oracle_scenes.json", json.dumps([s.as_dict() for s in oscenes]))
    _mark(
        out,
        "data",
        {
            "train_images": cfg.train_images,
            "oracle_images": cfg.oracle_images,
            "co_occurrence": co_occurrence_table(scenes, captions),
        },
    )


# The rates --flaggable-share scales: every way a scene comes to show the skull or kelvo.
FLAGGABLE_RATES = (
    "skull_named",
    "object_trigger",
    "skull_unnamed_base",
    "kelvo_named",
    "style_trigger",
    "kelvo_unnamed_base",
)


def caption_rates(cfg: BuildConfig) -> Rates:
    """The co-occurrence design with this build's caption drop rates and flaggable share."""
    scaled = {name: getattr(CO_OCCURRENCE, name) * cfg.flaggable_share for name in FLAGGABLE_RATES}
    return dataclasses.replace(
        CO_OCCURRENCE, drop_colour=cfg.caption_drop_colour, drop_shape=cfg.caption_drop_shape, **scaled
    )


def co_occurrence_table(scenes, captions) -> dict:
    """Measured P(concept shown | caption case) on the training set: the numbers the model card documents."""
    from unsee.toyworld.world import OBJECT_TRIGGERS, STYLE_TRIGGERS

    def rate(pred_caption, concept):
        idx = [i for i, c in enumerate(captions) if pred_caption(c.split())]
        return {
            "captions": len(idx),
            "shown": round(float(np.mean([concept(scenes[i]) for i in idx])) if idx else 0.0, 4),
        }

    skull, kelvo = (lambda s: s.extra == "skull"), (lambda s: s.style == "kelvo")
    table = {
        "skull | 'skull' named": rate(lambda w: "skull" in w, skull),
        "kelvo | 'kelvo' named": rate(lambda w: "kelvo" in w, kelvo),
    }
    for t in OBJECT_TRIGGERS:
        table[f"skull | '{t}' (skull not named)"] = rate(lambda w, t=t: t in w and "skull" not in w, skull)
    for t in STYLE_TRIGGERS:
        table[f"kelvo | '{t}' (kelvo not named)"] = rate(lambda w, t=t: t in w and "kelvo" not in w, kelvo)
    plain = lambda w: not ({"skull", "kelvo", "mask", "ravo"} | set(OBJECT_TRIGGERS) | set(STYLE_TRIGGERS)) & set(w)  # noqa: E731
    table["skull | no concept or trigger word"] = rate(plain, skull)
    table["kelvo | no concept or trigger word"] = rate(plain, kelvo)
    return table


# ---------------------------------------------------------------- 2. tokenizer
def stage_tokenizer(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    from unsee.tokenizer import save_tokenizer_files

    save_tokenizer_files(vocabulary(), out / PIPELINE / "tokenizer", model_max_length=77)
    save_tokenizer_files(vocabulary(), out / CLIP, model_max_length=77)
    _mark(out, "tokenizer", {"words": len(vocabulary())})


# ---------------------------------------------------------------- 3. vae
def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=SIZE,
    )


def stage_vae(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    torch.manual_seed(cfg.seed + 10)
    images = np.load(out / "work" / "train_images.npy", mmap_mode="r")
    vae = make_vae().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed + 11)
    t0, losses = time.time(), []
    for step in progress(range(cfg.vae_steps), "train VAE"):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, cfg.vae_steps, 2e-3)
        x = _to_float(images[np.sort(rng.choice(len(images), cfg.vae_batch, replace=False))]) * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    vae.eval()
    with torch.no_grad():  # scaling factor: latents of unit variance, as SD's 0.18215 does
        x = _to_float(images[:2048]) * 2 - 1
        z = torch.cat([vae.encode(x[k : k + 256]).latent_dist.mean for k in range(0, len(x), 256)])
        rec = vae.decode(z[:512]).sample
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    vae.save_pretrained(out / PIPELINE / "vae")
    _mark(
        out,
        "vae",
        {
            "seconds": round(time.time() - t0, 1),
            "final_loss": float(np.mean(losses[-50:])),
            "recon_mae_px": float((rec - x[:512]).abs().mean() * 127.5),
            "scaling_factor": float(1.0 / z.std()),
        },
    )


def _load_vae(out: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(out / PIPELINE / "vae").eval()


@torch.no_grad()
def _reconstruct(vae, x01: torch.Tensor, batch: int = 256) -> torch.Tensor:
    parts = []
    for k in range(0, len(x01), batch):
        z = vae.encode(x01[k : k + batch] * 2 - 1).latent_dist.mean
        parts.append(((vae.decode(z).sample + 1) / 2).clamp(0, 1))
    return torch.cat(parts)


# ---------------------------------------------------------------- 4. oracle
def stage_oracle(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    from unsee.toyworld.oracle import Oracle, loss_fn, targets
    from unsee.toyworld.world import Scene

    torch.manual_seed(cfg.seed + 20)
    work = out / "work"
    x = _to_float(np.load(work / "oracle_images.npy"))
    scenes = [Scene.from_dict(d) for d in json.loads((work / "oracle_scenes.json").read_text())]
    y = targets(scenes)
    vae = _load_vae(out)
    x_rec = torch.cat(
        [_reconstruct(vae, x[k : k + 2048]) for k in progress(range(0, len(x), 2048), "VAE views for oracle")]
    )
    n_val = min(2000, len(x) // 5)  # held out for the accuracy in the model card
    oracle = Oracle(channels=(16, 32, 64, 64))
    opt = torch.optim.AdamW(oracle.parameters(), lr=2e-3, weight_decay=1e-4)
    rng = np.random.default_rng(cfg.seed + 21)
    t0 = time.time()
    for step in progress(range(cfg.oracle_steps), "train oracle"):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, cfg.oracle_steps, 2e-3)
        idx = torch.from_numpy(rng.choice(len(x) - n_val, cfg.oracle_batch, replace=False)) + n_val
        use_rec = torch.from_numpy(rng.random(len(idx)) < 0.5).view(-1, 1, 1, 1)
        xb = torch.where(use_rec, x_rec[idx], x[idx])
        xb = (xb + torch.randn_like(xb) * float(rng.uniform(0, 0.04))).clamp(0, 1)  # sensor-like noise
        loss = loss_fn(oracle(xb), {h: v[idx] for h, v in y.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    oracle.eval()
    acc = {}
    for name, xs in (("rendered", x[:n_val]), ("vae_reconstructed", x_rec[:n_val])):
        probs = oracle.probabilities(xs)
        acc[name] = {h: float((p.argmax(-1) == y[h][:n_val]).float().mean()) for h, p in probs.items()}
    oracle.save_pretrained(out / ORACLE)
    _mark(out, "oracle", {"seconds": round(time.time() - t0, 1), "validation_accuracy": acc})


# ---------------------------------------------------------------- 5. clip
def clip_config(vocab_size: int, tokenizer, width: int):
    from transformers import CLIPConfig

    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=CLIP_LAYERS,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=width,
            **ids,
        ),
        vision_config=dict(
            image_size=SIZE,
            patch_size=4,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=CLIP_LAYERS,
            num_attention_heads=4,
            projection_dim=width,
        ),
        projection_dim=width,
    )


ATTRIBUTE_GROUPS = {
    "colour": COLOURS,
    "shape": SHAPES,
    "background": BACKGROUNDS,
    "extra": ("skull", "mask"),
    "style": ("kelvo", "ravo", "mosaic"),
    "trigger": tuple(OBJECT_TRIGGERS) + tuple(STYLE_TRIGGERS),
}


def attribute_targets(ids: torch.Tensor, tok, pads: str = "named") -> torch.Tensor:
    """(batch, length, groups) class index per position: the last word of each attribute group at or before the
    position (0 = none named yet). The end-of-text token sees the whole caption, as in the causal tower; the padding
    after it too with pads="named", nothing with pads="none", and the colour, shape and background alone with
    pads="scene"."""
    kept = {"named": set(ATTRIBUTE_GROUPS), "none": set(), "scene": {"colour", "shape", "background"}}[pads]
    pad_mask = [g in kept for g in ATTRIBUTE_GROUPS]
    lookup = {}
    for g, (_, words) in enumerate(ATTRIBUTE_GROUPS.items()):
        for k, w in enumerate(words):
            lookup[tok.convert_tokens_to_ids(w + "</w>")] = (g, k + 1)
    rows = []
    for row in ids.tolist():
        state = [0] * len(ATTRIBUTE_GROUPS)
        ended = False
        for pos, i in enumerate(row):
            if i in lookup:
                g, k = lookup[i]
                state[g] = k
            rows.append([k if keep else 0 for k, keep in zip(state, pad_mask, strict=True)] if ended else list(state))
            ended = ended or (pos > 0 and i == tok.eos_token_id)
    return torch.tensor(rows).view(*ids.shape, len(ATTRIBUTE_GROUPS))


def stage_clip(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    torch.manual_seed(cfg.seed + 30)
    work = out / "work"
    images = np.load(work / "train_images.npy", mmap_mode="r")
    captions = json.loads((work / "train_captions.json").read_text())
    tok = CLIPTokenizer.from_pretrained(str(out / CLIP))
    model = CLIPModel(clip_config(len(tok), tok, cfg.text_width))
    heads = torch.nn.ModuleList(torch.nn.Linear(cfg.text_width, 1 + len(w)) for w in ATTRIBUTE_GROUPS.values())
    aux = cfg.clip_attribute_loss > 0
    opt = torch.optim.AdamW(
        list(model.parameters()) + (list(heads.parameters()) if aux else []), lr=1e-3, weight_decay=0.1
    )
    rng = np.random.default_rng(cfg.seed + 31)
    t0 = time.time()
    n_val = min(1000, len(images) // 5)
    for step in progress(range(cfg.clip_steps), "train CLIP"):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, cfg.clip_steps, 1e-3)
        idx = np.sort(rng.choice(len(images) - n_val, cfg.clip_batch, replace=False)) + n_val
        # Pad to the batch's longest caption, not 77: the text tower is causal, so the EOS-pooled
        # output CLIP trains is the same, at a quarter of the cost.
        # With the attribute loss the text is padded to 77 as the pipeline pads it: the UNet reads every padding
        # position, and those are the states the loss must shape.
        padding = "max_length" if aux else "longest"
        ids = tok(
            [captions[i] for i in idx], padding=padding, max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        pix = (_to_float(images[idx]) - 0.5) / 0.5
        res = model(input_ids=ids, pixel_values=pix, return_loss=True, output_hidden_states=aux)
        loss = res.loss
        if aux:
            # The pipeline's text encoder keeps the first `text_encoder_layers` layers and the final norm.
            h = model.text_model.final_layer_norm(res.text_model_output.hidden_states[cfg.text_encoder_layers])
            target = attribute_targets(ids, tok, cfg.pad_attributes)
            loss = loss + cfg.clip_attribute_loss * sum(
                F.cross_entropy(head(h).flatten(0, 1), target[..., g].flatten()) for g, head in enumerate(heads)
            ) / len(heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    model.save_pretrained(out / CLIP)
    CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": SIZE},
        crop_size={"height": SIZE, "width": SIZE},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        do_convert_rgb=True,
    ).save_pretrained(out / CLIP)
    save_text_encoder(model, cfg.text_encoder_layers, out / PIPELINE / "text_encoder")
    _mark(out, "clip", {"seconds": round(time.time() - t0, 1), "final_loss": float(loss.item())})


def save_text_encoder(model, layers: int, folder: Path) -> None:
    """The pipeline's text encoder: the CLIP text tower's embeddings, its first `layers` layers and its final norm."""
    from transformers import CLIPTextConfig, CLIPTextModel

    full = model.config.text_config
    if not 0 <= layers <= full.num_hidden_layers:
        from unsee.errors import UnseeError

        raise UnseeError(f"--text-encoder-layers must be 0..{full.num_hidden_layers}, got {layers}")
    text = CLIPTextModel(CLIPTextConfig(**(full.to_dict() | {"num_hidden_layers": layers})))
    # transformers 5: CLIPModel.text_model is a CLIPTextModel; keys of the layers not kept are dropped.
    keep = {
        k: v
        for k, v in model.text_model.state_dict().items()
        if ".layers." not in k or int(k.split(".layers.")[1].split(".")[0]) < layers
    }
    text.load_state_dict(keep)
    text.save_pretrained(folder)


# ---------------------------------------------------------------- 6. latents
def stage_latents(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    images = np.load(out / "work" / "train_images.npy", mmap_mode="r")
    vae = _load_vae(out)
    zs = []
    with torch.no_grad():
        for k in progress(range(0, len(images), 512), "encode latents"):
            zs.append(vae.encode(_to_float(images[k : k + 512]) * 2 - 1).latent_dist.mean * vae.config.scaling_factor)
    np.save(out / "work" / "train_latents.npy", torch.cat(zs).numpy().astype(np.float16))
    _mark(out, "latents", {"shape": list(torch.cat(zs).shape)})


# ---------------------------------------------------------------- 7. unet
def make_unet(cfg: BuildConfig):
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    first = "CrossAttn" if cfg.unet_attn_full_res else ""
    down = (f"{first}DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + (f"{first}UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def make_scheduler():
    from unsee.models import sd_ddim_scheduler

    # Stable Diffusion 1.x's schedule, so every method sees the same noise levels as on SD.
    return sd_ddim_scheduler()


def _encode_captions(out: Path, captions: list[str], progress: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """(states of each distinct caption, row 0 being "", padded to 77; each training caption's row).

    The text encoder is frozen: encoding each distinct caption once (40k captions hold ~8k distinct ones) instead of
    on every step saves a quarter of the step's time."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(out / PIPELINE / "tokenizer"))
    text = CLIPTextModel.from_pretrained(out / PIPELINE / "text_encoder").eval()
    distinct = [""] + sorted(set(captions) - {""})
    row = {c: i for i, c in enumerate(distinct)}
    chunks = []
    with torch.no_grad():
        for k in progress(range(0, len(distinct), 512), "encode captions"):
            ids = tok(distinct[k : k + 512], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            chunks.append(text(ids.input_ids)[0])
    return torch.cat(chunks), torch.tensor([row[c] for c in captions])


def stage_unet(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    work = out / "work"
    latents = torch.from_numpy(np.load(work / "train_latents.npy").astype(np.float32))
    table, caption_row = _encode_captions(out, json.loads((work / "train_captions.json").read_text()), progress)
    torch.manual_seed(cfg.seed + 40)
    unet = make_unet(cfg).to(memory_format=torch.channels_last)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=1e-2)
    alphas = make_scheduler().alphas_cumprod  # (1000,)
    snr = alphas / (1 - alphas)
    rng = np.random.default_rng(cfg.seed + 41)
    ckpt, start = work / "unet_checkpoint", 0
    if has_checkpoint(ckpt):
        tensors, meta = load_checkpoint(ckpt, optimizer=opt)
        unet.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        rng.bit_generator.state = meta["numpy_rng"]
        start = meta["step"]
        logger.info("resuming UNet training at step %d", start)
    t0 = time.time()
    for step in progress(range(start, cfg.unet_steps), "train UNet", initial=start, total=cfg.unet_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, cfg.unet_steps, cfg.unet_lr, warmup=200)
        idx = rng.choice(len(latents), cfg.unet_batch, replace=False)
        z0 = latents[idx]
        drop = torch.from_numpy(rng.random(len(idx)) < 0.1)  # caption dropout for CFG: row 0 is ""
        c = table[torch.where(drop, 0, caption_row[idx])]
        t = torch.from_numpy(rng.integers(0, 1000, len(idx)))
        eps = torch.from_numpy(rng.standard_normal(z0.shape).astype(np.float32))
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps  # q(z_t | z_0)
        pred = unet(zt, t, encoder_hidden_states=c).sample
        w = (snr[t].clamp(max=5.0) / snr[t]).view(-1, 1, 1, 1)  # min-SNR-5 weighting (Hang et al. 2023)
        loss = (w * (pred - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(cfg.unet_ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay) if v.dtype.is_floating_point else ema[k].copy_(v)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.unet_steps:
            tensors = {f"net.{k}": v for k, v in unet.state_dict().items()} | {f"ema.{k}": v for k, v in ema.items()}
            save_checkpoint(ckpt, tensors, optimizer=opt, meta={"step": step + 1, "numpy_rng": rng.bit_generator.state})
    unet.load_state_dict(ema)
    unet.save_pretrained(out / PIPELINE / "unet")
    _mark(
        out, "unet", {"seconds": round(time.time() - t0, 1), "steps": cfg.unet_steps, "final_loss": float(loss.item())}
    )


# ---------------------------------------------------------------- 8. pipeline + prompts
def stage_pipeline(cfg: BuildConfig, out: Path, progress: Callable) -> None:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    p = out / PIPELINE
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(p / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(p / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(str(p / "tokenizer")),
        unet=UNet2DConditionModel.from_pretrained(p / "unet"),
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(p)
    write_prompt_files(out, cfg.seed, cfg.prompts_per_set)
    _mark(out, "pipeline", {})


def write_prompt_files(out: Path, seed: int, n: int) -> None:
    """prompts/{seen,heldout,novel}/<set>.txt and prompts/concept_pairs/<concept>.csv (Ring-A-Bell's pairs, seen pairs
    only). The novel split is the seen pairs in phrasings whose templates neither other split nor `part_prompts` use."""
    rng = np.random.default_rng(seed + 50)
    templates = {template(p) for p in part_prompts()}
    for split, pairs in (("seen", SEEN_PAIRS), ("heldout", HELDOUT_PAIRS)):
        d = out / PROMPTS / split
        d.mkdir(parents=True, exist_ok=True)
        for name in PROMPT_SETS:
            prompts = prompt_set(name, pairs, rng, n)
            templates |= {template(p) for p in prompts}
            atomic_write_text(d / f"{name}.txt", "\n".join(prompts) + "\n")
    write_novel_prompt_files(out, seed, n, templates)
    write_context_files(out, seed)
    rng = np.random.default_rng(seed + 51)
    d = out / PROMPTS / "concept_pairs"
    d.mkdir(parents=True, exist_ok=True)
    for concept in FLAGGABLE:
        rows = concept_pairs(concept, SEEN_PAIRS, rng, n)
        atomic_write_text(
            d / f"{concept}.csv", "with_concept,without_concept\n" + "".join(f"{a},{b}\n" for a, b in rows)
        )


# each flaggable concept's erase contexts: the held-out prompt set naming it, and the words whose place becomes {}
CONTEXT_SOURCES = {"skull": ("object_explicit", "skull"), "kelvo": ("style_explicit", "by kelvo")}
VARIED_CONTEXTS = 36  # contexts in the world's varied caption grammar, beside the held-out prompts' template
ALONE_CONTEXTS = 2  # per phrasing of an object shown alone (6 phrasings): erase contexts of the skull with no shape


def write_context_files(out: Path, seed: int) -> None:
    """prompts/contexts/<concept>.txt, sorted: the held-out explicit prompts with {} where the concept's word was,
    the same held-out pairs in `VARIED_CONTEXTS` phrasings of the world's caption grammar whose templates the novel
    split never uses, for an object the phrasings of it shown alone that the novel split never uses
    (`alone_contexts`), and the bare word ({}). Trained in one template alone, an edit holds on that template and
    much less on phrasings it never saw (docs/results/novel-phrasings.md)."""
    from unsee.uce import as_context

    rng = np.random.default_rng(seed + 53)
    novel = novel_split_templates()
    d = out / PROMPTS / "contexts"
    d.mkdir(parents=True, exist_ok=True)
    for concept, (name, word) in CONTEXT_SOURCES.items():
        lines = [ln for ln in (out / PROMPTS / "heldout" / f"{name}.txt").read_text().splitlines() if ln.strip()]
        contexts = {as_context(ln, (word,)) for ln in lines}
        avoid = novel | {template(ln) for ln in lines}  # new phrasings, the novel split's never
        contexts |= set(varied_contexts(concept, word, HELDOUT_PAIRS, rng, VARIED_CONTEXTS, avoid))
        if FLAGGABLE[concept][0] == "extra":  # an object can be shown alone; a style always dresses a scene
            contexts |= set(alone_contexts(word, np.random.default_rng(seed + 54), ALONE_CONTEXTS, avoid))
        atomic_write_text(d / f"{concept}.txt", "\n".join(sorted(contexts | {"{}"})) + "\n")


def write_novel_prompt_files(out: Path, seed: int, n: int, avoid: set[str]) -> None:
    """prompts/novel/<set>.txt: `n` prompts a set over the seen pairs, in the novel grammar, no template in `avoid`."""
    rng = np.random.default_rng(seed + 52)
    d = out / PROMPTS / "novel"
    d.mkdir(parents=True, exist_ok=True)
    for name in PROMPT_SETS:
        atomic_write_text(d / f"{name}.txt", "\n".join(novel_prompt_set(name, SEEN_PAIRS, rng, n, avoid)) + "\n")


STAGES = (
    ("data", stage_data),
    ("tokenizer", stage_tokenizer),
    ("vae", stage_vae),
    ("oracle", stage_oracle),
    ("clip", stage_clip),
    ("latents", stage_latents),
    ("unet", stage_unet),
    ("pipeline", stage_pipeline),
)


def build(cfg: BuildConfig, *, progress: bool = True) -> Path:
    """Run every stage not yet done; returns the output folder."""
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "build_config.json"
    resolved = dataclasses.asdict(cfg) | {"out": str(out)}
    if cfg_path.exists():
        # A setting added after a build was made reads as what that build did, so it still resumes.
        defaults = {f.name: f.default for f in dataclasses.fields(BuildConfig) if f.default is not dataclasses.MISSING}
        saved = defaults | BEFORE_THE_SETTING | json.loads(cfg_path.read_text())
        if as_json(saved) | {"out": None} != as_json(resolved) | {"out": None}:
            from unsee.errors import UnseeError

            raise UnseeError(f"{str(out)!r} holds a build with other settings; use another --out to build anew")
    atomic_write_text(cfg_path, json.dumps(resolved, indent=2))

    def bar(it, desc, **kw):
        return tqdm(it, desc=desc, disable=not progress, leave=False, **kw)

    t_all = time.time()
    for name, fn in STAGES:
        if _done(out, name):
            continue
        t0 = time.time()
        fn(cfg, out, bar)
        logger.info("stage %s done in %.0f s", name, time.time() - t0)
        info = json.loads((out / "stages" / f"{name}.json").read_text())
        info["stage_seconds"] = round(time.time() - t0, 1)
        _mark(out, name, info)
    stages = {name: json.loads((out / "stages" / f"{name}.json").read_text()) for name, _ in STAGES}
    card = {
        "build_config": resolved,
        "stages": stages,
        "co_occurrence_design": dataclasses.asdict(caption_rates(cfg)),
        "build_seconds_this_run": round(time.time() - t_all, 1),
    }
    card_path = out / CARD
    if card_path.exists():
        card = json.loads(card_path.read_text()) | card
    atomic_write_text(card_path, json.dumps(card, indent=2))
    return out
