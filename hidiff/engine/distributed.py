"""Process-group set-up for torchrun and small collective helpers.

Launch: ``torchrun --nproc_per_node=N scripts/train.py -opt X.yml --launcher pytorch``
(multi-node: add ``--nnodes``, ``--rdzv-backend c10d --rdzv-endpoint host:port``).
torchrun exports RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; we
read them from the environment (the legacy ``--local_rank`` argument is ignored).
Backend: NCCL on CUDA, gloo on the CPU or where NCCL is missing.  Every helper
also works without a process group (single process = rank 0 of 1).
"""
from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hidiff.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ConfigError(f"--launcher pytorch: environment variable {name} is not set; start the run with "
                              "torchrun (torchrun --nproc_per_node=N scripts/train.py -opt ... --launcher pytorch)")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_device(num_gpu: Any, local_rank: int = 0) -> torch.device:
    """``num_gpu: 0`` -> CPU; ``auto`` or >0 -> ``cuda:local_rank`` (error if there is no GPU)."""
    if num_gpu in (0, "0"):
        return torch.device("cpu")
    if num_gpu in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"num_gpu: {num_gpu} but no CUDA device is available; set num_gpu: 0 (CPU) or auto")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(f"cuda:{local_rank}")


def init_distributed(launcher: str, num_gpu: Any = "auto", backend: str | None = None,
                     timeout_min: float = 30.0) -> DistInfo:
    """Start the process group when launched by torchrun and pick this rank's device.

    ``launcher``: 'none' (single process), 'pytorch' (torchrun env vars) or
    'auto' ('pytorch' when WORLD_SIZE is set in the environment).
    """
    if launcher == "auto":
        launcher = "pytorch" if "WORLD_SIZE" in os.environ else "none"
    if launcher == "none":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("WORLD_SIZE > 1 in the environment (started by torchrun?) but --launcher none; "
                              "pass --launcher pytorch")
        return DistInfo(device=resolve_device(num_gpu, 0))
    if launcher != "pytorch":
        raise ConfigError(f"--launcher: expected none, pytorch or auto, got {launcher!r}")
    rank = _env_int("RANK")
    world = _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", rank)
    device = resolve_device(num_gpu, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if backend is None:
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_min),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device, backend=backend)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def barrier() -> None:
    if is_dist():
        dist.barrier()


def reduce_mean_dict(values: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Average scalar tensors over ranks (for logging); a plain dict of floats."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(device)
    if is_dist():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` without a group)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup(orderly: bool | None = None) -> None:
    """Destroy the process group; every rank calls it once, at the end of its run.

    ``orderly`` (default: no exception is propagating, i.e. a normal end): first a barrier, so every rank has
    finished its last collective before any closes its connections.  After an error the barrier is skipped:
    a failed rank may be alone here while the others wait in another collective, and a mismatched collective
    would hang or abort instead of failing cleanly.  The train command ends with :func:`end_worker`.
    """
    if not is_dist():
        return
    if orderly is None:
        orderly = sys.exc_info()[0] is None
    try:
        if orderly:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def any_over_ranks(flags: list[bool | torch.Tensor], device: torch.device) -> list[bool]:
    """For each flag (a bool or a 0-d tensor): True if it is true on any rank (one all-reduce, one sync)."""
    t = torch.stack([torch.as_tensor(f, device=device).float().reshape(()) for f in flags])
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def end_worker(code: int) -> None:
    """In a torchrun worker (WORLD_SIZE > 1) leave now with exit status ``code``, skipping C++ teardown.

    DistributedDataParallel keeps the gloo process group's threads running after ``destroy_process_group``
    (torch 2.14; without DDP they stop), and at a normal interpreter exit they race the static destructors:
    about one 2-process run in 50 lost a worker to SIGABRT ("terminate called without an active exception")
    after a complete run.  A worker therefore flushes its logs and output and leaves with ``os._exit``.
    Anywhere else this returns, so in-process callers get their exit code back.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os._exit(code)
