"""--report-to: the training log and preview images reach TensorBoard's event files, and change nothing trained."""

import csv

import pytest

from test_levers import _erase
from unsee.errors import UnseeError
from unsee.tracking import Reporter
from unsee.trainer import TrainConfig


def _events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(logdir.glob("events.out.tfevents.*")), f"no event file in {logdir}"
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_the_log_rows_and_previews_and_the_weights_do_not_move(tiny_model_dir, tmp_path):
    plain = _erase(tiny_model_dir, tmp_path / "plain", method="sdd")
    tracked = _erase(
        tiny_model_dir,
        tmp_path / "tb",
        method="sdd",
        report_to="tensorboard",
        sample_every=2,
        preserve=("a blue dog",),
        context=("a photo of {}",),
    )
    # previews draw from their own seeds on a copy of the scheduler: the same updates as without them
    assert (
        tracked["weights_digest"]
        == _erase(tiny_model_dir, tmp_path / "ctx", method="sdd", preserve=("a blue dog",), context=("a photo of {}",))[
            "weights_digest"
        ]
    )
    assert plain["weights_digest"] != tracked["weights_digest"]  # the context changed what trained: the check can fail
    acc = _events(tmp_path / "tb" / "run" / "logs" / "erase-sdd")
    with open(tmp_path / "tb" / "run" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [int(r["step"]) for r in rows]
    assert [round(e.value, 5) for e in loss] == [round(float(r["loss"]), 5) for r in rows]
    assert {"lr", "grad_norm"} <= set(acc.Tags()["scalars"])
    images = acc.Images("samples")
    assert [e.step for e in images] == [2, 4]
    # one image per preview prompt: the concept in context and the kept prompt, tiled by TensorBoard
    assert images[0].width > 0 and images[0].encoded_image_string[:4] == b"\x89PNG"


def test_report_to_refuses_a_missing_tracker_in_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UnseeError, match=r"--report-to wandb needs the wandb package \(pip install wandb"):
        Reporter("wandb", tmp_path, "run")


def test_sample_every_must_not_be_negative(tmp_path):
    from unsee.trainer import Trainer

    class One:
        def parameters(self):
            import torch

            return {"p": torch.nn.Parameter(torch.ones(1))}

    with pytest.raises(UnseeError, match="--sample-every must be >= 0"):
        Trainer(One(), TrainConfig(steps=1, sample_every=-1), tmp_path, progress=False)


def test_rl_sends_its_epochs_and_previews_to_tensorboard(tmp_path):
    from test_rl import _cfg
    from unsee.rl import rl

    rl(_cfg(tmp_path / "rl", report_to="tensorboard", sample_every=2), progress=False)  # 2 updates an epoch
    acc = _events(tmp_path / "rl" / "run" / "logs" / "rl")
    with open(tmp_path / "rl" / "run" / "train_log.csv") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f)]
    assert [e.step for e in acc.Scalars("loss")] == logged == [2, 4]  # one row an epoch, as train_log.csv
    images = acc.Images("samples")
    assert [e.step for e in images] == [2, 4] and images[0].height == 32  # the toy world's 32-px images, tiled
