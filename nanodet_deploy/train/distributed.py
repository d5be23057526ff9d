"""Multi-process training helpers (torchrun): process group setup, rank queries, reduce_mean.

``torchrun --nproc_per_node N nanodet-deploy train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` reads them and
starts a process group (NCCL on CUDA, gloo on CPU). Without them everything here is a no-op,
so the same training code runs in one process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """Rank and world size from the torchrun environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(device: torch.device) -> DistInfo:
    """Start the process group when launched by torchrun; pick this rank's GPU on CUDA."""
    if dist.is_available() and dist.is_initialized():
        return current_info()
    info = env_dist_info()
    if not info.enabled:
        return info
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    log.info("process group: %s, rank %d of %d", backend, info.rank, info.world_size)
    return info


def current_info() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over all ranks (official NanoDet ``reduce_mean``); identity in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(value: object, src: int = 0) -> object:
    """Send a picklable value from ``src`` to every rank (identity in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with ``src``'s values (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        for t in tensors:
            dist.broadcast(t, src)
