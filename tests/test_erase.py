"""SDD and ESD on tiny pipelines: output formats, what changes, exact resume, and that SDD moves eps(c) to eps(0)."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from unsee.erase import EraseConfig, erase
from unsee.errors import UnseeError


def _cfg(model, out, **kw):
    base = dict(model=str(model), out=str(out), concept=("a red cat",), steps=4, reuse=2, checkpoint_every=2,
                ddim_steps=5, lr=1e-3, device="cpu", batch_size=2)
    base.update(kw)
    return EraseConfig(**base)


def _gap(pipe, prompt="a red cat"):
    """|| eps(z, t, c) - eps(z, t, 0) || on fixed inputs: what SDD drives to zero for the concept."""
    from unsee.sampling import encode_text

    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(8, 4, 8, 8, generator=g), torch.randint(0, 1000, (8,), generator=g)
    c, u = encode_text(pipe, [prompt] * 8), encode_text(pipe, [""] * 8)
    with torch.no_grad():
        return float((pipe.unet(z, t, encoder_hidden_states=c).sample - pipe.unet(z, t, encoder_hidden_states=u).sample).norm())


def test_sdd_writes_a_pipeline_that_changes_only_cross_attention(tiny_model_dir, tmp_path):
    out = tmp_path / "sdd"
    summary = erase(_cfg(tiny_model_dir, out), progress=False)
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    erased = StableDiffusionPipeline.from_pretrained(out)
    a, b = base.unet.state_dict(), erased.unet.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(".attn2." in k for k in changed)
    assert torch.equal(base.text_encoder.get_input_embeddings().weight, erased.text_encoder.get_input_embeddings().weight)
    info = json.loads((out / "unsee.json").read_text())
    assert info["config"]["method"] == "sdd" and info["config"]["concept"] == ["a red cat"] and info["base_model"]
    assert summary["unet_passes_per_update"] > 0


def test_esd_lora_loads_with_load_lora_weights(tiny_model_dir, tmp_path):
    out = tmp_path / "esd"
    erase(_cfg(tiny_model_dir, out, method="esd", params="lora", lr=1e-2), progress=False)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    before = _gap(pipe)
    pipe.load_lora_weights(out)
    assert _gap(pipe) != pytest.approx(before, rel=1e-6)


def test_resume_after_a_kill_gives_the_same_weights(tiny_model_dir, tmp_path, monkeypatch):
    import unsee.trainer as tr

    full = tmp_path / "full"
    erase(_cfg(tiny_model_dir, full, steps=6), progress=False)
    real = tr.save_checkpoint

    def save_then_die(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "save_checkpoint", save_then_die)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        erase(_cfg(tiny_model_dir, killed, steps=6), progress=False)
    monkeypatch.setattr(tr, "save_checkpoint", real)
    erase(_cfg(tiny_model_dir, killed, steps=6), progress=False)
    a = StableDiffusionPipeline.from_pretrained(full).unet.state_dict()
    b = StableDiffusionPipeline.from_pretrained(killed).unet.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_sdd_pulls_the_concept_to_the_unconditional(tiny_model_dir, tmp_path):
    out = tmp_path / "sdd"
    erase(_cfg(tiny_model_dir, out, steps=40, reuse=8, checkpoint_every=40, lr=3e-3, ema_decay=0.5), progress=False)
    base, erased = StableDiffusionPipeline.from_pretrained(tiny_model_dir), StableDiffusionPipeline.from_pretrained(out)
    assert _gap(erased) < 0.5 * _gap(base)


def test_a_learned_token_can_be_the_concept(tiny_model_dir, tmp_path):
    from unsee.invert import save_embedding

    tok = save_embedding(tmp_path / "t.safetensors", "<flagged>", torch.randn(2, 32))
    out = tmp_path / "sdd"
    summary = erase(_cfg(tiny_model_dir, out, concept=(), token=str(tok)), progress=False)
    assert summary["concepts"] == ["<flagged>"]
    assert "<flagged>" not in StableDiffusionPipeline.from_pretrained(out).tokenizer.get_vocab()


@pytest.mark.parametrize("kw, message", [
    ({"concept": (), "token": None}, "give --concept"),
    ({"token": "t.safetensors"}, "not both"),
    ({"checkpoint_every": 3}, "multiple of --reuse"),
    ({"steps": 0}, "--steps must be >= 1"),
])
def test_bad_settings(tiny_model_dir, tmp_path, kw, message):
    with pytest.raises(UnseeError, match=message):
        _cfg(tiny_model_dir, tmp_path / "o", **kw)
