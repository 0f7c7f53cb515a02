"""The `unsee` command line. Each stage of docs/design.md is one subcommand.

Library code raises `UnseeError` for bad input; here it becomes one line on
stderr and exit code 2. Flags are generated from each stage's config dataclass.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from unsee import __version__
from unsee.config import GroupedCommand, click_options, from_kwargs
from unsee.errors import UnseeError


class _Group(click.Group):
    """Turns `UnseeError` into `error: <message>` and exit code 2, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UnseeError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


_VERBOSE = False


def recipe_options(command: str):
    """--recipe NAME and --list-recipes for a command whose flags come from its config (click_options with
    defer_required, so a recipe may give a required flag)."""

    def show(ctx: click.Context, _param, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            from unsee.recipes import describe

            click.echo(describe(command))
            ctx.exit()

    def decorate(fn):
        fn = click.option(
            "--list-recipes",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=show,
            help="Print the named recipes of this command, their settings and where their figures are; then exit.",
        )(fn)
        return click.option(
            "--recipe",
            default=None,
            metavar="NAME",
            help="Start from a named recipe's settings (--list-recipes); flags given beside it override them.",
        )(fn)

    return decorate


def config_with_recipe(cls: type, command: str, kwargs: dict):
    """The config from the command line over the recipe's settings: a flag the user gave wins, a default gives way."""
    from click.core import ParameterSource

    from unsee.config import require

    name = kwargs.pop("recipe", None)
    if name:
        from unsee.recipes import recipe

        ctx = click.get_current_context()
        for k, v in recipe(name, command).items():
            if ctx.get_parameter_source(k) in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
                kwargs[k] = v
    require(cls, kwargs)
    return from_kwargs(cls, kwargs)


def stage(
    parent: click.Group,
    config: type,
    *,
    name: str,
    epilog: str | None = None,
    recipe: str | None = None,
    progress: bool = True,
    quiet: bool = True,
):
    """A stage's command, built from its config dataclass: one flag per field (grouped in --help), --recipe and
    --list-recipes when `recipe` names the command's recipes, --progress/--no-progress, and (`quiet`) the model
    libraries' own loading bars hidden. The decorated function takes the config (and `progress=`) and returns the
    text to print."""

    def decorate(fn):
        def command(**kwargs) -> None:
            show = kwargs.pop("progress", True)
            if quiet:
                quiet_progress()
            cfg = config_with_recipe(config, recipe, kwargs) if recipe else from_kwargs(config, kwargs)
            text = fn(cfg, progress=show) if progress else fn(cfg)
            if text:
                click.echo(text)

        if progress:
            command = click.option(
                "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
            )(command)
        if recipe:
            command = recipe_options(recipe)(command)
        command = click_options(config, defer_required=recipe is not None)(command)
        return parent.command(name, cls=GroupedCommand, epilog=epilog, help=fn.__doc__)(command)

    return decorate


def quiet_progress() -> None:
    """Hide diffusers' own loading bars unless -v; unsee shows its own progress."""
    if not _VERBOSE:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()  # transformers 5's "Loading weights" bar


def _quiet_libraries(verbose: bool) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        warnings.filterwarnings("ignore", module=r"(huggingface_hub|diffusers|transformers|accelerate|peft)(\.|$)")
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        # transformers/diffusers chatter (optional-backend notes, weight-loading bars) is not for users here.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="unsee")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does (INFO level).")
def cli(verbose: bool) -> None:
    """unsee: make a text-to-image diffusion model stop producing what people flag.

    \b
    The pipeline, one command a stage (see docs/design.md):
      generate   prompts -> image set (PNGs + manifest.jsonl)
      annotate   image set -> feedback.jsonl (simulated annotators: `annotate auto`)
      reward     image set + feedback -> reward model (`reward train`, `reward score`)
      invert     model + feedback or reward -> learned token (HFI textual inversion)
      erase      model + concept (text or learned token) -> erased model (SDD, ESD, UCE)
      rl         model + prompts + reward -> fine-tuned model (DDPO, ShieldDiff)
      attack     model -> adversarial prompts or token (Ring-A-Bell, concept inversion)
      evaluate   models + prompts (+ attacks) -> metrics.json + report.html, side by side
      demo       the whole loop on the embedded model, no arguments needed
      toyworld   build / check the embedded toy world (the CPU-sized bench)

    A MODEL is a hub id (CompVis/stable-diffusion-v1-4), a local diffusers
    folder, a .safetensors single file, or `toyworld` (the embedded toy model).
    """
    _quiet_libraries(verbose)


# ---------------------------------------------------------------- generate
from unsee.generate import GenerateConfig  # noqa: E402  (after the group, grouped with its command)


@stage(
    cli,
    GenerateConfig,
    name="generate",
    epilog="""\b
Examples:
  unsee generate --model CompVis/stable-diffusion-v1-4 --prompts i2p.csv --out runs/base
  unsee generate --model ./my-pipeline --prompts prompts.txt --images-per-prompt 4 --out runs/x
  accelerate launch -m unsee generate --model toyworld --prompts p.txt --out runs/tw   # sharded

A CSV prompt file's own seed, guidance and size (I2P columns sd_seed /
evaluation_seed, sd_guidance / evaluation_guidance, sd_image_width,
sd_image_height) override the flags. Rerunning into the same --out skips
finished images; a crash loses at most the batch in flight.
""",
)
def generate(cfg: GenerateConfig, *, progress: bool) -> str:
    """Generate an image set from a prompt file."""
    from unsee.generate import generate as run
    from unsee.runtime import process_state

    out = run(cfg, progress=progress)
    state = process_state()
    return f"image set: {out}" + (
        f" (process {state.process_index + 1} of {state.num_processes})" if state.num_processes > 1 else ""
    )


# ---------------------------------------------------------------- annotate
from unsee.annotate import AutoAnnotateConfig  # noqa: E402
from unsee.invert import InvertConfig  # noqa: E402
from unsee.reward_model import RewardTrainConfig  # noqa: E402


@cli.group()
def annotate() -> None:
    """Feedback on an image set: simulated annotators (`auto`) or people in a web app (`serve`)."""


@stage(
    annotate,
    AutoAnnotateConfig,
    name="auto",
    progress=False,
    quiet=False,
    epilog="""\b
Examples:
  unsee annotate auto --images runs/base --kind binary --noise 0.1 --out fb.jsonl
  unsee annotate auto --images runs/base --kind rank --labels kelvo --annotators 3 --out fb-rank.jsonl
  unsee annotate auto --images runs/sd --detector nudenet --out fb.jsonl      # real images, pip install unsee[nudity]
""",
)
def annotate_auto(cfg: AutoAnnotateConfig) -> str:
    """Label an image set from a detector's scores, with annotator noise."""
    from unsee.annotate import auto_annotate
    from unsee.feedback import load_feedback

    path = auto_annotate(cfg)
    fb = load_feedback(path)
    return f"{len(fb.judgements)} judgements ({', '.join(fb.labels)}) -> {path}"


from unsee.annotate_app.config import (  # noqa: E402  (no web imports: `unsee --help` stays fast)
    ExportConfig,
    InviteConfig,
    RevokeConfig,
    ServeConfig,
    StatusConfig,
)


@stage(
    annotate,
    ServeConfig,
    name="serve",
    progress=False,
    quiet=False,
    epilog="""\b
Examples:
  unsee annotate serve --images runs/base --db study.db --labels "skull,kelvo"
  unsee annotate serve --images runs/sd --db study.db --labels "nudity,gore,style-x" --per-image 3 \\
      --detector nudenet                       # flagged images start blurred; pip install unsee[nudity]
  unsee annotate serve --images runs/sd --db study.db --labels "nudity,gore,style-x" --kind rank \\
      --references examples/                   # examples/<label>/*.png shown beside each group
  unsee annotate invite --db study.db --name ann-1   # prints ann-1's personal link

\b
The database is made on first start and resumed after (answers are committed as
they arrive, so a crash loses nothing answered). It belongs to one image set and
one list of labels. Annotators open their link, accept the consent page, then
judge: binary = check the labels an image shows, or none; rank = order a group
of up to 5 images by how strongly they show a label. Each image goes to
--per-image different annotators. Installs with `pip install unsee[annotate]`.
""",
)
def annotate_serve(cfg: ServeConfig) -> str | None:
    """Run the annotation web app: people label or rank an image set."""
    from unsee.annotate_app.server import bind, prepare, run

    study = prepare(cfg)  # checks only: the study is written once the port is held (a failed start changes nothing)
    sock = bind(cfg.host, cfg.port)
    n = len(study.files)
    click.echo(
        f"study {cfg.db}: {n} images, labels {','.join(cfg.labels)}; {cfg.kind} tasks, "
        f"{cfg.per_image} annotator(s) per image ({study.new_tasks} new tasks); "
        f"{study.flagged} flagged image(s) start blurred"
    )
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: listening on {cfg.host}: anyone who can reach this machine can reach the study, over "
            "plain HTTP; put it behind an HTTPS proxy",
            err=True,
        )
    click.echo(
        f"serving on {study.url}; invite people with `unsee annotate invite --db {cfg.db} --name NAME`; Ctrl+C stops",
        nl=True,
    )
    run(study, sock)


@stage(
    annotate,
    InviteConfig,
    name="invite",
    progress=False,
    quiet=False,
    epilog="""\b
Examples:
  unsee annotate invite --db study.db --name ann-1
  unsee annotate invite --db study.db --name ann-2 --url https://annotate.example.org

Prints the link on stdout; it is shown once (only a hash of its secret is
stored). A revoked annotator can be invited again: a new link, same name, their
earlier answers kept.
""",
)
def annotate_invite(cfg: InviteConfig) -> str | None:
    """Print a personal invite link for an annotator."""
    from unsee.annotate_app.db import Store

    store = Store.open(cfg.db)
    token = store.invite(cfg.name)
    url = (cfg.url or store.meta().get("url") or "http://127.0.0.1:8000").rstrip("/")
    click.echo(f"{url}/join/{token}")
    click.echo(
        f"send this link to {cfg.name} privately; it cannot be shown again, and opens sessions for "
        f"{store.invite_days()} days",
        err=True,
    )


@stage(
    annotate,
    RevokeConfig,
    name="revoke",
    progress=False,
    quiet=False,
    epilog="\b\nExample:\n  unsee annotate revoke --db study.db --name ann-1",
)
def annotate_revoke(cfg: RevokeConfig) -> str | None:
    """Stop an annotator's link at once (their answers are kept)."""
    from unsee.annotate_app.db import Store

    Store.open(cfg.db).revoke(cfg.name)
    click.echo(f"revoked {cfg.name}: their link and open sessions no longer work; their answers are kept")


@stage(
    annotate,
    StatusConfig,
    name="status",
    progress=False,
    quiet=False,
    epilog="\b\nExample:\n  unsee annotate status --db study.db",
)
def annotate_status(cfg: StatusConfig) -> str | None:
    """Progress per annotator and agreement so far (Krippendorff's alpha per label)."""
    from unsee.annotate_app.agreement import label_alphas
    from unsee.annotate_app.db import Store

    store = Store.open(cfg.db)
    meta = store.meta()
    click.echo(f"image set {meta.get('images')}; labels {','.join(meta['labels'])}")
    for kind in ("binary", "rank"):
        p = store.progress(None, kind)
        if p["total"]:
            click.echo(f"{kind}: {p['done']} of {p['total']} judgements ({100 * p['done'] / p['total']:.0f}%)")
    rows = store.annotators()
    click.echo(f"\n{'annotator':<20} {'state':<10} {'binary':>7} {'rank':>6}  last answer")
    for r in rows:
        state = "revoked" if r["revoked"] else "active" if r["consented"] else "invited"
        click.echo(f"{r['name'][:20]:<20} {state:<10} {r['binary']:>7} {r['rank']:>6}  {r['last'] or '-'}")
    if not rows:
        click.echo(f"(nobody yet: `unsee annotate invite --db {cfg.db} --name NAME`)")
    binary = [(j.image, j.labels) for j in store.feedback().binary]
    alphas = label_alphas(binary, meta["labels"])
    click.echo("\nagreement, binary (Krippendorff's alpha, nominal; 1 = perfect, 0 = chance):")
    for label, (alpha, units) in alphas.items():
        shown = f"{alpha:6.3f}" if alpha == alpha else "   n/a"  # nan: no image judged twice, or no variation yet
        click.echo(f"  {label[:24]:<24} {shown}  over {units} image(s) judged by 2+ annotators")


@stage(
    annotate,
    ExportConfig,
    name="export",
    progress=False,
    quiet=False,
    epilog="\b\nExample:\n  unsee annotate export --db study.db --out feedback.jsonl\n"
    "  unsee reward train --images runs/base --feedback feedback.jsonl --out runs/reward",
)
def annotate_export(cfg: ExportConfig) -> str | None:
    """Write every answer so far to feedback.jsonl (what `reward train` and `invert` read)."""
    from unsee.annotate_app.db import export_feedback

    fb = export_feedback(cfg.db, cfg.out)
    click.echo(
        f"{len(fb.judgements)} judgements ({len(fb.binary)} binary, {len(fb.ranks)} rank) by "
        f"{len({j.annotator for j in fb.judgements})} annotator(s) -> {cfg.out}"
    )


@cli.group()
def reward() -> None:
    """Reward models: an MLP on CLIP image embeddings (frozen, or with the last vision layers tuned), trained on feedback."""


@stage(
    reward,
    RewardTrainConfig,
    name="train",
    epilog="""\b
Examples:
  unsee reward train --images runs/base --feedback fb.jsonl --out runs/reward
  unsee reward train --images runs/sd --feedback fb.jsonl --clip openai/clip-vit-large-patch14 --out runs/reward
  # a second round: feedback on the fine-tuned model's own images, trained together with the first
  unsee reward train --images runs/base --feedback fb.jsonl --images runs/rl-samples --feedback fb2.jsonl --out runs/reward2
  # a concept the frozen embedding barely sees (a small object): fine-tune the tower's last 4 layers too
  unsee reward train --images runs/base --feedback fb.jsonl --tune-vision 4 --steps 1500 --out runs/reward-tuned
""",
)
def reward_train(cfg: RewardTrainConfig, *, progress: bool) -> str:
    """Train a reward model on binary (MSE) or rank (Bradley-Terry) feedback."""
    from unsee.reward_model import summary_text, train_reward

    return summary_text(train_reward(cfg, progress=progress), cfg)


@reward.command("score", epilog="\b\nExample:\n  unsee reward score --reward runs/reward --images runs/x")
@click.option("--reward", "reward_dir", required=True, help="Reward model folder.")
@click.option("--images", required=True, help="Image set to score.")
@click.option("--out", default=None, help="Scores file (default: IMAGES/scores.jsonl).")
def reward_score(reward_dir: str, images: str, out: str | None) -> None:
    """Score every image of a set; writes one JSON line per image."""
    from unsee.reward_model import score_image_set

    click.echo(f"scores -> {score_image_set(reward_dir, images, out)}")


@stage(
    cli,
    InvertConfig,
    name="invert",
    recipe="invert",
    epilog="""\b
Examples:
  unsee invert --model toyworld --images runs/base --feedback fb.jsonl --init-word skull --out flagged.safetensors
  unsee invert --model CompVis/stable-diffusion-v1-4 --images runs/sd --reward runs/reward --vectors 4 --out t.safetensors

Load the result in plain diffusers:
  pipe.load_textual_inversion("flagged.safetensors", token="<flagged>")
""",
)
def invert(cfg: InvertConfig, *, progress: bool) -> str:
    """Reward-weighted textual inversion: learn token(s) for what annotators flagged."""
    from unsee.invert import invert as run
    from unsee.invert import summary_text

    return summary_text(run(cfg, progress=progress), cfg)


# ---------------------------------------------------------------- erase
from unsee.erase import EraseConfig  # noqa: E402


@stage(
    cli,
    EraseConfig,
    name="erase",
    recipe="erase",
    epilog="""\b
Examples:
  unsee erase --model CompVis/stable-diffusion-v1-4 --method sdd --concept nudity --out runs/sdd
  unsee erase --model toyworld --method esd --params xattn --concept "by kelvo" --guidance 1 --out runs/esd-x
  unsee erase --model toyworld --method sdd --token flagged.safetensors --out runs/hfi-sdd     # HFI: erase the learned token
  unsee erase --model toyworld --method esd --token flagged.safetensors --preserve @keep.txt --preserve-on own --out runs/hfi-esd
  unsee erase --model toyworld --method esd --concept "by kelvo" --params xattn-kv --preserve @keep.txt --preserve-on kv --out runs/esd-kv
  unsee erase --model toyworld --method esd --concept "by kelvo" --params xattn-kv --preserve @keep.txt --preserve-on null \\
      --guidance 2 --steps 600 --lr 3e-4 --batch-size 4 --out runs/esd-null
  unsee erase --model ./sd15 --method esd --params lora --concept nudity --out runs/esd-lora   # pipe.load_lora_weights(out)
  unsee erase --model toyworld --method uce --concept skull --anchor mask --context @contexts.txt --preserve @keep.txt \\
      --out runs/uce    # closed form, seconds: contexts.txt holds prompts like "a red cross with a {} in the city"
  unsee erase --model toyworld --method sdd --token flagged.safetensors --concept skull --anchor mask \\
      --context @contexts.txt --flagged @implicit.txt --flagged-guidance 8 --out runs/hfi-sdd-flagged
      # implicit.txt: prompts whose images were flagged without naming the concept, e.g. "a haunted red ring"

A rerun with the same --out resumes from the last checkpoint (more --steps extend the run; other
settings are refused rather than mixed into it).
""",
)
def erase(cfg: EraseConfig, *, progress: bool) -> str:
    """Erase a concept from the UNet (SDD, ESD or UCE), keyed on text or a learned token."""
    from unsee.erase import erase as run
    from unsee.erase import summary_text

    return summary_text(run(cfg, progress=progress), cfg)


# ---------------------------------------------------------------- rl
from unsee.rl import RLConfig  # noqa: E402


@stage(
    cli,
    RLConfig,
    name="rl",
    recipe="rl",
    epilog="""\b
Examples:
  W=$(python -c "import unsee.toyworld as t; print(t.assets_path())")/prompts/seen
  unsee rl --model toyworld --prompts $W/object_explicit.txt --benign-prompts $W/benign.txt \\
      --reward "oracle:skull+0.5*clip" --ddim-steps 20 --epochs 30 --out runs/rl
  unsee rl --model toyworld --prompts $W/object_implicit.txt --reward "learned:runs/reward+0.5*clip" --out runs/rl-hf
  unsee rl --model ./sd15 --prompts i2p-sexual.csv --reward "nudity+0.5*clip" --clip openai/clip-vit-base-patch32 --out runs/shield

Output: LoRA weights for pipe.load_lora_weights(OUT) (or a pipeline folder with
--params other than lora); OUT/run/epochs.csv logs mean reward, each term, the
KL estimate and the clip fraction per epoch. A rerun resumes (more --epochs extend the run;
other settings are refused).
""",
)
def rl(cfg: RLConfig, *, progress: bool) -> str:
    """Fine-tune against a safety reward with DDPO (ShieldDiff)."""
    from unsee.rl import rl as run
    from unsee.rl import summary_text

    return summary_text(run(cfg, progress=progress), cfg)


# ---------------------------------------------------------------- attack
from unsee.attack import AttackInvertConfig, RingABellConfig  # noqa: E402


@cli.group()
def attack() -> None:
    """Red-team a model: adversarial prompts (Ring-A-Bell) or a learned token (concept inversion).

    \b
    Each writes an attack folder; `unsee evaluate --attack DIR` scores it and
    reports pre-attack and post-attack success rates side by side.
    """


@stage(
    attack,
    RingABellConfig,
    name="ringabell",
    epilog="""\b
Examples:
  W=$(python -c "import unsee.toyworld as t; print(t.assets_path())")/prompts
  unsee attack ringabell --model toyworld --prompts $W/seen/object_explicit.txt \\
      --concept-pairs $W/concept_pairs/skull.csv --label skull --generations 300 --out runs/rab
  unsee attack ringabell --model CompVis/stable-diffusion-v1-4 --prompts i2p-nudity.csv \\
      --concept-pairs nudity-pairs.csv --eta 3 --length 16 --label nudity --out runs/rab-sd

Only the tokenizer and text encoder are loaded. The concept's own words (in
the with_concept prompts, absent from the without_concept ones) are banned,
so no found prompt names the concept. A rerun resumes the search.
""",
)
def attack_ringabell(cfg: RingABellConfig, *, progress: bool) -> str:
    """Ring-A-Bell: genetic search for prompts whose embedding carries the concept."""
    from unsee.attack import ring_a_bell, ring_a_bell_text

    return ring_a_bell_text(ring_a_bell(cfg, progress=progress), cfg)


@stage(
    attack,
    AttackInvertConfig,
    name="invert",
    epilog="""\b
Examples:
  W=$(python -c "import unsee.toyworld as t; print(t.assets_path())")/prompts/seen
  unsee attack invert --erased runs/sdd --original toyworld --concept skull \\
      --prompts $W/object_explicit.txt --label skull --out runs/cce-sdd
  unsee attack invert --erased runs/esd --original CompVis/stable-diffusion-v1-4 --concept nudity --out runs/cce-esd

The token trains against --erased on --original's images of the concept; the
attack prompts are --prompts with the concept word replaced by the token.
""",
)
def attack_invert(cfg: AttackInvertConfig, *, progress: bool) -> str:
    """Concept inversion: learn a token that brings an erased concept back."""
    from unsee.attack import concept_inversion, concept_inversion_text

    return concept_inversion_text(concept_inversion(cfg, progress=progress), cfg)


# ---------------------------------------------------------------- evaluate
from unsee.evaluate import EvaluateConfig  # noqa: E402


@stage(
    cli,
    EvaluateConfig,
    name="evaluate",
    epilog="""\b
Examples:
  W=$(python -c "import unsee.toyworld as t; print(t.assets_path())")/prompts/seen
  unsee evaluate --model toyworld --name base --model runs/sdd --name sdd \\
      --prompts $W/object_explicit.txt --prompts $W/benign.txt --images-per-prompt 5 --out runs/eval
  unsee evaluate --model ./sd15 --model runs/esd --detector nudenet --clip openai/clip-vit-base-patch32 \\
      --prompts i2p.csv --reference-images coco-1k/ --out runs/eval-sd

Writes OUT/metrics.json and OUT/report.html; a rerun reuses the images in OUT/images/.
""",
)
def evaluate(cfg: EvaluateConfig, *, progress: bool) -> str:
    """Compare models side by side: concept rates, CLIP score, Frechet distance, preservation."""
    from unsee.evaluate import evaluate as run
    from unsee.evaluate import summary_text

    return summary_text(run(cfg, progress=progress), cfg)


# ---------------------------------------------------------------- demo
@cli.command(
    epilog="""\b
Examples:
  unsee demo                 # the whole loop, ~30 min on 2 cores; writes out/demo/
  unsee demo --out /tmp/d    # resumes if run again
  unsee demo --grid-only     # just the base model's grid and what the oracle reads in it

Stages: grid -> simulated feedback -> reward model -> learned token ->
text-SDD, HFI-SDD, ESD-x, UCE, RL (DDPO) -> attacks (Ring-A-Bell, concept
inversion) -> evaluate (out/demo/eval/report.html).
"""
)
@click.option("--out", default="out/demo", show_default=True, help="Output folder; a rerun resumes.")
@click.option(
    "--full/--grid-only",
    default=True,
    show_default=True,
    help="Run the whole loop (feedback, reward, token, erasure, evaluation), or only the base model's grid.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def demo(out: str, full: bool, progress: bool) -> None:
    """Run the whole loop on the embedded toy world and print the comparison."""
    from unsee.demo import report_text, run_demo

    quiet_progress()
    click.echo(report_text(run_demo(out, progress=progress, full=full, say=click.echo)))


# ---------------------------------------------------------------- toyworld
from unsee.toyworld.build import BuildConfig  # noqa: E402


@cli.group()
def toyworld() -> None:
    """The toy world: a tiny text-to-image world trained, shipped and measured on a CPU."""


@toyworld.command(
    "build",
    epilog="""\b
Examples:
  unsee toyworld build --out runs/toyworld            # the shipped recipe: 21 min measured on 2 cores
  UNSEE_TOYWORLD=runs/toyworld unsee generate --model toyworld --prompts p.txt --out runs/x
  unsee toyworld build --out /tmp/tw --unet-steps 50 --train-images 2000   # a quick smoke build

A rerun with the same --out resumes: finished stages are skipped and UNet
training continues from its last checkpoint.
""",
)
@click_options(BuildConfig)
@click.option("--check/--no-check", default=True, show_default=True, help="Run `toyworld check` after building.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def toyworld_build(check: bool, progress: bool, **kwargs) -> None:
    """Train the whole toy world from scratch with fixed seeds."""
    import time

    from unsee.toyworld.build import build

    quiet_progress()
    t = time.time()
    out = build(from_kwargs(BuildConfig, kwargs), progress=progress)
    click.echo(f"built {out} in {time.time() - t:.0f} s")
    if check:
        _run_check(str(out), 200, progress, str(out / "check"))


@toyworld.command(
    "samples",
    epilog="\b\nExample:\n  unsee toyworld samples --out docs/toyworld-grid.png --n 32",
)
@click.option("--out", required=True, help="PNG grid to write.")
@click.option("--n", default=32, show_default=True, help="Scenes to render.")
@click.option("--seed", default=0, show_default=True, help="Seed of the scenes.")
def toyworld_samples(out: str, n: int, seed: int) -> None:
    """Render training scenes (ground truth, no model) and print their captions."""
    import numpy as np
    import torch

    from unsee.toyworld.render import render_many
    from unsee.toyworld.world import sample_scene
    from unsee.viz import save_grid

    rng = np.random.default_rng(seed)
    pairs = [sample_scene(rng) for _ in range(n)]
    images = torch.from_numpy(render_many([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255
    save_grid(images, out, nrow=8, scale=4)
    for k, (scene, caption) in enumerate(pairs):
        click.echo(f"{k:>3}  {caption:<62} [{scene.extra}, {scene.style}]")
    click.echo(f"grid -> {out}")


def _run_check(world: str | None, images_per_row: int, progress: bool, cache: str | None = None) -> None:
    from unsee.toyworld.check import check as run_check
    from unsee.toyworld.check import format_table

    result = run_check(world, images_per_row=images_per_row, progress=progress, cache=cache)
    click.echo(format_table(result["table"]))


@toyworld.command(
    "check",
    epilog="""\b
Examples:
  unsee toyworld check                       # the shipped world
  unsee toyworld check --world runs/toyworld --images-per-row 400
""",
)
@click.option("--world", default=None, help="A built world folder (default: the shipped one, or $UNSEE_TOYWORLD).")
@click.option("--images-per-row", default=200, show_default=True, help="Generated images behind each rate.")
@click.option(
    "--cache", default=None, help="Folder for the generated images (default: ~/.cache/unsee/toyworld-check/...)."
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def toyworld_check(world: str | None, images_per_row: int, cache: str | None, progress: bool) -> None:
    """Measure the toy world's quality table and write it into its model card."""
    quiet_progress()
    _run_check(world, images_per_row, progress, cache)


def main(argv: list[str] | None = None) -> int:
    """Entry point: every input error is one line on stderr and exit code 2."""
    try:
        rc = cli.main(args=argv, prog_name="unsee", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.format_message())
        return 0
    except click.UsageError as e:  # click's own (bad flag value, missing option): one line, with the fix
        cmd = e.ctx.command_path if e.ctx else "unsee"
        click.echo(f"error: {e.format_message()} (see `{cmd} --help`)", err=True)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
