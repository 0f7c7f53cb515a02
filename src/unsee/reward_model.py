"""`unsee reward train / score`: a reward model r_psi = MLP on CLIP image embeddings (HFI, step 3).

CLIP is frozen by default; `--tune-vision N` also fine-tunes the last N layers of its vision tower (with its final
norm and projection), for concepts the frozen embedding barely carries (a small object in a large picture), and
saves that tower inside the reward model.

- binary feedback: one output per label, trained by MSE to the share of
  annotators who checked the label (so scores read as probabilities);
- rank feedback: one output per concept, trained by Bradley-Terry over every
  ordered pair of every group:  L = -E log sigma(r(x+) - r(x-)).
Held-out agreement (accuracy for binary, pairwise accuracy for rank) on a 20%
split is printed and saved with the model. Several `--images/--feedback` pairs
(rounds of feedback, e.g. on a fine-tuned model's own samples) train one model.
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

from unsee.config import field
from unsee.errors import UnseeError
from unsee.feedback import binary_targets, combine_feedback, load_feedback, rank_pairs
from unsee.files import atomic_write_text
from unsee.imageset import ImageSet
from unsee.runinfo import write_run_info
from unsee.seeds import stream
from unsee.trainer import MemoryLevers, apply_update, autocast, make_optimizer

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RewardTrainConfig(MemoryLevers):
    HELP_GROUPS = {  # sections of --help
        "Feedback": ("images", "feedback", "kind", "heldout"),
        "Model": ("clip", "hidden", "layers", "tune_vision"),
        "Training": ("steps", "lr", "vision_lr", "batch_size", "eval_every", "seed", "device"),
        "Output": ("out",),
    }

    images: tuple[str, ...] = field(
        help="Image set the feedback is about (repeatable: one per --feedback, in the same "
        "order, for rounds of feedback on different images)."
    )
    feedback: tuple[str, ...] = field(
        help="feedback.jsonl (binary or rank judgements) about the --images in the same place."
    )
    out: str = field(help="Output folder for the reward model (config + safetensors + metrics).")
    clip: str = field(
        "auto",
        help="Frozen CLIP for image embeddings: a hub id, a folder, 'toyworld', or auto (the toy "
        "world's for images the toy world drew, else openai/clip-vit-large-patch14).",
    )
    kind: Literal["auto", "binary", "rank"] = field(
        "auto", help="Which judgements to train on (auto: those present; binary if both)."
    )
    hidden: int = field(256, help="MLP hidden width.")
    layers: int = field(2, help="MLP hidden layers.")
    steps: int = field(
        3000,
        help="Adam steps: full-batch on frozen embeddings (about 10 s for 500 images on 2 cores); "
        "minibatches of --batch-size with --tune-vision.",
    )
    lr: float = field(1e-3, help="Learning rate of the MLP head.")
    tune_vision: int = field(
        0,
        help="Fine-tune the last N layers of CLIP's vision tower (plus its final norm and "
        "projection) with the head, and save the tower in the model; 0 keeps CLIP frozen.",
    )
    vision_lr: float = field(1e-4, help="Learning rate of the tuned vision layers (--tune-vision).")
    batch_size: int = field(64, help="Images (binary) or pairs (rank) per step with --tune-vision.")
    eval_every: int = field(25, help="Validate every N steps with --tune-vision (every step when frozen).")
    heldout: float = field(0.2, help="Share of images (binary) or groups (rank) held out to measure agreement.")
    seed: int = field(0, help="Seed of the split and the initialisation.")
    device: str = field(
        "auto",
        help="Where a tuned tower trains (--tune-vision): auto, cpu, cuda, cuda:N. The head on "
        "frozen embeddings trains on the CPU.",
    )

    def __post_init__(self) -> None:
        if isinstance(self.images, str):  # one set, as the Python API's callers write it
            self.images = (self.images,)
        if isinstance(self.feedback, str):
            self.feedback = (self.feedback,)
        if len(self.images) != len(self.feedback) or not self.images:
            raise UnseeError(
                f"give one --feedback per --images (got {len(self.images)} image sets and {len(self.feedback)} "
                "feedback files)"
            )
        if not 0 < self.heldout < 1:
            raise UnseeError(f"--heldout must be in (0, 1), got {self.heldout}")
        if self.tune_vision < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise UnseeError("--tune-vision must be >= 0, --batch-size and --eval-every >= 1")
        if not self.tune_vision and (
            self.mixed_precision != "no" or self.gradient_checkpointing or self.optimizer != "adamw"
        ):
            raise UnseeError(
                "--mixed-precision, --gradient-checkpointing and --optimizer act on a tuned vision tower; "
                "add --tune-vision N, or leave them out to train the head on frozen CLIP embeddings"
            )


def _per_image(sets: list[ImageSet], ids: list[str], fn) -> torch.Tensor:
    """fn(images) row by row for `ids` ('K/ID': image ID of set K, as `combine_feedback` names them), in order:
    CLIP embeddings, or the pixel values a tuned tower reads."""
    rows: dict[str, torch.Tensor] = {}
    for k, s in enumerate(sets):
        by_id = s.by_id()
        mine = [i for i in ids if i.startswith(f"{k}/")]
        for j in range(0, len(mine), 512):
            part = mine[j : j + 512]
            recs = [by_id[i.split("/", 1)[1]] for i in part]
            rows.update(zip(part, fn(s.load_images(recs)).cpu(), strict=True))
    return torch.stack([rows[i] for i in ids])


def _tune_tower(tower, clip, tune: int) -> None:
    """Copy CLIP's vision tower and projection into `tower` (the reward model's own) and leave only the last `tune`
    layers, the final norm and the projection trainable."""
    n = clip.model.config.vision_config.num_hidden_layers
    tower.vision_model.load_state_dict(clip.model.vision_model.state_dict())
    tower.visual_projection.load_state_dict(clip.model.visual_projection.state_dict())
    tower.requires_grad_(False)
    for m in (
        *tower.vision_model.encoder.layers[n - tune :],
        tower.vision_model.post_layernorm,
        tower.visual_projection,
    ):
        m.requires_grad_(True)


def heldout_split(seed: int, n: int, heldout: float) -> np.ndarray:
    """'test' (a share `heldout`, never used to choose anything), 'val' (15% of the rest, for early stopping), 'train'.

    Its own random stream: a split that reused the annotators' draws would hold out the images they mislabelled.
    """
    rng = stream(seed, "reward-split")
    u = rng.random(n)
    return np.where(u < heldout, "test", np.where(u < heldout + 0.15 * (1 - heldout), "val", "train"))


@dataclasses.dataclass
class _Data:
    """What the reward model trains on: per-image inputs, targets, and the train/val/test parts."""

    kind: str  # "binary" or "rank"
    labels: tuple[str, ...]
    ids: list[str]  # image ids, in the row order of x
    x: torch.Tensor  # frozen CLIP embeddings, or preprocessed pixels for a tuned tower
    y: torch.Tensor | None  # binary: (images, labels) share of annotators who checked each label
    parts: dict[str, torch.Tensor]  # binary: image rows of each part; rank: (P, 3) winner, loser, label index
    judgements: int


def _load_data(cfg: RewardTrainConfig, fb, kind: str, sets: list[ImageSet], per_image) -> _Data:
    """Targets and a held-out split: images for binary judgements, whole rank groups for rank ones."""
    if kind == "binary":
        labels = fb.labels
        per_label = {label: binary_targets(fb, label) for label in labels}
        ids = sorted(per_label[labels[0]])
        y = torch.tensor([[per_label[label][i] for label in labels] for i in ids], dtype=torch.float32)
        split = heldout_split(cfg.seed, len(ids), cfg.heldout)
        parts = {part: torch.from_numpy(np.flatnonzero(split == part)) for part in ("train", "val", "test")}
        return _Data(kind, labels, ids, _per_image(sets, ids, per_image), y, parts, len(fb.binary))
    labels = tuple(sorted({r.concept for r in fb.ranks}))
    ids = sorted(fb.image_ids())
    index = {k: n for n, k in enumerate(ids)}
    x = _per_image(sets, ids, per_image)
    groups = fb.ranks
    group_split = heldout_split(cfg.seed, len(groups), cfg.heldout)

    def pairs(part: str) -> torch.Tensor:  # (P, 3): winner, loser, label index
        chosen = [g for g, p in zip(groups, group_split, strict=True) if p == part]
        rows = [(index[a], index[b], labels.index(c)) for a, b, c in rank_pairs(chosen)]
        return torch.tensor(rows, dtype=torch.long).view(-1, 3)

    parts = {part: pairs(part) for part in ("train", "val", "test")}
    if any(len(v) == 0 for v in parts.values()):
        raise UnseeError(
            f"{', '.join(cfg.feedback)}: too few rank groups ({len(groups)}) to hold {cfg.heldout:.0%} out; "
            "annotate more"
        )
    return _Data(kind, labels, ids, x, None, parts, len(fb.ranks))


def _build_model(cfg: RewardTrainConfig, clip, clip_spec: str, data: _Data):
    """(model, optimizer, device): an MLP on frozen embeddings (CPU), or one with CLIP's tuned vision tower."""
    from unsee.reward_net import RewardModel
    from unsee.runtime import resolve_device

    if not cfg.tune_vision:
        model = RewardModel(data.x.shape[1], data.labels, data.kind, clip_spec, cfg.hidden, cfg.layers)
        return model, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4), torch.device("cpu")
    vision_config = {**clip.model.config.vision_config.to_dict(), "projection_dim": clip.model.config.projection_dim}
    model = RewardModel(
        clip.model.config.projection_dim,
        data.labels,
        data.kind,
        clip_spec,
        cfg.hidden,
        cfg.layers,
        vision_config=vision_config,
        image_size=clip.size,
        image_mean=tuple(clip.mean.flatten().tolist()),
        image_std=tuple(clip.std.flatten().tolist()),
    )
    _tune_tower(model.vision, clip, cfg.tune_vision)
    device = resolve_device(cfg.device)
    model.to(device)  # the tower's weights stay fp32 (they are saved); --mixed-precision autocasts its forward
    if cfg.gradient_checkpointing:
        model.vision.gradient_checkpointing_enable()
    groups = [
        {"params": list(model.mlp.parameters()), "lr": cfg.lr},
        {"params": [p for p in model.vision.parameters() if p.requires_grad], "lr": cfg.vision_lr},
    ]
    return model, make_optimizer(cfg.optimizer, groups, device, lr=cfg.lr, weight_decay=1e-4), device


class _Objective:
    """The reward model's loss and agreement on a part of the data, or on a minibatch of it."""

    def __init__(self, model, data: _Data, device: torch.device, tower: bool):
        self.model, self.data, self.device, self.tower = model, data, device, tower
        self.y = data.y.to(device) if data.y is not None else None

    def outputs(self, rows: torch.Tensor) -> torch.Tensor:
        """Scores (len(rows), L) of those images; a tuned tower embeds them on the way, in chunks when not training."""
        model, x = self.model, self.data.x
        if not self.tower:
            return model(x[rows])
        if not len(rows):  # an empty part of a handful of images; the tower takes no empty batch
            return torch.zeros(0, len(self.data.labels), device=self.device)
        if torch.is_grad_enabled() or len(rows) <= 256:
            return model(model.embed_pixels(x[rows]))
        return torch.cat([self.outputs(rows[k : k + 256]) for k in range(0, len(rows), 256)])

    def __call__(self, part: str, batch: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """(loss, agreement): image rows for binary judgements (MSE), pairs for rank ones (Bradley-Terry)."""
        rows = self.data.parts[part] if batch is None else batch
        if self.data.kind == "binary":
            pred, target = self.outputs(rows).float(), self.y[rows.to(self.device)]
            acc = float(((pred > 0.5) == (target > 0.5)).float().mean()) if len(rows) else float("nan")
            return F.mse_loss(pred, target), acc
        if self.tower:  # only the images these pairs name go through the tower
            used, where = torch.unique(rows[:, :2], return_inverse=True)
            r, win, lose = self.outputs(used).float(), where[:, 0].to(self.device), where[:, 1].to(self.device)
        else:
            r, win, lose = self.model(self.data.x), rows[:, 0], rows[:, 1]
        label = rows[:, 2].to(r.device)
        margin = r[win, label] - r[lose, label]
        return -F.logsigmoid(margin).mean(), float((margin > 0).float().mean())


def _fit(cfg: RewardTrainConfig, objective: _Objective, opt, progress: bool) -> int:
    """Train; keep the weights with the best validation agreement, ties broken by validation loss (a small
    validation part saturates at 100% early, and the first step to reach it is undertrained). Full batch on frozen
    embeddings; minibatches through a tuned tower, validated every --eval-every steps. Returns the skipped steps."""
    from tqdm.auto import tqdm

    model, tower, device = objective.model, objective.tower, objective.device
    scaler = torch.amp.GradScaler(device.type) if cfg.mixed_precision == "fp16" else None  # bf16 needs no scaling
    trained = [p for p in model.parameters() if p.requires_grad]
    train_items = objective.data.parts["train"]
    draws = torch.Generator().manual_seed(cfg.seed)
    best, best_state, skipped = (-1.0, 0.0), None, 0
    for step in tqdm(range(cfg.steps), desc="train reward", disable=not progress):
        model.train()
        batch = train_items[torch.randperm(len(train_items), generator=draws)[: cfg.batch_size]] if tower else None
        with autocast(device, cfg.mixed_precision):
            loss, _ = objective("train", batch)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if not apply_update(opt, scaler, trained, 0.0)[0]:  # never applied; counted in the metrics
            skipped += 1
        if tower and (step + 1) % cfg.eval_every and step + 1 < cfg.steps:
            continue
        model.eval()
        with torch.no_grad():
            val_loss, agree = objective("val")
        if (agree, -float(val_loss)) > best:
            best, best_state = (agree, -float(val_loss)), {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:  # None only when the validation part is empty (a handful of images)
        model.load_state_dict(best_state)
    model.eval()
    return skipped


def _metrics(cfg: RewardTrainConfig, objective: _Objective, sets: list[ImageSet], skipped: int) -> dict:
    """Agreement on each part (the held-out one chose nothing), per-label held-out accuracy, sizes."""
    data = objective.data
    with torch.no_grad():
        agreement = {part: objective(part)[1] for part in ("train", "val", "test")}
    metrics = {
        "kind": data.kind,
        "labels": list(data.labels),
        "heldout_agreement": agreement["test"],
        "validation_agreement": agreement["val"],
        "train_agreement": agreement["train"],
        "metric": "accuracy" if data.kind == "binary" else "pairwise accuracy",
        "images": len(data.ids),
        "image_sets": len(sets),
        "judgements": data.judgements,
    }
    if objective.tower:
        metrics |= {
            "tuned_vision_layers": cfg.tune_vision,
            "mixed_precision": cfg.mixed_precision,
            "skipped_steps": skipped,
        }
    if data.kind == "binary":
        held = data.parts["test"]
        with torch.no_grad():
            pred = objective.outputs(held).float().cpu()
        metrics["heldout_accuracy_per_label"] = {
            label: float(((pred[:, i] > 0.5) == (data.y[held][:, i] > 0.5)).float().mean())
            for i, label in enumerate(data.labels)
        }
    else:
        metrics["pairs"] = {part: len(v) for part, v in data.parts.items()}
    return metrics


def train_reward(cfg: RewardTrainConfig, *, progress: bool = True) -> dict:
    from unsee.clip import default_clip, load_clip, resolve_clip
    from unsee.toyworld import is_toyworld

    # 1. Inputs: the image sets, their feedback (validated against each manifest), the frozen CLIP.
    sets = [ImageSet.load(p) for p in cfg.images]
    fb = combine_feedback(
        [load_feedback(f, image_ids=s.ids) for s, f in zip(sets, cfg.feedback, strict=True)], list(cfg.feedback)
    )
    kind = cfg.kind if cfg.kind != "auto" else ("binary" if fb.binary else "rank")
    if kind == "binary" and not fb.binary:
        raise UnseeError(f"{', '.join(cfg.feedback)} has no binary judgements; use --kind rank")
    if kind == "rank" and not fb.ranks:
        raise UnseeError(f"{', '.join(cfg.feedback)} has no rank judgements; use --kind binary")
    spec = cfg.clip
    if spec == "auto":  # the CLIP of the world that drew the images
        spec = default_clip(all(is_toyworld(r.get("model", "")) for st in sets for r in st.records))
    clip_spec = spec if spec == "toyworld" or not Path(spec).exists() else str(Path(resolve_clip(spec)).resolve())
    clip = load_clip(spec)
    torch.manual_seed(cfg.seed)
    tower = cfg.tune_vision > 0
    if cfg.tune_vision > (n := clip.model.config.vision_config.num_hidden_layers):
        raise UnseeError(f"--tune-vision {cfg.tune_vision}: this CLIP's vision tower has {n} layers; give at most {n}")

    # 2. Targets and a held-out split; a tuned tower reads pixels, a frozen one embeddings.
    data = _load_data(cfg, fb, kind, sets, clip.preprocess if tower else clip.image_embeds)

    # 3. Training, then the agreement on the held-out part.
    model, opt, device = _build_model(cfg, clip, clip_spec, data)
    objective = _Objective(model, data, device, tower)
    skipped = _fit(cfg, objective, opt, progress)
    metrics = _metrics(cfg, objective, sets, skipped)

    # 4. Save: diffusers-style config + safetensors, metrics, run info.
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    write_run_info(
        out / "unsee.json",
        dataclasses.asdict(cfg),
        stage="reward",
        metrics=metrics,
        training_prompts=sorted({r["prompt"] for s in sets for r in s.records}),
    )
    return metrics


def summary_text(metrics: dict, cfg: RewardTrainConfig) -> str:
    """The line `unsee reward train` prints."""
    m = metrics
    return (
        f"held-out {m['metric']}: {m['heldout_agreement']:.3f} (train {m['train_agreement']:.3f}; "
        f"{m['images']} images, {m['judgements']} judgements) -> {cfg.out}"
    )


def load_reward(path: str | Path):
    """The reward model (`unsee.reward_net.RewardModel`) saved in a folder."""
    from unsee.reward_net import RewardModel

    path = Path(path)
    if not (path / "config.json").exists():
        raise UnseeError(
            f"{str(path)!r} is not a reward model folder (no config.json); train one with `unsee reward train`"
        )
    return RewardModel.from_pretrained(str(path)).eval()


def reward_scores(model, image_set: ImageSet, batch_size: int = 512) -> dict[str, dict[str, float]]:
    """{image id: {label: score}} for every image of a set, with the CLIP named in the model's config (or its own
    tuned tower)."""
    from unsee.clip import load_clip

    clip = load_clip(model.frozen_clip) if model.frozen_clip else None
    scores: dict[str, dict[str, float]] = {}
    for k in range(0, len(image_set), batch_size):
        recs = image_set.records[k : k + batch_size]
        sc = model.score_images(image_set.load_images(recs), clip)
        scores |= {r["id"]: {label: float(v[i]) for label, v in sc.items()} for i, r in enumerate(recs)}
    return scores


def score_image_set(reward: str | Path, images: str | Path, out: str | Path | None = None) -> Path:
    """Write `scores.jsonl` (one line per image: id and a score per label) and return its path."""
    scores = reward_scores(load_reward(reward), ImageSet.load(images))
    lines = [json.dumps({"id": i, **{label: round(v, 6) for label, v in sc.items()}}) for i, sc in scores.items()]
    path = Path(out) if out else Path(images) / "scores.jsonl"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
