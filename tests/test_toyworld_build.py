"""`unsee toyworld build` on a tiny budget: every artifact in its standard format, and exact resume."""

import json

import numpy as np
import pytest
import torch

from unsee.errors import UnseeError
from unsee.toyworld.build import BuildConfig, build

TINY = dict(
    train_images=300,
    oracle_images=300,
    vae_steps=2,
    vae_batch=8,
    oracle_steps=2,
    oracle_batch=16,
    clip_steps=2,
    clip_batch=16,
    unet_steps=4,
    unet_batch=4,
    checkpoint_every=2,
    prompts_per_set=5,
)


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
    assert len((tiny_world / "prompts" / "novel" / "object_explicit.txt").read_text().splitlines()) == 5
    assert (
        (tiny_world / "prompts" / "concept_pairs" / "skull.csv")
        .read_text()
        .startswith("with_concept,without_concept\n")
    )


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


def _tiny_clip(text_layers: int):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    return CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=40,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=text_layers,
                num_attention_heads=2,
                max_position_embeddings=16,
            ),
            vision_config=dict(
                image_size=8,
                patch_size=4,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
            ),
        )
    )


@pytest.mark.parametrize("layers", [0, 2])
def test_text_encoder_is_the_clip_text_tower_cut_after_n_layers(tmp_path, layers):
    from transformers import CLIPTextModel

    from unsee.toyworld.build import save_text_encoder

    clip = _tiny_clip(text_layers=3)
    save_text_encoder(clip, layers, tmp_path / "te")
    te = CLIPTextModel.from_pretrained(tmp_path / "te").eval()
    assert te.config.num_hidden_layers == layers
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 6, 7, 9, 2]])  # differ only in the word before position 2
    with torch.no_grad():
        ours = te(ids).last_hidden_state
        hs = clip.text_model(ids, output_hidden_states=True).hidden_states[layers]
        assert torch.allclose(ours, clip.text_model.final_layer_norm(hs), atol=1e-6)
    # With no layers a word's state does not depend on the words before it: what lets the UNet compose pairs.
    assert torch.allclose(ours[0, 2:], ours[1, 2:]) == (layers == 0)


def test_text_encoder_layers_out_of_range_is_refused(tmp_path):
    from unsee.toyworld.build import save_text_encoder

    clip = _tiny_clip(text_layers=2)
    with pytest.raises(UnseeError, match="0..2"):
        save_text_encoder(clip, 3, tmp_path / "te")


def test_build_made_before_a_setting_existed_still_resumes(tiny_world, tmp_path):
    """A build_config.json without a newer setting reads it as what builds did before it existed, so a build of the
    old recipe resumes there, and one of the new recipe is refused."""
    import shutil

    from unsee.toyworld.build import BEFORE_THE_SETTING

    world = shutil.copytree(tiny_world, tmp_path / "world")
    cfg_path = world / "build_config.json"
    old = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({k: v for k, v in old.items() if k not in BEFORE_THE_SETTING}))
    with pytest.raises(UnseeError, match="other settings"):
        build(BuildConfig(out=str(world), **TINY), progress=False)
    build(BuildConfig(out=str(world), **(TINY | BEFORE_THE_SETTING)), progress=False)
    assert json.loads(cfg_path.read_text())["text_encoder_layers"] == 0


def test_cross_attention_at_full_latent_resolution_is_a_setting():
    from unsee.toyworld.build import make_unet

    cfg = BuildConfig(out="unused", unet_channels=(16, 32), unet_attn_full_res=True)
    assert make_unet(cfg).config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    off = BuildConfig(out="unused", unet_channels=(16, 32), unet_attn_full_res=False)
    assert make_unet(off).config.down_block_types[0] == "DownBlock2D"


def test_text_encoder_layers_out_of_range_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UnseeError, match="0..4"):
        build(BuildConfig(out=str(tmp_path / "world"), text_encoder_layers=5, **TINY), progress=False)
    with pytest.raises(UnseeError, match="--caption-drop-shape must be a fraction"):
        build(BuildConfig(out=str(tmp_path / "world"), caption_drop_shape=1.0, **TINY), progress=False)
    assert not (tmp_path / "world").exists()


def test_flaggable_share_makes_the_flaggable_concepts_rarer_and_keeps_the_rest():
    """SDD's target is the empty prompt's draw: a world whose training scenes show the skull in a fifth of them draws
    it there about as often, so the share is a build setting; the neighbours and what triggers imply stay."""
    from unsee.toyworld.build import caption_rates
    from unsee.toyworld.world import CO_OCCURRENCE, sample_scene

    def shares(k):
        rng = np.random.default_rng(0)
        rates = caption_rates(BuildConfig(out="unused", flaggable_share=k))
        scenes = [sample_scene(rng, rates=rates)[0] for _ in range(20000)]
        return {c: np.mean([c in (s.extra, s.style) for s in scenes]) for c in ("skull", "kelvo", "mask", "ravo")}

    full, rare = shares(1.0), shares(0.45)
    for concept in ("skull", "kelvo"):
        assert 0.18 < full[concept] < 0.24 and abs(rare[concept] - 0.45 * full[concept]) < 0.015
    for neighbour in ("mask", "ravo"):
        assert abs(rare[neighbour] - full[neighbour]) < 0.015
    assert (
        caption_rates(BuildConfig(out="unused", flaggable_share=1, caption_drop_colour=0.15, caption_drop_shape=0))
        == CO_OCCURRENCE
    )
    with pytest.raises(UnseeError, match="--flaggable-share"):
        BuildConfig(out="unused", flaggable_share=0)


def test_the_caption_grammar_is_a_setting(tmp_path):
    """--captions template keeps the fourth build's template; the default phrases captions many ways. The contextual
    tower with the attribute loss, and captions that say "object" for the shape, build too."""
    settings = dict(captions="varied", text_encoder_layers=2, clip_attribute_loss=3.0, caption_drop_shape=0.3)
    world = build(BuildConfig(out=str(tmp_path / "world"), **settings, **(TINY | {"unet_steps": 2})), progress=False)
    captions = json.loads((world / "work" / "train_captions.json").read_text())
    assert any(c.startswith("the ") for c in captions) and any(" style" in c for c in captions)
    assert 0.15 < np.mean(["object" in c.split() for c in captions]) < 0.35
    assert json.loads((world / "build_config.json").read_text()) | settings == json.loads(
        (world / "build_config.json").read_text()
    )
    assert BuildConfig(out="unused").captions == "varied" and BuildConfig(out="unused").clip_attribute_loss == 3


def test_attribute_targets_hold_what_the_caption_has_named_so_far(tiny_world):
    """At each position, the last word of each attribute group said up to there (0 = none yet); the padding sees the
    whole caption, as the causal tower's padding states do."""
    from transformers import CLIPTokenizer

    from unsee.toyworld.build import ATTRIBUTE_GROUPS, attribute_targets

    tok = CLIPTokenizer.from_pretrained(str(tiny_world / "clip"))
    caption = "a photo of a spooky red triangle with a skull at night by kelvo"
    ids = tok([caption], padding="max_length", max_length=20, return_tensors="pt").input_ids
    targets = attribute_targets(ids, tok)[0]
    groups = list(ATTRIBUTE_GROUPS)

    def named(position: int) -> dict[str, str]:
        return {g: ATTRIBUTE_GROUPS[g][k - 1] for g, k in zip(groups, targets[position].tolist(), strict=True) if k}

    words = caption.split()  # one token a word, after <|startoftext|>
    assert named(words.index("spooky") + 1) == {"trigger": "spooky"}
    assert named(words.index("triangle") + 1) == {"trigger": "spooky", "colour": "red", "shape": "triangle"}
    everything = {
        "trigger": "spooky",
        "colour": "red",
        "shape": "triangle",
        "extra": "skull",
        "background": "night",
        "style": "kelvo",
    }
    assert named(len(words)) == everything and named(19) == everything  # the last word, and the padding
    blank = attribute_targets(ids, tok, "none")[0]
    assert torch.equal(blank[: len(words) + 2], targets[: len(words) + 2])  # up to the end-of-text token
    assert not blank[len(words) + 2 :].any() and targets[len(words) + 2 :].all(dim=0).any()  # the padding: nothing
    scene = attribute_targets(ids, tok, "scene")[0]
    assert torch.equal(scene[: len(words) + 2], targets[: len(words) + 2])
    kept = [g in ("colour", "shape", "background") for g in groups]
    assert torch.equal(scene[len(words) + 2 :, kept], targets[len(words) + 2 :, kept])  # the padding: the scene
    assert not scene[len(words) + 2 :, [not k for k in kept]].any()  # and no object, style or trigger word
