"""`export`: a checkpoint as one ONNX graph that `predict` and `evaluate` run with ONNX Runtime, without torch.

The graph takes face crops one by one and windows as rows of their features, so a scorer can send
each crop through the backbone as soon as it is cut and run the sequence head when the clip is read:

    crops          (N, S, S, 3) uint8 BGR, at the model's size
    features       (K, 1280) float32: features the graph gave for crops of an earlier run
    vectors        (W, T, 5) float32 raw landmark distances of each window's frames
    windows        (W, T) int64: each window's frames, as rows of [features; the crops' features]
 -> crop_features  (N, 1280) the backbone's features of `crops`
    p_fake         (W,) calibrated as the checkpoint is; raw_p_fake (W,) the model's own score;
    frame_p_fake   (W, T) each frame's, where the model has a frame head.

In one run: `features` empty (0, 1280), all the crops, `windows` indexing them. Any of N, K, W may
be 0. Normalisation, the landmark scaling and the calibration are inside the graph. Everything else
`best.pt` records (crop, sampling, sequence length, threshold) is in the file's metadata
(`onnxfile.METADATA_KEY`), so the `.onnx` file describes itself as the checkpoint does.
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
from deepfake_cli.efficientnet import FEATURE_DIM
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import atomic_write_bytes
from deepfake_cli.inputs import InputSpec

OPSET = 18
INPUTS = ("crops", "features", "vectors", "windows")
OUTPUTS = ("crop_features", "p_fake", "raw_p_fake", "frame_p_fake")
TOLERANCE = 1e-4  # the largest |P(fake) difference| from the checkpoint an export may have


class ExportedDetector(nn.Module):
    """The detector with its input transform in front and sigmoids behind: crops in, features and
    probabilities out (the module docstring has the signature).

    Outputs `crop_features`, `p_fake` (calibrated where the checkpoint holds a calibration: what the
    checkpoint's threshold reads), `raw_p_fake` (the model's own), and with a frame head `frame_p_fake`."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.model, self.inputs = detector.model, detector.inputs
        fitted = detector.calibration
        self.slope, self.offset = (fitted.a, fitted.b) if fitted is not None else (1.0, 0.0)

    def forward(self, crops: torch.Tensor, features: torch.Tensor, vectors: torch.Tensor,
                windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        images = self.inputs.images(crops.permute(0, 3, 1, 2)[None])[0]  # (N, 3, S, S) normalised
        crop_features = self.model.cnn(images)  # (N, 1280)
        # One padding window over one zero row: ONNX Runtime's LSTM refuses an empty batch, and W may be 0.
        rows = torch.cat([features, crop_features, crop_features.new_zeros(1, crop_features.shape[1])])  # (K+N+1, 1280)
        w, t = windows.shape
        windows = torch.cat([windows, windows.new_full((1, t), rows.shape[0] - 1)])  # (W+1, T)
        vectors = torch.cat([vectors, vectors.new_ones(1, t, vectors.shape[2])])  # (W+1, T, 5)
        sequence, frames = self.model.forward_parts(rows[windows], self.inputs.landmark_features(vectors))
        logits = self.model.combine(sequence, frames)[:w]  # (W,)
        scores = (crop_features, torch.sigmoid(self.slope * logits + self.offset), torch.sigmoid(logits))
        return scores if frames is None else (*scores, torch.sigmoid(frames[:w]))  # ..., (W, T)


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
    example = example_inputs(inputs, windows=2, known=3)
    started = time.perf_counter()
    dims = {name: {0: torch.export.Dim(name, min=0, max=1 << 16)} for name in ("crops", "features")}
    windows = torch.export.Dim("windows", min=0, max=1 << 12)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        # The exporter prints its progress and warns about torch internals: nothing a user can act on.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, tuple(torch.from_numpy(a) for a in example), dynamo=True,
                                        input_names=list(INPUTS), opset_version=OPSET, external_data=False,
                                        output_names=list(OUTPUTS[:4 if detector.model.frame_head else 3]),
                                        dynamic_shapes={**dims, "vectors": {0: windows}, "windows": {0: windows}},
                                        verbose=False)
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


def example_inputs(inputs: InputSpec, windows: int, known: int = 0, seed: int = 0) -> tuple[np.ndarray, ...]:
    """The graph's inputs for `windows` random windows, their frames' crops after `known` rows of features:
    (W*T, S, S, 3) uint8 crops, (K, 1280) float32 features, (W, T, 5) float32 distances around the
    proportions of a face (eye to eye about twice eye to mouth), (W, T) int64 rows."""
    rng = np.random.default_rng(seed)
    t, s = inputs.seq_len, inputs.image_size
    crops = rng.integers(0, 256, (windows * t, s, s, 3), dtype=np.uint8)
    features = rng.uniform(0, 1, (known, FEATURE_DIM)).astype(np.float32)
    vectors = (np.array([60.0, 45.0, 45.0, 55.0, 55.0]) * rng.uniform(0.8, 1.2, (windows, t, 5))).astype(np.float32)
    rows = known + np.arange(windows * t).reshape(windows, t)
    return crops, features, vectors, rows


def check(wrapper: ExportedDetector, path: Path, inputs: InputSpec) -> float:
    """The largest difference between the checkpoint's and the exported file's probabilities, on three windows
    (a batch size the export did not trace), in one run and as a scorer runs it (crops first, then
    windows of their features); DeepfakeError if it is over TOLERANCE."""
    from deepfake_cli.scorer import onnx_session

    crops, features, vectors, rows = example_inputs(inputs, windows=3, seed=1)
    with torch.no_grad():
        expected = [o.numpy() for o in wrapper(*(torch.from_numpy(a) for a in (crops, features, vectors, rows)))]
    session = onnx_session(path, "cpu")
    got = session.run(None, dict(zip(INPUTS, (crops, features, vectors, rows))))
    streamed = session.run(None, dict(zip(INPUTS, (crops[:0], got[0], vectors, rows))))
    # The probabilities, in one run and streamed (the features are checked through them).
    difference = max(float(np.abs(e - g).max()) for e, g in zip(expected[1:] * 2, got[1:] + streamed[1:]))
    if difference > TOLERANCE:
        raise DeepfakeError(f"the exported model differs from the checkpoint by {difference:.2g} (over "
                            f"{TOLERANCE:g}); this is a bug, please report it with the checkpoint's config.json")
    return difference
