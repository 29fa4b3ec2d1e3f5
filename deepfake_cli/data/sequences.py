"""Datasets of sequences for the model: a video's crops and landmark vectors, its self-blend, or both."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from deepfake_cli.data.augment import augment
from deepfake_cli.data.samples import Sample, load_frames, load_vectors
from deepfake_cli.inputs import InputSpec
from deepfake_cli.layout import landmarks_path
from deepfake_cli.selfblend import SelfBlend


class SequenceDataset(Dataset):
    """(frames, vectors, label) per video: (T, 3, S, S) uint8 BGR, (T, 5) float32 raw distances, float.

    Normalisation happens on the model's device (`InputSpec.images`), so only uint8 crosses
    the bus. With `cache_dir`, each video's decoded, resized frames are stored once as .npy and
    memory-mapped on later epochs instead of decoding T JPEGs again.
    """

    def __init__(self, root: Path, samples: list[Sample], inputs: InputSpec, augment: bool = False,
                 cache_dir: Path | None = None):
        self.root, self.samples, self.inputs = root, samples, inputs
        self.augment, self.cache_dir = augment, cache_dir
        self.shared_draws: dict[int, int] | None = None  # index -> whose augmentation draw it shares

    def __len__(self) -> int:
        return len(self.samples)

    def frames(self, sample: Sample) -> np.ndarray:
        """(T, S, S, 3) uint8 BGR."""
        return load_frames(self.root, sample, self.inputs, self.cache_dir)

    def __getitem__(self, key: int | tuple[int, int, int]):
        """`key`: an index, or (index, seed, epoch) to draw this video's augmentation from its own stream
        (the same in any worker process, and again on --resume)."""
        index, *draw = key if isinstance(key, tuple) else (key,)
        sample = self.samples[index]
        return self.item(self.frames(sample), load_vectors(self.root, sample, self.inputs.seq_len), sample.label,
                         [*draw, self.shared_draws[index] if self.shared_draws else index] if draw else None)

    def item(self, frames: np.ndarray, vectors: np.ndarray, label: int, stream: list[int] | None,
             masks: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
        """The sequence as the model takes it, augmented (when on) by a draw from `stream`; with `masks`,
        those too, augmented alike, as a fourth item."""
        if self.augment:
            frames, vectors, masks = augment(frames, vectors, np.random.default_rng(stream), masks)
        images = torch.from_numpy(np.require(frames, requirements=["C", "W"])).permute(0, 3, 1, 2)  # (T, 3, S, S)
        item = images, torch.from_numpy(vectors), torch.tensor(float(label))
        return item if masks is None else (*item, torch.from_numpy(masks))


class SelfBlendDataset(SequenceDataset):
    """Real videos twice over: item 2i is video i as itself (label 0), item 2i+1 its self-blend (label 1).

    The pair shares its augmentation draw, so the two differ by the blend (as in the paper) and, in
    training, for half the pairs by the real video's own alteration over the whole frame, as a blend
    alters its copy (`SelfBlend.alter_whole`): still real, so that only a blend's seams tell them apart.
    With `mask_grid`, each item has a fourth part, (T, grid, grid) float32: the share of every
    cell that was blended (zero for the real video), the target of training's mask head.
    Masks come from the landmark sidecars `extract` writes; a video without one gets the ellipse
    its crop implies (`selfblend.crop_mask`). Without a (seed, epoch) key, every video's blend is
    the same each time: a fixed validation set.
    """

    def __init__(self, root: Path, samples: list[Sample], inputs: InputSpec, augment: bool = False,
                 cache_dir: Path | None = None):
        super().__init__(root, samples, inputs, augment, cache_dir)
        self.recipe = SelfBlend(inputs.crop)
        self.mask_grid: int | None = None  # set: items carry each frame's mask as the mean over grid x grid cells
        self.has_landmarks = [self._sidecar(s) is not None for s in samples]  # headers only: no landmarks read

    def __len__(self) -> int:
        return 2 * len(self.samples)

    def _sidecar(self, sample: Sample) -> np.ndarray | None:
        """The video's landmark sidecar, memory-mapped, or None when it is missing or does not fit."""
        try:
            points = np.load(landmarks_path(self.root, sample.folder, sample.video), mmap_mode="r")
        except (OSError, ValueError):
            return None
        fits = points.ndim == 3 and points.shape[0] >= self.inputs.seq_len and points.shape[1:] == (468, 2)
        return points if fits else None

    def landmarks(self, sample: Sample) -> np.ndarray | None:
        """(T, 468, 2) float32 in the pixels of the resized frames, or None without a usable sidecar."""
        points = self._sidecar(sample)
        if points is None:
            return None
        return points[:self.inputs.seq_len].astype(np.float32) * (self.inputs.image_size / self.inputs.crop.size)

    def _blend(self, sample: Sample, frames: np.ndarray, stream: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The video's self-blend and masks, drawn from `stream` + [1] (the pair's augmentation draws from `stream`)."""
        return self.recipe(frames, self.landmarks(sample), np.random.default_rng([*stream, 1]))

    def __getitem__(self, key: int | tuple[int, int, int]):
        index, *draw = key if isinstance(key, tuple) else (key,)
        video, fake = divmod(index, 2)
        sample = self.samples[video]
        frames = self.frames(sample)
        stream = [*draw, video]  # (seed, epoch, video), or (video,) for the fixed validation blends
        masks = None
        if fake:
            frames, masks = self._blend(sample, frames, stream)
        elif draw:  # training's real videos: some altered over the whole frame, so that only a blend's seams tell
            frames = self.recipe.alter_whole(frames, np.random.default_rng([*stream, 2]))
        return self.masked_item(frames, load_vectors(self.root, sample, self.inputs.seq_len), fake, stream, masks)

    def masked_item(self, frames: np.ndarray, vectors: np.ndarray, label: int, stream: list[int],
                    masks: np.ndarray | None, unknown: bool = False) -> tuple[torch.Tensor, ...]:
        """`item`, and with a mask grid each frame's share of every cell that was blended: `masks` pooled,
        zero where nothing was (`masks` None), or -1 throughout where it is not known (`unknown`)."""
        g = self.mask_grid
        if not g:
            return self.item(frames, vectors, label, stream)
        if masks is None:
            fill = -1.0 if unknown else 0.0
            return (*self.item(frames, vectors, label, stream), torch.full((len(frames), g, g), fill))
        *item, masks = self.item(frames, vectors, label, stream, masks)
        cells = np.stack([cv2.resize(m, (g, g), interpolation=cv2.INTER_AREA) for m in masks.numpy()])
        return (*item, torch.from_numpy(cells))

    def example(self, video: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A video's first frame, its mask and its blend, as training draws them (without the shared augmentation)."""
        sample = self.samples[video]
        frames = self.frames(sample)
        fakes, masks = self._blend(sample, frames, [seed, 1, video])  # epoch 1's stream
        return np.asarray(frames[0]), masks[0], fakes[0]


BLEND_FOLDER = "self-blend"  # the pseudo-folder of the self-blends MixedDataset adds (nothing on disk)


class MixedDataset(SelfBlendDataset):
    """Supervised training with self-blends mixed in: every training video as itself (as
    `SequenceDataset` gives it), then each real video's self-blend as one more fake.

    The blends are listed in `samples` under BLEND_FOLDER with `made_on` their real video, so the
    identity groups of `--pairs` put each beside its real video, sharing its augmentation draw.
    Training's real videos are altered over the whole frame as in `SelfBlendDataset`, half of them.
    With a mask grid, blends carry their cells, real videos zeros, and the dataset's own fakes -1
    (where they were manipulated is not known: no mask loss on them).
    """

    def __init__(self, root: Path, samples: list[Sample], inputs: InputSpec, augment: bool = False,
                 cache_dir: Path | None = None):
        self.base = list(samples)
        self.reals = [s for s in samples if s.label == 0]
        super().__init__(root, self.reals, inputs, augment, cache_dir)
        self.samples = self.base + [Sample(BLEND_FOLDER, s.video, 1, s.key) for s in self.reals]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int, int]):
        index, *draw = key if isinstance(key, tuple) else (key,)
        stream = [*draw, self.shared_draws[index] if self.shared_draws else index]
        if index >= len(self.base):  # a real video's self-blend
            sample = self.reals[index - len(self.base)]
            frames, masks = self._blend(sample, self.frames(sample), stream)
            return self.masked_item(frames, load_vectors(self.root, sample, self.inputs.seq_len), 1, stream, masks)
        sample = self.base[index]
        frames = self.frames(sample)
        if sample.label == 0 and draw:  # as SelfBlendDataset alters training's real videos
            frames = self.recipe.alter_whole(frames, np.random.default_rng([*stream, 2]))
        return self.masked_item(frames, load_vectors(self.root, sample, self.inputs.seq_len), sample.label, stream,
                                None, unknown=sample.label == 1)
