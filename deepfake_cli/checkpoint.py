"""Checkpoints that describe themselves, and the reference notebook's bare state_dicts.

Ours: {"format", "model", "model_args", "inputs", "threshold", "classes", "meta", ...}.
`evaluate` and `predict` need nothing but the file. Loading never runs code from it
(`weights_only=True`).
"""

from __future__ import annotations

import importlib.metadata
import io
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from deepfake_cli import __version__
from deepfake_cli.backbones import BACKBONES
from deepfake_cli.calibration import Calibration, describe_threshold
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import atomic_write_bytes
from deepfake_cli.inputs import REFERENCE_INPUTS, InputSpec
from deepfake_cli.memory import keep_freed_memory
from deepfake_cli.model import FEATURE_DIM, DeepfakeDetector, MaskHead

FORMAT = "deepfake-cli/1"
CLASSES = ("real", "fake")
EXPECTED = "a best.pt/last.pt from `deepfake train`, or a reference state_dict (keys cnn.*, lstm.*, fc.0.*, fc.3.*)"


@dataclass
class Detector:
    """A model ready for inference, with everything needed to feed it."""

    model: DeepfakeDetector
    inputs: InputSpec
    threshold: float
    path: Path
    meta: dict
    reference: bool  # a bare state_dict from the reference notebook
    calibration: Calibration | None = None  # raw P(fake) -> calibrated; None: uncalibrated, reference state_dicts
    mask_head: torch.nn.Module | None = None  # --self-blend's: where each frame looks blended (heatmap.py)

    def describe(self) -> str:
        kind = "reference state_dict" if self.reference else f"deepfake-cli checkpoint, {self.model.backbone}"
        return f"{self.path} [{kind}, {describe_threshold(self.threshold, self.calibration)}]"

    def calibrated(self, probs):
        """Raw P(fake) as the checkpoint's threshold reads it: calibrated where the file holds a calibration."""
        return self.calibration.apply(probs) if self.calibration is not None else probs



def versions() -> dict:
    return {"deepfake_cli": __version__, "torch": str(torch.__version__),
            "torchvision": importlib.metadata.version("torchvision"), "python": platform.python_version()}


def save_checkpoint(path: Path, model: DeepfakeDetector, model_args: dict, inputs: InputSpec, threshold: float,
                    meta: dict, calibration: Calibration | None = None, **training_state) -> None:
    """Atomically save weights plus everything `load_detector` needs; `training_state` is for --resume.
    `threshold` applies to calibrated scores where a `calibration` is given."""
    payload = {"format": FORMAT, "model": model.state_dict(), "model_args": model_args, "inputs": inputs.to_dict(),
               "threshold": float(threshold), "classes": list(CLASSES), "meta": {**meta, "versions": versions()},
               "calibration": calibration.to_dict() if calibration is not None else None, **training_state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise DeepfakeError(f"{path}: no such checkpoint; expected {EXPECTED}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a pickle, a pickle that needs code to load
        reason = str(e).strip().splitlines()[0][:120]
        raise DeepfakeError(f"{path}: not a readable PyTorch checkpoint ({reason}); expected {EXPECTED}") from None
    if not isinstance(payload, dict):
        raise DeepfakeError(f"{path}: holds a {type(payload).__name__}, not a checkpoint; expected {EXPECTED}")
    return payload


def load_detector(path: Path, device: str | torch.device = "cpu") -> Detector:
    """The model for inference on `device`: eval mode, BatchNorm folded into the convolutions
    and the backbone in channels_last (together 2x faster on CPU; the same numbers to float
    rounding). Not for training: the folded model has no BatchNorm layers left. On CPU the
    process also keeps the memory each pass frees (`memory.keep_freed_memory`)."""
    payload = read_checkpoint(path)
    if payload.get("format") == FORMAT:
        _check_complete(payload, path)
        backbone = payload["model_args"]["backbone"]
        if backbone not in BACKBONES:
            raise DeepfakeError(f"{path}: made with the backbone {backbone!r}, which deepfake-cli {__version__} does not "
                                f"know ({', '.join(BACKBONES)}); upgrade deepfake-cli")
        model = DeepfakeDetector(**payload["model_args"])
        _load_state(model, payload["model"], path)
        return Detector(_ready(model, device), InputSpec.from_dict(payload["inputs"]), payload["threshold"], path,
                        payload["meta"], reference=False, calibration=Calibration.from_dict(payload["calibration"]),
                        mask_head=_mask_head(payload.get("mask_head"), device))
    if "lstm.weight_ih_l0" in payload and any(k.startswith("cnn.") for k in payload):
        # The notebook's DeepfakeDetector: last-step read-out, BGR 0..1, raw distances, 0.5.
        hidden = payload["lstm.weight_hh_l0"].shape[1]
        landmark_dim = payload["lstm.weight_ih_l0"].shape[1] - FEATURE_DIM
        model = DeepfakeDetector(hidden_size=hidden, landmark_dim=landmark_dim, readout="last")
        _load_state(model, payload, path)
        return Detector(_ready(model, device), REFERENCE_INPUTS, 0.5, path, {"backbone": "reference"}, reference=True)
    keys = ", ".join(list(payload)[:3])
    raise DeepfakeError(f"{path}: a state_dict of another model (keys {keys}, ...); expected {EXPECTED}")


# What every deepfake-cli checkpoint holds: a file of our format without one of them was cut short or
# made by hand, and gets one line rather than a KeyError.
REQUIRED = {"model": (), "model_args": ("backbone", "readout"), "inputs": ("image_size", "seq_len", "crop", "sampling"),
            "threshold": (), "meta": (), "calibration": ()}


def _check_complete(payload: dict, path: Path) -> None:
    missing = []
    for key, parts in REQUIRED.items():
        missing += [key] if key not in payload else [f"{key}.{part}" for part in parts if part not in payload[key]]
    if missing:
        raise DeepfakeError(f"{path}: a deepfake-cli checkpoint without {', '.join(missing)}; train it again with "
                            f"deepfake-cli {__version__}")


def _mask_head(state: dict | None, device: str | torch.device) -> torch.nn.Module | None:
    if state is None:
        return None
    head = MaskHead.layer()
    head.load_state_dict(state)
    return head.to(device).eval()


def _ready(model: DeepfakeDetector, device: str | torch.device) -> DeepfakeDetector:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.to(device).eval()
    for block in model.cnn.modules():  # each conv_bn(): Conv2d, BatchNorm2d[, SiLU or ReLU6]
        if isinstance(block, torch.nn.Sequential) and len(block) > 1 and isinstance(block[1], torch.nn.BatchNorm2d):
            block[0], block[1] = fuse_conv_bn_eval(block[0], block[1]), torch.nn.Identity()
    model.cnn.to(memory_format=torch.channels_last)
    if torch.device(device).type == "cpu":
        keep_freed_memory()  # 0.6-0.8x the backbone's time at 256 px on 2 cores
    return model


def _load_state(model: DeepfakeDetector, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise DeepfakeError(f"{path}: weights do not fit the {model.backbone} + BiLSTM detector ({first[:160]})") from None
