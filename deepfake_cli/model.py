"""A backbone per frame (EfficientNet-B0 or -Lite0) -> + 5-d landmarks -> BiLSTM -> head.

With the B0 backbone, compatible with the reference's state_dict. Models trained here also
score each frame (`frame_head`) and average that with the sequence's score."""

from __future__ import annotations

import torch
from torch import nn

from deepfake_cli import backbones
from deepfake_cli.efficientnet import FEATURE_DIM

READOUTS = ("final", "last")
# Inference on CPU runs the backbone a few frames at a time: EfficientNet is memory-bound
# there, and 4 frames of 256 px keep its largest activations (25 MB) in cache. 2.3x faster
# than 32 frames at once on 2 cores, the same numbers. Training keeps whole batches (BatchNorm).
CPU_PIXELS_PER_PASS = 4 * 256 * 256


class DeepfakeDetector(nn.Module):
    """Submodules `cnn`, `lstm`, `fc` match the reference notebook, so its state_dict loads as is.

    The head returns logits (train with BCEWithLogitsLoss; `torch.sigmoid` for probabilities).
    The reference's `fc.4` was a Sigmoid, which has no parameters, so the keys are unchanged.

    With `frame_head`, a linear layer also scores every frame from its backbone features, and
    the video's logit is the mean of the sequence head's and the frames' (mean) logits: two
    views of the same features, each trained on its own loss. On unseen generated people the
    average ranks 0.01-0.03 AUC better than the sequence head alone, and as well as the frames
    alone (docs/experiments.md, "Detection quality"). The reference has no frame head.
    """

    def __init__(self, hidden_size: int = 128, landmark_dim: int = 5, readout: str = "final", dropout: float = 0.3,
                 backbone: str = backbones.DEFAULT, cnn: nn.Module | None = None, frame_head: bool = False):
        """`cnn`: the backbone network already built (with its starting weights), else a new `backbone`."""
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        self.backbone = backbone
        self.cnn = cnn if cnn is not None else backbones.get(backbone).build()  # B0: torchvision's, no classifier
        self.lstm = nn.LSTM(FEATURE_DIM + landmark_dim, hidden_size, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(nn.Linear(2 * hidden_size, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 1))
        self.frame_head = nn.Linear(FEATURE_DIM, 1) if frame_head else None

    def forward_features(self, images: torch.Tensor, maps: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) normalised images -> (B, T, 1280) per-frame features; with `maps`, also the
        backbone's last feature map before pooling, (B*T, 1280, H/32, W/32): what a mask head reads."""
        b, t = images.shape[:2]
        x = images.flatten(0, 1)  # (B*T, 3, H, W)
        if next(self.cnn.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        if maps:
            pooled, grid = self.cnn(x, maps=True)
            return pooled.view(b, t, -1), grid
        if self.training or x.device.type != "cpu":
            return self.cnn(x).view(b, t, -1)  # (B, T, 1280)
        frames = max(1, CPU_PIXELS_PER_PASS // (x.shape[2] * x.shape[3]))
        return torch.cat([self.cnn(chunk) for chunk in x.split(frames)]).view(b, t, -1)  # (B, T, 1280)

    def read_out(self, features: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, T, 1280) features + (B, T, 5) landmarks -> (B, 2H): [forward half, backward half]."""
        x = torch.cat([features, landmarks.to(features.dtype)], dim=2)  # (B, T, 1285)
        out, (h_n, _) = self.lstm(x)  # out: (B, T, 2H); h_n: (2, B, H)
        if self.readout == "last":
            # The reference read out[:, -1]: the backward direction there has seen one frame.
            return out[:, -1]
        # Each direction's final state: forward after frame T-1, backward after frame 0.
        return torch.cat([h_n[0], h_n[1]], dim=1)

    def forward_parts(self, features: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, 1280) features + (B, T, 5) landmarks -> the sequence's (B,) logits and, with a
        frame head, each frame's (B, T) logits (else None): what training puts a loss on."""
        sequence = self.fc(self.read_out(features, landmarks)).squeeze(1)  # (B,)
        frames = self.frame_head(features).squeeze(-1) if self.frame_head is not None else None  # (B, T)
        return sequence, frames

    def forward_head(self, features: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, T, 1280) features + (B, T, 5) landmarks -> (B,) logits."""
        return self.combine(*self.forward_parts(features, landmarks))

    @staticmethod
    def combine(sequence: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
        """The video's (B,) logits from the sequence's (B,) and, with a frame head, the frames' (B, T)."""
        return sequence if frames is None else (sequence + frames.mean(1)) / 2

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor, precomputed: bool = False,
                parts: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, 3, H, W) images, or (B, T, 1280) cached features when `precomputed`, -> (B,) logits,
        or with `parts` what `forward_parts` returns."""
        features = x if precomputed else self.forward_features(x)
        return self.forward_parts(features, landmarks) if parts else self.forward_head(features, landmarks)


class MaskHead(nn.Module):
    """The detector as `--self-blend` trains it: with a head that learns where each frame was blended.

    Face X-ray's idea (Li et al., CVPR 2020): a 1x1 convolution reads the backbone's last feature
    map (4 x 4 cells at 128 px) and predicts, per cell, the share of it the blend covered (0 in
    real videos). A pooled feature can separate blends from real faces by anything that differs;
    the map must point at the blend, so the backbone learns the local traces every swap leaves.
    Scores never use it: validation and predict run the detector alone, whose keys are unchanged.
    best.pt keeps the head beside them (`mask_head`), for reports to show the region it predicts
    (docs/experiments.md, "Self-blended training", has what it does to detection).
    """

    def __init__(self, model: DeepfakeDetector):
        super().__init__()
        self.model = model
        self.head = self.layer()

    @staticmethod
    def layer() -> nn.Conv2d:
        """The head itself: a 1x1 convolution from the last map's 1280 channels to one (best.pt's `mask_head`)."""
        return nn.Conv2d(FEATURE_DIM, 1, 1)

    @staticmethod
    def grid(image_size: int) -> int:
        """The side of the backbone's last map: EfficientNet halves it five times, rounding up."""
        return -(-image_size // 32)

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor, precomputed: bool = False,
                parts: bool = False) -> tuple[torch.Tensor | tuple, torch.Tensor]:
        """What the detector returns (`DeepfakeDetector.forward`), and the (B*T, 1, grid, grid) mask logits.
        (Never `precomputed`: --self-blend cannot go with a frozen backbone's cached features.)"""
        features, maps = self.model.forward_features(images, maps=True)
        return self.model(features, landmarks, precomputed=True, parts=parts), self.head(maps)


def model_args(model: DeepfakeDetector) -> dict:
    """What `DeepfakeDetector(**args)` needs to rebuild the trained model (`frame_head` only where it has one)."""
    return {"readout": model.readout, "backbone": model.backbone, **({"frame_head": True} if model.frame_head is not None else {})}
