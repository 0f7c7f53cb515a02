import json

import pytest
import torch

from unsee.errors import UnseeError
from unsee.params import LoraSettings, save_lora, select_parameters
from unsee.testing import tiny_pipeline


def _names(unet):
    return [n for n, p in unet.named_parameters() if p.requires_grad]


@pytest.mark.parametrize(
    "which, check",
    [
        (
            "xattn",
            lambda names, all_: (
                names and all(".attn2." in n for n in names) and set(names) == {n for n in all_ if ".attn2." in n}
            ),
        ),
        (
            "xattn-kv",
            lambda names, all_: names and set(names) == {n for n in all_ if ".attn2.to_k." in n or ".attn2.to_v." in n},
        ),
        # as the public ESD code: neither cross-attention nor the time embedding nor the output block
        (
            "noxattn",
            lambda names, all_: (
                set(names)
                == {
                    n
                    for n in all_
                    if ".attn2." not in n and not n.startswith(("time_embedding.", "conv_norm_out.", "conv_out."))
                }
                and any(n.startswith("down_blocks.") for n in names)
            ),
        ),
        ("full", lambda names, all_: set(names) == set(all_)),
        ("lora", lambda names, all_: names and all("lora_" in n for n in names)),
    ],
)
def test_parameter_sets(which, check):
    unet = tiny_pipeline().unet
    all_ = [n for n, _ in unet.named_parameters()]
    params = select_parameters(unet, which)
    names = _names(unet)
    assert check(names, all_)
    assert len(params) == len(names)


def test_unknown_set_is_refused():
    with pytest.raises(UnseeError, match="params must be one of"):
        select_parameters(tiny_pipeline().unet, "everything")


def test_lora_round_trips_through_diffusers_load_lora_weights(tmp_path):
    pipe = tiny_pipeline()
    params = select_parameters(pipe.unet, "lora", LoraSettings(rank=2, alpha=8.0))
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn_like(p))
    z, t, c = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        tuned = pipe.unet(z, t, encoder_hidden_states=c).sample
        pipe.unet.disable_adapters()
        base = pipe.unet(z, t, encoder_hidden_states=c).sample
        pipe.unet.enable_adapters()
    save_lora(pipe.unet, tmp_path)

    fresh = tiny_pipeline()
    with torch.no_grad():
        assert torch.allclose(fresh.unet(z, t, encoder_hidden_states=c).sample, base)  # the adapter is off = the base
        fresh.load_lora_weights(tmp_path)  # plain diffusers, alpha/rank from the saved metadata
        loaded = fresh.unet(z, t, encoder_hidden_states=c).sample
    assert (tuned - base).abs().max() > 1e-3
    assert torch.allclose(loaded, tuned, atol=1e-6)

    # Fused into a pipeline folder (what evaluate and attack take): the same predictions, from plain from_pretrained.
    from diffusers import StableDiffusionPipeline

    from unsee.params import merge_lora
    from unsee.testing import save_tiny_pipeline

    base_dir = save_tiny_pipeline(tmp_path / "base")
    (tmp_path / "unsee.json").write_text(json.dumps({"training_prompts": ["a red cat"]}))  # as rl writes it
    merged = merge_lora(str(base_dir), tmp_path, tmp_path / "merged")
    assert json.loads((merged / "unsee.json").read_text())["training_prompts"] == ["a red cat"]  # the record stays
    fused = StableDiffusionPipeline.from_pretrained(merged, safety_checker=None, requires_safety_checker=False)
    with torch.no_grad():
        assert torch.allclose(fused.unet(z, t, encoder_hidden_states=c).sample, tuned, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]
