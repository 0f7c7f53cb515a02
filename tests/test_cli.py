"""The CLI as a user meets it: real processes, real exit codes, one-line errors."""

import os
import subprocess
import sys

import pytest

from unsee.imageset import ImageSet


def run(*args, timeout=180):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "unsee", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_help_lists_the_stages_and_each_command_has_examples():
    r = run("--help")
    assert r.returncode == 0
    assert "generate" in r.stdout
    g = run("generate", "--help")
    assert g.returncode == 0 and "Examples:" in g.stdout and "--images-per-prompt" in g.stdout
    e = run("erase", "--help").stdout
    sections = ["What to erase:", "Training:", "Preservation:", "Output:", "Tracking:", "Memory:", "Other options:"]
    assert [e.index(title) for title in sections] == sorted(e.index(title) for title in sections)
    assert e.index("--concept") < e.index("Training:") < e.index("--steps") < e.index("Preservation:")
    assert e.index("Preservation:") < e.index("--preserve-on") < e.index("Output:") < e.index("--out")


def test_generate_end_to_end_and_resume(tiny_model_dir, prompt_file, tmp_path):
    out = tmp_path / "set"
    args = (
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(prompt_file),
        "--out",
        str(out),
        "--steps",
        "3",
        "--images-per-prompt",
        "2",
        "--no-progress",
    )
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert len(ImageSet.load(out)) == 4
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    r = run(*args)
    assert r.returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes  # nothing redone


BAD = [
    ("missing model path", lambda d, m: ["--model", str(d / "nope"), "--prompts", str(d / "p.txt")], "does not exist"),
    (
        "unknown hub id offline",
        lambda d, m: ["--model", "nobody/nothing", "--prompts", str(d / "p.txt")],
        "Hugging Face Hub",
    ),
    ("empty prompt file", lambda d, m: ["--model", m, "--prompts", str(d / "empty.txt")], "has no prompts"),
    ("csv without prompt column", lambda d, m: ["--model", m, "--prompts", str(d / "nocol.csv")], "'prompt' column"),
    ("non-numeric seed in csv", lambda d, m: ["--model", m, "--prompts", str(d / "badseed.csv")], "must be a number"),
    (
        "non-numeric seed flag",
        lambda d, m: ["--model", m, "--prompts", str(d / "p.txt"), "--seed", "abc"],
        "not a valid integer",
    ),
    ("steps <= 0", lambda d, m: ["--model", m, "--prompts", str(d / "p.txt"), "--steps", "0"], "--steps must be > 0"),
    (
        "unwritable output",
        lambda d, m: ["--model", m, "--prompts", str(d / "p.txt"), "--out", str(d / "p.txt" / "x")],
        "is a file, not a folder",
    ),
    (
        "sdxl folder",
        lambda d, m: ["--model", str(d / "sdxl"), "--prompts", str(d / "p.txt")],
        "not this architecture yet",
    ),
]


@pytest.fixture()
def bad_inputs(tmp_path):
    (tmp_path / "p.txt").write_text("a red cat\n")
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "nocol.csv").write_text("text\nhello\n")
    (tmp_path / "badseed.csv").write_text("prompt,sd_seed\nhello,abc\n")
    (tmp_path / "sdxl").mkdir()
    (tmp_path / "sdxl" / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    return tmp_path


def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_inputs, tiny_model_dir, capsys):
    """Each bad input: exit code 2, one line on stderr naming the fault, no output folder. The offline hub id goes
    through a real process (the hub reads HF_HUB_OFFLINE when it is imported); the others through `unsee.cli.main`
    in this process, the same code without an interpreter start each."""
    from unsee.cli import main

    for name, make, message in BAD:
        out = bad_inputs / f"out-{name.replace(' ', '-')}"
        args = make(bad_inputs, str(tiny_model_dir))
        if "--out" not in args:
            args += ["--out", str(out)]
        if name == "unknown hub id offline":
            r = run("generate", *args)
            code, stderr = r.returncode, r.stderr
        else:
            code, stderr = main(["generate", *args]), capsys.readouterr().err
        assert code == 2, (name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in stderr
        assert not out.exists(), name  # nothing half-written


def _commands(group, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


def test_every_command_has_examples_in_its_help():
    from click.testing import CliRunner

    from unsee.cli import cli

    paths = list(_commands(cli))
    assert {
        ("generate",),
        ("annotate", "auto"),
        ("reward", "train"),
        ("reward", "score"),
        ("invert",),
        ("toyworld", "build"),
        ("toyworld", "check"),
        ("toyworld", "samples"),
        ("demo",),
        ("erase",),
        ("evaluate",),
        ("rl",),
    } <= set(paths)
    for path in paths:
        r = CliRunner().invoke(cli, [*path, "--help"])
        assert r.exit_code == 0, path
        assert "Example" in r.output, f"`unsee {' '.join(path)} --help` has no example"


def test_reward_train_wants_one_feedback_per_image_set(tmp_path):
    r = run(
        "reward",
        "train",
        "--images",
        str(tmp_path / "a"),
        "--images",
        str(tmp_path / "b"),
        "--feedback",
        str(tmp_path / "fa.jsonl"),
        "--out",
        str(tmp_path / "r"),
    )
    assert r.returncode == 2 and "one --feedback per --images (got 2 image sets and 1 feedback files)" in r.stderr, (
        r.stderr
    )
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_erase_with_a_context_that_has_no_place_for_the_concept_is_refused(tmp_path, tiny_model_dir):
    r = run(
        "erase",
        "--model",
        str(tiny_model_dir),
        "--method",
        "uce",
        "--concept",
        "red",
        "--context",
        "a cat at night",
        "--out",
        str(tmp_path / "u"),
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --context 'a cat at night' must hold {} once, where the concept goes"
    ], r.stderr
    assert not (tmp_path / "u").exists()
