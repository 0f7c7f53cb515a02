"""Named recipes: the CLI and the demo build the same configs from them, flags override them, bad names fail in one line."""

import dataclasses

import pytest
from click.testing import CliRunner

from unsee import demo
from unsee.cli import cli
from unsee.recipes import RECIPES, recipe


@pytest.fixture
def captured(monkeypatch):
    """The config each command would run with, instead of running it."""
    got = {}

    def capture(name):
        def run(cfg, progress=True):
            got[name] = cfg
            raise SystemExit(0)  # stop before the command reports a result it did not make

        return run

    for module, fn in (("unsee.erase", "erase"), ("unsee.rl", "rl"), ("unsee.invert", "invert")):
        monkeypatch.setattr(f"{module}.{fn}", capture(fn))
    return got


def _run(*args):
    return CliRunner().invoke(cli, list(args))


def _asdict(cfg, drop=("out",)):
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in drop}


def test_each_toy_world_erase_recipe_is_what_the_demo_runs(captured, tmp_path):
    token = tmp_path / "token.safetensors"
    configs = demo.erase_configs(tmp_path / "models", token)
    for name, recipe_name, keyed_on_token in demo.ERASE_RUNS:
        captured.clear()
        result = _run(
            "erase",
            "--recipe",
            recipe_name,
            "--model",
            "toyworld",
            "--out",
            str(tmp_path / "cli"),
            *(("--token", str(token)) if keyed_on_token else ()),
        )
        assert result.exit_code == 0, result.output
        assert _asdict(captured["erase"]) == _asdict(configs[name]), name


def test_the_demo_runs_the_rl_and_hfi_recipes(captured, tmp_path):
    assert _run("rl", "--recipe", demo.RL_RECIPE, "--model", "toyworld", "--out", str(tmp_path / "rl")).exit_code == 0
    cfg = captured["rl"]
    assert (
        cfg.reward == "oracle:skull:log+0.5*clip" and cfg.epochs == 80 and cfg.prompts.endswith("object_explicit.txt")
    )
    # the measured setting: the first 30% of each chain trained, the strong KL over the whole chain on benign samples
    assert (cfg.train_steps_from, cfg.train_timesteps, cfg.kl_on, cfg.kl_steps, cfg.kl_weight, cfg.lr) == (
        "first",
        0.3,
        "benign",
        "chain",
        1.0,
        6e-3,
    )
    assert {k: getattr(cfg, k) for k in recipe(demo.RL_RECIPE)} == recipe(demo.RL_RECIPE)
    r = _run(
        "invert",
        "--recipe",
        demo.HFI_RECIPE,
        "--model",
        "toyworld",
        "--images",
        "i",
        "--reward",
        "r",
        "--out",
        str(tmp_path / "t.safetensors"),
    )
    assert r.exit_code == 0, r.output
    assert (captured["invert"].vectors, captured["invert"].lr, captured["invert"].top_k) == (4, 2e-2, 64)


def test_a_flag_beside_a_recipe_overrides_it_and_the_rest_stays(captured, tmp_path):
    r = _run(
        "erase",
        "--recipe",
        "toyworld-sdd",
        "--model",
        "toyworld",
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "7",
        "--anchor",
        "ring",
    )
    assert r.exit_code == 0, r.output
    cfg = captured["erase"]
    assert (cfg.steps, cfg.anchor) == (7, "ring")
    assert (cfg.lr, cfg.ema_decay, cfg.preserve_weight, cfg.batch_size) == (6e-4, 0.99, 0.3, 4)  # the recipe's


@pytest.mark.parametrize(
    "name, method, weight, held",
    [
        ("toyworld-sdd-kelvo", "sdd", 1.0, ("benign", "style_neighbour")),
        ("toyworld-hfi-sdd-kelvo", "sdd", 1.0, ("benign", "style_neighbour")),
        ("toyworld-esd-x-kelvo", "esd", 2.0, ("benign", "style_neighbour")),
        ("toyworld-uce-kelvo", "uce", 1.0, ("benign",)),
    ],
)
def test_the_style_recipes_erase_kelvo_toward_ravo_holding_scenes_no_evaluation_reads(
    captured, tmp_path, name, method, weight, held
):
    from unsee.erase import training_prompts
    from unsee.prompts import read_prompts
    from unsee.provenance import overlap
    from unsee.toyworld import prompts_path

    r = _run("erase", "--recipe", name, "--model", "toyworld", "--out", str(tmp_path / "k"))
    assert r.exit_code == 0, r.output
    cfg = captured["erase"]
    assert (cfg.method, cfg.concept, cfg.anchor, cfg.preserve_weight) == (method, ("kelvo",), "ravo", weight)
    assert cfg.context_prompts()[0].endswith("{}") and not any("kelvo" in p for p in cfg.context_prompts())
    kept = cfg.preserve_prompts()
    for split in held:  # scenes without a style, and (trained recipes) the neighbour's scenes
        assert {p.text for p in read_prompts(prompts_path(split, "heldout"))} <= set(kept), split
    assert ("style_neighbour" in held) == any(p.endswith(" by ravo") and p != "a scene by ravo" for p in kept)
    assert {"a scene by ravo", "a red object", ""} <= set(kept)
    # HFI-SDD's flagged prompts are the style's trigger-word prompts the evaluation never reads
    flagged = {p.text for p in read_prompts(prompts_path("style_implicit", "heldout"))}
    assert set(cfg.flagged_prompts()) == (flagged if "hfi" in name else set())
    # neither split the evaluation reads is trained on: the novel split not even in phrasing
    trained = set(training_prompts(cfg, ["kelvo"]))
    for prompts in ("style_explicit", "style_implicit", "style_neighbour", "benign"):
        novel = [p.text for p in read_prompts(prompts_path(prompts, "novel"))]
        assert overlap(novel, trained)["trained_phrasings"] == 0, prompts
        seen = [p.text for p in read_prompts(prompts_path(prompts, "seen"))]
        assert overlap(seen, trained)["trained_prompts"] == 0, prompts


def test_published_recipes_for_real_models(captured, tmp_path):
    assert _run("erase", "--recipe", "esd-u", "--model", "m", "--concept", "nudity", "--out", "o").exit_code == 0
    cfg = captured["erase"]
    assert (cfg.method, cfg.params, cfg.steps, cfg.lr, cfg.guidance, cfg.reuse) == (
        "esd",
        "noxattn",
        1000,
        1e-5,
        1.0,
        1,
    )
    assert {r.command for r in RECIPES.values()} == {"erase", "rl", "invert"}


def test_list_recipes_needs_no_other_flag_and_names_where_the_figures_are():
    r = _run("erase", "--list-recipes")
    assert r.exit_code == 0, r.output
    assert (
        "toyworld-hfi-sdd:" in r.output and "figures: docs/results/erase.md" in r.output and "--anchor mask" in r.output
    )
    assert "shielddiff" not in r.output  # an rl recipe
    assert "shielddiff:" in _run("rl", "--list-recipes").output


def test_bad_recipe_names_and_missing_flags_fail_in_one_line():
    r = _run("erase", "--recipe", "nope", "--model", "m", "--out", "o", "--concept", "x")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no recipe 'nope' for unsee erase" in r.output
    r = _run("erase", "--recipe", "shielddiff", "--model", "m", "--out", "o", "--concept", "x")
    assert r.exit_code == 2 and "(it is a recipe for unsee rl)" in r.output
    r = _run("rl", "--model", "m", "--out", "o")  # no recipe gives --prompts
    assert r.exit_code == 2 and "Missing option '--prompts'" in r.output


def test_invert_defaults_are_textual_inversions_not_the_toy_worlds():
    from unsee.invert import InvertConfig

    cfg = InvertConfig(model="m", images="i", out="o.safetensors", feedback="f", batch_size=4)
    assert (cfg.vectors, cfg.lr) == (1, pytest.approx(2e-3))  # 5e-4 x batch
