"""Data-parallel training across processes (``torchrun``), and its single-process default.

Under ``torchrun --nproc_per_node=N -m train.fit ...`` every process trains the
same member on its share of each epoch's (class-balanced) draws; gradients are
averaged by :class:`torch.nn.parallel.DistributedDataParallel` (gloo on CPU,
nccl on GPU).  Validation predictions are computed on shards and summed across
processes, so every rank takes the same early-stopping decision.  Only rank 0
writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray

__all__ = ["SINGLE_PROCESS", "Group", "setup"]


@dataclass(frozen=True)
class Group:
    """This process's place in the training group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, items: NDArray) -> NDArray:
        """This rank's share of ``items`` (every world-th item from its rank)."""
        return items[self.rank::self.world]

    def sum(self, array: NDArray[np.floating]) -> NDArray[np.float64]:
        """Element-wise sum of ``array`` over all ranks (float64)."""
        if not self.distributed:
            return np.asarray(array, dtype=np.float64)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.numpy()

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


SINGLE_PROCESS = Group()
"""The group of a run without torchrun: rank 0 of 1."""


def setup() -> Group:
    """Join the process group ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Group(rank=dist.get_rank(), world=dist.get_world_size())
