"""DDPO: the step log-probability against diffusers and torch, advantages, reward specs, and the loop on the toy world."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from unsee.errors import UnseeError
from unsee.rewards import parse_reward, sanitize
from unsee.rl import PromptStats, RLConfig, ddim_step_logprob, epoch_prompts, rl
from unsee.toyworld import PIPELINE, assets_path, prompts_path

WORLD = assets_path()
needs_world = pytest.mark.skipif(not (WORLD / PIPELINE / "model_index.json").exists(), reason="no toy world built")


def _sched(prediction_type="epsilon"):
    from unsee.models import sd_ddim_scheduler

    s = sd_ddim_scheduler(prediction_type)
    s.set_timesteps(10)
    return s


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_step_matches_diffusers_and_its_logprob_is_the_gaussian_density(prediction_type):
    sched = _sched(prediction_type)
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for t in sched.timesteps[[0, 4, 9]]:
        noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(int(t)))
        ref = sched.step(eps, t, z, eta=1.0, variance_noise=noise).prev_sample
        prev, logp, mean, std = ddim_step_logprob(
            sched, eps, t.view(1).expand(3), z, 1.0, generator=torch.Generator().manual_seed(int(t))
        )
        assert torch.allclose(prev, ref, atol=1e-5)
        density = torch.distributions.Normal(mean, std).log_prob(prev).mean(dim=(1, 2, 3))
        assert torch.allclose(logp, density, atol=1e-4)
        # Scoring a given step gives the same number as having drawn it.
        _, again, _, _ = ddim_step_logprob(sched, eps, t.view(1).expand(3), z, 1.0, prev=prev)
        assert torch.allclose(again, logp)


def test_advantages_use_batch_statistics_until_a_prompt_has_enough_rewards():
    stats = PromptStats(buffer_size=4, min_count=3)
    a = stats.advantages(["x", "x", "y", "y"], torch.tensor([1.0, 3.0, 10.0, 30.0]))
    batch = torch.tensor([1.0, 3.0, 10.0, 30.0])
    assert torch.allclose(a, (batch - batch.mean()) / (batch.std(unbiased=False) + 1e-6))
    b = stats.advantages(["x", "x"], torch.tensor([2.0, 2.0]))  # x now has 4 rewards: 1, 3, 2, 2
    own = torch.tensor([1.0, 3.0, 2.0, 2.0])
    assert torch.allclose(b, (torch.tensor([2.0, 2.0]) - own.mean()) / (own.std(unbiased=False) + 1e-6))
    stats.advantages(["x"], torch.tensor([9.0]))
    assert list(stats.buffers["x"]) == [3.0, 2.0, 2.0, 9.0]  # the buffer keeps the last 4
    restored = PromptStats(4, 3)
    restored.load_state_dict(json.loads(json.dumps(stats.state_dict())))
    assert restored.state_dict() == stats.state_dict()


def test_until_a_prompt_has_enough_rewards_it_is_compared_within_its_group():
    # Unsafe prompts score lower by construction; against the mixed batch both unsafe samples would get a
    # negative advantage whatever they show. Within their group the better one gets a positive one.
    prompts, groups = ["u1", "u2", "b1", "b2"], ["unsafe", "unsafe", "benign", "benign"]
    rewards = torch.tensor([-1.0, -0.8, 0.3, 0.5])
    mixed = PromptStats(32, 16).advantages(prompts, rewards)
    assert (mixed[:2] < 0).all()
    a = PromptStats(32, 16).advantages(prompts, rewards, groups)
    assert torch.allclose(a, torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-4)


def test_pooled_scale_keeps_a_flat_prompt_flat():
    # Prompt "b" barely varies (CLIP noise); per-prompt std turns that into +-1, the pooled std keeps it small.
    prompts = ["u", "u", "b", "b"]
    rewards = torch.tensor([-6.0, -4.0, 0.70, 0.71])
    own = PromptStats(32, 2).advantages(prompts, rewards)
    assert torch.allclose(own, torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-3)
    pooled = PromptStats(32, 2, scale="pooled").advantages(prompts, rewards)
    pooled_std = math.sqrt((1.0**2 + 0.005**2) / 2)
    assert torch.allclose(pooled, torch.tensor([-1.0, 1.0, -0.005, 0.005]) / pooled_std, atol=1e-4)


def test_unscaled_advantages_shrink_as_the_rewards_stop_differing():
    # Once the concept is gone the unsafe rewards barely differ; a pooled std scales what is left back up, the
    # unscaled (Dr. GRPO) advantages stay as small as the differences themselves.
    prompts = ["u", "u", "b", "b"]
    rewards = torch.tensor([-0.02, 0.0, 0.70, 0.71])
    none = PromptStats(32, 2, scale="none").advantages(prompts, rewards)
    assert torch.allclose(none, torch.tensor([-0.01, 0.01, -0.005, 0.005]), atol=1e-6)
    pooled = PromptStats(32, 2, scale="pooled").advantages(prompts, rewards)
    assert pooled.abs().max() > 1


def test_samples_per_prompt_draws_each_prompt_k_times_in_a_row():
    unsafe, benign = [f"u{i}" for i in range(10)], [f"b{i}" for i in range(10)]
    cfg = RLConfig(
        model="toyworld",
        prompts="p.txt",
        benign_prompts="b.txt",
        out="o",
        samples_per_epoch=16,
        train_batch=4,
        samples_per_prompt=4,
    )
    ps = epoch_prompts(cfg, unsafe, benign, epoch=0, rank=0)
    groups = [ps[i : i + 4] for i in range(0, 16, 4)]
    assert all(len(set(g)) == 1 for g in groups)
    assert [g[0][0] for g in groups] == ["u", "u", "b", "b"]
    # with one sample a prompt the draw is the plain one (same generator calls)
    one = epoch_prompts(dataclasses.replace(cfg, samples_per_prompt=1), unsafe, benign, epoch=0, rank=0)
    assert len(one) == 16 and sum(p[0] == "u" for p in one) == 8


def test_sanitize_removes_unsafe_words_only():
    from unsee.rewards import UNSAFE_WORDS
    from unsee.toyworld import UNSAFE_WORDS as TOY_WORDS

    assert (
        sanitize("a spooky red circle with a skull on the beach", UNSAFE_WORDS + TOY_WORDS)
        == "a red circle on the beach"
    )
    assert sanitize("a spooky red circle with a skull on the beach") == "a spooky red circle with a skull on the beach"
    assert sanitize("Nude woman, oil painting") == "woman, oil painting"
    assert sanitize("a skullcap in the city", UNSAFE_WORDS + TOY_WORDS) == "a skullcap in the city"


def test_toyworld_provenance_and_auto_clip(tmp_path):
    """--clip auto follows a model back to its source: the toy world's CLIP for a model made from it."""
    import json

    from unsee.clip import REAL_CLIP, default_clip
    from unsee.toyworld import is_toyworld

    erased, again = tmp_path / "erased", tmp_path / "again"
    for folder, source in ((erased, "toyworld"), (again, str(erased))):
        folder.mkdir()
        (folder / "unsee.json").write_text(json.dumps({"config": {"model": source}}))
    assert is_toyworld("toyworld") and is_toyworld(str(erased)) and is_toyworld(str(again))
    assert not is_toyworld("CompVis/stable-diffusion-v1-4") and not is_toyworld(str(tmp_path))
    assert default_clip(True) == "toyworld" and default_clip(False) == REAL_CLIP


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nudity++clip", "is not WEIGHT"),
        ("2*banana", "unknown reward term"),
        ("clip+clip", "appears twice"),
        ("oracle:dragon", "toy-world concept"),
        ("oracle:skull:exp", "log@K"),
        ("oracle:skull:log@-1", "log@K"),
        ("nudity:sqrt", "log@K"),
        ("learned", "reward model folder"),
    ],
)
def test_bad_reward_specs_are_refused(spec, message):
    with pytest.raises(UnseeError, match=message):
        parse_reward(spec)


@needs_world
def test_reward_terms_on_rendered_scenes():
    """oracle:skull scores a skull scene below the same scene without; weights compose linearly."""
    from unsee.rewards import _penalty
    from unsee.toyworld.render import render_many
    from unsee.toyworld.world import Scene

    scenes = [
        Scene(
            "beach",
            "circle",
            "red",
            extra,
            "none",
            main_xy=(0.27, 0.5),
            main_size=0.34,
            extra_xy=(0.73, 0.5),
            extra_size=0.33,
        )
        for extra in ("skull", "none")
    ]
    images = torch.from_numpy(render_many(scenes)).permute(0, 3, 1, 2).float() / 255
    prompts = ["a red circle with a skull on the beach"] * 2
    r = parse_reward("oracle:skull+0.5*clip")
    total, parts = r(images, prompts)
    assert parts["oracle:skull"][0] < -0.5 < parts["oracle:skull"][1] + 0.5
    assert torch.allclose(total, parts["oracle:skull"] + 0.5 * parts["clip"])
    raw = parse_reward("clip", clip_target="raw")
    assert not torch.allclose(raw(images, prompts)[0], parts["clip"])  # the raw prompt still names the skull
    # the log form is log(1 - p): same order, graded where p is near 1, above log(0.5) without the skull
    _, logs = parse_reward("oracle:skull:log")(images, prompts)
    p = -parts["oracle:skull"]
    assert torch.allclose(logs["oracle:skull:log"], (1 - p).clamp(min=1e-6).log(), atol=1e-6)
    assert logs["oracle:skull:log"][0] < -2 and logs["oracle:skull:log"][1] > math.log(0.5)
    _, sharp = parse_reward("oracle:skull:log@4")(images, prompts)
    assert torch.allclose(sharp["oracle:skull:log@4"], _penalty(p, True, 4.0), atol=1e-6)


def test_nudity_term_runs_nudenet_once_a_batch(monkeypatch):
    pytest.importorskip("nudenet")
    import unsee.detectors as det

    real, calls = det.nudenet_detector, []

    def counted(*a, **k):
        detect, info = real(*a, **k)
        return (lambda images: calls.append(len(images)) or detect(images)), info

    monkeypatch.setattr(det, "nudenet_detector", counted)
    images = torch.rand(2, 3, 64, 64)
    plain = parse_reward("nudity")(images, ["p", "q"])[0]
    logged = parse_reward("nudity:log")(images, ["p", "q"])[0]
    assert calls == [2, 2]  # one detector pass per batch, not one per class
    assert plain.shape == (2,) and (plain <= 0).all() and (logged <= plain + 1e-6).all()  # log(1 - s) <= -s


def test_log_penalty_ranks_what_a_sure_detector_cannot():
    from unsee.rewards import _penalty

    p = torch.tensor([0.99, 0.999, 0.9999])
    assert (_penalty(p, log=False).diff().abs() < 0.01).all()  # below the clip term's noise
    assert (_penalty(p, log=True).diff() < -2).all()  # a step of about log(10) per decade
    assert _penalty(torch.tensor([1.0]), log=True).item() == pytest.approx(math.log(1e-6))


def test_sharpened_log_penalty_separates_faint_from_clean():
    from unsee.errors import UnseeError
    from unsee.rewards import _mode, _penalty

    faint, clean = torch.tensor([0.6]), torch.tensor([0.3])
    gap = (_penalty(clean, True) - _penalty(faint, True)).item()
    sharp_gap = (_penalty(clean, True, 4.0) - _penalty(faint, True, 4.0)).item()
    assert gap == pytest.approx(math.log(0.7 / 0.4), abs=1e-5) and sharp_gap > 3 * gap
    # the same order everywhere, 0 for a clean image, the floor for a sure one, exactly log(1 - p) at K = 1
    p = torch.tensor([0.0, 0.01, 0.3, 0.5, 0.6, 0.99, 1.0])
    sharp = _penalty(p, True, 4.0)
    assert (sharp.diff() <= 0).all() and sharp[0].item() == pytest.approx(0.0, abs=1e-6)
    assert sharp[-2:].tolist() == pytest.approx([math.log(1e-6)] * 2)
    assert _penalty(torch.tensor([0.5]), True, 4.0).item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert _mode("log@4", "x") == (True, 4.0) and _mode("log", "x") == (True, 1.0) and _mode(None, "x") == (False, 1.0)
    for bad in ("log@0", "log@", "log4", "sq"):
        with pytest.raises(UnseeError, match="log@K"):
            _mode(bad, "oracle:skull")


def _cfg(out, **kw):
    base = dict(
        model="toyworld",
        prompts=str(prompts_path("object_explicit")),
        benign_prompts=str(prompts_path("benign")),
        out=str(out),
        reward="oracle:skull+0.5*clip",
        epochs=2,
        samples_per_epoch=4,
        sample_batch=4,
        train_batch=2,
        ddim_steps=4,
        train_timesteps=0.5,
        checkpoint_every=1,
        device="cpu",
        lr=1e-3,
    )
    base.update(kw)
    return RLConfig(**base)


@needs_world
@pytest.mark.parametrize("params", ["xattn", "noxattn", "full"])
def test_kl_to_the_original_trains_every_parameter_set(tmp_path, params):
    """The KL term's reference prediction swaps the original weights in; done after the trained forward it broke the
    backward pass of every --params whose weights it swaps (all but lora)."""
    summary = rl(_cfg(tmp_path / params, params=params, epochs=1, kl_weight=0.1), progress=False)
    rows = list(csv.DictReader((tmp_path / params / "run" / "epochs.csv").open()))
    assert summary["epochs"] == 1 and float(rows[0]["kl_to_original"]) >= 0


@needs_world
def test_rl_writes_a_lora_logs_epochs_and_resumes_exactly(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    import unsee.trainer as tr

    full = tmp_path / "full"
    summary = rl(_cfg(full, epochs=3, kl_weight=0.1), progress=False)
    rows = list(csv.DictReader((full / "run" / "epochs.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"reward", "reward_oracle:skull", "reward_clip", "approx_kl", "clipfrac", "kl_to_original"} <= set(rows[0])
    # where each epoch's time went: sampling, the reward (on its thread) and training all took some
    assert all(float(r[k]) > 0 for r in rows for k in ("seconds_sampling", "seconds_reward", "seconds_training"))
    assert all(float(r["seconds_reward_wait"]) >= 0 for r in rows)
    assert (
        summary["processes"] == 1
        and json.loads((full / "unsee.json").read_text())["config"]["reward"] == "oracle:skull+0.5*clip"
    )
    pipe = StableDiffusionPipeline.from_pretrained(WORLD / PIPELINE)
    pipe.load_lora_weights(full)  # plain diffusers reads it

    real = tr.save_checkpoint
    calls = {"n": 0}

    def die_after_first(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "save_checkpoint", die_after_first)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        rl(_cfg(killed, epochs=3, kl_weight=0.1), progress=False)
    monkeypatch.setattr(tr, "save_checkpoint", real)
    rl(_cfg(killed, epochs=3, kl_weight=0.1), progress=False)
    a, b = load_file(full / "pytorch_lora_weights.safetensors"), load_file(killed / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    again = list(csv.DictReader((killed / "run" / "epochs.csv").open()))
    assert [int(r["epoch"]) for r in again] == [1, 2, 3]
    assert [float(r["reward"]) for r in again] == pytest.approx([float(r["reward"]) for r in rows], abs=1e-5)


def test_bad_rl_settings():
    with pytest.raises(UnseeError, match="multiple of --train-batch"):
        RLConfig(model="toyworld", prompts="p.txt", out="o", samples_per_epoch=6, train_batch=4)
    with pytest.raises(UnseeError, match="multiple of --samples-per-prompt"):
        RLConfig(
            model="toyworld",
            prompts="p.txt",
            benign_prompts="b.txt",
            out="o",
            samples_per_epoch=8,
            train_batch=4,
            samples_per_prompt=3,
        )
    with pytest.raises(UnseeError, match="--kl-on benign reads only"):
        RLConfig(model="toyworld", prompts="p.txt", out="o", kl_weight=0.1, kl_on="benign")
    with pytest.raises(UnseeError, match="--train-timesteps"):
        RLConfig(model="toyworld", prompts="p.txt", out="o", train_timesteps=0)
    with pytest.raises(UnseeError, match="--kl-steps chain .* --kl-weight above 0"):
        RLConfig(model="toyworld", prompts="p.txt", out="o", kl_steps="chain")


@needs_world
def test_rl_without_benign_prompts_samples_only_the_unsafe_ones(tmp_path):
    # --benign-prompts is optional; without it every sample comes from the unsafe prompts
    summary = rl(_cfg(tmp_path / "only-unsafe", benign_prompts=None, epochs=1), progress=False)
    assert summary["last_epoch"]["unsafe_prompts_reward"] == pytest.approx(summary["last_epoch"]["reward"])


@needs_world
@pytest.mark.parametrize("start", ["random", "first"])
def test_train_steps_from_picks_the_trained_timesteps(tmp_path, monkeypatch, start):
    """--train-steps-from first trains only each chain's noisiest steps; random draws them from the whole chain."""
    import unsee.rl as rl_module
    from unsee.models import load_pipeline

    trained, forward = [], rl_module._cfg_noise_per_t

    def spy(pipe, z, t, *rest):
        if torch.is_grad_enabled():  # the trained forward, not the KL reference
            trained.extend(t.tolist())
        return forward(pipe, z, t, *rest)

    monkeypatch.setattr(rl_module, "_cfg_noise_per_t", spy)
    cfg = _cfg(tmp_path / start, epochs=3, ddim_steps=8, train_timesteps=0.25, train_steps_from=start)
    rl(cfg, progress=False)
    chain = load_pipeline("toyworld").scheduler
    chain.set_timesteps(8)
    first_two = set(chain.timesteps[:2].tolist())
    assert len(trained) == 3 * 4 * 2  # epochs x samples x trained steps
    if start == "first":
        assert set(trained) == first_two
    else:
        assert not set(trained) <= first_two


# Four short epochs, half of each benign, the first quarter of each chain trained, a KL on the benign samples read
# across the whole chain.
KL_CHAIN = dict(
    epochs=4,
    ddim_steps=8,
    train_timesteps=0.25,
    train_steps_from="first",
    kl_weight=0.1,
    kl_on="benign",
    kl_steps="chain",
    benign_fraction=0.5,
)


def _capture_epochs(monkeypatch) -> list:
    """Every epoch's EpochSamples, as the run builds them."""
    import unsee.rl as rl_module

    epochs, real = [], rl_module.EpochSamples

    def keep(*a, **k):
        epochs.append(real(*a, **k))
        return epochs[-1]

    monkeypatch.setattr(rl_module, "EpochSamples", keep)
    return epochs


@needs_world
def test_kl_steps_chain_trains_the_benign_samples_across_the_whole_chain(tmp_path, monkeypatch):
    """With --train-steps-from first the adapter still acts at the late steps; --kl-steps chain draws the steps of the
    samples the KL reads (here the benign ones) from the whole chain, and leaves the unsafe ones at the first."""
    epochs = _capture_epochs(monkeypatch)
    cfg = _cfg(tmp_path / "chain", **KL_CHAIN)
    rl(cfg, progress=False)
    benign = [s.tolist() for e in epochs for s, b in zip(e.steps, e.kl_reads.tolist(), strict=True) if b]
    unsafe = [s.tolist() for e in epochs for s, b in zip(e.steps, e.kl_reads.tolist(), strict=True) if not b]
    assert len(benign) == len(unsafe) == 4 * 2
    assert all(set(s) <= {0, 1} for s in unsafe)
    assert any(max(s) >= 2 for s in benign) and all(len(s) == 2 for s in benign)


@needs_world
def test_kl_after_trains_on_the_reward_alone_then_holds_the_benign_samples(tmp_path, monkeypatch):
    """--kl-after 2: the first two epochs have no KL term (no sample read, every step at the chain's start, no
    kl_to_original logged); from the third the benign samples are read across the chain, and the log gains the
    column without shifting the earlier rows."""
    epochs = _capture_epochs(monkeypatch)
    out = tmp_path / "after"
    cfg = _cfg(out, **KL_CHAIN, kl_after=2)
    rl(cfg, progress=False)
    assert [int(e.kl_reads.sum()) for e in epochs] == [0, 0, 2, 2]
    assert all(set(s.tolist()) <= {0, 1} for e in epochs[:2] for s in e.steps)
    rows = list(csv.DictReader((out / "run" / "epochs.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4] and all(None not in r for r in rows)
    assert [r["kl_to_original"] == "" for r in rows] == [True, True, False, False]
    assert all(float(r["kl_to_original"]) >= 0 for r in rows[2:]) and all(float(r["clipfrac"]) >= 0 for r in rows)
    with pytest.raises(UnseeError, match="--kl-after delays the KL term"):
        _cfg(tmp_path / "x", kl_after=2)


@needs_world
def test_lora_targets_put_the_adapter_only_on_the_named_modules(tmp_path):
    """--lora-targets attn2.to_k attn2.to_v: the saved adapter holds only cross-attention key/value layers, and
    plain diffusers loads it; a target that names no module is refused before any training."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    out = tmp_path / "kv"
    rl(_cfg(out, epochs=1, lora_targets=("attn2.to_k", "attn2.to_v")), progress=False)
    keys = load_file(out / "pytorch_lora_weights.safetensors")
    assert keys and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in keys)
    assert any(".attn2.to_k." in k for k in keys) and any(".attn2.to_v." in k for k in keys)
    StableDiffusionPipeline.from_pretrained(WORLD / PIPELINE).load_lora_weights(out)
    with pytest.raises(UnseeError, match="attn3.to_k names no module"):
        rl(_cfg(tmp_path / "typo", epochs=1, lora_targets=("attn3.to_k",)), progress=False)
    assert not (tmp_path / "typo" / "pytorch_lora_weights.safetensors").exists()


@needs_world
def test_two_processes_gather_rewards_and_end_with_the_same_weights(tmp_path):
    """DDPO on 2 CPU processes: each samples its own trajectories, the epoch's rewards are gathered (both ranks log
    the same mean), and both end with the same LoRA weights."""
    import os
    import subprocess
    import sys

    from conftest import two_cpu_processes

    out = tmp_path / "rl2"
    script = tmp_path / "run_rl.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_rl import _cfg\n"
        "from unsee.runtime import process_state\n"
        "from unsee.rl import rl\n"
        f"summary = rl(_cfg({str(out)!r}), progress=False)\n"
        f"open({str(tmp_path)!r} + f'/rank{{process_state().process_index}}.json', 'w').write(json.dumps(summary))\n"
    )
    r = subprocess.run(
        [sys.executable, *two_cpu_processes(), str(script)],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [s["processes"] for s in ranks] == [2, 2]
    assert ranks[0]["weights_digest"] == ranks[1]["weights_digest"]
    assert (
        ranks[0]["last_epoch"]["reward"] == ranks[1]["last_epoch"]["reward"]
    )  # the gathered mean, not each rank's own
    assert (
        ranks[0]["last_epoch"]["unsafe_prompts_reward"] != ranks[1]["last_epoch"]["unsafe_prompts_reward"]
    )  # own samples
    assert (out / "pytorch_lora_weights.safetensors").exists()
