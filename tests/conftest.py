from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the hub; a missing model must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight SD pipeline saved as a diffusers folder, shared by the session."""
    from unsee.testing import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe")


@pytest.fixture(scope="session")
def tiny_vpred_dir(tmp_path_factory) -> Path:
    """An SD 2.x-style tiny pipeline (linear projections, v-prediction)."""
    from unsee.testing import save_tiny_pipeline

    return save_tiny_pipeline(
        tmp_path_factory.mktemp("tiny2") / "pipe", sd2=True, prediction_type="v_prediction", seed=3
    )


@pytest.fixture()
def prompt_file(tmp_path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("a photo of a red cat\n\n# a comment\na blue house at night\n")
    return p


def tiny_erase_config(model, out, **kw):
    """A few-second erase run on a tiny model (a red cat, 4 updates of 2 latents, 5 DDIM steps); `kw` overrides."""
    from unsee.erase import EraseConfig

    base = dict(
        model=str(model),
        out=str(out),
        concept=("a red cat",),
        steps=4,
        reuse=2,
        checkpoint_every=2,
        ddim_steps=5,
        lr=1e-3,
        device="cpu",
        batch_size=2,
    )
    return EraseConfig(**(base | kw))


def two_cpu_processes() -> list[str]:
    """`python -m accelerate launch` arguments for two CPU processes, on a free port.

    `--cpu` would start a single process (accelerate's multi-CPU path goes through mpirun);
    `--multi_gpu` starts them through torch.distributed.run, and on a machine without CUDA unsee
    joins them over gloo (unsee.generate.process_state)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]


def flagged_image_set(model: Path, tmp_path: Path, per_prompt: int) -> tuple[Path, Path]:
    """An image set of `model` on "a red cat" and "a blue house" (`per_prompt` images each, 2 steps) and a feedback file
    in which one annotator flags every cat: what `unsee invert --feedback` trains on."""
    from unsee.feedback import Binary, Feedback, save_feedback
    from unsee.generate import GenerateConfig, generate

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue house\n")
    images = generate(
        GenerateConfig(
            model=str(model),
            prompts=str(prompts),
            out=str(tmp_path / "set"),
            images_per_prompt=per_prompt,
            steps=2,
            device="cpu",
        ),
        progress=False,
    )
    ids = [f"{p:05d}-{i:03d}" for p in range(2) for i in range(per_prompt)]
    fb = save_feedback(
        tmp_path / "fb.jsonl",
        Feedback(("flag",), [Binary(i, "a", frozenset({"flag"} if i < "00001" else set()), "") for i in ids]),
    )
    return images, fb
