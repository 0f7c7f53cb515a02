"""Mixed precision and gradient checkpointing: fp32 master weights, loss scaling that skips an overflow, and the
fp32 path's weights unchanged."""

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from unsee.erase import erase
from unsee.errors import UnseeError
from unsee.trainer import TrainConfig, Trainer


def _erase(model, out, **kw):
    from conftest import tiny_erase_config

    return erase(tiny_erase_config(model, out, **kw), progress=False)


@pytest.mark.parametrize("method", ["sdd", "esd"])
def test_the_fp32_path_keeps_its_weights(tiny_model_dir, tmp_path, method):
    """A tiny fp32 SDD and ESD run lands on the weights the code wrote before mixed precision existed.

    tests/data/fp32_erase_*.safetensors hold the trained tensors from that code (the parent of the commit that added
    mixed precision), whose digests matched today's bit for bit on the same CPU. Bits differ between CPUs' kernels,
    so the test allows 1e-3 of the update's own size; a 1% change of the learning rate moves the weights about 1e-2
    of it (checked below)."""
    from safetensors.torch import load_file

    _erase(tiny_model_dir, tmp_path / method, method=method)
    reference = load_file(Path(__file__).parent / "data" / f"fp32_erase_{method}.safetensors")
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir).unet.state_dict()
    out = StableDiffusionPipeline.from_pretrained(tmp_path / method).unet.state_dict()
    assert {k for k in base if not torch.equal(base[k], out[k])} == set(reference)

    def norm(tensors):
        return float(sum((t.double() ** 2).sum() for t in tensors) ** 0.5)

    update = norm(reference[k] - base[k] for k in reference)
    assert update > 0 and norm(out[k] - reference[k] for k in reference) <= 1e-3 * update
    # the tolerance sees a small change of the maths: 1% more learning rate lands about 1e-2 of the update away
    _erase(tiny_model_dir, tmp_path / "lr", method=method, lr=1.01e-3)
    nudged = StableDiffusionPipeline.from_pretrained(tmp_path / "lr").unet.state_dict()
    assert norm(nudged[k] - reference[k] for k in reference) > 3e-3 * update


@pytest.mark.parametrize("method", ["sdd", "esd"])
def test_bf16_trains_fp32_master_weights_and_saves_the_frozen_ones_untouched(tiny_model_dir, tmp_path, method):
    summary = _erase(tiny_model_dir, tmp_path / "out", method=method, mixed_precision="bf16")
    assert summary["mixed_precision"] == "bf16" and summary["skipped_steps"] == 0
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir).unet.state_dict()
    out = StableDiffusionPipeline.from_pretrained(tmp_path / "out").unet.state_dict()
    assert all(v.dtype == torch.float32 for v in out.values())
    changed = {k for k in base if not torch.equal(base[k], out[k])}
    # only cross-attention trained, and every frozen weight is the base model's own, not a bf16 round trip of it
    assert changed and all(".attn2." in k for k in changed)


def test_gradient_checkpointing_checkpoints_the_unet_and_changes_no_update(tiny_model_dir, tmp_path, monkeypatch):
    import torch.utils.checkpoint as ckpt

    real, calls = ckpt.checkpoint, []

    def counting(*a, **kw):  # diffusers' blocks call torch.utils.checkpoint.checkpoint when checkpointing is on
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(ckpt, "checkpoint", counting)
    digests = {}
    for flag in (False, True):
        calls.clear()
        digests[flag] = _erase(tiny_model_dir, tmp_path / str(flag), method="esd", gradient_checkpointing=flag)[
            "weights_digest"
        ]
        assert bool(calls) == flag
    assert digests[True] == digests[False]  # it recomputes activations, it does not change the maths


class _Blowup:
    """One parameter; at one step the loss's gradient is not finite (once scaled, for fp16), otherwise ordinary."""

    def __init__(self, overflow_at: int, kind: str):
        self.p = torch.nn.Parameter(torch.ones(4))
        self.overflow_at, self.kind, self.seen = overflow_at, kind, []

    def parameters(self):
        return {"p": self.p}

    def loss(self, step, micro, g):
        if step == self.overflow_at:
            if self.kind == "fp16":  # a finite loss that the scaler's 65536 times overflows, and its gradients with it
                return (self.p * 1e34).sum(), {}
            return torch.sqrt(self.p - self.p.detach()).sum(), {}  # loss 0, gradient infinite
        return (self.p**2).sum(), {}

    def on_step_end(self, trainer, step):
        self.seen.append(self.p.detach().clone())


@pytest.mark.parametrize("precision", ["fp16", "no"])
def test_a_step_whose_gradient_is_not_finite_is_skipped_and_counted(tmp_path, precision):
    method = _Blowup(overflow_at=1, kind="fp16" if precision == "fp16" else "sqrt")
    result = Trainer(
        method,
        TrainConfig(steps=4, lr=0.1, grad_clip=0, checkpoint_every=0, mixed_precision=precision),
        tmp_path / precision,
        progress=False,
    ).run()
    assert result.skipped_steps == 1
    assert torch.equal(method.seen[1], method.seen[0])  # step 1 was not applied
    assert not torch.equal(method.seen[2], method.seen[1]) and torch.isfinite(method.p).all()  # training went on
    log = (tmp_path / precision / "train_log.csv").read_text()
    assert "skipped_steps" in log.splitlines()[0]


def test_uce_refuses_the_training_levers(tiny_model_dir, tmp_path):
    with pytest.raises(UnseeError, match="uce trains nothing"):
        _erase(tiny_model_dir, tmp_path / "u", method="uce", concept=("red",), anchor="blue", mixed_precision="bf16")


def test_a_v_prediction_pipeline_runs_erase_invert_and_rl_in_bf16_with_checkpointing(tiny_vpred_dir, tmp_path):
    """SD 2.x-style (v-prediction) end to end through every training command, with both levers on."""
    from conftest import flagged_image_set
    from unsee.invert import InvertConfig, invert
    from unsee.rl import RLConfig, rl

    levers = dict(mixed_precision="bf16", gradient_checkpointing=True)
    summary = _erase(tiny_vpred_dir, tmp_path / "erase", method="sdd", **levers)
    assert summary["skipped_steps"] == 0 and (tmp_path / "erase" / "model_index.json").exists()

    images, fb = flagged_image_set(tiny_vpred_dir, tmp_path, 2)
    prompts = tmp_path / "p.txt"  # the set's prompts, the rl run's too
    token = tmp_path / "t.safetensors"
    s = invert(
        InvertConfig(
            model=str(tiny_vpred_dir),
            images=str(images),
            feedback=str(fb),
            out=str(token),
            init_word="cat",
            top_k=2,
            steps=2,
            batch_size=2,
            device="cpu",
            **levers,
        ),
        progress=False,
    )
    assert token.exists() and s["mixed_precision"] == "bf16" and s["skipped_steps"] == 0

    out = tmp_path / "rl"
    s = rl(
        RLConfig(
            model=str(tiny_vpred_dir),
            prompts=str(prompts),
            out=str(out),
            reward="clip",
            clip="toyworld",  # a tiny model's images, scored by a CLIP that needs no download
            epochs=1,
            samples_per_epoch=2,
            sample_batch=2,
            train_batch=2,
            ddim_steps=3,
            train_timesteps=0.5,
            checkpoint_every=1,
            device="cpu",
            **levers,
        ),
        progress=False,
    )
    assert s["mixed_precision"] == "bf16" and (out / "pytorch_lora_weights.safetensors").exists()


def test_the_8bit_optimizer_is_refused_on_a_cpu_with_one_line_and_nothing_written(tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from unsee.cli import cli

    out = tmp_path / "e"
    r = CliRunner().invoke(
        cli,
        [
            "erase",
            "--model",
            str(tiny_model_dir),
            "--concept",
            "a red cat",
            "--out",
            str(out),
            "--steps",
            "2",
            "--reuse",
            "2",
            "--checkpoint-every",
            "2",
            "--device",
            "cpu",
            "--optimizer",
            "adamw8bit",
        ],
    )
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "--optimizer adamw" in r.output, r.output
    assert not out.exists()


def test_a_fresh_trajectory_per_update_is_sampled_only_up_to_its_step(tiny_model_dir, tmp_path, monkeypatch):
    """--reuse 1 (the published recipes' fresh trajectory every update) stops sampling at the trained step: the same
    update as sampling the whole trajectory, for fewer UNet passes."""
    from unsee.erase import EraseMethod

    short = _erase(tiny_model_dir, tmp_path / "short", method="sdd", reuse=1, ddim_steps=10)
    real = EraseMethod.trajectories
    monkeypatch.setattr(EraseMethod, "trajectories", lambda self, g, cond, stop=None: real(self, g, cond))
    full = _erase(tiny_model_dir, tmp_path / "full", method="sdd", reuse=1, ddim_steps=10)
    assert short["weights_digest"] == full["weights_digest"]
    assert short["unet_passes_per_update"] < full["unet_passes_per_update"]
