"""Where a command runs: accelerate's process state, the device, and the collective calls of data parallelism.

Every stage imports these from here; under `accelerate launch` or `torchrun` each process runs the same command and
these say which part is its own.
"""

from __future__ import annotations

import atexit

import torch

from unsee.errors import UnseeError


def process_state():
    """accelerate's process state. Without CUDA, processes started by `accelerate launch --multi_gpu` or
    `torchrun` join over gloo only if accelerate is told cpu=True; otherwise each would run alone."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1:
        atexit.unregister(_close_process_group)  # once per process, however often the state is asked for
        atexit.register(_close_process_group)
    return state


def _close_process_group() -> None:
    """Close the process group before the interpreter tears down: left to exit, a rank that finishes first
    aborted in 1 of 3 runs ("terminate called without an active exception", gloo's threads still joinable)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UnseeError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnseeError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    return dev


def distributed():
    """torch.distributed when a process group is up (a multi-process launch), else None."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed
    return None


def average_gradients(dist, params) -> None:
    """Data parallel: average the gradients over ranks in one all-reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    if dist is None or not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def gather(obj):
    """Every rank's `obj`, in rank order (a list of one without a process group)."""
    dist = distributed()
    if dist is None:
        return [obj]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone
