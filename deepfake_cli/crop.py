"""The one crop from a video frame to a face image: `CropSpec` (recorded with the data and in
checkpoints), the box around a face, and the resize every path shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from deepfake_cli.faces import Face


@dataclass(frozen=True)
class CropSpec:
    """How a face crop is cut from a frame. Recorded with the data and in checkpoints."""

    size: int = 256
    margin: float = 0.2  # a fraction of the face box side, or pixels when relative=False
    relative: bool = True
    square: bool = True
    # "area": area averaging when shrinking, cubic when growing; "linear": cv2.resize's default, the notebooks'
    interpolation: str = "area"

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"crop size must be at least 16 pixels, got {self.size}")
        if self.margin < 0 or (self.relative and self.margin > 2):
            raise ValueError(f"--margin must be between 0 and 2 (a fraction of the face size), got {self.margin}")
        if self.interpolation not in ("area", "linear"):
            raise ValueError(f"crop interpolation must be area or linear, got {self.interpolation!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self == REFERENCE_CROP:
            return f"landmark box + {self.margin:g} px, stretched to {self.size} px (the reference preprocessing)"
        margin = f"{self.margin:g} of the face size" if self.relative else f"{self.margin:g} px"
        return f"{'square' if self.square else 'stretched'}, margin {margin}, {self.size} px"

    @classmethod
    def parse(cls, text: str) -> "CropSpec":
        """`reference`, or `MARGIN:SIZE` (extract's --margin and --image-size), e.g. `0.2:256`."""
        if text == "reference":
            return REFERENCE_CROP
        margin, _, size = text.partition(":")
        try:
            return cls(margin=float(margin), size=int(size or 256))
        except ValueError as e:
            detail = str(e) if "must" in str(e) else "expected `reference` or MARGIN:SIZE such as 0.2:256"
            raise ValueError(f"--crop {text}: {detail}") from None


# The notebooks' crop: the landmark box plus a fixed 20 px, stretched to 256x256 by cv2.resize.
REFERENCE_CROP = CropSpec(size=256, margin=20, relative=False, square=False, interpolation="linear")


def crop_box(face: Face, frame_shape: tuple[int, ...], spec: CropSpec) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) of the crop around `face`, inside the frame."""
    height, width = frame_shape[:2]
    x0, y0, x1, y1 = face.box
    margin = spec.margin * face.size if spec.relative else spec.margin
    if spec.square:
        # A square keeps the face's aspect ratio through the resize; when it meets a frame edge
        # it slides inwards rather than shrinking, so the face stays whole and centred-ish.
        side = min(face.size + 2 * margin, width, height)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = min(max(cx - side / 2, 0), width - side)
        top = min(max(cy - side / 2, 0), height - side)
        box = (left, top, left + side, top + side)
        ix0, iy0, ix1, iy1 = (int(round(v)) for v in box)
    else:  # the notebooks' arithmetic, truncation included, so their data and ours cut the same pixels
        box = (max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, width), min(y1 + margin, height))
        ix0, iy0, ix1, iy1 = (int(v) for v in box)
    return ix0, iy0, max(ix1, ix0 + 1), max(iy1, iy0 + 1)


def crop_face(frame: np.ndarray, face: Face, spec: CropSpec) -> np.ndarray:
    """The (size, size, 3) uint8 BGR crop of `face`."""
    x0, y0, x1, y1 = crop_box(face, frame.shape, spec)
    if spec.interpolation == "linear":
        return cv2.resize(frame[y0:y1, x0:x1], (spec.size, spec.size))
    return resize_square(frame[y0:y1, x0:x1], spec.size)


def crop_landmarks(face: Face, frame_shape: tuple[int, ...], spec: CropSpec) -> np.ndarray:
    """`face`'s (468, 2) landmarks in the pixels of its crop (`crop_face` with the same spec), float32."""
    x0, y0, x1, y1 = crop_box(face, frame_shape, spec)
    scale = np.array([spec.size / (x1 - x0), spec.size / (y1 - y0)])
    return ((face.landmarks - (x0, y0)) * scale).astype(np.float32)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size: area averaging when shrinking (no aliasing), cubic when growing."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrinking = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
