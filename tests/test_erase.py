"""SDD and ESD on tiny pipelines: output formats, what changes, exact resume, and that SDD moves eps(c) to eps(0)."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from conftest import tiny_erase_config, two_cpu_processes
from unsee.erase import erase
from unsee.errors import UnseeError


def _cfg(model, out, **kw):
    return tiny_erase_config(model, out, **kw)


def _gap(pipe, prompt="a red cat"):
    """|| eps(z, t, c) - eps(z, t, 0) || on fixed inputs: what SDD drives to zero for the concept."""
    from unsee.sampling import encode_text

    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(8, 4, 8, 8, generator=g), torch.randint(0, 1000, (8,), generator=g)
    c, u = encode_text(pipe, [prompt] * 8), encode_text(pipe, [""] * 8)
    with torch.no_grad():
        return float(
            (pipe.unet(z, t, encoder_hidden_states=c).sample - pipe.unet(z, t, encoder_hidden_states=u).sample).norm()
        )


def test_sdd_writes_a_pipeline_that_changes_only_cross_attention(tiny_model_dir, tmp_path):
    out = tmp_path / "sdd"
    summary = erase(_cfg(tiny_model_dir, out), progress=False)
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    erased = StableDiffusionPipeline.from_pretrained(out)
    a, b = base.unet.state_dict(), erased.unet.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(".attn2." in k for k in changed)
    assert torch.equal(
        base.text_encoder.get_input_embeddings().weight, erased.text_encoder.get_input_embeddings().weight
    )
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


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"method": "esd", "preserve": ("a blue house",), "preserve_on": "own"},
        {"context": ("{} at night", "a photo of {}"), "anchor": "a blue dog"},
        {"method": "esd", "flagged": ("a scary animal", "a dark night")},
        {"method": "esd", "preserve": ("a blue house",), "preserve_on": "kv", "params": "xattn-kv"},
        {"method": "esd", "preserve": ("a blue house",), "preserve_on": "null", "null_energy": 0.9},
    ],
)
def test_resume_after_a_kill_gives_the_same_weights(tiny_model_dir, tmp_path, monkeypatch, kw):
    """Also with the kept prompts' own trajectories, which a resumed run samples again from the original model,
    and with their original keys and values, which it must take from the original weights, not the checkpoint's."""
    import unsee.trainer as tr

    full = tmp_path / "full"
    erase(_cfg(tiny_model_dir, full, steps=6, **kw), progress=False)
    real = tr.save_checkpoint

    def save_then_die(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "save_checkpoint", save_then_die)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        erase(_cfg(tiny_model_dir, killed, steps=6, **kw), progress=False)
    monkeypatch.setattr(tr, "save_checkpoint", real)
    erase(_cfg(tiny_model_dir, killed, steps=6, **kw), progress=False)
    a = StableDiffusionPipeline.from_pretrained(full).unet.state_dict()
    b = StableDiffusionPipeline.from_pretrained(killed).unet.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_sdd_pulls_the_concept_to_the_unconditional(tiny_model_dir, tmp_path):
    out = tmp_path / "sdd"
    erase(_cfg(tiny_model_dir, out, steps=40, reuse=8, checkpoint_every=40, lr=3e-3, ema_decay=0.5), progress=False)
    base, erased = StableDiffusionPipeline.from_pretrained(tiny_model_dir), StableDiffusionPipeline.from_pretrained(out)
    assert _gap(erased) < 0.5 * _gap(base)


@pytest.mark.parametrize("method", ["sdd", "esd"])
def test_an_anchor_replaces_the_concept_instead_of_emptying_it(tiny_model_dir, tmp_path, method):
    """With --anchor the concept's prediction moves toward the anchor's, not toward the empty prompt's."""
    from unsee.sampling import encode_text

    def distances(pipe):  # ||eps(z, t, c) - eps_original(z, t, anchor)|| on fixed inputs
        g = torch.Generator().manual_seed(0)
        z, t = torch.randn(8, 4, 8, 8, generator=g), torch.randint(0, 1000, (8,), generator=g)
        with torch.no_grad():
            e = {
                p: m.unet(z, t, encoder_hidden_states=encode_text(m, [p] * 8)).sample
                for p, m in (("a red cat", pipe), ("a blue dog", base))
            }
        return float((e["a red cat"] - e["a blue dog"]).norm())

    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    # ESD at eta 0: its target is then the anchor's prediction itself (eta > 0 mirrors the concept through it)
    kw = dict(steps=40, reuse=8, checkpoint_every=40, lr=3e-3, method=method) | (
        {"ema_decay": 0.5} if method == "sdd" else {"guidance": 0.0}
    )
    erase(_cfg(tiny_model_dir, tmp_path / "a", anchor="a blue dog", **kw), progress=False)
    erase(_cfg(tiny_model_dir, tmp_path / "e", **kw), progress=False)
    to_anchor = distances(StableDiffusionPipeline.from_pretrained(tmp_path / "a"))
    plain = distances(StableDiffusionPipeline.from_pretrained(tmp_path / "e"))  # the same run toward the empty prompt
    assert to_anchor < 0.7 * distances(base) and to_anchor < plain
    assert json.loads((tmp_path / "a" / "unsee.json").read_text())["config"]["anchor"] == "a blue dog"


@pytest.mark.parametrize("preserve_on, params", [("concept", "xattn"), ("own", "xattn"), ("kv", "xattn-kv")])
def test_preserve_prompts_keep_their_predictions_closer_to_the_original(tiny_model_dir, tmp_path, preserve_on, params):
    """Erasing hard moves other prompts too (over-erasure); the --preserve term holds them near the original,
    compared on the concept's latents, on the kept prompts' own trajectories, or on their cross-attention keys and
    values (with only those projections training)."""
    keep = tmp_path / "keep.txt"
    keep.write_text("a blue house at night\na green tree on a mountain\n")
    kw = dict(steps=40, reuse=8, checkpoint_every=40, lr=3e-3, ema_decay=0.5, params=params)
    erase(_cfg(tiny_model_dir, tmp_path / "plain", **kw), progress=False)
    summary = erase(
        _cfg(
            tiny_model_dir,
            tmp_path / "kept",
            preserve=(f"@{keep}",),
            preserve_weight=10.0,
            preserve_on=preserve_on,
            **kw,
        ),
        progress=False,
    )
    assert {"erase_loss", "keep_loss"} <= set(summary["final"])

    def drift(folder, prompt):
        from unsee.sampling import encode_text

        base, other = (
            StableDiffusionPipeline.from_pretrained(tiny_model_dir),
            StableDiffusionPipeline.from_pretrained(folder),
        )
        g = torch.Generator().manual_seed(1)
        z, t = torch.randn(8, 4, 8, 8, generator=g), torch.randint(0, 1000, (8,), generator=g)
        with torch.no_grad():
            a = base.unet(z, t, encoder_hidden_states=encode_text(base, [prompt] * 8)).sample
            b = other.unet(z, t, encoder_hidden_states=encode_text(other, [prompt] * 8)).sample
        return float((a - b).norm())

    for prompt in ("a blue house at night", "a green tree on a mountain"):
        assert drift(tmp_path / "kept", prompt) < 0.5 * drift(tmp_path / "plain", prompt)
    assert _gap(StableDiffusionPipeline.from_pretrained(tmp_path / "kept")) < _gap(
        StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    )


def test_null_space_constraint_holds_the_kept_states_and_still_erases(tiny_model_dir, tmp_path):
    """--preserve-on null: every change to the keys' and values' weights lies off the kept states' main directions,
    so their keys and values move far less than in a plain run, while the concept is still pulled in."""
    from unsee.erase import _null_projector
    from unsee.sampling import encode_text
    from unsee.uce import distinct_states

    kept = ["a blue house at night", "a green tree on a mountain"]
    kw = dict(method="esd", steps=40, reuse=8, checkpoint_every=40, lr=3e-3, params="xattn-kv")
    erase(_cfg(tiny_model_dir, tmp_path / "plain", **kw), progress=False)
    summary = erase(
        _cfg(tiny_model_dir, tmp_path / "null", preserve=tuple(kept), preserve_on="null", null_energy=0.95, **kw),
        progress=False,
    )
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    states = encode_text(base, kept)
    proj, rank = _null_projector(distinct_states(states), 0.95)
    assert 0 < rank < len(proj)
    info = summary["null_space"]
    assert (
        info["held"] == f"{rank} of {len(proj)}"
        and 0 < info["free_share_kept"] < 0.05 + 1e-9 < info["free_share_concept"]
    )
    w0 = base.unet.state_dict()

    def kv_drift(folder):
        w = StableDiffusionPipeline.from_pretrained(folder).unet.state_dict()
        names = [k for k in w0 if ".attn2.to_k." in k or ".attn2.to_v." in k]
        for k in names:  # the saved change is already projected: projecting it again changes nothing
            if folder.name == "null":
                assert torch.allclose((w[k] - w0[k]) @ proj, w[k] - w0[k], atol=1e-6)
        return sum(float(((w[k] - w0[k]) @ states[0].T).norm() / (w0[k] @ states[0].T).norm()) for k in names)

    assert kv_drift(tmp_path / "null") < 0.3 * kv_drift(tmp_path / "plain")
    assert _gap(StableDiffusionPipeline.from_pretrained(tmp_path / "null")) < _gap(base)


def test_a_learned_token_can_be_the_concept(tiny_model_dir, tmp_path):
    from unsee.invert import save_embedding

    tok = save_embedding(tmp_path / "t.safetensors", "<flagged>", torch.randn(2, 32))
    out = tmp_path / "sdd"
    summary = erase(_cfg(tiny_model_dir, out, concept=(), token=str(tok)), progress=False)
    assert summary["concepts"] == ["<flagged>"]
    assert "<flagged>" not in StableDiffusionPipeline.from_pretrained(out).tokenizer.get_vocab()


def test_a_word_and_a_learned_token_are_erased_together(tiny_model_dir, tmp_path):
    """--concept and --token at once: the word where a prompt names the concept, the token where the feedback saw it."""
    from unsee.invert import save_embedding

    tok = save_embedding(tmp_path / "t.safetensors", "<flagged>", torch.randn(2, 32))
    out = tmp_path / "sdd"
    summary = erase(
        _cfg(tiny_model_dir, out, token=str(tok), steps=40, reuse=8, checkpoint_every=40, lr=3e-3, ema_decay=0.5),
        progress=False,
    )
    assert summary["concepts"] == ["a red cat", "<flagged>"]
    base, erased = StableDiffusionPipeline.from_pretrained(tiny_model_dir), StableDiffusionPipeline.from_pretrained(out)
    for pipe in (base, erased):
        pipe.load_textual_inversion(str(tok), token="<flagged>")
    for prompt in ("a red cat", "<flagged>"):
        assert _gap(erased, prompt) < 0.5 * _gap(base, prompt)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"concept": (), "token": None}, "give --concept"),
        ({"checkpoint_every": 3}, "multiple of --reuse"),
        ({"steps": 0}, "--steps must be >= 1"),
        ({"preserve_on": "kv", "params": "noxattn", "preserve": ("a dog",)}, "holds the cross-attention keys"),
        ({"preserve_on": "null", "params": "lora", "preserve": ("a dog",)}, "holds the cross-attention keys"),
        ({"preserve_on": "null"}, "needs the prompts to keep"),
        ({"null_energy": 0}, "--null-energy must be in"),
        ({"method": "uce", "params": "lora"}, "--params lora does not apply"),
        ({"method": "uce", "context": ("a cat",)}, "must hold {} once"),
        ({"context": ("a {} cat with a {}",)}, "must hold {} once"),
        ({"method": "uce", "preserve": ("a dog",), "preserve_on": "own"}, "--preserve-on does not apply"),
        ({"method": "uce", "flagged": ("a scary animal",)}, "--flagged prompts do not hold"),
        ({"flagged": ("a {} animal",)}, "flagged prompts are whole prompts"),
        ({"flagged": ("a scary animal",), "flagged_guidance": -1}, "--flagged-guidance must be >= 0"),
    ],
)
def test_bad_settings(tiny_model_dir, tmp_path, kw, message):
    with pytest.raises(UnseeError, match=message):
        _cfg(tiny_model_dir, tmp_path / "o", **kw)


def test_two_processes_under_accelerate_end_with_the_same_weights(tiny_model_dir, tmp_path):
    """ESD-x on 2 CPU processes: each rank reports the digest of its own final weights; both equal the saved ones."""
    import os
    import subprocess
    import sys

    from unsee.trainer import weights_digest

    out = tmp_path / "acc"
    script = tmp_path / "run_erase.py"
    script.write_text(
        "import json, sys\n"
        "from accelerate import PartialState\n"
        "from unsee.erase import EraseConfig, erase\n"
        f"cfg = EraseConfig(model={str(tiny_model_dir)!r}, out={str(out)!r}, method='esd', concept=('a red cat',), steps=4,\n"
        "                  reuse=2, checkpoint_every=2, ddim_steps=5, lr=1e-3, device='cpu', batch_size=2)\n"
        "summary = erase(cfg, progress=False)\n"
        f"open({str(tmp_path)!r} + f'/rank{{PartialState().process_index}}.json', 'w').write(json.dumps(summary))\n"
    )
    cmd = [sys.executable, *two_cpu_processes(), str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [s["processes"] for s in ranks] == [2, 2]
    assert ranks[0]["weights_digest"] == ranks[1]["weights_digest"]
    saved = StableDiffusionPipeline.from_pretrained(out).unet.state_dict()
    trained = {f"param.{k}": v for k, v in saved.items() if ".attn2." in k}
    assert weights_digest(trained) == ranks[1]["weights_digest"]
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir).unet.state_dict()
    assert any(not torch.equal(base[k[len("param.") :]], v) for k, v in trained.items())  # it did train


def _kv_and_eps(folder, prompt, base_folder=None):
    """Every cross-attention key and value of `prompt` (concatenated), and eps on fixed inputs, from a pipeline folder."""
    from unsee.sampling import encode_text

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    c = encode_text(pipe, [prompt])
    g = torch.Generator().manual_seed(2)
    z, t = torch.randn(4, 4, 8, 8, generator=g), torch.randint(0, 1000, (4,), generator=g)
    with torch.no_grad():
        kv = torch.cat(
            [
                getattr(m, p)(c).flatten()
                for n, m in pipe.unet.named_modules()
                if n.endswith("attn2")
                for p in ("to_k", "to_v")
            ]
        )
        eps = pipe.unet(z, t, encoder_hidden_states=c.expand(4, -1, -1)).sample
    return kv, eps


def test_uce_reads_the_concept_as_its_anchor_where_it_sits_and_keeps_the_rest(tiny_model_dir, tmp_path):
    """--method uce: a closed-form edit of the keys and values only. Where a context prompt holds the concept, the
    edited model's keys and values (and so its prediction) for it become the original's for the anchor in that
    place; a kept prompt moves far less than the concept; without the context the bare-word edit reaches that
    prompt less."""
    kw = dict(method="uce", concept=("red",), anchor="blue", preserve=("a green tree on a mountain",))
    summary = erase(_cfg(tiny_model_dir, tmp_path / "ctx", context=("a {} cat at night",), **kw), progress=False)
    erase(_cfg(tiny_model_dir, tmp_path / "bare", **kw), progress=False)
    assert summary["method"] == "uce" and summary["uce"]["edit_residual"] < 0.3 and summary["uce"]["keep_drift"] < 0.1
    base, edited = (
        StableDiffusionPipeline.from_pretrained(tiny_model_dir),
        StableDiffusionPipeline.from_pretrained(tmp_path / "ctx"),
    )
    a, b = base.unet.state_dict(), edited.unet.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in changed)
    info = json.loads((tmp_path / "ctx" / "unsee.json").read_text())
    assert info["config"]["context"] == ["a {} cat at night"] and info["summary"]["uce"] == summary["uce"]

    kv_anchor, eps_anchor = _kv_and_eps(tiny_model_dir, "a blue cat at night")
    kv_base, eps_base = _kv_and_eps(tiny_model_dir, "a red cat at night")
    kv_ctx, eps_ctx = _kv_and_eps(tmp_path / "ctx", "a red cat at night")
    kv_bare, _ = _kv_and_eps(tmp_path / "bare", "a red cat at night")
    assert (kv_ctx - kv_anchor).norm() < 0.3 * (kv_base - kv_anchor).norm()
    assert (eps_ctx - eps_anchor).norm() < 0.3 * (eps_base - eps_anchor).norm()
    assert (kv_ctx - kv_anchor).norm() < (kv_bare - kv_anchor).norm()
    kept_base, _ = _kv_and_eps(tiny_model_dir, "a green tree on a mountain")
    kept_now, _ = _kv_and_eps(tmp_path / "ctx", "a green tree on a mountain")
    assert (kept_now - kept_base).norm() < 0.15 * (kv_ctx - kv_base).norm()


def test_uce_without_prompts_to_keep_keeps_the_empty_prompt(tiny_model_dir, tmp_path):
    """As UCE's code: with no --preserve, every state of the empty prompt is held, so classifier-free guidance's
    unconditional branch reads as before (the padding rows the edit runs through would otherwise move it by ~26%)."""
    from unsee.uce import text_states

    summary = erase(
        _cfg(
            tiny_model_dir,
            tmp_path / "u",
            method="uce",
            concept=("red",),
            anchor="blue",
            context=("a {} cat at night",),
        ),
        progress=False,
    )
    base, edited = (StableDiffusionPipeline.from_pretrained(p) for p in (tiny_model_dir, tmp_path / "u"))
    empty = text_states(base, [""])[1][0].float()

    def values(pipe):
        return torch.cat([m.to_v(empty) for n, m in pipe.unet.named_modules() if n.endswith("attn2")], 1)

    with torch.no_grad():
        drift = float((values(edited) - values(base)).norm() / values(base).norm())
    assert drift < 0.08 and abs(drift - summary["uce"]["empty_prompt_drift"]) < 0.02
    assert summary["uce"]["edit_residual"] < 0.1


def test_uce_keyed_on_a_learned_token(tiny_model_dir, tmp_path):
    """HFI with the closed form: the token's keys and values become the anchor's; the output has no token."""
    from unsee.invert import save_embedding

    tok = save_embedding(tmp_path / "t.safetensors", "<flagged>", torch.randn(1, 32))
    summary = erase(
        _cfg(tiny_model_dir, tmp_path / "u", method="uce", concept=(), token=str(tok), anchor="a dog"), progress=False
    )
    assert summary["concepts"] == ["<flagged>"] and summary["uce"]["edit_residual"] < 0.5
    assert "<flagged>" not in StableDiffusionPipeline.from_pretrained(tmp_path / "u").tokenizer.get_vocab()


def test_uce_refuses_a_concept_that_adds_no_token(tiny_model_dir, tmp_path):
    with pytest.raises(UnseeError, match="adds no token"):
        erase(_cfg(tiny_model_dir, tmp_path / "u", method="uce", concept=("",), anchor="a dog"), progress=False)
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize("method", ["sdd", "esd"])
def test_context_trains_the_concept_where_it_sits(tiny_model_dir, tmp_path, method):
    """--context: trained on "a red cat at night" toward the original's "a blue dog at night", the model's prediction
    for that prompt moves to the anchor's further than the same run trained on the bare concept."""
    kw = dict(steps=40, reuse=8, checkpoint_every=40, lr=3e-3, method=method, anchor="a blue dog") | (
        {"ema_decay": 0.5} if method == "sdd" else {"guidance": 0.0}
    )
    erase(_cfg(tiny_model_dir, tmp_path / "ctx", context=("{} at night",), **kw), progress=False)
    erase(_cfg(tiny_model_dir, tmp_path / "bare", **kw), progress=False)
    _, anchor = _kv_and_eps(tiny_model_dir, "a blue dog at night")
    _, base = _kv_and_eps(tiny_model_dir, "a red cat at night")
    _, ctx = _kv_and_eps(tmp_path / "ctx", "a red cat at night")
    _, bare = _kv_and_eps(tmp_path / "bare", "a red cat at night")
    assert (ctx - anchor).norm() < 0.7 * (base - anchor).norm() and (ctx - anchor).norm() < (bare - anchor).norm()


@pytest.mark.parametrize("method", ["sdd", "esd"])
def test_flagged_prompts_move_off_the_concept(tiny_model_dir, tmp_path, method):
    """--flagged: a prompt that never names the concept is trained toward the original's prediction for it pushed
    away from the concept named after it, eps*(p) - eta (eps*(p c) - eps*(p)); the concept-only run leaves it further
    from that target."""
    kw = dict(steps=40, reuse=8, checkpoint_every=40, lr=1e-3, method=method, flagged_guidance=2.0) | (
        {"ema_decay": 0.5} if method == "sdd" else {"guidance": 0.0}
    )
    flagged = "a scary animal at night"
    summary = erase(_cfg(tiny_model_dir, tmp_path / "flag", flagged=(flagged,), **kw), progress=False)
    erase(_cfg(tiny_model_dir, tmp_path / "plain", **kw), progress=False)
    _, p = _kv_and_eps(tiny_model_dir, flagged)
    _, pc = _kv_and_eps(tiny_model_dir, f"{flagged} a red cat")
    target = p - 2.0 * (pc - p)
    _, flag = _kv_and_eps(tmp_path / "flag", flagged)
    _, plain = _kv_and_eps(tmp_path / "plain", flagged)
    assert (flag - target).norm() < 0.8 * (p - target).norm() and (flag - target).norm() < 0.8 * (plain - target).norm()
    info = json.loads((tmp_path / "flag" / "unsee.json").read_text())
    assert info["config"]["flagged"] == [flagged] and summary["unet_passes_per_update"] > 0


def test_flagged_prompts_move_off_the_concept_toward_the_anchor(tiny_model_dir, tmp_path):
    """With --anchor, a flagged prompt's base is itself with the anchor named after it: eps*(p a) - eta (eps*(p c) -
    eps*(p a)), so a prompt that already draws the concept is moved toward the anchor, not held where it was."""
    kw = dict(steps=40, reuse=8, checkpoint_every=40, lr=1e-3, ema_decay=0.5, flagged_guidance=2.0)
    flagged = "a scary animal at night"
    erase(_cfg(tiny_model_dir, tmp_path / "flag", flagged=(flagged,), anchor="a blue dog", **kw), progress=False)
    _, pa = _kv_and_eps(tiny_model_dir, f"{flagged} a blue dog")
    _, pc = _kv_and_eps(tiny_model_dir, f"{flagged} a red cat")
    _, p = _kv_and_eps(tiny_model_dir, flagged)
    target, unanchored = pa - 2.0 * (pc - pa), p - 2.0 * (pc - p)
    _, flag = _kv_and_eps(tmp_path / "flag", flagged)
    assert (flag - target).norm() < 0.8 * (p - target).norm() and (flag - target).norm() < (flag - unanchored).norm()


def test_with_a_word_a_token_and_flagged_prompts_the_word_keys_the_contexts_and_the_token_the_flagged(tmp_path):
    """The word where a prompt names the concept, the token where it shows it unnamed; without flagged prompts both
    key every context."""
    from unsee.erase import EraseConfig, row_keys, training_prompts

    def cfg(**kw):
        return EraseConfig(model="m", out=str(tmp_path / "o"), concept=("skull",), context=("a {} at night",), **kw)

    both = cfg(token=str(tmp_path / "t.safetensors"), flagged=("a spooky night",), anchor="mask")
    assert row_keys(both, ["skull", "<t>"]) == (["skull"], ["<t>"])
    assert training_prompts(both, ["skull", "<t>"]) == sorted(
        ["a skull at night", "a mask at night", "a spooky night", "a spooky night <t>", "a spooky night mask"]
    )
    no_flagged = cfg(token=str(tmp_path / "t.safetensors"))
    assert row_keys(no_flagged, ["skull", "<t>"]) == (["skull", "<t>"], ["skull", "<t>"])
    assert row_keys(cfg(flagged=("a spooky night",)), ["skull"]) == (["skull"], ["skull"])


@pytest.mark.parametrize("anchor", ["blue", "a very blue", ""])
def test_uce_rows_run_from_the_concept_through_the_padding_aligned_on_its_end(tiny_model_dir, anchor):
    """With a text encoder that mixes context (the tiny one has layers), the states after the concept carry it: the
    edit rows run from the concept's first token to the end, each toward the anchor prompt's state aligned on the
    concept's last token (UCE's alignment); a longer anchor leaves the concept's last padding rows without a partner."""
    from unsee.sampling import encode_text
    from unsee.uce import edit_rows, fill

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    n = {w: len(pipe.tokenizer(w).input_ids) - 2 for w in ("a", "red", anchor)}  # tokens without start and end
    c, t, keep = edit_rows(pipe, ["red"], anchor, ["a {} cat"])
    length, p, shift = pipe.tokenizer.model_max_length, 1 + n["a"], n[anchor] - n["red"]
    assert len(c) == len(t) == length - p - max(0, shift)
    states = encode_text(pipe, ["a red cat", fill("a {} cat", anchor)]).double()
    assert torch.allclose(c, states[0, p : p + len(c)])
    assert torch.allclose(t[-1], states[1, p + len(c) - 1 + shift])  # the last row's partner, aligned on the end
    assert torch.allclose(keep[:p], states[0, :p])  # the context before the concept is held


@pytest.mark.parametrize(
    "concept, anchor, message", [("red", "red", "are the same tokens"), ("red", "red dog", "adds no token of its own")]
)
def test_uce_refuses_an_anchor_that_is_or_holds_the_concept(tiny_model_dir, tmp_path, concept, anchor, message):
    with pytest.raises(UnseeError, match=message):
        erase(
            _cfg(tiny_model_dir, tmp_path / "u", method="uce", concept=(concept,), anchor=anchor, context=("a {}",)),
            progress=False,
        )


def test_a_rerun_with_other_settings_is_refused_and_a_longer_one_resumes(tiny_model_dir, tmp_path):
    """The checkpoint keeps the run's settings: a rerun into the same --out with another learning rate would mix two
    runs, so it stops with one line naming the difference; more --steps extend the run, as resuming is meant to."""
    out = tmp_path / "e"
    erase(_cfg(tiny_model_dir, out), progress=False)
    with pytest.raises(UnseeError, match=r"holds a run made with other settings \(lr: 0.001 there, 0.002 now\)"):
        erase(_cfg(tiny_model_dir, out, lr=2e-3), progress=False)
    summary = erase(_cfg(tiny_model_dir, out, steps=6), progress=False)
    assert json.loads((out / "unsee.json").read_text())["config"]["steps"] == 6 and summary["weights_digest"]
