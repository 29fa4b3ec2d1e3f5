"""Where the model looked: Grad-CAM of a window's scores on the backbone's last feature map.

Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel of the last feature map by the mean
gradient of the score on it, and keeps the positive sum: the cells whose features pushed the score
towards "fake". The score is each frame's own (the frame head's logit) where the model has a frame
head, else the window's logit, whose gradient still reaches every frame's map. A `--self-blend` model
also keeps its mask head, which says per cell how much of it it takes for blended: both are shown.
Computed only for reports, one window at a time: predict without --report never runs it.
"""

from __future__ import annotations

import numpy as np
import torch

from deepfake_cli.checkpoint import Detector


def explain_window(detector: Detector, crops: np.ndarray, vectors: np.ndarray,
                   device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """(T, S, S, 3) uint8 BGR crops + (T, 5) raw landmark distances of one window -> {"gradcam": (T, g, g)
    in [0, 1], scaled by the window's largest cell so that frames compare, and with a mask head "mask":
    (T, g, g), the share of each cell taken for blended}. g = crop side / 32, rounded up."""
    inputs, model = detector.inputs, detector.model
    frames = torch.from_numpy(inputs.frames(list(crops)))[None].permute(0, 1, 4, 2, 3).to(device)  # (1, T, 3, S, S)
    landmarks = inputs.landmark_features(torch.from_numpy(np.asarray(vectors, np.float32))[None].to(device))  # (1, T, 5)
    with torch.enable_grad():
        pooled, maps = model.forward_features(inputs.images(frames), maps=True)  # (1, T, 1280), (T, 1280, g, g)
        sequence, per_frame = model.forward_parts(pooled, landmarks)
        target = per_frame.sum() if per_frame is not None else sequence.sum()  # each frame's score reaches its own map
        (gradient,) = torch.autograd.grad(target, maps)
    weights = gradient.mean((2, 3), keepdim=True)  # (T, 1280, 1, 1)
    cam = torch.relu((weights * maps).sum(1)).detach()  # (T, g, g)
    out = {"gradcam": (cam / cam.max().clamp_min(1e-12)).float().cpu().numpy()}
    if detector.mask_head is not None:
        with torch.no_grad():
            out["mask"] = torch.sigmoid(detector.mask_head(maps.detach())[:, 0]).float().cpu().numpy()  # (T, g, g)
    return out

