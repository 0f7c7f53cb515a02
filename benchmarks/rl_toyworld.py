"""RL (DDPO) on the toy world, with the figures issue 7 asks for.

Two runs on the same unsafe training prompts (object_explicit, mixed with benign
prompts): one against the oracle (`oracle:skull+0.5*clip`), one against the HFI
reward model learned from simulated feedback (`learned:...+0.5*clip`: RL from
human feedback without a hand-made detector). Each is evaluated with
`unsee evaluate` beside the base model: the skull rate on the training prompts
and on held-out implicit prompts (the cut relative to the base model), and the
toy-CLIP score on benign prompts (relative change), plus the run's seconds.

`--feedback-rounds N` (N > 1) closes the loop the annotation app is for: after
each learned run, the same simulated annotators flag the policy's own images on
its training prompts (explicit and benign, 4 each, seeds the evaluation does not
use), a reward model is trained on every round's feedback together, and RL
restarts from the base model against it (`rl-learned-r2`, ...).

Run: .venv/bin/python benchmarks/rl_toyworld.py [--out runs/rl-bench] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def feedback_round(
    d: Path, policy: Path | str, n: int, sets: tuple[str, ...] = ("object_explicit", "benign")
) -> tuple[Path, Path]:
    """The policy's images on its training prompts (or on `sets`), judged by the HFI chain's simulated annotators."""
    from unsee.demo import _prompt_file, simulated_feedback
    from unsee.generate import GenerateConfig, generate

    d.mkdir(parents=True, exist_ok=True)
    prompts = _prompt_file(d / "prompts.txt", sets)
    images = generate(
        GenerateConfig(
            model=str(policy),
            prompts=str(prompts),
            out=str(d / "images"),
            images_per_prompt=4,
            batch_size=32,
            seed=1000 + n,
        ),
        progress=False,
    )
    return Path(images), simulated_feedback(images, d / "feedback.jsonl", "binary", "skull", seed=n)


def train_round_reward(d: Path, rounds: list[tuple[Path, Path]], seed: int = 0, tune_vision: int = 0) -> Path:
    """One reward model on every round's feedback together (with the toy CLIP's last `tune_vision` layers tuned)."""
    from unsee.reward_model import RewardTrainConfig, train_reward

    if not (d / "metrics.json").exists():
        tuned = dict(tune_vision=tune_vision, steps=1500) if tune_vision else {}
        m = train_reward(
            RewardTrainConfig(
                images=tuple(str(i) for i, _ in rounds),
                feedback=tuple(str(f) for _, f in rounds),
                out=str(d),
                seed=seed,
                **tuned,
            ),
            progress=False,
        )
        print(
            f"reward model (seed {seed}) on {len(rounds)} rounds of feedback: held-out agreement {m['heldout_agreement']:.3f}"
        )
    return d


def learned_spec(
    first: Path, rounds: list[tuple[Path, Path]], members: int, clip_weight: float, tune_vision: int = 0
) -> str:
    """The learned reward term: `first`, plus members-1 models on the same feedback with seeds 1.. (own split and
    initialisation), scored as an ensemble that counts its most suspicious member."""
    dirs = [first] + [
        train_round_reward(first.parent / f"{first.name}-seed{k}", rounds, seed=k, tune_vision=tune_vision)
        for k in range(1, members)
    ]
    return f"learned:{','.join(str(d) for d in dirs)}+{clip_weight}*clip"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/rl-bench")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples-per-epoch", type=int, default=32)
    ap.add_argument("--ddim-steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--clip-range", type=float, default=1e-4, help="PPO clip epsilon")
    ap.add_argument("--images-per-prompt", type=int, default=5, help="40 prompts a set: 5 gives 200 images a set")
    ap.add_argument("--runs", default="oracle,learned")
    ap.add_argument("--clip-weight", type=float, default=0.5, help="weight of the clip term in the reward")
    ap.add_argument("--oracle-term", default="oracle:skull", help="the oracle run's safety term, e.g. oracle:skull:log")
    ap.add_argument("--samples-per-prompt", type=int, default=1, help="images per drawn prompt in an epoch")
    ap.add_argument("--seed", type=int, default=0, help="seed of the RL run (the evaluation's seeds stay fixed)")
    ap.add_argument(
        "--benign-fraction", type=float, default=0.5, help="share of each epoch's samples from benign prompts"
    )
    ap.add_argument("--kl-on", default="all", choices=("all", "benign"))
    ap.add_argument("--adv-scale", default="prompt", choices=("prompt", "pooled"))
    ap.add_argument("--min-count", type=int, default=16, help="rewards a prompt needs before its own mean/std are used")
    ap.add_argument("--kl-weight", type=float, default=0.0, help="weight of the KL term toward the original model")
    ap.add_argument(
        "--feedback-rounds", type=int, default=1, help="learned: rounds of feedback on the policy's own images"
    )
    ap.add_argument(
        "--reward-members",
        type=int,
        default=1,
        help="learned: reward models in the ensemble (seeds 0..N-1 "
        "on the same feedback; the most suspicious one scores)",
    )
    ap.add_argument(
        "--feedback-sets",
        default=None,
        help="learned: the prompt sets whose base-model images round 1's "
        "annotators judge, comma-separated (default: the HFI chain's object_explicit,object_implicit,benign), "
        "e.g. add object_neighbour: the same scenes with a mask in place of the skull",
    )
    ap.add_argument(
        "--tune-vision",
        type=int,
        default=0,
        help="learned: reward models fine-tune the toy CLIP's last N "
        "vision layers (unsee reward train --tune-vision N --steps 1500); 0 keeps it frozen",
    )
    args = ap.parse_args()

    from diffusers.utils import logging as dlog

    from unsee.demo import hfi_token
    from unsee.evaluate import EvaluateConfig, evaluate
    from unsee.rl import RLConfig, rl
    from unsee.toyworld import prompts_path

    dlog.disable_progress_bar()
    out = Path(args.out)
    models, seconds = {"base": "toyworld"}, {}
    runs: list[tuple[str, str]] = []  # (run name, reward spec); later learned rounds are added as they come
    rounds = [(out / "hfi" / "images", out / "hfi" / "feedback.jsonl")]  # the learned reward's image sets and feedback
    for run in args.runs.split(","):
        if run == "learned":
            if args.feedback_sets:  # round 1 on other prompt sets than the HFI chain's
                rounds = [feedback_round(out / "feedback-r1", "toyworld", 0, tuple(args.feedback_sets.split(",")))]
                first = train_round_reward(out / "feedback-r1" / "reward", rounds, tune_vision=args.tune_vision)
            else:
                hfi_token(out / "hfi", "skull", progress=False)  # makes the reward model on the way to the token
                first = out / "hfi" / "reward"
                if args.tune_vision:  # the token's reward model stays frozen; RL gets one with a tuned tower
                    first = train_round_reward(
                        out / "hfi" / f"reward-tune{args.tune_vision}", rounds, tune_vision=args.tune_vision
                    )
            runs.append((run, learned_spec(first, rounds, args.reward_members, args.clip_weight, args.tune_vision)))
        else:
            runs.append((run, f"{args.oracle_term}+{args.clip_weight}*clip"))
    while runs:
        run, reward = runs.pop(0)
        folder = out / f"rl-{run}"
        if not (folder / "unsee.json").exists():
            t0 = time.time()
            rl(
                RLConfig(
                    model="toyworld",
                    prompts=str(prompts_path("object_explicit")),
                    benign_prompts=str(prompts_path("benign")),
                    out=str(folder),
                    reward=reward,
                    epochs=args.epochs,
                    samples_per_epoch=args.samples_per_epoch,
                    sample_batch=args.samples_per_epoch,
                    train_batch=8,
                    ddim_steps=args.ddim_steps,
                    train_timesteps=0.5,
                    lr=args.lr,
                    clip_range=args.clip_range,
                    kl_weight=args.kl_weight,
                    samples_per_prompt=args.samples_per_prompt,
                    min_count=args.min_count,
                    adv_scale=args.adv_scale,
                    kl_on=args.kl_on,
                    benign_fraction=args.benign_fraction,
                    seed=args.seed,
                ),
                progress=True,
            )
            seconds[run] = round(time.time() - t0, 1)
        else:
            seconds[run] = json.loads((folder / "unsee.json").read_text())["summary"]["seconds"]
        # evaluate reads a pipeline folder: merge the LoRA into a copy of the base pipeline
        merged = out / f"rl-{run}-merged"
        if not (merged / "model_index.json").exists():
            from unsee.params import merge_lora

            merge_lora("toyworld", folder, merged)
        models[f"rl-{run}"] = str(merged)
        if run.startswith("learned") and len(rounds) < args.feedback_rounds:
            rounds.append(feedback_round(out / f"feedback-r{len(rounds) + 1}", merged, len(rounds) + 1))
            reward_dir = train_round_reward(
                out / f"feedback-r{len(rounds)}" / "reward", rounds, tune_vision=args.tune_vision
            )
            runs.insert(
                0,
                (
                    f"learned-r{len(rounds)}",
                    learned_spec(reward_dir, rounds, args.reward_members, args.clip_weight, args.tune_vision),
                ),
            )
    sets = {
        "train": prompts_path("object_explicit"),
        "implicit_heldout": prompts_path("object_implicit", "heldout"),
        "benign": prompts_path("benign"),
    }
    m = evaluate(
        EvaluateConfig(
            model=tuple(models.values()),
            name=tuple(models),
            prompts=tuple(str(p) for p in sets.values()),
            out=str(out / "eval"),
            images_per_prompt=args.images_per_prompt,
        ),
        progress=False,
    )
    res = m["results"]
    names = list(m["prompt_sets"])  # evaluate's names for the three files, in order
    base = res["base"]
    print(
        f"{'model':12} {'skull train':>11} {'cut':>6} {'skull implicit (heldout)':>25} {'cut':>6} {'benign CLIP':>11} "
        f"{'change':>7} {'seconds':>8}"
    )
    rows = {}
    for name, per in res.items():
        tr, im = per[names[0]]["labels"]["skull"]["rate"], per[names[1]]["labels"]["skull"]["rate"]
        cs = per[names[2]]["clip_score"]["mean"]
        cut_t = 1 - tr / max(base[names[0]]["labels"]["skull"]["rate"], 1e-9)
        cut_i = 1 - im / max(base[names[1]]["labels"]["skull"]["rate"], 1e-9)
        change = cs / base[names[2]]["clip_score"]["mean"] - 1
        run = name.removeprefix("rl-")
        rows[name] = {
            "train_rate": tr,
            "train_cut": cut_t,
            "implicit_rate": im,
            "implicit_cut": cut_i,
            "benign_clip": cs,
            "benign_clip_change": change,
            "seconds": seconds.get(run),
        }
        print(
            f"{name:12} {tr:11.3f} {cut_t:6.0%} {im:25.3f} {cut_i:6.0%} {cs:11.2f} {change:7.1%} {seconds.get(run) or 0:8.0f}"
        )
    (out / "results.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(f"results -> {out / 'results.json'}")


if __name__ == "__main__":
    main()
