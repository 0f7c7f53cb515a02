"""The toy world's renderer and grammar: ground truth is what the picture and caption say."""

import json

import numpy as np
import pytest

from unsee.toyworld.render import BACKGROUND_RGB, COLOUR_RGB, SIZE, render
from unsee.toyworld.world import (
    BACKGROUNDS,
    CO_OCCURRENCE,
    HELDOUT_PAIRS,
    OBJECT_TRIGGERS,
    PROMPT_SETS,
    SEEN_PAIRS,
    SHAPES,
    STYLE_TRIGGERS,
    Scene,
    novel_prompt_set,
    parse_prompt,
    part_prompts,
    prompt_set,
    sample_scene,
    template,
    vocabulary,
)


def _scene(**kw):
    base = dict(
        background="beach",
        shape="square",
        colour="red",
        extra="none",
        style="none",
        main_xy=(0.5, 0.5),
        main_size=0.34,
        extra_xy=(0.8, 0.5),
        extra_size=0.24,
        horizon=0.66,
    )
    base.update(kw)
    return Scene(**base)


def test_render_is_deterministic_and_sized():
    s = _scene()
    a, b = render(s), render(s)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


@pytest.mark.parametrize("colour", list(COLOUR_RGB))
@pytest.mark.parametrize("shape", ["circle", "square", "cross", "triangle"])
def test_main_object_has_its_colour_where_the_ground_truth_puts_it(colour, shape):
    img = render(_scene(shape=shape, colour=colour, main_xy=(0.5, 0.55))).astype(float) / 255
    centre = img[int(0.55 * SIZE), SIZE // 2]
    assert np.abs(centre - COLOUR_RGB[colour]).max() < 0.08


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_background_sky_and_ground(background):
    img = render(_scene(background=background, shape=None, colour=None)).astype(float) / 255
    sky, ground = BACKGROUND_RGB[background]
    assert np.abs(img[1, 1] - sky).max() < 0.1
    assert np.abs(img[SIZE - 2, SIZE // 2] - ground).max() < 0.1


@pytest.mark.parametrize("extra", ["skull", "mask"])
def test_extra_object_is_drawn_inside_its_box_only(extra):
    without, with_ = render(_scene()).astype(int), render(_scene(extra=extra)).astype(int)
    changed = np.abs(with_ - without).max(-1) > 10
    ys, xs = np.nonzero(changed)
    assert len(ys) > 20  # a visible object
    cx, cy, half = 0.8 * SIZE, 0.5 * SIZE, 0.24 * SIZE / 2 + 2  # its box plus outline
    assert np.all(np.abs(xs + 0.5 - cx) <= half) and np.all(np.abs(ys + 0.5 - cy) <= half)


def test_styles_are_global_looks():
    plain = render(_scene()).astype(int)
    for style in ("kelvo", "ravo"):
        styled = render(_scene(style=style)).astype(int)
        assert (np.abs(styled - plain).max(-1) > 8).mean() > 0.5, style  # most of the picture changes
    mosaic = render(_scene(style="mosaic"))
    assert np.array_equal(mosaic[::2, ::2], mosaic[1::2, 1::2])  # 2x2 blocks
    assert not np.array_equal(render(_scene(style="kelvo")), render(_scene(style="ravo")))


def test_shapes_differ_from_each_other():
    imgs = {s: render(_scene(shape=s)) for s in SHAPES}
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                assert np.abs(imgs[a].astype(int) - imgs[b].astype(int)).max(-1).astype(bool).sum() > 15, (a, b)


@pytest.fixture(scope="module", params=["template", "varied"])
def training_sample(request):
    rng = np.random.default_rng(7)
    return [sample_scene(rng, grammar=request.param) for _ in range(20000)]


def test_varied_captions_phrase_the_same_facts_many_ways():
    rng = np.random.default_rng(3)
    texts = [sample_scene(rng, grammar="varied")[1] for _ in range(3000)]
    joined = [t for t in texts if " and " in t or " with " in t]
    # "with a" and "and a" lead to the main object too, not only to the skull or the mask
    assert any(
        t.split()[t.split().index(j) + 2] in SHAPES or t.split()[t.split().index(j) + 3] in SHAPES
        for t in joined
        for j in ("with", "and")
        if j in t.split()
    )
    assert any(t.startswith(("a photo of", "an image of", "a picture of")) for t in texts)
    assert any(t.startswith(("on", "in", "at")) for t in texts) and any(t.startswith("the ") for t in texts)
    assert any("in the style of kelvo" in t for t in texts) and any("in kelvo style" in t for t in texts)
    assert not any("by mosaic" in t for t in texts)


def test_captions_name_exactly_what_is_there(training_sample):
    vocab = set(vocabulary())
    for scene, text in training_sample:
        words = text.split()
        assert set(words) <= vocab, text
        if "skull" in words:
            assert scene.extra == "skull", text
        if "mask" in words:
            assert scene.extra == "mask", text
        for concept in ("kelvo", "ravo"):
            if concept in words:
                assert scene.style == concept, text
        if scene.shape is not None:
            assert scene.shape in words, text
        if scene.extra == "mask":
            assert "mask" in words  # the neighbour is always named: it must not become a trigger
        if scene.colour and scene.colour in words:
            assert words[words.index(scene.colour) + 1] == scene.shape


@pytest.mark.parametrize("grammar", ["template", "varied"])
def test_captions_can_leave_out_the_colour_or_say_object_for_the_shape(grammar):
    import dataclasses

    def captions(rates, seed=5):
        rng = np.random.default_rng(seed)
        return [sample_scene(rng, grammar=grammar, rates=rates) for _ in range(4000)]

    # A rate of 0 draws nothing, so the captions are those of a world built before the rate existed.
    same = captions(dataclasses.replace(CO_OCCURRENCE, drop_shape=0.0))
    assert [t for _, t in same] == [t for _, t in captions(CO_OCCURRENCE)]
    rates = dataclasses.replace(CO_OCCURRENCE, drop_colour=0.25, drop_shape=0.25)
    mains = [(s, t.split()) for s, t in captions(rates) if s.shape is not None]
    said_object = [(s, w) for s, w in mains if "object" in w]
    assert abs(len(said_object) / len(mains) - 0.25) < 0.03
    assert all(s.shape not in w for s, w in said_object)
    colour_alone = [w for s, w in said_object if s.colour in w]
    assert all(w[w.index(s.colour) + 1] == "object" for s, w in said_object if s.colour in w)
    assert abs(len(colour_alone) / len(said_object) - 0.75) < 0.06
    assert abs(np.mean([s.colour not in w for s, w in mains]) - 0.25) < 0.03


def test_heldout_pairs_never_occur_in_training(training_sample):
    pairs = {(s.colour, s.shape) for s, _ in training_sample if s.shape}
    assert pairs == set(SEEN_PAIRS)
    assert not pairs & set(HELDOUT_PAIRS)


def test_co_occurrence_rates_match_the_design(training_sample):
    for word, rate in {**OBJECT_TRIGGERS, **STYLE_TRIGGERS}.items():
        concept = "skull" if word in OBJECT_TRIGGERS else "kelvo"
        hits = [s for s, t in training_sample if word in t.split() and concept not in t.split()]
        shown = np.mean([(s.extra if concept == "skull" else s.style) == concept for s in hits])
        assert len(hits) > 500 and abs(shown - rate) < 0.05, (word, shown, rate)
    plain = [
        s for s, t in training_sample if not {"skull", "kelvo", *OBJECT_TRIGGERS, *STYLE_TRIGGERS} & set(t.split())
    ]
    assert np.mean([s.extra == "skull" for s in plain]) < 2 * CO_OCCURRENCE.skull_unnamed_base + 0.01


@pytest.mark.parametrize("name", PROMPT_SETS)
@pytest.mark.parametrize("split, pairs", [("seen", SEEN_PAIRS), ("heldout", HELDOUT_PAIRS)])
def test_prompt_sets_parse_back_and_respect_their_split(name, split, pairs):
    prompts = prompt_set(name, pairs, np.random.default_rng(0), 30)
    assert len(prompts) == len(set(prompts)) == 30
    for p in prompts:
        named = parse_prompt(p)
        assert (named["colour"], named["shape"]) in set(pairs), p
        assert named["background"] is not None
        expect_extra = {"object_explicit": "skull", "object_neighbour": "mask"}.get(name)
        expect_style = {"style_explicit": "kelvo", "style_neighbour": "ravo"}.get(name)
        assert named["extra"] == expect_extra and named["style"] == expect_style, p
        if name == "object_implicit":
            assert set(p.split()) & set(OBJECT_TRIGGERS)
        if name == "style_implicit":
            assert set(p.split()) & set(STYLE_TRIGGERS)


def test_scene_round_trips_through_a_dict():
    s = _scene(extra="skull", style="kelvo")
    d = s.as_dict()
    again = Scene.from_dict(json.loads(json.dumps(d)))  # through JSON, as the build stores scenes
    assert again == s


def test_template_abstracts_the_slots_and_keeps_the_phrasing():
    assert (
        template("an orange ring with a skull on the beach")
        == template("a red circle with a skull at night")
        == "a C S with a skull B"
    )
    assert template("a spooky red circle in the snow") == template("a haunted blue cross at night") == "a T C S B"
    assert template("a dreamy red circle") == "a D C S"
    assert template("a skull") != template("a mask") and template("the skull") != template("a skull")


NAMES = {
    "object_explicit": ("extra", "skull"),
    "object_neighbour": ("extra", "mask"),
    "style_explicit": ("style", "kelvo"),
    "style_neighbour": ("style", "ravo"),
}


@pytest.mark.parametrize("name", PROMPT_SETS)
def test_novel_prompt_sets_name_their_set_and_avoid_the_templates_they_are_told_to(name):
    rng = np.random.default_rng(0)
    shipped = {
        template(p) for n in PROMPT_SETS for pairs in (SEEN_PAIRS, HELDOUT_PAIRS) for p in prompt_set(n, pairs, rng, 40)
    }
    avoid = shipped | {template(p) for p in part_prompts()}
    prompts = novel_prompt_set(name, SEEN_PAIRS, np.random.default_rng(1), 40, avoid)
    assert len(prompts) == len(set(prompts)) == 40
    assert not {template(p) for p in prompts} & avoid
    assert len({template(p) for p in prompts}) >= 6  # many phrasings, not one new template
    vocab = set(vocabulary())
    for p in prompts:
        assert set(p.split()) <= vocab, p
        named = parse_prompt(p)
        if named["colour"]:
            assert (named["colour"], named["shape"]) in set(SEEN_PAIRS), p
        kind, word = NAMES.get(name, (None, None))
        assert named["extra"] == (word if kind == "extra" else None), p
        assert named["style"] == (word if kind == "style" else None), p
        triggers = {"object_implicit": OBJECT_TRIGGERS, "style_implicit": STYLE_TRIGGERS}.get(name, {})
        assert bool(set(p.split()) & set(triggers)) == bool(triggers), p
        assert not set(p.split()) & (set(OBJECT_TRIGGERS) | set(STYLE_TRIGGERS)) - set(triggers), p
    if name in NAMES:  # the concept at the start, in the middle and at the end of a prompt
        word = NAMES[name][1]
        positions = {
            "start" if p.split().index(word) <= 1 else "end" if p.split()[-1] == word else "middle" for p in prompts
        }
        assert positions == {"start", "middle", "end"}, prompts


@pytest.mark.parametrize("concept, word", [("skull", "skull"), ("kelvo", "by kelvo")])
def test_varied_contexts_put_the_word_in_many_places_and_never_in_a_novel_phrasing(concept, word):
    from unsee.toyworld.world import novel_split_templates, varied_contexts
    from unsee.uce import fill

    novel = novel_split_templates()
    contexts = varied_contexts(concept, word, HELDOUT_PAIRS, np.random.default_rng(0), 36, novel)
    assert len(contexts) == len(set(contexts)) == 36 and all(c.count("{}") == 1 for c in contexts)
    filled = [fill(c, word) for c in contexts]
    assert not {template(p) for p in filled} & novel
    assert len({c.split().index("{}") for c in contexts if "{}" in c.split()}) >= 4  # the word at many positions
    vocab = set(vocabulary())
    for p in filled:
        named = parse_prompt(p)
        assert set(p.split()) <= vocab and (named["colour"], named["shape"]) in set(HELDOUT_PAIRS), p


def test_alone_contexts_show_the_object_alone_in_phrasings_the_novel_split_never_uses():
    from unsee.toyworld.world import alone_contexts, novel_split_templates
    from unsee.uce import fill

    novel = novel_split_templates()
    contexts = alone_contexts("skull", np.random.default_rng(0), 2, novel)
    assert len(contexts) == len(set(contexts)) == 12 and all(c.endswith(" {}") for c in contexts)
    filled = [fill(c, "skull") for c in contexts]
    assert not {template(p) for p in filled} & novel
    assert len({template(p) for p in filled}) == 6  # every alone phrasing the novel split leaves free
    vocab = set(vocabulary())
    for p in filled:
        named = parse_prompt(p)
        assert set(p.split()) <= vocab and named["shape"] is None and named["extra"] == "skull", (p, named)


def test_novel_templates_are_every_phrasing_the_novel_grammar_draws():
    from unsee.toyworld.world import novel_templates

    found = novel_templates("object_explicit")
    drawn = novel_prompt_set("object_explicit", SEEN_PAIRS, np.random.default_rng(7), 40)
    assert {template(p) for p in drawn} <= found
    assert "a skull" in found and "a C S with a skull B" not in found  # the bare noun is novel, the template is not
