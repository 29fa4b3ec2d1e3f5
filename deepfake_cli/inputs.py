"""How crops and landmark vectors become model input. Built in one place, from what a checkpoint records."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepfake_cli.crop import REFERENCE_CROP, CropSpec, resize_square
from deepfake_cli.onnxfile import is_onnx, read_description

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LANDMARK_MODES = ("raw", "face_scale")
SAMPLING_RULES = ("segments", "reference")


@dataclass(frozen=True)
class SamplingSpec:
    """How a video became the sequence the model was trained on; `predict` samples clips the same way.

    "segments" (`extract`): the video cut into `frames` equal segments, one face from each (another
    frame of the segment when its own shows none, else the nearest spare frames with the face), and
    the model reads the first `seq_len` of them. "reference" (the notebook's preprocessing): 60
    candidate frames evenly spaced, the first `seq_len` with a face.
    """

    rule: str = "segments"
    frames: int | None = None  # segments per video (extract --frames); None: the model's seq_len

    def __post_init__(self) -> None:
        if self.rule not in SAMPLING_RULES:
            raise ValueError(f"sampling rule must be one of {SAMPLING_RULES}, got {self.rule!r}")

    def segments(self, seq_len: int) -> int:
        return self.frames or seq_len

    def matches(self, other: "SamplingSpec", seq_len: int) -> bool:
        """Whether the two give a model of `seq_len` frames the same sequences."""
        if self.rule != other.rule:
            return False
        return self.rule == "reference" or self.segments(seq_len) == other.segments(seq_len)

    def describe(self, seq_len: int) -> str:
        if self.rule == "reference":
            return f"the first {seq_len} faces of 60 evenly spaced frames (the reference preprocessing)"
        return f"{self.segments(seq_len)} segments over the whole video, the first {seq_len} read"


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
    sampling: SamplingSpec = field(default_factory=SamplingSpec)

    def __post_init__(self) -> None:
        if self.landmarks not in LANDMARK_MODES:
            raise ValueError(f"landmark mode must be one of {LANDMARK_MODES}, got {self.landmarks!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        d = dict(d)
        d["crop"] = CropSpec(**d["crop"])
        d["sampling"] = SamplingSpec(**d["sampling"])
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
REFERENCE_INPUTS = InputSpec(rgb=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), landmarks="raw", crop=REFERENCE_CROP,
                             sampling=SamplingSpec("reference"))


class _SettingsOnly(pickle.Unpickler):
    """Unpickles a torch.save archive's plain data, with every tensor left as None.

    Only tensor-rebuilding globals are allowed, and they are stubbed: no code from the file runs.
    """

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module.startswith("torch"):
            return lambda *args, **kwargs: None
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")

    def persistent_load(self, pid):
        return None


def peek_inputs(path: Path) -> InputSpec | None:
    """A deepfake-cli checkpoint's InputSpec, read without importing torch (None when it has none).

    Lets `predict` start decoding and face detection while torch and the model still load.
    An exported `.onnx` file's settings are in its metadata.
    """
    if is_onnx(path):
        try:
            return InputSpec.from_dict(read_description(path)["inputs"])
        except Exception:  # the scorer says what is wrong with the file
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            payload = _SettingsOnly(io.BytesIO(archive.read(name))).load()
        return InputSpec.from_dict(payload["inputs"])
    except Exception:  # not ours, not a zip, truncated: the real loader will say what is wrong
        return None
