"""The `unsee` command line. Each stage of DESIGN.md is one subcommand.

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
from unsee.config import click_options, from_kwargs
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


def quiet_progress() -> None:
    """Hide diffusers' own loading bars unless -v; unsee shows its own progress."""
    if not _VERBOSE:
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()


def _quiet_libraries(verbose: bool) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
    The pipeline, one command a stage (see DESIGN.md):
      generate   prompts -> image set (PNGs + manifest.jsonl)
      demo       the whole loop on the embedded model, no arguments needed

    A MODEL is a hub id (CompVis/stable-diffusion-v1-4), a local diffusers
    folder, a .safetensors single file, or `toyworld` (the embedded toy model).
    """
    _quiet_libraries(verbose)


# ---------------------------------------------------------------- generate
from unsee.generate import GenerateConfig  # noqa: E402  (after the group, grouped with its command)


@cli.command(
    epilog="""\b
Examples:
  unsee generate --model CompVis/stable-diffusion-v1-4 --prompts i2p.csv --out runs/base
  unsee generate --model ./my-pipeline --prompts prompts.txt --images-per-prompt 4 --out runs/x
  accelerate launch -m unsee generate --model toyworld --prompts p.txt --out runs/tw   # sharded

A CSV prompt file's own seed, guidance and size (I2P columns sd_seed /
evaluation_seed, sd_guidance / evaluation_guidance, sd_image_width,
sd_image_height) override the flags. Rerunning into the same --out skips
finished images; a crash loses at most the batch in flight.
"""
)
@click_options(GenerateConfig)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def generate(progress: bool, **kwargs) -> None:
    """Generate an image set from a prompt file."""
    from unsee.generate import generate as run

    cfg = from_kwargs(GenerateConfig, kwargs)
    quiet_progress()
    out = run(cfg, progress=progress)
    click.echo(f"image set: {out}")


# ---------------------------------------------------------------- demo
@cli.command(
    epilog="""\b
Examples:
  unsee demo                 # writes runs/demo/
  unsee demo --out /tmp/d    # resumes if run again
"""
)
@click.option("--out", default="runs/demo", show_default=True, help="Output folder; a rerun resumes.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def demo(out: str, progress: bool) -> None:
    """Run the whole loop on the embedded model and print what it made."""
    from unsee.demo import run_demo
    from unsee.imageset import ImageSet

    quiet_progress()
    r = run_demo(out, progress=progress)
    if r.random_weights:
        click.echo("note: the toy world is not built into this installation yet, so this demo generates from a tiny\n"
                   "      random-weight pipeline: the images are noise-like by design.")
    s = ImageSet.load(r.image_set)
    click.echo(f"{'id':<10} {'seed':>10}  prompt")
    for rec in s.records:
        click.echo(f"{rec['id']:<10} {rec['seed']:>10}  {rec['prompt']}")
    click.echo(f"model: {r.model}\nimage set: {r.image_set}\ngrid: {r.grid}")


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
