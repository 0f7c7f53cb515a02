"""Reward model and reward-weighted textual inversion on tiny components."""

import json

import pytest
import torch

from unsee.errors import UnseeError
from unsee.feedback import Binary, Feedback, Rank, save_feedback
from unsee.testing import save_tiny_clip, write_image_set


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory):
    """120 images 16 px: a red square (flagged) or a blue one, on noise; redness is the ground truth."""
    g = torch.Generator().manual_seed(0)
    n = 120
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    red = torch.rand(n, generator=g)  # how red the square is
    x[:, 0, 4:12, 4:12] += red.view(-1, 1, 1) * 0.7
    x[:, 2, 4:12, 4:12] += (1 - red).view(-1, 1, 1) * 0.7
    folder = write_image_set(tmp_path_factory.mktemp("set") / "set", x, ["a red square"] * n)
    return folder, red


def _binary_feedback(path, red, annotators=2):
    ids = [f"{i:05d}-000" for i in range(len(red))]
    js = [
        Binary(ids[i], f"a{a}", frozenset({"flag"} if red[i] > 0.5 else set()), "")
        for a in range(annotators)
        for i in range(len(red))
    ]
    return save_feedback(path, Feedback(("flag",), js))


def test_binary_reward_model_learns_and_round_trips(colour_set, clip_dir, tmp_path):
    from unsee.reward_model import RewardTrainConfig, load_reward, score_image_set, train_reward

    folder, red = colour_set
    fb = _binary_feedback(tmp_path / "fb.jsonl", red)
    m = train_reward(
        RewardTrainConfig(images=str(folder), feedback=str(fb), out=str(tmp_path / "r"), clip=str(clip_dir), steps=300),
        progress=False,
    )
    assert m["kind"] == "binary" and m["heldout_agreement"] >= 0.85, m
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["heldout_agreement"] == m["heldout_agreement"]
    scores = score_image_set(tmp_path / "r", folder, tmp_path / "scores.jsonl")
    rows = [json.loads(x) for x in scores.read_text().splitlines()]
    assert len(rows) == 120 and set(rows[0]) == {"id", "flag"}
    s = torch.tensor([r["flag"] for r in rows])
    assert s[red > 0.7].mean() > s[red < 0.3].mean() + 0.3
    reloaded = load_reward(tmp_path / "r")
    assert reloaded.config.labels == ["flag"] or tuple(reloaded.config.labels) == ("flag",)


def test_learned_reward_of_an_ensemble_counts_its_most_suspicious_member(colour_set, clip_dir, tmp_path):
    from unsee.reward_model import RewardTrainConfig, load_reward, train_reward
    from unsee.rewards import parse_reward

    folder, red = colour_set
    fb = _binary_feedback(tmp_path / "fb.jsonl", red)
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"r{seed}")
        train_reward(
            RewardTrainConfig(
                images=str(folder), feedback=str(fb), out=str(paths[-1]), clip=str(clip_dir), steps=100, seed=seed
            ),
            progress=False,
        )
    from unsee.imageset import ImageSet

    s = ImageSet.load(folder)
    images = s.load_images(s.records[:8])
    one = [load_reward(p).score_images(images)["flag"] for p in paths]
    assert not torch.allclose(one[0], one[1])  # different splits and initialisations: different models
    total, parts = parse_reward(f"learned:{paths[0]},{paths[1]}")(images, ["a red square"] * 8)
    assert torch.allclose(total, -torch.maximum(one[0], one[1]))
    with pytest.raises(UnseeError, match="has labels"):
        parse_reward(f"learned:{paths[0]},{paths[1]}#other")


TUNED = dict(tune_vision=1, steps=200, batch_size=32, eval_every=20)  # the tiny CLIP's last vision layer tuned


@pytest.mark.parametrize("tuned", [False, True], ids=["frozen", "tuned-tower"])
def test_rank_reward_model_bradley_terry(colour_set, clip_dir, tmp_path, tuned):
    from unsee.reward_model import RewardTrainConfig, train_reward

    folder, red = colour_set
    ids = [f"{i:05d}-000" for i in range(len(red))]
    g = torch.Generator().manual_seed(1)
    groups = []
    for _ in range(3):
        perm = torch.randperm(len(ids), generator=g).tolist()
        for k in range(0, len(perm), 5):
            grp = sorted(perm[k : k + 5], key=lambda i: -float(red[i]))
            groups.append(Rank(tuple(ids[i] for i in grp), "flag", "r", ""))
    fb = save_feedback(tmp_path / "rank.jsonl", Feedback(("flag",), groups))
    m = train_reward(
        RewardTrainConfig(
            images=str(folder),
            feedback=str(fb),
            out=str(tmp_path / "r"),
            clip=str(clip_dir),
            **(TUNED if tuned else dict(steps=300)),
        ),
        progress=False,
    )
    assert m["kind"] == "rank" and m["metric"] == "pairwise accuracy"
    assert m["heldout_agreement"] >= 0.85, m


def test_tuned_vision_tower_moves_only_its_layers_and_scores_without_the_clip(colour_set, clip_dir, tmp_path):
    import shutil

    from transformers import CLIPModel

    from unsee.imageset import ImageSet
    from unsee.reward_model import RewardTrainConfig, load_reward, reward_scores, train_reward
    from unsee.rewards import parse_reward

    folder, red = colour_set
    fb = _binary_feedback(tmp_path / "fb.jsonl", red)
    clip = shutil.copytree(clip_dir, tmp_path / "clip")
    m = train_reward(
        RewardTrainConfig(images=str(folder), feedback=str(fb), out=str(tmp_path / "t"), clip=str(clip), **TUNED),
        progress=False,
    )
    assert m["heldout_agreement"] >= 0.85 and m["tuned_vision_layers"] == 1, m
    tuned = load_reward(tmp_path / "t")
    base = CLIPModel.from_pretrained(clip).state_dict()
    changed = {k for k, v in tuned.vision.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and all(
        k.startswith(("vision_model.encoder.layers.1.", "vision_model.post_layernorm.", "visual_projection."))
        for k in changed
    ), changed  # layer 0 and the patch embedding are CLIP's own

    s = ImageSet.load(folder)
    images = s.load_images(s.records[:8])
    before = tuned.score_images(images)["flag"]
    shutil.rmtree(clip)  # the model carries its tower: the CLIP it came from is no longer needed
    assert torch.equal(load_reward(tmp_path / "t").score_images(images)["flag"], before)
    sc = reward_scores(load_reward(tmp_path / "t"), s)
    sc = torch.tensor([sc[f"{i:05d}-000"]["flag"] for i in range(len(red))])
    assert sc[red > 0.7].mean() > sc[red < 0.3].mean() + 0.3

    # in an ensemble beside a model on a frozen CLIP: each member embeds its own way, the most suspicious counts
    train_reward(
        RewardTrainConfig(images=str(folder), feedback=str(fb), out=str(tmp_path / "f"), clip=str(clip_dir), steps=100),
        progress=False,
    )
    frozen = load_reward(tmp_path / "f").score_images(images)["flag"]
    total, _ = parse_reward(f"learned:{tmp_path / 'f'},{tmp_path / 't'}")(images, ["a red square"] * 8)
    assert torch.allclose(total, -torch.maximum(frozen, before))
    with pytest.raises(UnseeError, match="vision tower has 2 layers"):
        train_reward(
            RewardTrainConfig(
                images=str(folder), feedback=str(fb), out=str(tmp_path / "x"), clip=str(clip_dir), tune_vision=3
            ),
            progress=False,
        )


def test_reward_refuses_feedback_about_other_images(colour_set, clip_dir, tmp_path):
    from unsee.reward_model import RewardTrainConfig, train_reward

    folder, _ = colour_set
    save_feedback(tmp_path / "fb.jsonl", Feedback(("flag",), [Binary("99999-000", "a", frozenset(), "")]))
    with pytest.raises(UnseeError, match="unknown image id '99999-000'"):
        train_reward(
            RewardTrainConfig(
                images=str(folder), feedback=str(tmp_path / "fb.jsonl"), out=str(tmp_path / "r"), clip=str(clip_dir)
            ),
            progress=False,
        )


def test_a_second_round_of_feedback_on_other_images_trains_one_model(colour_set, clip_dir, tmp_path):
    """Round 2 flags green squares, which round 1 never showed; both sets number their images from 00000-000."""
    from unsee.imageset import ImageSet
    from unsee.reward_model import RewardTrainConfig, load_reward, reward_scores, train_reward

    folder, red = colour_set
    fb1 = _binary_feedback(tmp_path / "fb1.jsonl", red)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(60, 3, 16, 16, generator=g) * 0.3
    x[:, 1, 4:12, 4:12] += 0.7
    green = write_image_set(tmp_path / "green", x, ["a green square"] * 60)
    fb2 = _binary_feedback(tmp_path / "fb2.jsonl", torch.ones(60))
    r1 = tmp_path / "r1"
    train_reward(
        RewardTrainConfig(images=str(folder), feedback=str(fb1), out=str(r1), clip=str(clip_dir), steps=300),
        progress=False,
    )
    m = train_reward(
        RewardTrainConfig(
            images=(str(folder), str(green)),
            feedback=(str(fb1), str(fb2)),
            out=str(tmp_path / "r2"),
            clip=str(clip_dir),
            steps=300,
        ),
        progress=False,
    )
    assert m["images"] == 180 and m["image_sets"] == 2 and m["heldout_agreement"] >= 0.85, m
    before = reward_scores(load_reward(r1), ImageSet.load(green))
    after = reward_scores(load_reward(tmp_path / "r2"), ImageSet.load(green))
    assert sum(v["flag"] for v in after.values()) / 60 > 0.8 > sum(v["flag"] for v in before.values()) / 60
    s = reward_scores(load_reward(tmp_path / "r2"), ImageSet.load(folder))  # round 1's ordering is kept
    sc = torch.tensor([s[f"{i:05d}-000"]["flag"] for i in range(len(red))])
    assert sc[red > 0.7].mean() > sc[red < 0.3].mean() + 0.3
    with pytest.raises(UnseeError, match="one --feedback per --images"):
        RewardTrainConfig(images=(str(folder), str(green)), feedback=(str(fb1),), out=str(tmp_path / "r3"))
    save_feedback(tmp_path / "fb3.jsonl", Feedback(("other",), [Binary("00000-000", "a", frozenset(), "")]))
    with pytest.raises(UnseeError, match="must use the same labels"):
        train_reward(
            RewardTrainConfig(
                images=(str(folder), str(green)),
                feedback=(str(fb1), str(tmp_path / "fb3.jsonl")),
                out=str(tmp_path / "r3"),
                clip=str(clip_dir),
            ),
            progress=False,
        )


@pytest.mark.parametrize("vectors", [1, 3])
def test_invert_writes_a_token_plain_diffusers_loads(tiny_model_dir, tmp_path, vectors):
    from diffusers import StableDiffusionPipeline

    from conftest import flagged_image_set
    from unsee.invert import InvertConfig, invert
    from unsee.sampling import encode_text

    images, fb = flagged_image_set(tiny_model_dir, tmp_path, 4)
    out = tmp_path / "tok.safetensors"
    summary = invert(
        InvertConfig(
            model=str(tiny_model_dir),
            images=str(images),
            feedback=str(fb),
            out=str(out),
            init_word="cat",
            vectors=vectors,
            top_k=4,
            steps=3,
            batch_size=2,
            device="cpu",
            lr=0.1,
        ),
        progress=False,
    )
    assert summary["top_k"] == 4
    # the token's record of what trained it: the prompts of the images it was fitted to (the four flagged ones)
    from unsee.provenance import model_prompts

    assert model_prompts(out) == {"a red cat"}
    assert summary["example_prompt"] == "a photo of " + " ".join(
        ["<flagged>", "<flagged>_1", "<flagged>_2", "<flagged>_3"][:vectors]
    )

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    base = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    pipe.load_textual_inversion(str(out), token="<flagged>")
    from safetensors.torch import load_file

    learned = load_file(str(out))["<flagged>"]
    assert learned.shape == (vectors, 32)
    init = base[pipe.tokenizer("cat", add_special_tokens=False).input_ids].mean(0)
    assert (learned - init).abs().max() > 1e-4  # it trained
    tid = pipe.tokenizer.convert_tokens_to_ids("<flagged>")
    assert torch.allclose(pipe.text_encoder.get_input_embeddings().weight[tid], learned[0])
    # unsee's own loop expands multi-vector tokens exactly as diffusers' pipeline does
    e = encode_text(pipe, ["a photo of <flagged>"])
    ids_ = pipe.tokenizer(
        pipe.maybe_convert_prompt("a photo of <flagged>", pipe.tokenizer),
        padding="max_length",
        max_length=77,
        return_tensors="pt",
    ).input_ids
    assert torch.equal(e, pipe.text_encoder(ids_)[0])
    assert (ids_ >= tid).sum() == vectors


def test_invert_refusals(tmp_path):
    from unsee.invert import InvertConfig

    with pytest.raises(UnseeError, match="exactly one of --feedback"):
        InvertConfig(model="m", images="i", out="o.safetensors")
    with pytest.raises(UnseeError, match="must contain"):
        InvertConfig(model="m", images="i", out="o.safetensors", feedback="f", template="no token")
    with pytest.raises(UnseeError, match=".safetensors file"):
        InvertConfig(model="m", images="i", out="o.bin", feedback="f")


def test_a_tuned_tower_trains_in_bf16_with_checkpointing_and_saves_fp32(colour_set, clip_dir, tmp_path, monkeypatch):
    import transformers.modeling_utils as mu

    from unsee.reward_model import RewardTrainConfig, load_reward, train_reward

    real, calls = mu.checkpoint, []

    def counting(*a, **kw):  # transformers' layers call it when gradient checkpointing is on
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(mu, "checkpoint", counting)
    folder, red = colour_set
    fb = _binary_feedback(tmp_path / "fb.jsonl", red)
    m = train_reward(
        RewardTrainConfig(
            images=str(folder),
            feedback=str(fb),
            out=str(tmp_path / "t"),
            clip=str(clip_dir),
            mixed_precision="bf16",
            gradient_checkpointing=True,
            **TUNED,
        ),
        progress=False,
    )
    assert calls, "the tower's layers were not checkpointed"
    assert m["mixed_precision"] == "bf16" and m["skipped_steps"] == 0
    assert m["heldout_agreement"] >= 0.85, m  # bf16 activations still learn the task
    assert all(v.dtype == torch.float32 for v in load_reward(tmp_path / "t").state_dict().values())
    with pytest.raises(UnseeError, match="act on a tuned vision tower; add --tune-vision N"):
        RewardTrainConfig(images=str(folder), feedback=str(fb), out=str(tmp_path / "x"), mixed_precision="bf16")
