"""How crops and landmark vectors become model input. Built in one place, from what a checkpoint records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from deepfake_cli.faces import REFERENCE_CROP, CropSpec, resize_square

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LANDMARK_MODES = ("raw", "face_scale")


@dataclass(frozen=True)
class InputSpec:
    """Everything between a face crop and the model; saved in every checkpoint."""

    image_size: int = 256
    seq_len: int = 16
    rgb: bool = True  # ImageNet backbones expect RGB; the reference fed OpenCV's BGR
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # "raw": pixel distances as extracted (reference). "face_scale": each frame's distances
    # divided by their mean (so resolution and face size drop out), then standardised with
    # training-set statistics.
    landmarks: str = "face_scale"
    landmark_mean: tuple[float, ...] = (0.0,) * 5
    landmark_std: tuple[float, ...] = (1.0,) * 5
    crop: CropSpec = field(default_factory=CropSpec)

    def __post_init__(self) -> None:
        if self.landmarks not in LANDMARK_MODES:
            raise ValueError(f"landmark mode must be one of {LANDMARK_MODES}, got {self.landmarks!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        d = dict(d)
        d["crop"] = CropSpec(**d["crop"])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def frames(self, crops: list[np.ndarray]) -> np.ndarray:
        """BGR crops -> (T, size, size, 3) uint8, the one resize used in training and inference."""
        return np.stack([resize_square(c, self.image_size) for c in crops])

    def images(self, x):
        """(B, T, 3, H, W) uint8 BGR tensor -> normalised float, done on the model's device."""
        import torch

        x = x.float().div_(255)
        if self.rgb:
            x = x.flip(2)
        mean = torch.tensor(self.mean, device=x.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 1, 3, 1, 1)
        return (x - mean) / std

    def landmark_features(self, v):
        """(..., 5) raw pixel distances -> what the model was trained on."""
        import torch

        if self.landmarks == "raw":
            return v.float()
        v = v.float()
        v = v / v.mean(-1, keepdim=True).clamp_min(1e-6)
        return (v - torch.tensor(self.landmark_mean, device=v.device)) / torch.tensor(self.landmark_std, device=v.device)


def face_scale(vectors: np.ndarray) -> np.ndarray:
    """The numpy twin of the first step of `landmark_features`, for computing training statistics."""
    return vectors / np.maximum(vectors.mean(-1, keepdims=True), 1e-6)


# The reference notebook's conventions: ToTensor() on BGR, raw distances, 20 px stretched crop.
REFERENCE_INPUTS = InputSpec(rgb=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), landmarks="raw", crop=REFERENCE_CROP)
