"""Rewards for RL: plain callables `reward(images, prompts, metadata) -> (scores (B,), {term: (B,)})`.

A spec string composes weighted terms with `+`:
    nudity+0.5*clip                 ShieldDiff's: NudeNet's explicit classes, plus image-prompt alignment
    oracle:skull+clip               the toy world's oracle instead of NudeNet
    oracle:skull:log+clip           the same, graded where the oracle is sure (log(1 - p))
    learned:runs/reward+0.5*clip    the HFI reward model from human (or simulated) feedback
Terms (higher is safer / better):
- `nudity`: minus the sum over NudeNet's explicit classes of each class's highest box score;
- `oracle:LABEL`: minus the oracle's probability of LABEL (skull, kelvo, ...);
- `nudity:log`, `oracle:LABEL:log`: log(1 - p) in place of -p (summed over the classes for nudity), floored at
  log(1e-6). A detector that is sure saturates: images that all score p ~ 0.99 differ by ~0.01 in -p, less
  than the clip term's noise, so a policy that always shows the concept gets no signal to move; log(1 - p)
  still ranks them (0.99 vs 0.999 is -4.6 vs -6.9), and it stops paying once the concept is gone (-> 0);
- `...:log@K`: the same on p sharpened about the detector's 0.5, sigmoid(K * logit(p)). Late in a run the
  concept that remains is faint (p near 0.5), where log(1 - p) separates a faint image from a clean one by well
  under a nat (0.6 vs 0.3: -0.92 vs -0.36); K = 4 makes that -1.80 vs -0.03, while sure images sink to the floor
  and stop outweighing them in a batch's spread;
- `learned:PATH[,PATH...][#LABEL]`: minus the reward model's score (it scores *flagged* images high); with several
  models (e.g. `unsee reward train --seed K`, each with its own split and initialisation) minus the highest of their
  scores, a conservative ensemble: an image a policy found to fool one model still counts as flagged if another
  flags it;
- `clip`: cos(CLIP image, CLIP text) of the image and its prompt, the prompt with its unsafe words
  removed (`clip_target="sanitized"`, default: otherwise the term rewards the very content being
  removed) or as given (`"raw"`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from unsee.errors import UnseeError

# Words removed from a prompt before the CLIP term reads it (clip_target="sanitized").
UNSAFE_WORDS = (
    "nude",
    "naked",
    "nudity",
    "nsfw",
    "topless",
    "bottomless",
    "sex",
    "sexy",
    "sexual",
    "erotic",
    "porn",
    "pornographic",
    "breasts",
    "nipples",
    "genitals",
    "lingerie",
    "undressed",
    "explicit",
)  # the toy world adds its own (unsee.toyworld.UNSAFE_WORDS)
_TERM = re.compile(
    r"^\s*(?:(?P<w>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*\*\s*)?(?P<name>[a-z]+)(?::(?P<arg>.+?))?\s*$"
)

TermFn = Callable[[torch.Tensor, list[str]], torch.Tensor]


@dataclass
class Reward:
    spec: str
    terms: list[tuple[float, str, TermFn]] = field(default_factory=list)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: dict | None = None):
        parts = {name: fn(images, list(prompts)).float().cpu() for _, name, fn in self.terms}
        total = sum(w * parts[name] for w, name, _ in self.terms)
        return total, parts


def sanitize(prompt: str, words: Sequence[str] = UNSAFE_WORDS) -> str:
    """The prompt without its unsafe words (whole words, any case), spaces collapsed."""
    pattern = r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b"
    out = re.sub(pattern, "\0", prompt, flags=re.IGNORECASE)
    # A removed noun (one that ends its phrase) takes its article and "with" along: "a cat with a skull" ->
    # "a cat", "a house by kelvo" -> "a house"; a removed adjective leaves them: "a spooky cat" -> "a cat".
    out = re.sub(
        r"\b(?:(?:with|of|by)\s+)?(?:(?:an?|the)\s+)?\0(?=\s*(?:$|[,.;]|(?:on|in|at|by|under|near|and|with)\b))",
        " ",
        out,
        flags=re.IGNORECASE,
    )
    return re.sub(r"\s+([,.;])", r"\1", re.sub(r"\s+", " ", out.replace("\0", " "))).strip()


def parse_reward(
    spec: str,
    *,
    clip: str = "toyworld",
    clip_target: str = "sanitized",
    unsafe_words: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> Reward:
    """Build a `Reward` from a spec like `nudity+0.5*clip`; every model it needs loads here, once. `unsafe_words`
    (what a sanitized CLIP term removes) defaults to the nudity words, plus the toy world's with its CLIP."""
    if unsafe_words is None:
        from unsee.toyworld import UNSAFE_WORDS as TOY_WORDS

        unsafe_words = UNSAFE_WORDS + (TOY_WORDS if clip == "toyworld" else ())
    if clip_target not in ("sanitized", "raw"):
        raise UnseeError(f"--clip-target must be 'sanitized' or 'raw', got {clip_target!r}")
    reward = Reward(spec)
    seen = set()
    for part in spec.split("+"):
        m = _TERM.match(part)
        if not part.strip() or not m:
            raise UnseeError(f"reward term {part.strip()!r} in {spec!r} is not WEIGHT*NAME[:ARG]; e.g. nudity+0.5*clip")
        w, name, arg = float(m["w"]) if m["w"] else 1.0, m["name"], m["arg"]
        key = f"{name}:{arg}" if arg else name
        if key in seen:
            raise UnseeError(f"reward term {key!r} appears twice in {spec!r}")
        seen.add(key)
        reward.terms.append((w, key, _term(name, arg, clip, clip_target, unsafe_words, device)))
    return reward


def _penalty(p: torch.Tensor, log: bool, sharpness: float = 1.0) -> torch.Tensor:
    """-p, or log(1 - p) floored at log(1e-6), p first sharpened to sigmoid(sharpness * logit(p)) (see the module
    docstring)."""
    p = p.float()
    if not log:
        return -p
    if sharpness != 1.0:
        # log(1 - sigmoid(x)) = -softplus(x): exact where 1 - p rounds to 0
        x = sharpness * (p.clamp(1e-12, 1 - 1e-7).logit())
        return (-F.softplus(x)).clamp(min=math.log(1e-6))
    return (1 - p).clamp(min=1e-6).log()


def _mode(arg: str | None, what: str) -> tuple[bool, float]:
    """'' / None -> -p; 'log' -> log(1 - p); 'log@K' -> log(1 - p) on p sharpened by K > 0."""
    if not arg:
        return False, 1.0
    m = re.fullmatch(r"log(?:@(\d+\.?\d*|\.\d+))?", arg)
    if not m or (m[1] is not None and float(m[1]) <= 0):
        raise UnseeError(f"{what} takes ':log' or ':log@K' (K > 0, e.g. log@4), got {arg!r}")
    return True, float(m[1]) if m[1] else 1.0


def _term(name: str, arg: str | None, clip_spec: str, clip_target: str, unsafe_words, device) -> TermFn:
    if name == "nudity":
        from unsee.detectors import NUDENET_EXPLICIT, nudenet_detector

        log, sharp = _mode(arg, "nudity")
        detect, _ = nudenet_detector()

        def nudity(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
            scores = detect(images)  # once for all classes: NudeNet is the slow part
            return torch.stack([_penalty(scores[c], log, sharp) for c in NUDENET_EXPLICIT]).sum(0)

        return nudity
    if name == "oracle":
        from unsee.detectors import oracle_detector
        from unsee.toyworld.oracle import CONCEPTS

        label, _, mode = (arg or "").partition(":")
        if label not in CONCEPTS:
            raise UnseeError(f"oracle:LABEL[:log[@K]] needs a toy-world concept ({', '.join(CONCEPTS)}), got {arg!r}")
        log, sharp = _mode(mode, f"oracle:{label}")
        detect, _ = oracle_detector(device=device)
        return lambda images, prompts: _penalty(detect(images.to(device))[label], log, sharp)
    if name == "learned":
        from unsee.reward_model import load_reward
        from unsee.reward_net import load_member_clips, member_scores

        if not arg:
            raise UnseeError("learned:PATH needs the reward model folder from `unsee reward train`")
        paths, _, label = arg.partition("#")
        members = {p: load_reward(p).to(device) for p in paths.split(",")}
        label = label or list(next(iter(members.values())).config.labels)[0]
        for p, m in members.items():
            if label not in m.config.labels:
                raise UnseeError(f"reward model {p!r} has labels {list(m.config.labels)}, not {label!r}")
        clips = load_member_clips(members.values(), device)

        def most_suspicious(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
            # an ensemble counts its most suspicious member: a policy must fool every one at once
            return -torch.stack(list(member_scores(members, images, label, clips).values())).amax(0)

        return most_suspicious
    if name == "clip":
        from unsee.clip import load_clip

        clip = load_clip(clip_spec, device)

        def alignment(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
            texts = [sanitize(p, unsafe_words) if clip_target == "sanitized" else p for p in prompts]
            return (clip.image_embeds(images) * clip.text_embeds(texts)).sum(-1)

        return alignment
    raise UnseeError(f"unknown reward term {name!r}; use nudity, oracle:LABEL, learned:PATH or clip")
