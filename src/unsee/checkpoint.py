"""Checkpoints in safetensors + JSON only: nothing is ever unpickled.

A checkpoint is a folder with `tensors.safetensors` (model tensors, optimizer
state, torch RNG state) and `meta.json` (step, optimizer hyperparameters,
numpy RNG state, anything JSON). It is written to a temp folder and renamed,
so a kill mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unsee.files import atomic_write_dir

TENSORS, META = "tensors.safetensors", "meta.json"


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    folder: str | Path,
    tensors: dict[str, torch.Tensor],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Atomically write `folder` (replacing an older checkpoint there)."""
    all_tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
    info: dict[str, Any] = dict(meta or {})
    all_tensors["rng.torch"] = torch.get_rng_state()
    if optimizer is not None:
        t, m = optimizer_to_flat(optimizer)
        all_tensors.update(t)
        info["optimizer"] = m

    def write(tmp: Path) -> None:
        save_file(all_tensors, str(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(info))

    return atomic_write_dir(folder, write)


def load_checkpoint(
    folder: str | Path, *, optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model tensors, meta); restores the optimizer and torch RNG in place when given/asked."""
    folder = Path(folder)
    if not (folder / TENSORS).exists() and folder.with_name(folder.name + ".old").exists():
        folder = folder.with_name(folder.name + ".old")  # killed between the two renames
    tensors = load_file(str(folder / TENSORS))
    meta = json.loads((folder / META).read_text())
    if optimizer is not None:
        optimizer_from_flat(optimizer, tensors, meta["optimizer"])
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return model, meta


def has_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / TENSORS).exists() or (folder.with_name(folder.name + ".old") / TENSORS).exists()
