"""Several training processes under `torchrun`: where each rank runs, and the collectives between them.

Every tensor a collective touches lives on the rank's own device: NCCL (the GPU backend) takes
CUDA tensors only, and a rank's current CUDA device must be its own GPU, or NCCL puts every
rank's buffers on GPU 0. Gloo (CPU) takes CPU tensors. Training calls nothing but these helpers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deepfake_cli.device import resolve_device


@dataclass(frozen=True)
class Ranks:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Ranks":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def start(ranks: Ranks, device_name: str) -> torch.device:
    """This rank's device, made current, and (with several ranks) the process group on its backend."""
    device = resolve_device(device_name, ranks.local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if ranks.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def broadcast(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's `values` on every rank (a plain process gets its own back)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if _active():
        dist.broadcast(tensor, src=0)
    return tensor.tolist()


def barrier(device: torch.device) -> None:
    """Wait for every rank; NCCL's barrier is told the rank's GPU rather than guessing it."""
    if _active():
        dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier()
