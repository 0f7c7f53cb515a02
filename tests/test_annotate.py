"""Simulated annotators: exact labels at noise 0, the right flip/swap rates with noise, valid feedback files."""

import numpy as np
import pytest
import torch

import unsee.annotate as annotate
from unsee.annotate import AutoAnnotateConfig, auto_annotate
from unsee.detectors import DetectorInfo
from unsee.errors import UnseeError
from unsee.feedback import load_feedback
from unsee.imageset import ImageSet
from unsee.testing import write_image_set

N = 200


@pytest.fixture()
def image_set(tmp_path, monkeypatch):
    """Image i has brightness i/N; the fake detector's 'flag' score is the brightness: flagged iff i >= N/2."""
    x = torch.linspace(0, 1, N).view(-1, 1, 1, 1).expand(N, 3, 8, 8).clone()
    folder = write_image_set(tmp_path / "set", x, ["p"] * N)

    def fake(name):
        def detect(images):
            b = images.mean((1, 2, 3))
            return {"flag": b, "dark": 1 - b}

        return detect, DetectorInfo("fake", ("flag", "dark"), 0.5)

    monkeypatch.setattr(annotate, "make_detector", fake)
    return folder


def test_binary_without_noise_is_the_detector(image_set, tmp_path):
    out = auto_annotate(
        AutoAnnotateConfig(images=str(image_set), out=str(tmp_path / "fb.jsonl"), labels=("flag",), noise=0.0)
    )
    fb = load_feedback(out, image_ids=ImageSet.load(image_set).ids)
    got = {j.image: "flag" in j.labels for j in fb.binary}
    assert len(got) == N
    ids = ImageSet.load(image_set).ids
    assert all(got[i] == (k / (N - 1) >= 0.5) for k, i in enumerate(ids))


def test_binary_noise_flips_at_its_rate(image_set, tmp_path):
    out = auto_annotate(
        AutoAnnotateConfig(
            images=str(image_set), out=str(tmp_path / "fb.jsonl"), labels=("flag", "dark"), noise=0.2, annotators=5
        )
    )
    fb = load_feedback(out)
    ids = ImageSet.load(image_set).ids
    truth = {i: k / (N - 1) >= 0.5 for k, i in enumerate(ids)}
    flips = np.mean([("flag" in j.labels) != truth[j.image] for j in fb.binary])
    assert len(fb.binary) == 5 * N and abs(flips - 0.2) < 0.03
    assert len({j.annotator for j in fb.binary}) == 5


def test_rank_groups_are_ordered_and_swapped_at_the_noise_rate(image_set, tmp_path):
    out = auto_annotate(
        AutoAnnotateConfig(
            images=str(image_set),
            out=str(tmp_path / "r.jsonl"),
            kind="rank",
            labels=("flag",),
            noise=0.3,
            annotators=4,
            group_size=5,
        )
    )
    fb = load_feedback(out, image_ids=ImageSet.load(image_set).ids)
    assert len(fb.ranks) == 4 * N // 5 and all(len(g.images) == 5 for g in fb.ranks)
    swapped = [g.images != tuple(sorted(g.images, reverse=True)) for g in fb.ranks]  # ids sort like brightness
    assert abs(np.mean(swapped) - 0.3) < 0.1
    assert all(g.concept == "flag" for g in fb.ranks)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"noise": 1.5}, "--noise"),
        ({"annotators": 0}, "--annotators"),
        ({"kind": "rank", "group_size": 1}, "--group-size"),
    ],
)
def test_bad_settings(kw, message):
    with pytest.raises(UnseeError, match=message):
        AutoAnnotateConfig(images="x", out="y", **kw)


def test_unknown_label_is_refused(image_set, tmp_path):
    with pytest.raises(UnseeError, match="has no label"):
        auto_annotate(AutoAnnotateConfig(images=str(image_set), out=str(tmp_path / "fb.jsonl"), labels=("gore",)))


def test_reward_heldout_split_does_not_follow_the_annotators_noise(image_set, tmp_path):
    # Both default to seed 0. When they shared one numpy stream, the held-out images (u < 0.2) were exactly
    # those annotator 0 had flipped (u < noise), so held-out agreement measured the noise.
    from unsee.reward_model import heldout_split

    out = auto_annotate(
        AutoAnnotateConfig(images=str(image_set), out=str(tmp_path / "fb.jsonl"), labels=("flag",), noise=0.3)
    )
    ids = ImageSet.load(image_set).ids
    flipped = {
        j.image for j in load_feedback(out).binary if ("flag" in j.labels) != (ids.index(j.image) / (N - 1) >= 0.5)
    }
    split = heldout_split(0, N, 0.2)
    held = [i for i, part in zip(sorted(ids), split, strict=True) if part == "test"]
    rate = sum(i in flipped for i in held) / len(held)
    assert len(held) >= 25 and 0.1 < rate < 0.5, (len(held), rate)
