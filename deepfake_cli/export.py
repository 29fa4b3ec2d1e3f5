"""`export`: a checkpoint as one ONNX graph that `predict` and `evaluate` run with ONNX Runtime, without torch.

The graph takes what the scorer has after cutting faces, (N, T, S, S, 3) uint8 BGR crops at the
model's size and (N, T, 5) raw landmark distances, and returns each window's P(fake), (N,),
calibrated as the checkpoint is, the model's own score, (N,), and, where the model has a frame
head, each frame's, (N, T). Normalisation, the landmark scaling and the calibration are inside it. Everything else `best.pt` records (crop, sampling, sequence length, threshold) is in the
file's metadata (`onnxfile.METADATA_KEY`), so the `.onnx` file describes itself as the checkpoint does.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepfake_cli import onnxfile
from deepfake_cli.checkpoint import Detector, load_detector, versions
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import atomic_write_bytes
from deepfake_cli.inputs import InputSpec

OPSET = 18
OUTPUTS = ("p_fake", "raw_p_fake", "frame_p_fake")
TOLERANCE = 1e-4  # the largest |P(fake) difference| from the checkpoint an export may have


class ExportedDetector(nn.Module):
    """The detector with its input transform in front and sigmoids behind: crops in, probabilities out.

    Outputs `p_fake` (calibrated where the checkpoint holds a calibration: what the checkpoint's
    threshold reads), `raw_p_fake` (the model's own), and with a frame head `frame_p_fake`."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.model, self.inputs = detector.model, detector.inputs
        fitted = detector.calibration
        self.slope, self.offset = (fitted.a, fitted.b) if fitted is not None else (1.0, 0.0)

    def forward(self, crops: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t = crops.shape[:2]
        images = self.inputs.images(crops.permute(0, 1, 4, 2, 3))  # (N, T, 3, S, S) normalised
        features = self.model.cnn(images.flatten(0, 1)).view(b, t, -1)  # (N, T, 1280)
        sequence, frames = self.model.forward_parts(features, self.inputs.landmark_features(vectors))
        logits = self.model.combine(sequence, frames)  # (N,)
        scores = (torch.sigmoid(self.slope * logits + self.offset), torch.sigmoid(logits))  # (N,), (N,)
        return scores if frames is None else (*scores, torch.sigmoid(frames))  # ..., (N, T)


def export(checkpoint: Path, out: Path | None = None) -> dict:
    """Write `out` (default: the checkpoint's path with .onnx) and check it against the checkpoint."""
    try:
        import onnxruntime  # noqa: F401  (the check below needs it; without it, fail before the slow part)
    except ImportError:
        raise DeepfakeError("export needs ONNX Runtime: pip install 'deepfake-cli[onnx]'") from None
    out = out or checkpoint.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise DeepfakeError(f"{out}: the exported file's name must end in .onnx")
    detector = load_detector(checkpoint, "cpu")
    inputs = detector.inputs
    wrapper = ExportedDetector(detector).eval()
    crops, vectors = example_inputs(inputs, windows=2)
    started = time.perf_counter()
    batch = torch.export.Dim("windows", min=1, max=1024)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        # The exporter prints its progress and warns about torch internals: nothing a user can act on.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, (torch.from_numpy(crops), torch.from_numpy(vectors)), dynamo=True,
                                        input_names=["crops", "vectors"], opset_version=OPSET, external_data=False,
                                        output_names=OUTPUTS[:3 if detector.model.frame_head else 2],
                                        dynamic_shapes={"crops": {0: batch}, "vectors": {0: batch}}, verbose=False)
        program.model.metadata_props.update({onnxfile.METADATA_KEY: json.dumps(describe(detector))})
        program.save(str(path))
        seconds = time.perf_counter() - started
        difference = check(wrapper, path, inputs)  # before `out` is touched: a bad export replaces nothing
        data = path.read_bytes()
    atomic_write_bytes(out, data)
    return {"checkpoint": str(checkpoint), "onnx": str(out), "bytes": len(data), "seconds": round(seconds, 2),
            "max_difference": difference, "opset": OPSET}


def describe(detector: Detector) -> dict:
    """What the .onnx file's metadata holds: everything `predict` needs besides the graph."""
    return {"format": onnxfile.FORMAT, "inputs": detector.inputs.to_dict(), "threshold": float(detector.threshold),
            "frame_head": detector.model.frame_head is not None, "backbone": detector.model.backbone,
            "reference": detector.reference, "real_folders": detector.meta.get("real_folders"),
            "calibration": detector.calibration.to_dict() if detector.calibration is not None else None,
            "source": str(detector.path), "versions": versions()}


def example_inputs(inputs: InputSpec, windows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random windows of the model's shape: (N, T, S, S, 3) uint8 crops, (N, T, 5) float32 distances
    around the proportions of a face (eye to eye about twice eye to mouth)."""
    rng = np.random.default_rng(seed)
    t, s = inputs.seq_len, inputs.image_size
    crops = rng.integers(0, 256, (windows, t, s, s, 3), dtype=np.uint8)
    vectors = (np.array([60.0, 45.0, 45.0, 55.0, 55.0]) * rng.uniform(0.8, 1.2, (windows, t, 5))).astype(np.float32)
    return crops, vectors


def check(wrapper: ExportedDetector, path: Path, inputs: InputSpec) -> float:
    """The largest difference between the checkpoint's and the exported file's probabilities, on three
    windows (a batch size the export did not trace); DeepfakeError if it is over TOLERANCE."""
    from deepfake_cli.scorer import onnx_session

    crops, vectors = example_inputs(inputs, windows=3, seed=1)
    with torch.no_grad():
        expected = [o.numpy() for o in wrapper(torch.from_numpy(crops), torch.from_numpy(vectors))]
    session = onnx_session(path, "cpu")
    got = session.run(None, {"crops": crops, "vectors": vectors})
    difference = max(float(np.abs(e - g).max()) for e, g in zip(expected, got))
    if difference > TOLERANCE:
        raise DeepfakeError(f"the exported model differs from the checkpoint by {difference:.2g} (over "
                            f"{TOLERANCE:g}); this is a bug, please report it with the checkpoint's config.json")
    return difference
