"""The shipped toy world: standard formats, loads through plain diffusers/transformers, oracle reads renders."""

import json

import numpy as np
import pytest
import torch

from unsee.toyworld import CARD, CLIP, ORACLE, PIPELINE, PROMPTS, assets_path
from unsee.toyworld.world import HELDOUT_PAIRS, PROMPT_SETS, SEEN_PAIRS, parse_prompt

WORLD = assets_path()
pytestmark = pytest.mark.skipif(
    not (WORLD / PIPELINE / "model_index.json").exists(),
    reason=f"no toy world at {WORLD}: build one with `unsee toyworld build`",
)


def test_weights_are_safetensors_and_within_budget():
    files = [p for p in WORLD.rglob("*") if p.is_file() and "check" not in p.relative_to(WORLD).parts]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt", ".pth")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in weights) <= 25 * 2**20


def test_pipeline_loads_through_plain_diffusers_and_generates():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(WORLD / PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        ["a red circle on the beach"] * 2,
        num_inference_steps=5,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (2, 32, 32, 3) and out.std() > 0.05


def test_toyworld_name_loads_with_the_shared_text_tower():
    from transformers import CLIPModel

    from unsee.models import load_pipeline

    pipe = load_pipeline("toyworld")
    clip = CLIPModel.from_pretrained(WORLD / CLIP)
    a, b = pipe.text_encoder.state_dict(), clip.text_model.state_dict()
    # SD's text encoder is CLIP's text tower, cut after the layers the build keeps
    assert a.keys() <= b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    layers = json.loads((WORLD / CARD).read_text())["build_config"].get("text_encoder_layers", 4)
    assert pipe.text_encoder.config.num_hidden_layers == layers
    assert pipe.tokenizer("a spooky skull by kelvo", add_special_tokens=False).input_ids.__len__() == 5


def test_oracle_reads_fresh_renders():
    from unsee.toyworld.check import oracle_accuracy
    from unsee.toyworld.oracle import load_oracle

    acc = oracle_accuracy(load_oracle(WORLD / ORACLE), n=300, seed=99)
    assert min(acc.values()) >= 0.95, acc


def test_oracle_scores_are_probabilities_on_the_one_image_convention():
    from unsee.toyworld.oracle import load_oracle
    from unsee.toyworld.render import render
    from unsee.toyworld.world import Scene

    oracle = load_oracle(WORLD / ORACLE)
    scenes = [Scene("beach", "circle", "red", "skull", "none"), Scene("beach", "circle", "red", "none", "kelvo")]
    x = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 255
    scores = oracle.concept_scores(x)
    assert set(scores) >= {"skull", "kelvo", "mask", "ravo"}
    assert scores["skull"][0] > 0.5 > scores["skull"][1] and scores["kelvo"][1] > 0.5 > scores["kelvo"][0]
    assert all(((v >= 0) & (v <= 1)).all() for v in scores.values())


@pytest.mark.parametrize("split, pairs", [("seen", SEEN_PAIRS), ("heldout", HELDOUT_PAIRS)])
def test_prompt_files(split, pairs):
    for name in PROMPT_SETS:
        lines = [x for x in (WORLD / PROMPTS / split / f"{name}.txt").read_text().splitlines() if x.strip()]
        # held-out: 6 pairs x 6 backgrounds = 36 distinct benign prompts at most; the check makes >= 200 images from them
        assert len(lines) == len(set(lines)) >= (40 if split == "seen" else 36)
        assert all((parse_prompt(x)["colour"], parse_prompt(x)["shape"]) in set(pairs) for x in lines)


def test_novel_prompt_files_share_no_phrasing_with_the_other_splits_or_the_kept_prompts():
    from unsee.toyworld.world import part_prompts, template

    def lines(split, name):
        return [x for x in (WORLD / PROMPTS / split / f"{name}.txt").read_text().splitlines() if x.strip()]

    used = {template(p) for split in ("seen", "heldout") for n in PROMPT_SETS for p in lines(split, n)}
    used |= {template(p) for p in part_prompts()}
    for name in PROMPT_SETS:
        novel = lines("novel", name)
        assert len(novel) == len(set(novel)) == 40 and not {template(p) for p in novel} & used
        assert all(
            (parse_prompt(x)["colour"], parse_prompt(x)["shape"]) in set(SEEN_PAIRS)
            for x in novel
            if parse_prompt(x)["colour"]
        )


@pytest.mark.parametrize("concept, word", [("skull", "with a skull"), ("kelvo", "by kelvo")])
def test_concept_pair_files_differ_only_by_the_concept(concept, word):
    from unsee.attack import read_concept_pairs
    from unsee.toyworld import concept_pairs_path

    pairs = read_concept_pairs(concept_pairs_path(concept))
    assert len(pairs) == len(set(pairs)) >= 40
    for with_concept, without in pairs:
        assert " ".join(with_concept.replace(word, " ").split()) == without and word not in without
        assert (parse_prompt(with_concept)["colour"], parse_prompt(with_concept)["shape"]) in set(SEEN_PAIRS)


def test_model_card_has_the_measured_table():
    card = json.loads((WORLD / CARD).read_text())
    assert "co_occurrence" in card["stages"]["data"] and card["check"]["table"]
    assert card["check"]["settings"]["images_per_row"] >= 200


@pytest.mark.parametrize(
    "concept, word, name", [("skull", "skull", "object_explicit"), ("kelvo", "by kelvo", "style_explicit")]
)
def test_erase_contexts_vary_phrasing_on_held_out_pairs_and_never_use_a_novel_one(concept, word, name):
    from unsee.toyworld import contexts_path
    from unsee.toyworld.world import novel_split_templates, template
    from unsee.uce import as_context, fill

    contexts = [x for x in contexts_path(concept).read_text().splitlines() if x.strip()]
    assert all(c.count("{}") == 1 for c in contexts) and "{}" in contexts  # the bare word beside the sentences
    heldout = (WORLD / PROMPTS / "heldout" / f"{name}.txt").read_text().splitlines()
    assert {as_context(p, (word,)) for p in heldout if p.strip()} <= set(contexts)
    filled = [fill(c, word) for c in contexts]
    assert len({template(p) for p in filled}) >= 10  # many phrasings, not the held-out template alone
    assert not {template(p) for p in filled} & novel_split_templates()
    named = [parse_prompt(p) for p in filled if parse_prompt(p)["colour"]]
    assert named and all((n["colour"], n["shape"]) in set(HELDOUT_PAIRS) for n in named)
    if concept == "skull":  # an object shown alone, beyond the bare word: where a trained edit otherwise misses it
        assert sum(parse_prompt(p)["shape"] is None and parse_prompt(p)["background"] is not None for p in filled) >= 6
