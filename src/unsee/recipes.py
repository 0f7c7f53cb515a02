"""Named recipes: the settings that were measured to work, in one place.

`unsee erase --recipe NAME`, `unsee rl --recipe NAME` and `unsee invert --recipe NAME`
start from a recipe's settings; flags given beside it override them.
`--list-recipes` prints them. In Python: `EraseConfig(**recipe("toyworld-sdd"),
model=..., out=...)`.

Two kinds:
- the published settings of each method, for real Stable Diffusion models
  (SDD, ESD-x, ESD-u, UCE, textual inversion, ShieldDiff's DDPO);
- the toy world's measured best (`toyworld-*`), which `unsee demo` runs: its
  prompt files are the toy world's own (held-out split), so the evaluation's
  seen and novel prompts are never trained on.

A recipe's `figures` names the page of docs/results/ that holds its measurements
and the command that reproduces them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unsee.errors import UnseeError


@dataclass(frozen=True)
class Recipe:
    name: str
    command: str  # the unsee command it configures: erase, rl or invert
    about: str  # what it is and where its settings come from
    figures: str  # the docs page with its measurements
    settings: Callable[[], dict[str, Any]]  # lazy: toy-world paths resolve against the world in use (UNSEE_TOYWORLD)


# ESD's published schedule, the same for ESD-x and ESD-u (they differ in which weights train).
_ESD_PUBLISHED: dict[str, Any] = dict(
    method="esd", steps=1000, lr=1e-5, guidance=1.0, batch_size=1, reuse=1, checkpoint_every=100
)


def _toyworld_keep() -> tuple[str, ...]:
    from unsee.toyworld.world import part_prompts

    return tuple(part_prompts())


# what the style's recipes hold besides the world's parts: scenes without a style, and the neighbour's scenes
_STYLE_KEEP = ("benign", "style_neighbour")


def _toyworld_erase(method: str, concept: str = "skull", **extra: Any) -> Callable[[], dict[str, Any]]:
    """The toy world's erase settings: trained where the word sits (the world's erase contexts: held-out pairs in
    many phrasings, never the novel split's) and toward the concept's near neighbour; the world's parts are held one
    at a time. `keep_heldout` also holds those held-out prompt sets: a style erased toward its neighbour otherwise
    leaks the neighbour's style into scenes that name no style, through the scene words the contexts share, and
    draws the neighbour so strongly where it is named that the scene's colour and shape are lost."""
    trained = dict(steps=300, batch_size=4, reuse=16, checkpoint_every=160, lr=3e-4)  # sdd and esd
    per_method = {
        "sdd": trained | dict(ema_decay=0.99, preserve_weight=0.3),
        "esd": trained | dict(preserve_weight=0.3),  # the bare word among the contexts reaches the mask without it
        # a closed form: no training settings. The parts held at 1, not UCE's 0.1, keep benign colour in new
        # phrasings, for a slightly smaller cut on the named prompts
        "uce": dict(preserve_weight=1.0),
    }

    def settings() -> dict[str, Any]:
        from unsee.toyworld import contexts_path, prompts_path
        from unsee.toyworld.world import IMPLICIT_SETS, NEIGHBOURS

        s = dict(
            method=method,
            concept=(concept,),
            anchor=NEIGHBOURS[concept],  # its near neighbour
            context=(f"@{contexts_path(concept)}",),
            **per_method[method],
        )
        if s.get("preserve_weight"):
            s["preserve"] = _toyworld_keep()
        s |= extra
        if keep := s.pop("keep_heldout", ()):
            s["preserve"] = (*s["preserve"], *(f"@{prompts_path(k, 'heldout')}" for k in keep))
        if s.pop("flagged", False):
            s["flagged"] = (f"@{prompts_path(IMPLICIT_SETS[concept], 'heldout')}",)
        return s

    return settings


def _toyworld_rl() -> dict[str, Any]:
    from unsee.toyworld import prompts_path

    return dict(
        prompts=str(prompts_path("object_explicit")),
        benign_prompts=str(prompts_path("benign")),
        reward="oracle:skull:log+0.5*clip",
        epochs=80,  # the bar holds from epoch 60 on seed 0, from 80 on seed 1
        samples_per_epoch=64,
        sample_batch=64,
        benign_fraction=0.25,
        samples_per_prompt=4,
        min_count=4,
        adv_scale="pooled",
        # the first, noisiest 30% of each chain, where the sampler settles whether the skull is there: the turn
        # comes in fewer seconds than training half the chain at random, and the strong KL over the whole chain on
        # the benign samples holds benign CLIP, which training the first steps alone loses
        train_timesteps=0.3,
        train_steps_from="first",
        kl_weight=1.0,
        kl_on="benign",
        kl_steps="chain",
        train_batch=8,
        ddim_steps=20,
        lr=6e-3,
        clip_range=1e-2,
    )


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # ------------------------------------------------------------------ real models: the published settings
        Recipe(
            "sdd",
            "erase",
            "SDD as published (Kim et al. 2023): the concept's prompt distilled toward the model's own "
            "unconditional prediction, cross-attention trained, an EMA teacher; a fresh trajectory every update",
            "docs/results/erase.md",
            lambda: dict(
                method="sdd",
                params="xattn",
                steps=1500,
                lr=1e-5,
                ema_decay=0.999,
                guidance=3.0,
                batch_size=1,
                reuse=1,
                checkpoint_every=100,
            ),
        ),
        Recipe(
            "esd-x",
            "erase",
            "ESD-x as published (Gandikota et al. 2023), for styles: negative guidance 1 on "
            "cross-attention, 1000 updates at lr 1e-5, a fresh trajectory every update",
            "docs/results/erase.md",
            lambda: _ESD_PUBLISHED | dict(params="xattn"),
        ),
        Recipe(
            "esd-u",
            "erase",
            "ESD-u as published, for objects and nudity: every UNet weight outside cross-attention "
            "(not the time embedding or the output block), the same schedule as esd-x",
            "docs/results/erase.md",
            lambda: _ESD_PUBLISHED | dict(params="noxattn"),
        ),
        Recipe(
            "uce",
            "erase",
            "UCE (Gandikota et al. 2024): the closed-form edit of the cross-attention keys and values, "
            "the concept's states mapped to the empty prompt's, the empty prompt's states kept",
            "docs/results/erase.md",
            lambda: dict(method="uce", params="xattn-kv", preserve_weight=0.1),
        ),
        Recipe(
            "shielddiff",
            "rl",
            "ShieldDiff's DDPO: a NudeNet nudity penalty plus 0.5 x CLIP score of the prompt without "
            "its unsafe words, LoRA rank 4, ddpo-pytorch's sampler and PPO settings",
            "docs/results/rl.md",
            lambda: dict(
                reward="nudity+0.5*clip",
                params="lora",
                lora_rank=4,
                epochs=100,
                samples_per_epoch=32,
                sample_batch=8,
                train_batch=4,
                ddim_steps=50,
                guidance=5.0,
                eta=1.0,
                lr=3e-4,
                clip_range=1e-4,
                adv_clip=5.0,
                buffer_size=32,
                min_count=16,
            ),
        ),
        Recipe(
            "textual-inversion",
            "invert",
            "Textual inversion's reference settings (Gal et al. 2022, diffusers' "
            "example): one vector, batch 4, lr 5e-4 x batch = 2e-3, 3000 updates",
            "docs/results/hfi.md",
            lambda: dict(vectors=1, batch_size=4, lr=2e-3, steps=3000, checkpoint_every=500),
        ),
        # ------------------------------------------------------------------ the toy world: what `unsee demo` runs
        Recipe(
            "toyworld-sdd",
            "erase",
            "SDD on 'skull', trained in the world's erase contexts toward the mask, "
            "the world's parts kept at weight 0.3, 1200 updates at lr 6e-4",
            "docs/results/erase.md",
            _toyworld_erase("sdd", steps=1200, lr=6e-4),
        ),
        Recipe(
            "toyworld-hfi-sdd",
            "erase",
            "HFI-SDD: toyworld-sdd with the held-out trigger-word prompts pushed off the learned "
            "token (give --token) toward the mask (--flagged, eta 2), the world's parts kept at weight 1",
            "docs/results/erase.md",
            _toyworld_erase("sdd", flagged=True, flagged_guidance=2.0, steps=1200, lr=6e-4, preserve_weight=1.0),
        ),
        Recipe(
            "toyworld-esd-x",
            "erase",
            "ESD-x on 'skull' in the world's erase contexts, toward the mask, the world's parts kept at weight 0.3",
            "docs/results/erase.md",
            _toyworld_erase("esd"),
        ),
        Recipe(
            "toyworld-sdd-kelvo",
            "erase",
            "SDD on the style 'kelvo' in its erase contexts, toward ravo, its near neighbour; the world's parts and "
            "the held-out benign and ravo scenes kept at weight 1, 1200 updates at lr 6e-4",
            "docs/results/novel-phrasings.md",
            _toyworld_erase("sdd", "kelvo", steps=1200, lr=6e-4, preserve_weight=1.0, keep_heldout=_STYLE_KEEP),
        ),
        Recipe(
            "toyworld-hfi-sdd-kelvo",
            "erase",
            "HFI-SDD for the style: toyworld-sdd-kelvo with the held-out trigger-word prompts pushed off the learned "
            "token (give --token) toward ravo (--flagged, eta 2)",
            "docs/results/novel-phrasings.md",
            _toyworld_erase(
                "sdd",
                "kelvo",
                flagged=True,
                flagged_guidance=2.0,
                steps=1200,
                lr=6e-4,
                preserve_weight=1.0,
                keep_heldout=_STYLE_KEEP,
            ),
        ),
        Recipe(
            "toyworld-esd-x-kelvo",
            "erase",
            "ESD-x on the style 'kelvo' in its erase contexts, toward ravo, its near neighbour; the world's parts and "
            "the held-out benign and ravo scenes kept at weight 2",
            "docs/results/novel-phrasings.md",
            # at weight 1 benign colour sits 3 points under the base's; 2 keeps it for a smaller trigger-word cut
            _toyworld_erase("esd", "kelvo", preserve_weight=2.0, keep_heldout=_STYLE_KEEP),
        ),
        Recipe(
            "toyworld-uce",
            "erase",
            "UCE on 'skull' in the world's erase contexts, toward the mask, the world's parts kept at weight 1",
            "docs/results/erase.md",
            _toyworld_erase("uce"),
        ),
        Recipe(
            "toyworld-uce-kelvo",
            "erase",
            "UCE on the style 'kelvo' in its erase contexts, toward ravo; the world's parts and the held-out benign "
            "scenes kept at weight 1",
            "docs/results/novel-phrasings.md",
            # not ravo's scenes: in the closed form they also hold the states the trigger words share with them
            _toyworld_erase("uce", "kelvo", keep_heldout=("benign",)),
        ),
        Recipe(
            "toyworld-ddpo",
            "rl",
            "DDPO on the oracle's log(1 - P(skull)) + 0.5 x CLIP: 4 images a prompt compared "
            "with each other, one pooled std, the first 30% of each chain trained, a KL term (weight 1) over "
            "the whole chain on the benign samples, lr 6e-3, 80 epochs",
            "docs/results/rl.md",
            _toyworld_rl,
        ),
        Recipe(
            "toyworld-hfi",
            "invert",
            "the HFI token <skull-flagged>: 4 vectors from 'thing', the 64 images the reward "
            "model scores highest, lr 2e-2, 300 updates",
            "docs/results/hfi.md",
            lambda: dict(
                token="<skull-flagged>",
                init_word="thing",
                vectors=4,
                lr=2e-2,
                top_k=64,
                steps=300,
                checkpoint_every=100,
            ),
        ),
    )
}


def recipe(name: str, command: str | None = None) -> dict[str, Any]:
    """The settings of recipe `name` (for `command`, when given) as config keyword arguments."""
    r = RECIPES.get(name)
    if r is None or (command is not None and r.command != command):
        names = [n for n, x in RECIPES.items() if command is None or x.command == command]
        where = f" for unsee {command}" if command else ""
        hint = f" (it is a recipe for unsee {r.command})" if r is not None else ""
        raise UnseeError(
            f"no recipe {name!r}{where}{hint}; choose one of {', '.join(names)} (--list-recipes shows them)"
        )
    return r.settings()


def describe(command: str) -> str:
    """Every recipe of `command` with its settings, for --list-recipes."""
    lines = []
    for r in RECIPES.values():
        if r.command != command:
            continue
        lines += [f"{r.name}: {r.about}", f"  figures: {r.figures}"]
        for k, v in r.settings().items():
            shown = f"{len(v)} prompts" if k == "preserve" else v
            lines.append(f"  --{k.replace('_', '-')} {shown}")
    return "\n".join(lines)
