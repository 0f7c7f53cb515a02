"""`unsee toyworld build` on a tiny budget: every artifact in its standard format, and exact resume."""

import json

import pytest
import torch

from unsee.errors import UnseeError
from unsee.toyworld.build import BuildConfig, build

TINY = dict(train_images=300, oracle_images=300, vae_steps=2, vae_batch=8, oracle_steps=2, oracle_batch=16, clip_steps=2,
            clip_batch=16, unet_steps=4, unet_batch=4, checkpoint_every=2, prompts_per_set=5)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return build(BuildConfig(out=str(tmp_path_factory.mktemp("w") / "world"), **TINY), progress=False)


def test_artifacts_load_with_plain_libraries(tiny_world):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

    from unsee.toyworld.oracle import load_oracle

    pipe = StableDiffusionPipeline.from_pretrained(tiny_world / "pipeline")
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.scaling_factor != 0.18215
    CLIPModel.from_pretrained(tiny_world / "clip")
    tok = CLIPTokenizer.from_pretrained(str(tiny_world / "clip"))
    assert len(tok("a spooky red circle by kelvo", add_special_tokens=False).input_ids) == 6
    assert load_oracle(tiny_world / "oracle").config.image_size == 32
    card = json.loads((tiny_world / "model_card.json").read_text())
    assert set(card["stages"]) == {"data", "tokenizer", "vae", "oracle", "clip", "latents", "unet", "pipeline"}
    assert card["stages"]["data"]["co_occurrence"]["skull | 'skull' named"]["shown"] == 1.0
    assert (tiny_world / "prompts" / "heldout" / "object_implicit.txt").exists()
    assert (tiny_world / "prompts" / "concept_pairs" / "skull.csv").read_text().startswith("with_concept,without_concept\n")


def test_killed_build_resumes_to_the_same_weights(tiny_world, tmp_path, monkeypatch):
    import unsee.toyworld.build as b

    real = b.save_checkpoint

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the step-2 checkpoint

    monkeypatch.setattr(b, "save_checkpoint", save_then_die)
    cfg = BuildConfig(out=str(tmp_path / "world"), **TINY)
    with pytest.raises(KeyboardInterrupt):
        build(cfg, progress=False)
    monkeypatch.setattr(b, "save_checkpoint", real)
    build(cfg, progress=False)
    from safetensors.torch import load_file

    a = load_file(str(tiny_world / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
    c = load_file(str(tmp_path / "world" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


def test_rebuilding_with_other_settings_is_refused(tiny_world):
    with pytest.raises(UnseeError, match="other settings"):
        build(BuildConfig(out=str(tiny_world), **{**TINY, "unet_steps": 5}), progress=False)


def test_check_cache_follows_the_weights_not_the_folder(tmp_path):
    """A rebuild in the same folder must not be measured on the old build's cached images."""
    from unsee.toyworld import PIPELINE
    from unsee.toyworld.check import weights_key

    f = tmp_path / PIPELINE / "unet" / "diffusion_pytorch_model.safetensors"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"old weights")
    old = weights_key(tmp_path)
    f.write_bytes(b"new weights")
    assert weights_key(tmp_path) != old
    f.write_bytes(b"old weights")
    assert weights_key(tmp_path) == old
