"""The ``torch.distributed`` context: rank and world size, initialised under ``torchrun``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistContext:
    """Rank and world size; ``world_size == 1`` outside ``torchrun``."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_context(init: bool = True) -> DistContext:
    """The distributed context, initialising the process group under ``torchrun`` if needed.

    Uses gloo on CPU and nccl on CUDA. Outside ``torchrun`` (no ``WORLD_SIZE``) returns rank 0 of 1.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not init:
        return DistContext(0, 1)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size())
