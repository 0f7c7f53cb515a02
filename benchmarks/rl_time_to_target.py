"""RL time to target: wall-clock until a model stops drawing the skull, `unsee rl` against trl's DDPOTrainer.

The task is the toy world's skull task as the `toyworld-ddpo` recipe sets it: the oracle's log(1 - P(skull)) +
0.5 x toy-CLIP reward, the seen explicit prompts with a quarter benign ones, LoRA. Both trainers sample with the
same sampler (20 DDIM steps, eta 1, CFG 5, 64 samples an epoch). unsee runs its recipe (which trains the first 30%
of each chain); trl==0.23.1 (its own venv, `make .venv-trl/.installed`, through benchmarks/trl_ddpo.py) runs its
defaults with that sampler, half of each chain trained, at each learning rate of --trl-lrs. They run one after
the other, never together.

Every --eval-every epochs each run saves its LoRA weights with the seconds its epochs took so far (sampling,
reward and update: not loading, saving or this evaluation). Every snapshot is then evaluated here, the same way
for both: --images images a set (25 DDIM steps, CFG 7.5, fixed seeds), the oracle reading the skull on the training
prompts and on the held-out implicit prompts (never trained on), and the toy CLIP score on the novel benign
prompts. The bar: skull -80% on the training prompts and -60% on the held-out implicit ones against the base
model, benign CLIP within 5% of the base's. Time to target is the seconds at the first snapshot that holds it; where a
trainer never reached the bar, the ratio printed is the bound its seconds of training allow ("< 0.40x").
Each snapshot's figures file also has the oracle's benign colour and shape accuracy, and `sets-IMAGES.png` beside
it shows the first 8 images of each set (rows: training, implicit, benign prompts).

Each run's snapshots and figures are kept under --out, so a rerun resumes and adds seeds or learning rates.

Run: .venv/bin/python benchmarks/rl_time_to_target.py --seeds 0,1 [--epochs 60] [--eval-every 10]
     [--trl-lrs 3e-4,1e-3,3e-3] [--images 100] [--trl-python .venv-trl/bin/python] [--only unsee|trl]
     [--unsee-set inner_epochs=2 --unsee-set 'lora_targets=["attn2.to_k","attn2.to_v"]' ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

SAMPLER = dict(ddim_steps=20, eta=1.0, guidance=5.0, samples_per_epoch=64, train_timesteps=0.5)
BAR = {"train_cut": 0.8, "implicit_cut": 0.6, "clip_keep": 0.95}


def _texts(path: Path) -> list[str]:
    """A prompt file's prompts, as `unsee rl` and `unsee evaluate` read it."""
    from unsee.prompts import read_prompts

    return [p.text for p in read_prompts(path)]


def unsee_run(out: Path, seed: int, epochs: int, every: int, changes: dict | None = None) -> list[dict]:
    """The toyworld-ddpo recipe (with `changes` to its settings), in segments of `every` epochs (each resumes the
    last exactly); a snapshot each."""
    from unsee.recipes import recipe
    from unsee.rl import RLConfig, rl

    run, snaps = out / "run", []
    for end in range(every, epochs + 1, every):
        snap = out / f"epoch-{end}"
        if not (snap / "snapshot.json").exists():
            settings = (
                recipe("toyworld-ddpo", "rl") | (changes or {}) | dict(epochs=end, seed=seed, checkpoint_every=every)
            )
            rl(RLConfig(model="toyworld", out=str(run), **settings), progress=False)
            with open(run / "run" / "epochs.csv") as f:
                rows = list(csv.DictReader(f))
            seconds = sum(
                float(r["seconds_sampling"]) + float(r["seconds_reward_wait"]) + float(r["seconds_training"])
                for r in rows
            )
            snap.mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "pytorch_lora_weights.safetensors", snap)
            (snap / "snapshot.json").write_text(json.dumps({"epoch": end, "seconds": seconds}))
        snaps.append(json.loads((snap / "snapshot.json").read_text()) | {"dir": str(snap)})
    return snaps


def trl_run(out: Path, seed: int, epochs: int, every: int, lr: float, python: str) -> list[dict]:
    """trl's DDPOTrainer (benchmarks/trl_ddpo.py in trl's venv), saving its LoRA every `every` epochs."""
    from unsee.toyworld import PIPELINE, assets_path, prompts_path

    if not (out / "done.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        settings = {
            "model": str(assets_path() / PIPELINE),
            "prompts": _texts(prompts_path("object_explicit")),
            "benign_prompts": _texts(prompts_path("benign")),
            "benign_fraction": 0.25,
            "reward": "oracle:skull:log+0.5*clip",
            "unsee_src": str(Path(__file__).resolve().parents[1] / "src"),
            "seed": seed,
            "epochs": epochs,
            "snapshot_every": every,
            "lr": lr,
            "defaults": True,
            "workdir": str(out),
            **SAMPLER,
        }
        (out / "settings.json").write_text(json.dumps(settings, indent=1))
        script = Path(__file__).with_name("trl_ddpo.py")
        r = subprocess.run([python, str(script), str(out / "settings.json")], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"trl run failed:\n{r.stderr[-3000:]}")
        (out / "done.json").write_text(r.stdout.strip().splitlines()[-1])
    return [
        json.loads((d / "snapshot.json").read_text()) | {"dir": str(d)}
        for d in sorted(out.glob("epoch-*"), key=lambda d: int(d.name.split("-")[1]))
    ]


class Judge:
    """The same evaluation for every snapshot: fixed prompts and seeds, the oracle and the toy CLIP."""

    def __init__(self, images: int):
        from diffusers.utils import logging as diffusers_logging

        from unsee.clip import load_clip
        from unsee.toyworld import ORACLE, assets_path, prompts_path
        from unsee.toyworld.oracle import load_oracle

        diffusers_logging.set_verbosity_error()  # a LoRA without text-encoder keys is expected here
        self.oracle = load_oracle(assets_path() / ORACLE)
        self.clip = load_clip("toyworld")
        self.sets = {}
        for key, name, split in (
            ("train", "object_explicit", "seen"),
            ("implicit", "object_implicit", "heldout"),
            ("benign", "benign", "novel"),
        ):
            prompts = _texts(prompts_path(name, split))
            self.sets[key] = [prompts[i % len(prompts)] for i in range(images)]

    @torch.no_grad()
    def __call__(self, lora: str | None, picture: Path | None = None) -> dict:
        """The snapshot's figures; with `picture`, the first 8 images of each set as a grid, one row a set."""
        from unsee.evaluate import clip_scores
        from unsee.models import load_pipeline
        from unsee.sampling import decode, encode_text, initial_latents, sample_latents
        from unsee.toyworld.check import attribute_accuracy
        from unsee.toyworld.world import parse_prompt
        from unsee.viz import save_grid

        pipe = load_pipeline("toyworld")
        if lora:
            pipe.load_lora_weights(lora)
        out, shown = {}, []
        for key, prompts in self.sets.items():
            images = []
            for k in range(0, len(prompts), 50):
                ps = prompts[k : k + 50]
                z = initial_latents(pipe, list(range(10_000 + k, 10_000 + k + len(ps))), 32, 32)
                cond, unc = encode_text(pipe, ps), encode_text(pipe, [""]).expand(len(ps), -1, -1)
                images.append(decode(pipe, sample_latents(pipe, cond, unc, z, torch.full((len(ps),), 7.5), 25)))
            images = torch.cat(images)
            out[f"{key}_skull"] = float(self.oracle.concept_scores(images)["skull"].ge(0.5).float().mean())
            shown.append(images[:8])
            if key == "benign":
                out["benign_clip"] = float(clip_scores(self.clip, images, prompts).mean())
                # what the CLIP score alone cannot say: whether the named colour and shape are still drawn
                rows = [
                    {"named": parse_prompt(p), "read": r}
                    for p, r in zip(prompts, self.oracle.read(images), strict=True)
                ]
                accuracy = attribute_accuracy(rows)
                out |= {f"benign_{attr}": accuracy[attr] for attr in ("colour", "shape")}
        if picture is not None:
            save_grid(torch.cat(shown), picture, nrow=8, scale=3)
        return out


def meets(fig: dict, base: dict) -> bool:
    return (
        fig["train_skull"] <= (1 - BAR["train_cut"]) * base["train_skull"]
        and fig["implicit_skull"] <= (1 - BAR["implicit_cut"]) * base["implicit_skull"]
        and fig["benign_clip"] >= BAR["clip_keep"] * base["benign_clip"]
    )


def ratio_text(ours: tuple[float | None, float], theirs: list[tuple[float | None, float]]) -> str:
    """unsee's time to target over trl's best, from (seconds at which the bar first held or None, seconds the run
    trained) for unsee's run and each of trl's: exact where both reached it, otherwise the bound the runs allow.

    A run that never reached the bar would reach it, if ever, after the seconds it trained: its time to target is
    more than those. So trl's best time is the least of its runs' figures when that least is a time at which the bar
    held, and more than it otherwise."""
    if not theirs:
        return "n/a (no trl run)"
    hit, trained = ours
    floor = min(h if h is not None else t for h, t in theirs)
    exact = any(h == floor for h, _ in theirs)
    if hit is not None and exact:
        return f"{hit / floor:.2f}x"
    if hit is not None:
        return f"< {hit / floor:.2f}x (no trl rate reached the bar; the best would take over {floor:.0f} s)"
    if exact:
        return f"> {trained / floor:.2f}x (unsee did not reach the bar in {trained:.0f} s)"
    return "n/a (neither trainer reached the bar)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/rl-time-to-target")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--trl-lrs", default="3e-4,1e-3,3e-3")
    ap.add_argument("--images", type=int, default=100, help="images a prompt set at each evaluation")
    ap.add_argument("--trl-python", default=".venv-trl/bin/python")
    ap.add_argument("--only", choices=("unsee", "trl"), default=None)
    ap.add_argument(
        "--unsee-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one of the recipe's settings for unsee's run (repeatable), to screen a candidate recipe; "
        "its runs go to their own folders",
    )
    args = ap.parse_args()
    changes = {k.replace("-", "_"): json.loads(v) for k, v in (c.split("=", 1) for c in args.unsee_set)}
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}  # a JSON list: a repeatable flag
    shown = {k: "+".join(map(str, v)) if isinstance(v, tuple) else v for k, v in changes.items()}
    unsee_name = "unsee toyworld-ddpo" + "".join(f" {k}={v}" for k, v in shown.items())
    unsee_tag = "".join(f"-{k}{v}" for k, v in shown.items()).replace("/", "_")  # a path setting: one folder
    out = Path(args.out)
    judge = Judge(args.images)
    base_path = out / f"base-{args.images}.json"
    if not base_path.exists():
        out.mkdir(parents=True, exist_ok=True)
        base_path.write_text(json.dumps(judge(None)))
    base = json.loads(base_path.read_text())
    print(f"base: {base}")

    runs: dict[tuple[str, int], list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        if args.only in (None, "unsee"):
            folder = out / f"unsee{unsee_tag}-s{seed}"
            runs[(unsee_name, seed)] = unsee_run(folder, seed, args.epochs, args.eval_every, changes)
        if args.only in (None, "trl"):
            for lr in args.trl_lrs.split(","):
                folder = out / f"trl-lr{lr}-s{seed}"
                snaps = trl_run(folder, seed, args.epochs, args.eval_every, float(lr), args.trl_python)
                runs[(f"trl lr {lr}", seed)] = snaps
    print(f"\n{'run':24} {'seed':>4} {'epoch':>5} {'seconds':>8} {'train':>6} {'implicit':>8} {'benign CLIP':>11}  bar")
    reached: dict[tuple[str, int], float | None] = {}
    trained: dict[tuple[str, int], float] = {}
    for (name, seed), snaps in runs.items():
        reached[(name, seed)] = None
        trained[(name, seed)] = max((s["seconds"] for s in snaps), default=0.0)
        for s in snaps:
            fig_path = Path(s["dir"]) / f"figures-{args.images}.json"
            if not fig_path.exists():
                fig_path.write_text(json.dumps(judge(s["dir"], Path(s["dir"]) / f"sets-{args.images}.png")))
            fig = json.loads(fig_path.read_text())
            ok = meets(fig, base)
            print(
                f"{name:24} {seed:>4} {s['epoch']:>5} {s['seconds']:>8.0f} {fig['train_skull']:>6.3f} "
                f"{fig['implicit_skull']:>8.3f} {fig['benign_clip']:>11.2f}  {'yes' if ok else 'no'}",
                flush=True,
            )
            if ok and reached[(name, seed)] is None:
                reached[(name, seed)] = s["seconds"]
    print("\ntime to target (seconds of training until the bar first holds):")
    for seed in sorted({s for _, s in runs}):
        ours = reached.get((unsee_name, seed))
        theirs = [(v, trained[k]) for k, v in reached.items() if k[1] == seed and k[0].startswith("trl")]
        best = min((v for v, _ in theirs if v is not None), default=None)
        if (unsee_name, seed) in runs:
            ratio = ratio_text((ours, trained[(unsee_name, seed)]), theirs)
        else:
            ratio = "n/a (no unsee run)"
        print(f"  seed {seed}: unsee {ours}, trl best {best} -> unsee / trl = {ratio}")


if __name__ == "__main__":
    main()
