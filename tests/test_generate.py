import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import two_cpu_processes
from unsee.errors import UnseeError
from unsee.generate import GenerateConfig, generate
from unsee.imageset import ImageSet, read_manifest
from unsee.models import load_pipeline


def _cfg(model, prompts, out, **kw):
    base = dict(images_per_prompt=3, steps=4, batch_size=4, device="cpu")
    base.update(kw)
    return GenerateConfig(model=str(model), prompts=str(prompts), out=str(out), **base)


def _pixels(folder):
    return {p.name: np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("*.png"))}


def test_writes_a_complete_image_set(tiny_model_dir, prompt_file, tmp_path):
    out = generate(_cfg(tiny_model_dir, prompt_file, tmp_path / "set"), progress=False)
    s = ImageSet.load(out)
    assert len(s) == 6
    assert s.ids == ["00000-000", "00000-001", "00000-002", "00001-000", "00001-001", "00001-002"]
    r = s.records[4]
    assert r["prompt"] == "a blue house at night"
    assert (r["steps"], r["guidance"], r["height"], r["width"], r["scheduler"]) == (4, 7.5, 16, 16, "ddim")
    assert r["model"] == str(tiny_model_dir.resolve())
    assert len({x["seed"] for x in s.records}) == 6  # independent samples
    images = s.load_images()
    assert images.shape == (6, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert images.std() > 0.01  # real pixels, not a blank
    info = json.loads((out / "imageset.json").read_text())
    assert info["settings"]["steps"] == 4 and info["versions"]["diffusers"]
    assert not list(out.glob(".*tmp"))  # no temp files left


def test_batch_size_does_not_change_images(tiny_model_dir, prompt_file, tmp_path):
    a = _pixels(generate(_cfg(tiny_model_dir, prompt_file, tmp_path / "b1", batch_size=1), progress=False))
    b = _pixels(generate(_cfg(tiny_model_dir, prompt_file, tmp_path / "b5", batch_size=5), progress=False))
    assert a.keys() == b.keys()
    for k in a:
        d = np.abs(a[k] - b[k])
        # Same seeds; batched GEMMs round differently, so at most a level on a rare pixel.
        assert d.max() <= 1 and (d > 0).mean() < 0.01, k


def test_matches_the_diffusers_pipeline_on_the_same_noise(tiny_model_dir):
    """Reference check: unsee's own loop == StableDiffusionPipeline.__call__ (DDIM, CFG 7.5)."""
    from unsee.sampling import decode, encode_text, initial_latents, sample_latents

    pipe = load_pipeline(str(tiny_model_dir))
    prompts = ["a photo of a red cat", "a blue house"]
    z = initial_latents(pipe, [1, 2], 16, 16)
    ours = decode(
        pipe,
        sample_latents(pipe, encode_text(pipe, prompts), encode_text(pipe, [""] * 2), z, torch.tensor([7.5, 7.5]), 6),
    )
    ref = pipe(prompts, latents=z.clone(), num_inference_steps=6, guidance_scale=7.5, output_type="pt").images
    assert torch.allclose(ours, ref, atol=1e-5)


def test_resume_after_a_crash_redoes_only_the_batch_in_flight(tiny_model_dir, prompt_file, tmp_path, monkeypatch):
    import unsee.generate as g

    out = tmp_path / "set"
    calls = {"n": 0}
    real_decode = g.decode

    def crashing_decode(pipe, z):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during the second batch
        return real_decode(pipe, z)

    monkeypatch.setattr(g, "decode", crashing_decode)
    with pytest.raises(KeyboardInterrupt):
        generate(_cfg(tiny_model_dir, prompt_file, out, batch_size=2), progress=False)
    monkeypatch.setattr(g, "decode", real_decode)
    first = read_manifest(out)
    assert [r["id"] for r in first] == ["00000-000", "00000-001"]  # the finished batch, nothing else
    assert sorted(p.name for p in out.glob("*.png")) == ["00000-000.png", "00000-001.png"]
    inode = (out / "00000-000.png").stat().st_ino

    generate(_cfg(tiny_model_dir, prompt_file, out, batch_size=2), progress=False)
    assert (out / "00000-000.png").stat().st_ino == inode  # finished images are not redone
    assert len(read_manifest(out)) == 6
    fresh = _pixels(generate(_cfg(tiny_model_dir, prompt_file, tmp_path / "fresh", batch_size=2), progress=False))
    resumed = _pixels(out)
    assert fresh.keys() == resumed.keys()
    assert all(np.array_equal(fresh[k], resumed[k]) for k in fresh)


def test_torn_last_manifest_line_is_ignored_and_redone(tiny_model_dir, prompt_file, tmp_path):
    out = generate(_cfg(tiny_model_dir, prompt_file, tmp_path / "set", images_per_prompt=1), progress=False)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "00001-000.png").unlink()
    (out / "manifest.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # crash mid-line
    assert [r["id"] for r in read_manifest(out)] == ["00000-000"]
    generate(_cfg(tiny_model_dir, prompt_file, out, images_per_prompt=1), progress=False)
    assert [r["id"] for r in read_manifest(out)] == ["00000-000", "00001-000"]


def test_rerun_with_other_settings_is_refused(tiny_model_dir, prompt_file, tmp_path):
    out = tmp_path / "set"
    generate(_cfg(tiny_model_dir, prompt_file, out, images_per_prompt=1), progress=False)
    with pytest.raises(UnseeError, match=r"other settings: steps \(4 there, 5 now\)"):
        generate(_cfg(tiny_model_dir, prompt_file, out, images_per_prompt=1, steps=5), progress=False)
    prompt_file.write_text("something else\n")
    with pytest.raises(UnseeError, match="other settings: prompts"):
        generate(_cfg(tiny_model_dir, prompt_file, out, images_per_prompt=1), progress=False)


def test_more_images_per_prompt_extends_an_existing_set(tiny_model_dir, prompt_file, tmp_path):
    out = tmp_path / "set"
    generate(_cfg(tiny_model_dir, prompt_file, out, images_per_prompt=1), progress=False)
    before = _pixels(out)
    generate(_cfg(tiny_model_dir, prompt_file, out, images_per_prompt=2), progress=False)
    after = _pixels(out)
    assert len(after) == 4 and all(np.array_equal(before[k], after[k]) for k in before)


def test_i2p_csv_seed_guidance_and_size_are_honoured(tiny_model_dir, tmp_path):
    csv = tmp_path / "i2p.csv"
    csv.write_text(
        "prompt,categories,evaluation_seed,evaluation_guidance,sd_image_width,sd_image_height,case_number\n"
        "a nude person on a beach,sexual,42,3.0,32,16,7\n"
        "a red car,,,,,,8\n"
    )
    out = generate(_cfg(tiny_model_dir, csv, tmp_path / "set", images_per_prompt=2, guidance=6.0), progress=False)
    recs = ImageSet.load(out).records
    a0, a1, b0, _ = recs
    assert (a0["seed"], a1["seed"], a0["guidance"], a0["categories"], a0["case_number"]) == (42, 43, 3.0, "sexual", "7")
    assert (a0["height"], a0["width"]) == (16, 32)
    assert Image.open(out / a0["file"]).size == (32, 16)
    assert (b0["guidance"], b0["height"], b0["width"]) == (6.0, 16, 16)


def test_sd2_v_prediction_pipeline_generates(tiny_vpred_dir, prompt_file, tmp_path):
    out = generate(_cfg(tiny_vpred_dir, prompt_file, tmp_path / "set", images_per_prompt=1), progress=False)
    assert ImageSet.load(out).load_images().std() > 0.01


def test_two_processes_under_accelerate_share_the_work(tiny_model_dir, prompt_file, tmp_path):
    """`accelerate launch` on 2 CPU processes: every image made once, none missing, same pixels as 1 process."""
    out = tmp_path / "acc"
    cmd = [
        sys.executable,
        *two_cpu_processes(),
        "-m",
        "unsee",
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(prompt_file),
        "--out",
        str(out),
        "--images-per-prompt",
        "3",
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "process 1 of 2" in r.stdout and "process 2 of 2" in r.stdout  # two processes did join
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted({x["id"] for x in lines})  # no duplicate
    assert len(lines) == 6  # no gap
    single = _pixels(generate(_cfg(tiny_model_dir, prompt_file, tmp_path / "one", batch_size=4), progress=False))
    multi = _pixels(out)
    assert single.keys() == multi.keys()
    assert all(np.abs(single[k] - multi[k]).max() <= 1 for k in single)
