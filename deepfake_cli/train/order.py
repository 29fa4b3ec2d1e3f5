"""The order training reads its videos in: reshuffled each epoch from (seed, epoch), fakes beside
the real videos they were made on with --pairs, and each video's augmentation drawn from its own
stream, so that --resume replays a run exactly."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from deepfake_cli import data as D
from deepfake_cli.train.config import TrainConfig
from deepfake_cli.train.features import FeatureDataset


def epoch_batches(loader: DataLoader, sampler: SeededSampler, shuffle: torch.Generator, seed: int, epoch: int):
    """An epoch's batches, in the order (seed, epoch) draws. Loader workers start on them at once,
    whether or not the previous epoch is still being validated."""
    shuffle.manual_seed(seed * 1000 + epoch)
    sampler.set_epoch(epoch)
    return iter(loader)


def training_order(train_ds: D.SequenceDataset | FeatureDataset, cfg: TrainConfig, shuffle: torch.Generator, rank: int = 0,
                   world: int = 1) -> SeededSampler:
    """The order training reads `train_ds` in, each epoch reshuffled by `shuffle` (seeded per epoch).

    With --pairs, each group of `D.pair_groups` (a fake, the real video it was made on, the real
    video of the face it carries) comes one video after another and shares one augmentation
    draw, so that in a batch a fake and the real videos differ by the manipulation alone. On
    unseen generated people that raised epochs 4 to 6 on three seeds of four (docs/experiments.md, "Pairs").
    """
    passes = cfg.data.passes(len(train_ds))
    if cfg.data.pairs and not cfg.data.self_blend:  # self-blends are paired with their real video already
        groups = D.pair_groups(train_ds.samples)
        train_ds.shared_draws = {i: n for n, group in enumerate(groups) for i in group}
        return SeededSampler(D.GroupedSampler(groups, shuffle, rank, world), cfg.run.seed, passes)
    train_ds.shared_draws = None
    videos = range(len(train_ds.samples)) if cfg.data.self_blend else train_ds  # what is shuffled: videos, or pairs
    order = (DistributedSampler(videos, world, rank, shuffle=True, seed=cfg.run.seed) if world > 1
             else RandomSampler(videos, generator=shuffle))
    return SeededSampler(D.PairedSampler(order) if cfg.data.self_blend else order, cfg.run.seed, passes)


PASS_EPOCHS = 1_000_000  # a later pass p of epoch e orders a DistributedSampler as its epoch e + p * PASS_EPOCHS


class SeededSampler(Sampler):
    """Wraps a sampler: yields (index, seed, epoch) keys for `SequenceDataset`'s per-sample draws.

    With `passes` > 1 an epoch goes over the wrapped sampler that many times, reshuffled, pass p > 0
    keyed (index, seed, epoch, p): every video comes back with a fresh augmentation and self-blend.
    """

    def __init__(self, sampler: Sampler, seed: int, passes: int = 1):
        self.sampler, self.seed, self.epoch, self.passes = sampler, seed, 0, passes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        for p in range(self.passes):
            if isinstance(self.sampler, DistributedSampler):  # its order is fixed by (seed, epoch): one per pass
                self.sampler.set_epoch(self.epoch + PASS_EPOCHS * p)
            yield from ((index, self.seed, self.epoch, *([p] if p else [])) for index in self.sampler)

    def __len__(self) -> int:
        return self.passes * len(self.sampler)
