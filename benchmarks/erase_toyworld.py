"""Erasure on the toy world: each run's concept rates on the shipped template's prompts and on novel phrasings.

For the object-like concept (skull): text-SDD, HFI-SDD (the token learned from
simulated binary feedback) and ESD-x. For the style-like concept (kelvo):
ESD-x and HFI-SDD (token from rank feedback). Each model is evaluated with
`unsee evaluate` on explicit, implicit, neighbour and benign prompts (40 prompts
x --images-per-prompt each, same seeds for every model) and the oracle reads
every image, once on the seen split (the template the training contexts share)
and once on the novel split (phrasings no training used). Prints, per model and
split: the concept rate on explicit and implicit prompts (and the cut relative
to the base model), the neighbour's rate, the named-attribute accuracy on benign
prompts, how many of the split's prompts share a phrasing with the model's
training prompts, and the erase run's seconds.

Run: .venv/bin/python benchmarks/erase_toyworld.py [--out runs/erase-bench] [--concepts skull,kelvo]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unsee.toyworld import NEIGHBOURS

SETS = {
    "skull": ("object_explicit", "object_implicit", "object_neighbour", "benign"),
    "kelvo": ("style_explicit", "style_implicit", "style_neighbour", "benign"),
}
RUN_NAMES = (
    "sdd-text",
    "sdd-hfi",
    "esd-x",
    "esd-u",
    "esd-hfi",
    "sdd-hfi-word",
    "esd-hfi-word",
    "uce-text",
    "uce-hfi",
    "uce-hfi-word",
    "uce-text-then-hfi",
    "uce-triggers",
    "sdd-paper",
    "esd-x-paper",
)  # what --runs may name
# The published recipes on the bare concept word (the positive control): `unsee erase --recipe sdd` and
# `--recipe esd-x`. Neither keeps prompts, takes an anchor or trains in context. The public codes sample a fresh
# teacher trajectory for every update, as the recipes do; here each is reused for 16 updates, which costs a
# sixteenth of the sampling (a fresh one each update would take ~45 min on 2 cores for SDD).
PAPER_RECIPE = {"sdd": "sdd", "esd": "esd-x"}
CPU_REUSE = dict(reuse=16, checkpoint_every=480)
SPLITS = ("seen", "novel")  # the shipped template's prompts, and phrasings no training context used


def paper_settings(method: str) -> dict:
    """The published recipe's training settings (what it erases and which parameters come from the run)."""
    from unsee.recipes import recipe

    return {k: v for k, v in recipe(PAPER_RECIPE[method]).items() if k not in ("method", "params")} | CPU_REUSE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/erase-bench")
    ap.add_argument("--concepts", default="skull,kelvo")
    ap.add_argument("--images-per-prompt", type=int, default=5, help="40 prompts a set: 5 gives 200 images a set")
    ap.add_argument("--steps", type=int, default=None, help="erase updates (default: the demo's)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument(
        "--reuse",
        type=int,
        default=None,
        help="updates per batch of teacher trajectories (1: a fresh "
        "trajectory every update, the public code's training signal)",
    )
    ap.add_argument("--ema-decay", type=float, default=None)
    ap.add_argument("--preserve-weight", type=float, default=None)
    ap.add_argument(
        "--preserve-on",
        choices=("concept", "own", "kv", "null"),
        default=None,
        help="what the preserve term compares: predictions on the concept's trajectories or the kept "
        "prompts' own, or the kept prompts' cross-attention keys and values; null projects every update "
        "off the kept prompts' token states (brings the kept prompts only with --preserve-weight > 0)",
    )
    ap.add_argument(
        "--null-energy",
        type=float,
        default=None,
        help="--preserve-on null: share of the kept states' energy whose directions are held",
    )
    ap.add_argument(
        "--params",
        default=None,
        help="trained parameters of the cross-attention runs (default xattn; xattn-kv trains only the keys and values)",
    )
    ap.add_argument(
        "--keep-neighbour",
        action="store_true",
        help="add the seen split's neighbour prompts to the preserve prompts and measure the neighbour on the "
        "held-out split's, which erasure never saw (needs a preserve weight)",
    )
    ap.add_argument(
        "--keep-benign",
        action="store_true",
        help="the same for the benign prompts: the seen split's join the preserve prompts, benign attributes "
        "are measured on the held-out split's",
    )
    ap.add_argument(
        "--anchor",
        default=None,
        help="erase toward this text instead of the empty prompt (unsee erase --anchor), e.g. 'a mask' for the skull",
    )
    ap.add_argument(
        "--in-context",
        action="store_true",
        help="train the sdd/esd runs in the --contexts, {} where the concept goes "
        "(unsee erase --context; the uce runs always use them)",
    )
    ap.add_argument(
        "--contexts",
        default="shipped",
        help="the contexts ({} where the concept's word goes) of the in-context and uce runs: shipped (the world's "
        "prompts/contexts/<concept>.txt, as the toyworld-* recipes), heldout (the held-out explicit prompts alone, "
        "one template: the default before 2026-12-04) or a file",
    )
    ap.add_argument(
        "--flagged",
        action="store_true",
        help="train the sdd/esd runs on the held-out split's implicit "
        "prompts too, pushed off the concept (unsee erase --flagged; the evaluation's seen split is never one)",
    )
    ap.add_argument("--flagged-guidance", type=float, default=None, help="eta of --flagged (unsee erase's default 1)")
    ap.add_argument("--guidance", type=float, default=None, help="SDD teacher CFG / ESD negative guidance")
    ap.add_argument(
        "--seed", type=int, default=None, help="seed of the erase runs (default 0); the evaluation's seeds stay"
    )
    ap.add_argument(
        "--runs",
        default=None,
        help="comma-separated run names (default: skull sdd-text, sdd-hfi, esd-x; kelvo "
        "esd-x, sdd-hfi); also esd-u (ESD on every UNet weight outside cross-attention), esd-hfi (ESD-x keyed on "
        "the learned token), sdd-hfi-word and esd-hfi-word (keyed on the token and the word, in turn), sdd-text for the style; "
        "uce-text, uce-hfi, uce-hfi-word: UCE's closed-form key/value edit keyed on the word, the token or both, with "
        "the --contexts (the evaluation's splits are never one); uce-text-then-hfi: "
        "uce-hfi's edit applied to uce-text's model (a second closed-form edit on the first's output); uce-triggers: "
        "the word and the concept's trigger words, with the held-out explicit and implicit prompts as contexts",
    )
    args = ap.parse_args()
    if unknown := sorted(set(args.runs.split(",")) - set(RUN_NAMES) if args.runs else ()):
        ap.error(f"unknown --runs {','.join(unknown)}; choose from {','.join(RUN_NAMES)}")

    from diffusers.utils import logging as dlog

    from unsee.demo import contexts_file, erase_settings, hfi_token
    from unsee.erase import EraseConfig, erase
    from unsee.evaluate import EvaluateConfig, evaluate
    from unsee.toyworld import contexts_path, prompts_path
    from unsee.toyworld.world import OBJECT_TRIGGERS, STYLE_TRIGGERS

    dlog.disable_progress_bar()
    out = Path(args.out)
    overrides = {
        k: getattr(args, k)
        for k in (
            "steps",
            "lr",
            "batch_size",
            "reuse",
            "ema_decay",
            "preserve_weight",
            "preserve_on",
            "guidance",
            "null_energy",
            "seed",
        )
    }
    settings = {m: erase_settings(m, **overrides) for m in ("sdd", "esd")}
    settings["uce"] = erase_settings(
        "uce", preserve_weight=args.preserve_weight
    )  # its weight is lambda_p of the closed form
    summary = {
        "settings": {m: {k: v for k, v in s.items() if k != "preserve"} for m, s in settings.items()},
        "params": args.params,
        "anchor": args.anchor,
        "in_context": args.in_context,
        "contexts": args.contexts,
        "flagged": args.flagged,
        "flagged_guidance": args.flagged_guidance,
        "keep_neighbour": args.keep_neighbour,
        "keep_benign": args.keep_benign,
        "concepts": {},
    }
    for concept in args.concepts.split(","):
        d = out / concept
        # ESD-u is the ESD paper's choice for objects, ESD-x for styles; the `extra` runs run only when --runs names them
        word = concept if concept == "skull" else f"by {concept}"
        sets = [(name, "seen") for name in SETS[concept]]  # (prompt file, split)
        per_method = settings
        for i, flag in ((2, args.keep_neighbour), (3, args.keep_benign)):
            if not flag:
                continue
            if not args.preserve_weight:
                raise SystemExit("--keep-neighbour and --keep-benign need --preserve-weight W > 0")
            kept = tuple(ln for ln in prompts_path(*sets[i]).read_text().splitlines() if ln.strip())
            per_method = {m: s | {"preserve": tuple(s["preserve"]) + kept} for m, s in per_method.items()}
            sets[i] = (sets[i][0], "heldout")
        xp = args.params or "xattn"  # the cross-attention runs' trained parameters
        # UCE's contexts: the held-out split's explicit (and, for the triggers, implicit) prompts with {} for the word
        triggers = tuple(OBJECT_TRIGGERS if concept == "skull" else STYLE_TRIGGERS)
        d.mkdir(parents=True, exist_ok=True)
        ctx = {
            name: contexts_file(d / f"contexts-{name}.txt", sets_, words)
            for name, sets_, words in (
                ("uce", SETS[concept][:1], (word,)),
                ("uce-triggers", SETS[concept][:2], (word, *triggers)),
            )
        }
        if args.contexts != "heldout":
            ctx["uce"] = contexts_path(concept) if args.contexts == "shipped" else Path(args.contexts)
        uce = {"context": (f"@{ctx['uce']}",)}
        if args.in_context:
            per_method = {m: st | (uce if m != "uce" else {}) for m, st in per_method.items()}
        if args.flagged:
            implicit = prompts_path(SETS[concept][1], "heldout")
            flagged = {"flagged": (f"@{implicit}",)} | (
                {"flagged_guidance": args.flagged_guidance} if args.flagged_guidance is not None else {}
            )
            per_method = {m: st | (flagged if m != "uce" else {}) for m, st in per_method.items()}
        # (name, method, concept text or None, keyed on the HFI token too, trained parameters[, extra settings])
        runs = {
            "skull": (
                ("sdd-text", "sdd", word, False, xp),
                ("sdd-hfi", "sdd", None, True, xp),
                ("esd-x", "esd", word, False, xp),
            ),
            "kelvo": (("esd-x", "esd", word, False, xp), ("sdd-hfi", "sdd", None, True, xp)),
        }[concept]
        extra = (
            ("esd-u", "esd", word, False, "noxattn"),
            ("esd-hfi", "esd", None, True, xp),
            ("sdd-hfi-word", "sdd", word, True, xp),
            ("esd-hfi-word", "esd", word, True, xp),
            ("sdd-text", "sdd", word, False, xp),
            ("uce-text", "uce", word, False, "xattn-kv", uce),
            ("uce-hfi", "uce", None, True, "xattn-kv", uce),
            ("uce-hfi-word", "uce", word, True, "xattn-kv", uce),
            ("uce-text-then-hfi", "uce", None, True, "xattn-kv", uce | {"model": str(d / "models" / "uce-text")}),
            (
                "uce-triggers",
                "uce",
                word,
                False,
                "xattn-kv",
                {"context": (f"@{ctx['uce-triggers']}",), "concept": (word, *triggers)},
            ),
            ("sdd-paper", "sdd", word, False, "xattn", {"paper": True}),
            ("esd-x-paper", "esd", word, False, "xattn", {"paper": True}),
        )
        chosen = args.runs.split(",") if args.runs else [r[0] for r in runs]
        catalogue = {r[0]: r for r in runs}  # a name in both lists (sdd-text on the skull) keeps the default run
        for e in extra:
            catalogue.setdefault(e[0], e)
        assert set(catalogue) == set(RUN_NAMES), "RUN_NAMES lists every run"
        if "uce-text-then-hfi" in chosen and "uce-text" not in chosen:
            chosen.insert(chosen.index("uce-text-then-hfi"), "uce-text")  # its base model
        runs = tuple(r for name, r in catalogue.items() if name in chosen)
        token = (
            hfi_token(d / "hfi", concept, progress=False) if any(r[3] for r in runs) else None
        )  # only HFI runs need it
        models, seconds = {"base": "toyworld"}, {}
        for name, method, text, keyed_on_token, params, *more in runs:
            folder = d / "models" / name
            t0 = time.time()
            if not (folder / "unsee.json").exists():
                more_kw = dict(more[0]) if more else {}
                paper = more_kw.pop("paper", False)
                kw = (
                    {"model": "toyworld", "concept": (text,) if text else ()}
                    | (paper_settings(method) if paper else per_method[method] | {"anchor": args.anchor})
                    | more_kw
                )
                erase(
                    EraseConfig(
                        out=str(folder),
                        method=method,
                        token=str(token) if keyed_on_token else None,
                        params=params,
                        **kw,
                    ),
                    progress=False,
                )
                seconds[name] = round(time.time() - t0, 1)
            else:
                seconds[name] = json.loads((folder / "unsee.json").read_text())["summary"]["seconds"]
            models[name] = str(folder)
        novel = [(name, "novel") for name in SETS[concept]]
        m = evaluate(
            EvaluateConfig(
                model=tuple(models.values()),
                name=tuple(models),
                out=str(d / "eval"),
                prompts=tuple(str(prompts_path(*s)) for s in sets + novel),
                images_per_prompt=args.images_per_prompt,
            ),
            progress=False,
        )
        res = m["results"]
        # each file name is in two folders, so evaluate names a set "<split>-<stem>"
        split_sets = {
            "seen": [f"{split}-{name}" for name, split in sets],
            "novel": [f"novel-{name}" for name in SETS[concept]],
        }
        base = res["base"]
        print(
            f"\n[{concept}] {summary['settings']} | images per set: {base[split_sets['seen'][0]]['images']}"
            + (" | seen neighbour on the held-out split, its seen prompts kept" if args.keep_neighbour else "")
            + (" | seen benign on the held-out split, its seen prompts kept" if args.keep_benign else "")
        )
        print(
            f"{'model':12} {'split':6} {'explicit':>9} {'cut':>6} {'implicit':>9} {'cut':>6} {NEIGHBOURS[concept]:>9} "
            f"{'benign colour/shape/bg':>24} {'trained on':>11} {'seconds':>8}"
        )
        rows = {}
        for name, per_set in res.items():
            rows[name] = {"seconds": seconds.get(name)}
            for split in SPLITS:
                explicit, implicit, neighbour, benign = split_sets[split]
                r_exp, r_imp = (
                    per_set[explicit]["labels"][concept]["rate"],
                    per_set[implicit]["labels"][concept]["rate"],
                )
                cut_e = 1 - r_exp / max(base[explicit]["labels"][concept]["rate"], 1e-9)
                cut_i = 1 - r_imp / max(base[implicit]["labels"][concept]["rate"], 1e-9)
                nb = per_set[neighbour]["labels"][NEIGHBOURS[concept]]["rate"]
                acc = per_set[benign]["named_attribute_accuracy"]
                seen = [per_set[s].get("training_overlap", {}).get("trained_phrasings", 0) for s in split_sets[split]]
                rows[name][split] = {
                    "explicit": r_exp,
                    "explicit_cut": cut_e,
                    "implicit": r_imp,
                    "implicit_cut": cut_i,
                    "neighbour": nb,
                    "benign_accuracy": acc,
                    "trained_phrasings": seen,
                }
                print(
                    f"{name:12} {split:6} {r_exp:9.3f} {cut_e if name != 'base' else 0:6.0%} {r_imp:9.3f} "
                    f"{cut_i if name != 'base' else 0:6.0%} {nb:9.3f} "
                    f"{acc['colour']:>12.3f}/{acc['shape']:.3f}/{acc['background']:.3f} "
                    f"{sum(seen):>11} {seconds.get(name, 0) or 0:8.0f}"
                )
        summary["concepts"][concept] = rows
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"results -> {out / 'results.json'}")


if __name__ == "__main__":
    main()
