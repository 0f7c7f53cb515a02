"""`unsee evaluate`: metrics on known inputs, the toy-world run end to end, refusals, and the report in Chromium."""

import json
import shutil

import numpy as np
import pytest
import torch

from unsee.errors import UnseeError
from unsee.evaluate import (
    EvaluateConfig,
    bootstrap_interval,
    evaluate,
    frechet_distance,
    label_rates,
    render_report,
)
from unsee.toyworld import PIPELINE, assets_path

WORLD = assets_path()
needs_world = pytest.mark.skipif(not (WORLD / PIPELINE / "model_index.json").exists(), reason="no toy world built")


# ---------------------------------------------------------------- metrics on known inputs
@needs_world
def test_oracle_detector_gives_the_known_rate_on_rendered_scenes():
    """7 of 20 rendered scenes hold a skull: the detector's skull rate is 7/20, and no kelvo where none is drawn."""
    from unsee.detectors import make_detector
    from unsee.toyworld.render import render_many
    from unsee.toyworld.world import Scene

    scenes = [
        Scene(
            "beach",
            "circle",
            "red",
            "skull" if i < 7 else "none",
            "none",
            main_xy=(0.27, 0.5),
            main_size=0.34,
            extra_xy=(0.73, 0.5),
            extra_size=0.33,
        )
        for i in range(20)
    ]
    images = torch.from_numpy(render_many(scenes)).permute(0, 3, 1, 2).float() / 255
    detect, info = make_detector("oracle")
    rates = label_rates(detect(images), info.threshold, resamples=500, seed=0)
    assert rates["skull"]["rate"] == pytest.approx(7 / 20)
    assert rates["skull"]["count"] == 7 and rates["kelvo"]["rate"] == 0.0


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)
    small, large = rng.random(40) < 0.3, rng.random(4000) < 0.3
    lo, hi = bootstrap_interval(small, 2000)
    assert lo <= small.mean() <= hi and 0 < hi - lo < 0.4
    lo2, hi2 = bootstrap_interval(large, 2000)
    assert lo2 <= large.mean() <= hi2 and hi2 - lo2 < (hi - lo) / 5
    assert bootstrap_interval(np.ones(10)) == (1.0, 1.0)


def test_frechet_distance_is_zero_for_identical_sets_and_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 8, generator=g)
    assert abs(frechet_distance(a, a)) < 1e-8
    # In one dimension FD = (mu_a - mu_b)^2 + (sd_a - sd_b)^2 exactly.
    x, y = a[:, :1].double(), 3.0 * a[:, 1:2].double() + 2.0
    expected = float((x.mean() - y.mean()) ** 2 + (x.std() - y.std()) ** 2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    # Unit Gaussian vs mean 1, sd 2 in 8-D: 8 * 1^2 + 8 * (2 - 1)^2 = 16, up to sampling error.
    b = 2.0 * torch.randn(2000, 8, generator=g) + 1.0
    assert 14 < frechet_distance(a, b) < 18


# ---------------------------------------------------------------- the toy world end to end
def _prompts(tmp_path, name, lines):
    p = tmp_path / f"{name}.txt"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.fixture()
def two_sets(tmp_path):
    return (
        _prompts(tmp_path, "skull", ["a red circle with a skull on the beach", "a blue square with a skull at night"]),
        _prompts(tmp_path, "benign", ["a green triangle in the forest", "a yellow cross in the snow"]),
    )


@needs_world
def test_evaluate_compares_models_writes_metrics_and_report_and_reuses_images(tmp_path, two_sets):
    from unsee.generate import GenerateConfig, generate

    ref = generate(
        GenerateConfig(
            model="toyworld", prompts=two_sets[1], out=str(tmp_path / "ref"), images_per_prompt=2, steps=4, device="cpu"
        ),
        progress=False,
    )
    copy = shutil.copytree(WORLD / PIPELINE, tmp_path / "copy")
    cfg = EvaluateConfig(
        model=("toyworld", str(copy)),
        name=("base", "same"),
        prompts=two_sets,
        out=str(tmp_path / "eval"),
        images_per_prompt=2,
        steps=4,
        reference_images=str(ref),
        device="cpu",
        bootstrap=200,
        batch_size=8,
    )
    m = evaluate(cfg, progress=False)
    res = m["results"]
    assert set(res) == {"base", "same"} and set(res["base"]) == {"skull", "benign"}
    for model in res:
        for row in res[model].values():
            assert row["images"] == 4
            for d in row["labels"].values():
                assert d["ci95"][0] <= d["rate"] <= d["ci95"][1]
            assert 0 <= row["clip_score"]["mean"] <= 100
            assert set(row["named_attribute_accuracy"]) >= {"colour", "shape"}
    # The same weights under two names make the same images, so every number agrees.
    assert res["base"] == res["same"]
    # The benign set is the reference itself: Frechet distance ~0; the skull set is farther.
    assert abs(res["base"]["benign"]["frechet_clip"]) < 1e-6 < res["base"]["skull"]["frechet_clip"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["results"] == json.loads(json.dumps(res)) and saved["versions"]["torch"]
    report = (tmp_path / "eval" / "report.html").read_text()
    assert report.count("<table class='metrics'>") == 2 and report.count("data:image/png;base64,") >= 2 * 2 * 2 + 5
    # A rerun reuses every image: no PNG is rewritten.
    pngs = sorted((tmp_path / "eval" / "images").rglob("*.png"))
    mtimes = [p.stat().st_mtime_ns for p in pngs]
    evaluate(cfg, progress=False)
    assert [p.stat().st_mtime_ns for p in pngs] == mtimes and len(pngs) == 16
    # New weights in the same folder (an erase rerun): that model's images are made again, the other's kept.
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(copy / "unet")
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.5)
    unet.save_pretrained(copy / "unet")
    m2 = evaluate(cfg, progress=False)
    changed = {
        p.relative_to(tmp_path / "eval" / "images").parts[0]
        for p, t in zip(pngs, mtimes, strict=True)
        if p.stat().st_mtime_ns != t
    }
    assert changed == {"same"} and m2["results"]["same"] != m2["results"]["base"]


@needs_world
def test_bad_inputs_fail_before_any_metrics_are_written(tmp_path, two_sets):
    out = tmp_path / "eval"
    empty = _prompts(tmp_path, "empty", ["# nothing here"])
    bad = [
        dict(prompts=(empty,)),
        dict(model=("no/such-model-here",)),
        dict(model=(str(tmp_path),)),
    ]
    for kw in bad:
        base = dict(model=("toyworld",), prompts=two_sets, out=str(out), steps=2, device="cpu")
        with pytest.raises(UnseeError):
            evaluate(EvaluateConfig(**(base | kw)), progress=False)
    refs = tmp_path / "refs"
    refs.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (64, 64), (i, i, i)).save(refs / f"{i}.png")
    with pytest.raises(UnseeError, match="px"):
        evaluate(
            EvaluateConfig(
                model=("toyworld",),
                prompts=two_sets[:1],
                out=str(out),
                steps=2,
                device="cpu",
                reference_images=str(refs),
            ),
            progress=False,
        )
    Image.new("RGB", (32, 32)).save(refs / "odd.png")
    with pytest.raises(UnseeError, match="mixes image sizes"):
        evaluate(
            EvaluateConfig(
                model=("toyworld",),
                prompts=two_sets[:1],
                out=str(out),
                steps=2,
                device="cpu",
                reference_images=str(refs),
            ),
            progress=False,
        )
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists()
    with pytest.raises(UnseeError, match="--name"):
        EvaluateConfig(model=("a", "b"), name=("x",), prompts=two_sets, out=str(out))


@needs_world
def test_cli_exits_2_on_an_empty_prompt_file(tmp_path):
    from click.testing import CliRunner

    from unsee.cli import cli

    empty = _prompts(tmp_path, "empty", [""])
    r = CliRunner().invoke(cli, ["evaluate", "--model", "toyworld", "--prompts", empty, "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "no prompts" in r.output and len(r.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- the report in a real browser
def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(
            "headless Chromium is needed for the report test: `make install` puts it in place (apt-get install chromium)"
        )
    return path


def _open(html_path):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(
        executable_path=_chromium(),
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    page = browser.new_page()
    page.goto(html_path.as_uri())
    return pw, browser, page


def test_report_renders_in_chromium_and_flagged_images_reveal_on_click(tmp_path):
    """A report with known content: its tables, charts and images render, and a flagged image unblurs on click."""
    from unsee.evaluate import _png_data_uri

    row = {
        "images": 2,
        "labels": {"skull": {"rate": 0.5, "ci95": [0.0, 1.0], "count": 1}},
        "clip_score": {"mean": 21.0, "ci95": [20.0, 22.0]},
    }
    metrics = {
        "settings": {"clip": "toyworld"},
        "prompt_sets": {"explicit": "e.txt"},
        "detector": {"name": "oracle", "labels": ["skull"], "threshold": 0.5},
        "frechet_features": None,
        "versions": {"torch": "x"},
        "results": {"base": {"explicit": row}, "erased": {"explicit": row}},
    }
    img = _png_data_uri(np.full((32, 32, 3), 200, np.uint8))
    cell = lambda flagged: {"prompt": "a skull", "seed": 1, "src": img, "flagged": flagged}  # noqa: E731
    grids = {"explicit": {"base": [cell(True)], "erased": [cell(False)]}}
    path = tmp_path / "report.html"
    path.write_text(render_report(metrics, grids))
    pw, browser, page = _open(path)
    try:
        assert page.locator("table.metrics tr").count() == 3  # header + 2 models
        assert page.locator("table.metrics td").first.inner_text() == "base"
        loaded = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
        assert len(loaded) == 3 and all(loaded)  # one chart + two grid images
        flagged = page.locator("td.flagged")
        assert flagged.count() == 1
        blur = "getComputedStyle(document.querySelector('td.flagged img')).filter"
        assert "blur" in page.evaluate(blur)
        flagged.click()
        assert page.evaluate(blur) == "none"
    finally:
        browser.close()
        pw.stop()


# ---------------------------------------------------------------- Inception FID (clean-fid protocol)
def _fake_inception(path):
    """A TorchScript module with clean-fid's interface (`.layers` -> (B, 2048, 1, 1)): real weights cannot be fetched here."""
    from torch import nn

    class Layers(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2048, 5, stride=4)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return self.pool(torch.tanh(self.conv(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x):
            return self.layers(x)

    torch.manual_seed(0)
    torch.jit.script(Net().eval()).save(str(path))
    return path


def test_clean_resize_is_per_channel_float_bicubic_without_quantising():
    from unsee.fid import clean_resize

    flat = np.full((1, 32, 32, 3), 77, np.uint8)
    assert clean_resize(flat).shape == (1, 299, 299, 3) and np.allclose(clean_resize(flat), 77, atol=1e-3)
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))[None]
    out = clean_resize(ramp)
    assert np.abs(out - out.round()).max() > 0.05  # not quantised back to uint8
    assert np.allclose(out[..., 0], out[..., 1])  # channels resized alike


def test_clean_resize_matches_clean_fids_own_on_hard_edges():
    """clean-fid's resize function itself (its package, no weights): identical output, overshoot clipped."""
    from cleanfid.resize import build_resizer

    from unsee.fid import clean_resize

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 2, (32, 32, 3), dtype=np.uint8) * 255  # every pixel a hard edge
    board = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    reference = build_resizer("clean")
    for image in (noise, board):
        ours = clean_resize(image[None])[0]
        assert np.array_equal(ours, reference(image)) and ours.min() >= 0 and ours.max() <= 255


@needs_world
def test_inception_fid_uses_the_cached_weights_and_refuses_cleanly_without_them(tmp_path, two_sets, monkeypatch):
    from click.testing import CliRunner

    from unsee.cli import cli
    from unsee.fid import InceptionFeatures, clean_resize
    from unsee.generate import GenerateConfig, generate

    ref = generate(
        GenerateConfig(
            model="toyworld", prompts=two_sets[1], out=str(tmp_path / "ref"), images_per_prompt=2, steps=4, device="cpu"
        ),
        progress=False,
    )
    monkeypatch.setenv("UNSEE_INCEPTION", str(tmp_path / "missing.pt"))
    r = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            "toyworld",
            "--prompts",
            two_sets[1],
            "--out",
            str(tmp_path / "e"),
            "--reference-images",
            str(ref),
            "--frechet-features",
            "inception",
            "--steps",
            "4",
        ],
    )
    assert r.exit_code == 2 and "UNSEE_INCEPTION" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "e" / "metrics.json").exists()

    weights = _fake_inception(tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setenv("UNSEE_INCEPTION", str(weights))
    feats = InceptionFeatures()
    x = torch.rand(3, 3, 32, 32)
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    by_hand = feats.model.layers((torch.from_numpy(clean_resize(u8)).permute(0, 3, 1, 2) - 128) / 128).reshape(3, -1)
    assert torch.allclose(feats(x), by_hand.double(), atol=1e-6) and feats(x).shape == (3, 2048)
    m = evaluate(
        EvaluateConfig(
            model=("toyworld",),
            prompts=(two_sets[1],),
            out=str(tmp_path / "e"),
            images_per_prompt=2,
            steps=4,
            device="cpu",
            reference_images=str(ref),
            frechet_features="inception",
            bootstrap=50,
        ),
        progress=False,
    )
    row = next(iter(m["results"]["toyworld"].values()))
    assert abs(row["fid_inception"]) < 1e-3 and "frechet_clip" not in row  # the reference is this very set
    assert m["frechet_features_info"]["sha256"] == feats.sha256 and "Inception" in m["frechet_features"]
    assert "fid inception" in (tmp_path / "e" / "report.html").read_text()
