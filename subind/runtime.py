"""Where a process runs: its device and its place among ``torchrun``'s processes.

Every stage that runs under ``torchrun`` (sweeps sliced by rank, DDP training, rank-sliced
meanpool builds) asks here for its rank, joins the process group here and picks its GPU here,
so that they all agree: rank r uses ``cuda:<LOCAL_RANK>``, and a collective waits as long as
the process group's timeout allows (long by default: one rank may run an hours-long stage
while the others wait at a barrier).
"""

from __future__ import annotations

import datetime as _dt
import os

import torch
import torch.distributed as dist

# How long a collective (e.g. a barrier while rank 0 trains a long stage) may wait.
DEFAULT_TIMEOUT = _dt.timedelta(hours=12)


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def group_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialized default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device_name(name: str | None, local_rank: int, cuda_available: bool) -> str:
    """The device a name means for the process of ``local_rank``: None or "auto" -> this
    process's GPU (``cuda:<local rank>``) when CUDA is available, else "cpu"; a bare "cuda" ->
    ``cuda:<local rank>`` (so ranks never share GPU 0); anything else as given."""
    if name in (None, "auto"):
        name = "cuda" if cuda_available else "cpu"
    return f"cuda:{local_rank}" if name == "cuda" else name


def resolve_device(name: str | None = "auto") -> torch.device:
    """:func:`device_name` for this process, made the current CUDA device when it is one (as
    NCCL needs)."""
    device = torch.device(device_name(name, dist_env()[2], torch.cuda.is_available()))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_distributed(
    backend: str | None = None, timeout: _dt.timedelta = DEFAULT_TIMEOUT
) -> tuple[int, int]:
    """(rank, world size), joining torchrun's process group first when there is one to join
    (``backend``: default "nccl" when CUDA is available, else "gloo"); (0, 1) outside torchrun.
    ``timeout`` bounds every collective, barriers included."""
    rank, world, _ = dist_env()
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend, timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def barrier(world: int) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if world > 1:
        dist.barrier()
