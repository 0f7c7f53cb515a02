"""Peak memory of each training command on full-size Stable Diffusion architectures, per precision lever.

The models are SD 1.5's architecture at 512 px and SD 2.1's (v-prediction) at
768 px with random weights, built in code and saved as diffusers folders: a
tensor's size does not depend on its values, so the memory is that of the real
models. Each case runs one of unsee's training commands through its Python API
(`erase`, `rl`, textual inversion's `invert_images`) for one or two updates at
the command's default batch, in a subprocess of its own:

- sdd, esd: `unsee erase --method sdd|esd --params xattn`, batch 1 (the default);
- ddpo: `unsee rl --params lora --lora-rank 4`, train batch 1, reward
  nudity + 0.5 x CLIP (NudeNet, and a random CLIP ViT-L/14 in CLIP's shape);
- ti: textual inversion of one vector at its default batch (16 images).

Sampling before an update runs without gradients and does not set the peak, so
trajectories here are 2 DDIM steps long instead of 50; the updates are the
commands' own.

On a GPU the figure is `torch.cuda.max_memory_allocated()`. On a CPU it is the
process's peak resident memory above its resident memory before loading the
model (what the model, the optimiser, activations and the reward take), a
stand-in for GPU memory. Each is printed for the training loop alone (what sets
a GPU's need) and, in brackets, for the whole command: on a CPU, loading and
saving a model pass through transient copies that a GPU's allocator never sees. A CPU without native bf16 runs bf16 kernels emulated
(a 3x3 convolution hundreds of times slower than fp32), so there the bf16 cases
are refused and only fp32 with and without gradient checkpointing is measured;
the table then also prints the frozen weights' size in bf16, counted from the
parameter numbers (a count, not a measurement of a run).

Examples:
  python benchmarks/bench_memory.py                                  # CPU stand-in, SD 1.5, fp32 and fp32+ckpt
  python benchmarks/bench_memory.py --device cuda --models sd15,sd21 # a GPU: every precision
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESOLUTION = {"sd15": 512, "sd21": 768}
GOALS_GB = {"sdd": 16, "esd": 16, "ddpo": 12, "ti": 10}  # for bf16 + gradient checkpointing
PRECISIONS = {"fp32": ("no", False), "fp32+ckpt": ("no", True), "bf16": ("bf16", False), "bf16+ckpt": ("bf16", True)}


def build_pipeline(kind: str, folder: Path) -> Path:
    """SD 1.5's or SD 2.1's UNet, VAE and text encoder, random weights, saved as a diffusers folder."""
    from unsee.testing import full_size_components, make_pipeline

    if (folder / "model_index.json").exists():
        return folder
    pipe = make_pipeline(full_size_components(kind))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def build_clip(folder: Path) -> Path:
    """CLIP ViT-L/14's shape (the reward's clip term), random weights."""
    from transformers import CLIPConfig, CLIPModel

    from unsee.testing import tiny_tokenizer

    if (folder / "config.json").exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = tiny_tokenizer(tmp)
    torch.manual_seed(0)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=len(tok),
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                **ids,
            ),
            vision_config=dict(
                image_size=224,
                patch_size=14,
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
            ),
            projection_dim=768,
        )
    ).save_pretrained(tmp)
    (tmp / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "crop_size": {"height": 224, "width": 224},
                "size": {"shortest_edge": 224},
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    tmp.rename(folder)
    return folder


def _status_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_gb() -> float:
    return _status_gb("VmRSS")


def watch_training(device: str) -> dict[str, float]:
    """Record the peak while the shared training loop runs, apart from loading and saving: on a CPU the kernel's
    high-water mark is reset when training starts (/proc/self/clear_refs, 5) and read when it ends; on a GPU the
    allocator's peak is. Weights and everything else resident count, as on a GPU."""
    from unsee import trainer

    seen: dict[str, float] = {}
    run = trainer.Trainer.run

    def watched(self):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")
        result = run(self)
        seen["train"] = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else _status_gb("VmHWM")
        return result

    trainer.Trainer.run = watched
    return seen


def run_case(model: Path, method: str, precision: str, device: str, clip: Path, work: Path) -> dict:
    """One training command, one or two updates; returns what it cost."""
    mixed, ckpt = PRECISIONS[precision]
    levers = dict(mixed_precision=mixed, gradient_checkpointing=ckpt, device=device)
    out = work / "out"
    if method in ("sdd", "esd"):
        from unsee.erase import EraseConfig, erase

        summary = erase(
            EraseConfig(
                model=str(model),
                out=str(out),
                method=method,
                concept=("nude",),
                params="xattn",
                steps=2,
                reuse=2,
                ddim_steps=2,
                checkpoint_every=0,
                **levers,
            ),
            progress=False,
        )
    elif method == "ddpo":
        from unsee.rl import RLConfig, rl

        prompts = work / "prompts.txt"
        prompts.write_text("a nude person\n")
        summary = rl(
            RLConfig(
                model=str(model),
                prompts=str(prompts),
                out=str(out),
                reward="nudity+0.5*clip",
                clip=str(clip),
                params="lora",
                lora_rank=4,
                epochs=1,
                samples_per_epoch=1,
                sample_batch=1,
                train_batch=1,
                ddim_steps=2,
                checkpoint_every=1,
                **levers,
            ),
            progress=False,
        )
    else:
        from unsee.imageset import ImageSet
        from unsee.invert import TokenTraining, invert_images
        from unsee.testing import write_image_set

        cfg = TokenTraining(init_word="person", vectors=1, steps=1, checkpoint_every=0, **levers)
        n, px = cfg.batch_size, RESOLUTION[model.name]  # the model's folder is named by its key
        images = ImageSet.load(
            write_image_set(
                work / "set",
                torch.rand(n, 3, px, px, generator=torch.Generator().manual_seed(0)),
                ["a photo of a person"] * n,
            )
        )
        ids = [r["id"] for r in images.records]
        summary = invert_images(
            cfg,
            model=str(model),
            images=images,
            ids=ids,
            weights=torch.ones(n),
            prompts=[f"a photo of {cfg.token}"] * n,
            out=work / "token.safetensors",
            run_dir=work / "run",
            progress=False,
        )
    return {"skipped_steps": summary.get("skipped_steps", 0)}


def one(args) -> None:
    model, method, precision = args.one.split(":")
    work = Path(tempfile.mkdtemp(prefix="unsee-bench-memory-"))
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = rss_gb()
    seen = watch_training(args.device)
    t = time.perf_counter()
    try:
        extra = run_case(
            Path(args.cache) / model, method, precision, args.device, Path(args.cache) / "clip-vit-l-14", work
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - base
    )
    train = seen["train"] - (0 if cuda else base)
    print(
        json.dumps(
            {
                "train_peak_gb": round(train, 2),
                "peak_gb": round(peak, 2),
                "seconds": round(time.perf_counter() - t, 1),
                **extra,
            }
        )
    )


def frozen_weights_gb(folder: Path, bytes_per: int) -> float:
    """Size of the pipeline's UNet, text encoder and VAE at `bytes_per` bytes a parameter, from the saved tensors."""
    from safetensors import safe_open

    n = 0
    for f in folder.glob("*/*.safetensors"):
        with safe_open(f, "pt") as st:
            n += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return n * bytes_per / 2**30


def native_bf16(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    flags = Path("/proc/cpuinfo").read_text()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (the stand-in) or cuda")
    ap.add_argument("--models", default="sd15", help="comma-separated: sd15 (512 px), sd21 (768 px, v-prediction)")
    ap.add_argument("--methods", default="sdd,esd,ddpo,ti")
    ap.add_argument(
        "--precisions",
        default=None,
        help=f"comma-separated from {', '.join(PRECISIONS)} (default: all those this device runs natively)",
    )
    ap.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "unsee-bench-memory"),
        help="where the random-weight models are saved once (SD 1.5: 4 GB, SD 2.1: 5 GB, CLIP: 1.7 GB)",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    bf16 = native_bf16(args.device)
    precisions = args.precisions.split(",") if args.precisions else [p for p in PRECISIONS if bf16 or "bf16" not in p]
    if not bf16 and any("bf16" in p for p in precisions):
        sys.exit(
            f"bf16 is emulated on this {args.device} (no native bf16): a run would take hours; "
            "measure fp32 and fp32+ckpt here and bf16 on a GPU (--device cuda)"
        )
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    for m in models:
        build_pipeline(m, cache / m)
    if "ddpo" in args.methods:
        build_clip(cache / "clip-vit-l-14")
    methods = args.methods.split(",")
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for m in models:
        for method in methods:
            for p in precisions:
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{m}:{method}:{p}",
                    "--device",
                    args.device,
                    "--cache",
                    args.cache,
                ]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:  # a case that does not fit (killed by the kernel: -9) is a result; go on
                    why = "killed (out of memory)" if r.returncode == -9 else f"exit {r.returncode}"
                    print(f"{m} {method} {p} failed, {why}:\n{r.stderr[-1500:]}", file=sys.stderr)
                    rows.setdefault((m, method), {})[p] = {"failed": why}
                    continue
                rows.setdefault((m, method), {})[p] = json.loads(r.stdout.strip().splitlines()[-1])
                print(m, method, p, rows[(m, method)][p], flush=True)
    what = (
        "torch.cuda.max_memory_allocated"
        if args.device.startswith("cuda")
        else "CPU stand-in: peak resident memory above the process's baseline"
    )
    print(
        f"\npeak memory in GiB ({what}) while training, and in brackets over the whole command (loading and "
        "saving the model too); one or two updates at each command's default batch"
    )
    print(f"{'model':6} {'method':6} " + " ".join(f"{p:>17}" for p in precisions) + f" {'goal (bf16+ckpt)':>17}")
    for (m, method), r in rows.items():
        cells = " ".join(
            f"{'failed':>17}" if "failed" in r[p] else f"{r[p]['train_peak_gb']:8.2f} ({r[p]['peak_gb']:5.2f})"
            for p in precisions
        )
        print(f"{m:6} {method:6} {cells} {GOALS_GB[method]:>17}")
    if not bf16:
        for m in models:
            print(
                f"{m}: frozen UNet + text encoder + VAE weights {frozen_weights_gb(cache / m, 4):.2f} GiB in fp32, "
                f"{frozen_weights_gb(cache / m, 2):.2f} GiB in bf16 (counted from the parameters, not measured)"
            )


if __name__ == "__main__":
    main()
