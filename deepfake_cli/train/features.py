"""--freeze-backbone: the backbone's features computed once per video, cached on disk, and the
BatchNorm statistics a frozen from-scratch backbone needs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from deepfake_cli import backbones, data as D
from deepfake_cli.device import autocast
from deepfake_cli.inputs import InputSpec
from deepfake_cli.model import DeepfakeDetector


class FeatureDataset(Dataset):
    """Cached backbone features (N, T, 1280) float16 + raw vectors, for --freeze-backbone.

    The vectors are read once up front: per-step file reads would dominate a step that is
    only an LSTM and a small head.
    """

    def __init__(self, features: np.ndarray, base: D.SequenceDataset):
        self.features, self.samples = features, base.samples  # samples: for training_order's groups
        self.vectors = torch.from_numpy(np.stack([D.load_vectors(base.root, s, base.inputs.seq_len) for s in base.samples]))
        self.labels = torch.tensor([float(s.label) for s in base.samples])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int, int]):
        index = key[0] if isinstance(key, tuple) else key  # (index, seed, epoch) from SeededSampler
        return torch.from_numpy(self.features[index].astype(np.float32)), self.vectors[index], self.labels[index]


def cached_features(model: DeepfakeDetector, dataset: D.SequenceDataset, path: Path, device: torch.device,
                    amp: torch.dtype | None, workers: int, batch_size: int) -> np.ndarray:
    """Backbone features of every video, computed once and memory-mapped from disk afterwards."""
    if not path.is_file():
        loader = D.loader(dataset, batch_size, workers, device)
        tmp = path.with_suffix(".partial.npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                        shape=(len(dataset), dataset.inputs.seq_len, model.cnn.features[-1][0].out_channels))
        model.eval()
        start = 0
        with torch.no_grad():
            for frames, _, _ in loader:
                with autocast(device, amp):
                    feats = model.forward_features(dataset.inputs.images(frames.to(device, non_blocking=True)))
                out[start:start + len(feats)] = feats.float().cpu().numpy()
                start += len(feats)
        out.flush()
        del out
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


@torch.no_grad()
def calibrate_batchnorm(model: DeepfakeDetector, dataset: D.SequenceDataset, device: torch.device, workers: int,
                        batch_size: int) -> None:
    """Set the backbone's BatchNorm statistics from the data, for a frozen from-scratch backbone.

    A randomly initialised backbone in eval mode normalises with mean 0 / variance 1, which
    its activations do not have; its features then collapse. One pass in train mode (cumulative
    averages, no gradients) gives well-conditioned random features for the head to learn from.
    """
    norms = [m for m in model.cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the whole pass
    model.cnn.train()
    for frames, _, _ in D.loader(dataset, batch_size, workers, device):
        model.forward_features(dataset.inputs.images(frames.to(device)))
    model.cnn.eval()


def feature_cache_key(choice: backbones.BackboneChoice, model: DeepfakeDetector, inputs: InputSpec,
                      samples: list[D.Sample]) -> str:
    digest = hashlib.sha1()
    digest.update(json.dumps([choice.name, choice.weights, inputs.image_size, inputs.seq_len, inputs.rgb, inputs.mean, inputs.std]).encode())
    digest.update(model.cnn.features[0][0].weight.detach().cpu().numpy().tobytes())
    digest.update("\n".join(s.key for s in samples).encode())
    return digest.hexdigest()[:16]
