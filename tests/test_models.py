import json

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from unsee.errors import UnseeError
from unsee.models import load_pipeline, resolve_model


def _unet_out(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 8, 8, generator=g)
    c = torch.randn(2, pipe.tokenizer.model_max_length, 32, generator=g)
    with torch.no_grad():
        return pipe.unet(z, torch.tensor([10, 500]), encoder_hidden_states=c).sample


def test_loads_a_saved_folder_and_round_trips(tiny_model_dir, tmp_path):
    pipe = load_pipeline(str(tiny_model_dir))
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.safety_checker is None
    pipe.save_pretrained(tmp_path / "again")
    again = load_pipeline(str(tmp_path / "again"))
    assert torch.equal(_unet_out(pipe), _unet_out(again))
    ref = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, name).state_dict(), getattr(ref, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.allclose(_unet_out(pipe), _unet_out(ref), atol=1e-5)  # channels-last rounds differently


def test_ddim_swap_keeps_v_prediction(tiny_vpred_dir):
    pipe = load_pipeline(str(tiny_vpred_dir))
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.use_linear_projection


@pytest.mark.parametrize("dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_dtype(tiny_model_dir, dtype, torch_dtype):
    pipe = load_pipeline(str(tiny_model_dir), dtype=dtype)
    assert pipe.unet.dtype == torch_dtype and pipe.vae.dtype == torch_dtype


def test_gradient_checkpointing_and_attention(tiny_model_dir):
    from diffusers.models.attention_processor import AttnProcessor

    pipe = load_pipeline(str(tiny_model_dir), gradient_checkpointing=True, attention="eager")
    assert pipe.unet.is_gradient_checkpointing
    assert all(isinstance(p, AttnProcessor) for p in pipe.unet.attn_processors.values())


def test_pipeline_scheduler_can_be_kept(tiny_model_dir):
    from diffusers import EulerDiscreteScheduler

    assert isinstance(load_pipeline(str(tiny_model_dir), scheduler="euler").scheduler, EulerDiscreteScheduler)
    assert isinstance(load_pipeline(str(tiny_model_dir), scheduler="pipeline").scheduler, DDIMScheduler)


def test_unsupported_architecture_is_refused_before_loading(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(UnseeError, match="StableDiffusionXLPipeline.*not this architecture yet"):
        load_pipeline(str(tmp_path))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "not a diffusers pipeline"),
        (lambda d: (d / "m.ckpt").write_bytes(b"x") and d / "m.ckpt", "pickle checkpoint"),
        (lambda d: (d / "m.onnx").write_bytes(b"x") and d / "m.onnx", "not a .safetensors file"),
    ],
)
def test_bad_model_paths(tmp_path, make, message):
    with pytest.raises(UnseeError, match=message):
        resolve_model(str(make(tmp_path)))


def test_hub_id_offline_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnseeError, match="not in the local cache and offline mode is on.*local folder"):
        load_pipeline("nobody-here/no-such-model")


def test_toyworld_name_resolves_or_says_how_to_build(monkeypatch, tmp_path):
    import unsee.models as m

    monkeypatch.setattr(m, "toyworld_path", lambda: tmp_path / "none")
    with pytest.raises(UnseeError, match="unsee toyworld build"):
        resolve_model("toyworld")


def _write_safetensors(path, keys):
    from safetensors.torch import save_file

    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


@pytest.mark.parametrize(
    "keys, message",
    [
        (
            ["conditioner.embedders.0.transformer.x", "model.diffusion_model.input_blocks.0.0.weight"],
            "Stable Diffusion XL",
        ),
        (["model.diffusion_model.joint_blocks.0.x"], "Stable Diffusion 3"),
        (["double_blocks.0.img_attn.x"], "Flux"),
        (["first_stage_model.encoder.conv_in.weight"], "no Stable Diffusion UNet weights"),
    ],
)
def test_single_files_of_other_architectures_are_refused_from_the_header(tmp_path, keys, message):
    path = _write_safetensors(tmp_path / "m.safetensors", keys)
    with pytest.raises(UnseeError, match=message):
        load_pipeline(str(path))


def test_single_file_offline_without_config_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _write_safetensors(tmp_path / "m.safetensors", ["model.diffusion_model.input_blocks.0.0.weight"])
    with pytest.raises(UnseeError, match="--model-config"):
        load_pipeline(str(path))
