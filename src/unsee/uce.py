"""Closed-form erasure of the cross-attention keys and values (UCE, arXiv 2308.14761), keyed on text or a token.

A prompt reaches SD's UNet only through each cross-attention layer's keys W_k c and values W_v c of its token
states c. UCE solves, for every such projection W at once,
    min_W'  sum_e ||W' c_e - W t_e||^2 + lambda_p sum_k ||W' c_k - W c_k||^2 + lambda_r ||W' - W||_F^2
over edit pairs (c_e: a state of the concept where a prompt holds it, t_e: the anchor's state in its place) and
kept states c_k (the --preserve prompts', the context prompts' own words, the anchor's). Every target is W applied
to a state, so the solution is W' = W M with one d x d matrix shared by every key and value projection:
    M = (sum t_e c_e^T + lambda_p sum c_k c_k^T + lambda_r I)(sum c_e c_e^T + lambda_p sum c_k c_k^T + lambda_r I)^-1
M c_e ~ t_e and M c_k ~ c_k measure how well the edit and the kept states hold, whatever the UNet.

Where the concept sits matters: a state depends on its position (and, in a text encoder with layers, on its
context), so an edit fitted on the bare concept reaches the same word elsewhere in a prompt only partly.
`--context` gives prompts with {} where the concept goes; the concept's states are taken in each.
"""

from __future__ import annotations

import torch

from unsee.errors import UnseeError
from unsee.params import is_xattn_kv
from unsee.sampling import token_ids

UCE_RIDGE = 0.1  # lambda_r, UCE's own: every direction no state constrains stays near the original W


def text_states(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, L) and text-encoder states (B, L, d) in float64."""
    ids = token_ids(pipe, prompts)
    with torch.no_grad():
        return ids, pipe.text_encoder(ids.to(pipe.text_encoder.device))[0].double().cpu()


def prompt_length(ids: torch.Tensor, eos: int) -> int:
    """Tokens up to and including the first end-of-text (padding after it may repeat it)."""
    hits = (ids == eos).nonzero()
    return int(hits[0]) + 1 if len(hits) else len(ids)


def distinct_states(states: torch.Tensor) -> torch.Tensor:
    """(N, d): each distinct token state of (..., d) once, in float64 (padding repeats across prompts)."""
    return torch.unique(states.reshape(-1, states.shape[-1]).double(), dim=0)


def fill(context: str, text: str) -> str:
    """The context prompt with `text` where {} is (single spaces: an empty text leaves no gap)."""
    return " ".join(context.replace("{}", text).split())


def as_context(prompt: str, words: tuple[str, ...]) -> str:
    """The prompt with {} where the first of `words` it holds (as a whole word) was: a context for `fill`."""
    import re

    for w in words:
        if re.search(rf"\b{re.escape(w)}\b", prompt):
            return re.sub(rf"\b{re.escape(w)}\b", "{}", prompt, count=1)
    raise UnseeError(f"none of {', '.join(map(repr, words))} is in the prompt {prompt!r}, so it gives no context")


def edit_rows(pipe, concepts: list[str], anchor: str, contexts: list[str]):
    """(C_e, T_e, C_k): the concept's states and the anchor's in their place, over every concept x context, and the
    states those prompts share with the anchor's (their context words, the anchor itself), to keep.

    Rows run from the concept's first token, aligned with the anchor's on the span's end (as UCE's code). With a
    text encoder that mixes context (layers > 0), the states after the concept carry it, so they run on through the
    padding toward the anchor prompt's; with a context-free one (the toy world's) they are the same tokens, only
    shifted where the anchor's length differs, so then the concept's own tokens alone are edited."""
    eos = pipe.tokenizer.eos_token_id
    carries = getattr(pipe.text_encoder.config, "num_hidden_layers", 1) > 0
    edit_c, edit_t, keep = [], [], []
    for ctx in contexts:
        ids, states = text_states(pipe, [fill(ctx, x) for x in (*concepts, anchor)])
        ia, sa, na = ids[-1], states[-1], prompt_length(ids[-1], eos)
        for ic, sc, name in zip(ids[:-1], states[:-1], concepts, strict=True):
            nc = prompt_length(ic, eos)
            if torch.equal(ic, ia):
                raise UnseeError(
                    f"the concept {name!r} and the anchor {anchor!r} are the same tokens in {fill(ctx, name)!r}; "
                    "give an --anchor other than the concept"
                )
            p = 0  # common prefix: the context before {}
            while p < min(nc, na) and ic[p] == ia[p]:
                p += 1
            s = 0  # common suffix of the unpadded prompts: the context after {} and end-of-text
            while s < min(nc, na) - p and ic[nc - 1 - s] == ia[na - 1 - s]:
                s += 1
            ec, ea = nc - s, na - s  # concept span [p, ec), anchor span [p, ea)
            if ec == p:
                raise UnseeError(
                    f"the concept {name!r} adds no token of its own to {fill(ctx, name)!r} (is it part of the "
                    f"anchor {anchor!r}?); give a concept the tokenizer sees and an anchor without it"
                )
            end = len(ic) - max(0, ea - ec) if carries or ec == ea else ec
            rows = range(p, end)
            edit_c.append(sc[list(rows)])
            edit_t.append(
                sa[[max(p, j - ec + ea) for j in rows]]
            )  # the anchor's first place stands in where it is shorter
            keep += [sc[:p], sa[p:ea]]  # the context before the concept, and the anchor's own tokens, as before
    return torch.cat(edit_c), torch.cat(edit_t), torch.cat(keep)


def closed_form(
    edit_c: torch.Tensor, edit_t: torch.Tensor, keep: torch.Tensor, preserve_weight: float, ridge: float = UCE_RIDGE
) -> torch.Tensor:
    """UCE's M (d, d) for W' = W M, from edit pairs (deduplicated here: padding repeats in every prompt) and
    distinct kept states."""
    c, t = distinct_states(torch.cat([edit_c, edit_t], 1)).chunk(2, dim=1)
    eye = torch.eye(c.shape[1], dtype=torch.float64)
    kk = preserve_weight * keep.T @ keep + ridge * eye
    return torch.linalg.solve((c.T @ c + kk).T, (t.T @ c + kk).T).T  # A B^-1 without forming the inverse


def uce_edit(
    pipe, concepts: list[str], anchor: str, contexts: list[str], preserve: list[str], preserve_weight: float
) -> dict:
    """Apply W <- W M to every cross-attention key and value projection of pipe.unet; return how well it holds."""
    edit_c, edit_t, keep = edit_rows(pipe, concepts, anchor, contexts)
    # Without prompts to keep, the empty prompt's every state is kept, as UCE's code does: classifier-free guidance's
    # unconditional branch reads them, and an edit run through the padding would otherwise move them too.
    empty = text_states(pipe, [""])[1].reshape(-1, keep.shape[1])
    keep = torch.cat([keep, text_states(pipe, preserve)[1].reshape(-1, keep.shape[1]) if preserve else empty])
    moved = (edit_c - edit_t).norm(dim=1) > 1e-6 * edit_c.norm(dim=1)  # rows whose target differs from the state
    if not moved.any():
        raise UnseeError("every concept state equals its anchor's: nothing to erase (is --anchor the concept itself?)")
    c, t = edit_c[moved], edit_t[moved]
    # a state being moved is not also held where it recurs (a concept inside another one's context)
    keep = keep[~(torch.cdist(keep, c) <= 1e-6 * keep.norm(dim=1, keepdim=True)).any(1)]
    k = distinct_states(keep)
    m = closed_form(edit_c, edit_t, k, preserve_weight)
    n = 0
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if is_xattn_kv(name) and name.endswith(".weight") and p.ndim == 2:  # not a bias or an adapter's
                p.copy_((p.double() @ m.to(p.device)).to(p.dtype))
                n += 1
    if not n:
        raise UnseeError("the UNet has no cross-attention key/value projections (attn2.to_k / attn2.to_v) to edit")
    return {
        "projections": n,
        "edit_rows": int(moved.sum()),
        "keep_rows": len(k),
        # 0: every concept state now reads as its anchor's; 1: unchanged
        "edit_residual": round(float((c @ m.T - t).norm() / (c - t).norm()), 4),
        # relative change of the kept states as the keys and values see them, and of the empty prompt's states
        "keep_drift": round(float((k @ m.T - k).norm() / k.norm().clamp(min=1e-30)), 4),
        "empty_prompt_drift": round(float((empty @ m.T - empty).norm() / empty.norm().clamp(min=1e-30)), 4),
    }
