"""Seconds per generation of Ring-A-Bell's genetic search: unsee vs. the paper's loop, side by side.

The paper's loop scores the whole population every generation (200 text-encoder
passes). unsee scores only children it has not seen (the kept half's fitness is
known; clones are common once the population converges). Both run the same
number of generations from the same start on the same target, on:
  - the toy world's text encoder (the shipped tokenizer and weights);
  - the full-size SD 1.5 text encoder architecture (CLIP ViT-L/14 text tower,
    123 M parameters) with random weights and its 49408-token vocabulary.
The search cost is text-encoder passes only; it does not depend on the weights.

    .venv/bin/python benchmarks/bench_ringabell.py [--generations 20] [--sd-generations 3]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

from unsee.attack import RingABellConfig, SearchState, encode_ids, frame_ids, genetic_search


def reference_search(population: np.ndarray, score, candidates: np.ndarray, cfg: RingABellConfig, rng) -> float:
    """The paper's loop: score all, keep the best half, crossover + mutation; returns the best loss."""
    keep, k = cfg.population // 2, cfg.length
    for _ in range(cfg.generations):
        fitness = score(population)
        population = population[np.argsort(fitness, kind="stable")]
        parents = population[:keep]
        kids = []
        for _ in range(cfg.population - keep):
            a, b = parents[rng.integers(keep)], parents[rng.integers(keep)]
            child = (
                np.concatenate([a[: (c := rng.integers(1, k))], b[c:]]) if rng.random() < cfg.crossover else a.copy()
            )
            if rng.random() < cfg.mutation:
                child[rng.integers(k)] = candidates[rng.integers(len(candidates))]
            kids.append(child)
        population = np.concatenate([parents, np.stack(kids)])
    return float(np.sort(fitness)[0])


def measure(name: str, tok, te, candidates: np.ndarray, generations: int) -> None:
    cfg = RingABellConfig(model="-", prompts="-", concept_pairs="-", out="-", generations=generations)
    rng = np.random.default_rng(0)
    target = torch.randn(tok.model_max_length, te.config.hidden_size) * 0.5
    passes = [0]

    def score(body: np.ndarray) -> np.ndarray:
        passes[0] += len(body)
        e = encode_ids(te, frame_ids(tok, torch.from_numpy(body)))
        return (e - target).pow(2).mean((1, 2)).double().numpy()

    start = candidates[rng.integers(0, len(candidates), (cfg.population, cfg.length))]
    t0 = time.perf_counter()
    ref_best = reference_search(start.copy(), score, candidates, cfg, np.random.default_rng(1))
    t_ref, p_ref = time.perf_counter() - t0, passes[0]
    passes[0] = 0
    t0 = time.perf_counter()
    st = genetic_search(
        SearchState(start.copy(), np.full(cfg.population, np.inf), 0, [], np.random.default_rng(1)),
        score,
        candidates,
        cfg,
    )
    t_ours, p_ours = time.perf_counter() - t0, passes[0]
    print(f"{name}: {generations} generations, population {cfg.population}, K = {cfg.length}")
    print(
        f"  reference: {t_ref / generations:8.3f} s/generation  {p_ref / generations:6.1f} encoder passes/generation  best {ref_best:.4f}"
    )
    print(
        f"  unsee:     {t_ours / generations:8.3f} s/generation  {p_ours / generations:6.1f} encoder passes/generation  "
        f"best {st.best_history[-1]:.4f}"
    )
    print(
        f"  ratio unsee/reference: {t_ours / t_ref:.2f}x time; a 3000-generation prompt: "
        f"{3000 * t_ours / generations / 60:.1f} min (reference {3000 * t_ref / generations / 60:.1f} min)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generations", type=int, default=100, help="Generations on the toy text encoder.")
    ap.add_argument(
        "--sd-generations", type=int, default=5, help="Generations on the SD 1.5 text encoder (CPU: ~minutes)."
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")

    from unsee.attack import candidate_ids
    from unsee.models import load_text_encoder

    tok, te = load_text_encoder("toyworld", device=args.device)
    measure("toy world text encoder", tok, te, candidate_ids(tok, ["skull", "with"]).numpy(), args.generations)

    from transformers import CLIPTextConfig, CLIPTextModel

    sd = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    te_sd = CLIPTextModel(sd).to(args.device).eval()
    sd_tok = SimpleNamespace(model_max_length=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    measure("SD 1.5 text encoder (random weights)", sd_tok, te_sd, np.arange(49406), args.sd_generations)


if __name__ == "__main__":
    main()
