"""Samplers for --pairs and --self-blend batches, and the one DataLoader every model reads through."""

from __future__ import annotations

import math

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class PairedSampler(Sampler):
    """Wraps a sampler over videos: yields 2i, 2i+1 for each video i it yields (a `SelfBlendDataset`'s pair),
    so each batch of an even size is half real, half self-blended."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return (2 * i + fake for i in self.sampler for fake in (0, 1))

    def __len__(self) -> int:
        return 2 * len(self.sampler)


class GroupedSampler(Sampler):
    """Each epoch, the groups in random order and each group's videos shuffled, one group after another.

    With `pair_groups`, a batch holds a fake beside the real videos of the people it shows
    (FaceForensics++ and Celeb-DF fakes keep the real video's scene and motion). With several
    processes, each takes its own stretch of the one order (every rank's generator is seeded
    alike), padded from the start to equal lengths as `DistributedSampler` pads.
    """

    def __init__(self, groups: list[list[int]], generator: torch.Generator, rank: int = 0, world: int = 1):
        self.groups, self.generator, self.rank, self.world = groups, generator, rank, world

    def __iter__(self):
        order = []
        for g in torch.randperm(len(self.groups), generator=self.generator).tolist():
            group = self.groups[g]
            order += [group[i] for i in torch.randperm(len(group), generator=self.generator).tolist()]
        share = len(self)
        order += order[:share * self.world - len(order)]
        return iter(order[self.rank * share:(self.rank + 1) * share])

    def __len__(self) -> int:
        return math.ceil(sum(map(len, self.groups)) / self.world)


def loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device, sampler: Sampler | None = None,
           persistent: bool = False) -> DataLoader:
    """The one way data is loaded for the model (training, validation, evaluate).

    Worker processes are forked, and OpenCV is set to one thread in this process first: a
    fork inherits OpenCV's thread pool without its threads, and OpenCV in the child could
    then wait forever on a lock no thread will release (seen after extract ran in the same
    process). With one thread there is no pool to inherit, and a worker, one of several
    processes, should not start a thread per core anyway. (Not forkserver or spawn: they run
    the caller's script again in every worker unless it has an `if __name__ == "__main__"`
    guard.) The loader has its own generator: it draws a seed each time an epoch starts a
    fresh iterator, which from the global RNG would shift dropout's draws with the number of
    workers.
    """
    if workers:
        cv2.setNumThreads(1)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                      persistent_workers=persistent and workers > 0, generator=torch.Generator())
