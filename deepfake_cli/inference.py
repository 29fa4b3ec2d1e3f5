"""The one inference routine on torch models: used for model selection inside `train`, by `evaluate`
and by `predict`'s model process (which computes no metrics on its cold-start path)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from deepfake_cli.device import autocast
from deepfake_cli.inputs import InputSpec
from deepfake_cli.model import DeepfakeDetector


@torch.no_grad()
def predict_batches(model: DeepfakeDetector, batches: Iterable, inputs: InputSpec, device: torch.device,
                    amp: torch.dtype | None = None, from_features: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """P(fake) and labels over batches of (uint8 frames or cached features, raw vectors, labels)."""
    model.eval()
    probs, labels = [], []
    for x, vectors, y in batches:
        x = x.to(device, non_blocking=True)
        vectors = vectors.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x if from_features else inputs.images(x), inputs.landmark_features(vectors), from_features)
        probs.append(torch.sigmoid(logits.float()).cpu())
        labels.append(y)
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(labels).numpy().astype(int)


@torch.no_grad()
def score_windows(model: DeepfakeDetector, frames: torch.Tensor, vectors: torch.Tensor, inputs: InputSpec,
                  device: torch.device, amp: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """P(fake) of (N, T, 3, S, S) uint8 windows, (N,), and, where the model has a frame head, of each of
    their frames, (N, T): the video's score is the one `predict_batches` gives."""
    n, t = frames.shape[:2]
    features = embed_frames(model, frames.flatten(0, 1), inputs, device, amp).view(n, t, -1)  # (N, T, 1280)
    return score_features(model, features, vectors, inputs, device, amp)


@torch.no_grad()
def embed_frames(model: DeepfakeDetector, frames: torch.Tensor, inputs: InputSpec, device: torch.device,
                 amp: torch.dtype | None = None) -> torch.Tensor:
    """(N, 3, S, S) uint8 frames -> their (N, 1280) backbone features, on `device`."""
    model.eval()
    with autocast(device, amp):
        return model.forward_features(inputs.images(frames[None].to(device)))[0]


@torch.no_grad()
def score_features(model: DeepfakeDetector, features: torch.Tensor, vectors: torch.Tensor, inputs: InputSpec,
                   device: torch.device, amp: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """`score_windows` from the windows' (N, T, 1280) backbone features and (N, T, 5) raw vectors."""
    model.eval()
    with autocast(device, amp):
        sequence, per_frame = model.forward_parts(features.to(device), inputs.landmark_features(vectors.to(device)))
        logits = model.combine(sequence, per_frame)
    frame_probs = torch.sigmoid(per_frame.float()).cpu().numpy().astype(np.float64) if per_frame is not None else None
    return torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64), frame_probs
