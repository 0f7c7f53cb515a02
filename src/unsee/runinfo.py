"""What a run writes about itself: versions, git revision, argv, resolved config."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from unsee.files import atomic_write_text

_PACKAGES = ("unsee", "torch", "diffusers", "transformers", "accelerate", "peft", "safetensors")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The unsee source tree's git revision (with `-dirty`), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def run_info(config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "versions": versions(),
        "git_revision": git_revision(),
    }
    if config is not None:
        info["config"] = config
    info.update(extra)
    return info


def write_run_info(path: str | Path, config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    info = run_info(config, **extra)
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=False) + "\n")
    return info
