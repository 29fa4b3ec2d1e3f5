"""The model in a process of its own: `predict` imports torch (1-2 s) beside MediaPipe and decoding.

A thread cannot overlap the two: imports hold the GIL. A spawned process loads the checkpoint,
warms its kernels up on one dummy chunk, and then scores windows of face crops sent over a pipe,
so a cold `deepfake predict` waits for max(torch, faces) instead of their sum. This module
imports neither torch nor MediaPipe itself; the child imports torch, the parent never needs to.
An exported `.onnx` model (`deepfake export`) runs on ONNX Runtime instead, and nothing imports torch.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import newest_in_runs
from deepfake_cli.onnxfile import is_onnx

if TYPE_CHECKING:  # kept light: the CLI starts the scorer before importing anything heavy
    import numpy as np

    from deepfake_cli.ensemble import ModelInfo


class Scorer:
    """P(fake) for windows of face crops, from checkpoints loaded in a child process: one, or the
    members of an ensemble, all served by the same process."""

    def __init__(self, checkpoints: Path | list[Path], device: str = "auto"):
        checkpoints = [checkpoints] if isinstance(checkpoints, Path) else list(checkpoints)
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: fork would copy MediaPipe's threads
        self._conn, theirs = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(theirs, checkpoints, device), daemon=True,
                                    name="deepfake-model")
        self._process.start()
        theirs.close()
        self._info: ModelInfo | None = None

    @property
    def info(self) -> ModelInfo:
        """Waits for the model to be loaded; raises DeepfakeError if it could not be."""
        if self._info is None:
            self._info = self._receive()
        return self._info

    def send(self, crops: np.ndarray, vectors: np.ndarray) -> None:
        """Start scoring (N, T, S, S, 3) uint8 BGR crops + (N, T, 5) landmark vectors; returns at once."""
        self.info  # a load error surfaces here, not as a broken pipe
        self._conn.send(("score", crops, vectors))

    def explain(self, crops: np.ndarray, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Heatmaps of one window's (T, S, S, 3) crops and (T, 5) vectors (`heatmap.explain_window`; an
        ensemble's averaged): empty where no member can give them (an .onnx model has no gradients).
        Call it with no scoring under way: the answers come back in the order asked."""
        self.info
        self._conn.send(("explain", crops, vectors))
        return self._receive()

    def receive(self) -> tuple[np.ndarray, np.ndarray | None, float]:
        """The oldest windows sent: each member's raw (M, N) P(fake) (`ModelInfo.combine` makes one of
        them), each frame's (N, T), the mean of the members with a frame head (None without one), and
        the seconds the models spent on them."""
        return self._receive()

    def _receive(self):
        try:
            status, value = self._conn.recv()
        except (EOFError, ConnectionResetError):
            raise DeepfakeError(f"the model process stopped (exit code {self._process.exitcode}); "
                                "its error is printed above") from None
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        self._conn.close()
        self._process.terminate()  # it holds nothing worth a tidy exit, and torch's teardown is slow
        self._process.join()


def latest_checkpoint(runs: Path = Path("runs")) -> Path:
    found = newest_in_runs("best.pt", runs)
    if found is None:
        raise DeepfakeError("no model given and none found in runs/*/best.pt; train one with "
                            "`deepfake train OUT` or pass --model FILE")
    return found


def _serve(conn, checkpoints: list[Path], device: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        score, info, explain = load_models(checkpoints, device)
    except DeepfakeError as e:
        conn.send(("error", e))
        return
    conn.send(("ok", info))
    while True:
        try:
            asked, crops, vectors = conn.recv()
        except EOFError:
            return
        if asked == "explain":
            conn.send(("ok", explain(crops, vectors)))
            continue
        started = time.perf_counter()
        probabilities, frame_probabilities = score(crops, vectors)
        conn.send(("ok", (probabilities, frame_probabilities, time.perf_counter() - started)))


def onnx_session(path: Path, device: str = "auto"):
    """An ONNX Runtime session on the CUDA provider where `device` allows it and it is installed, else the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeepfakeError(f"{path}: an ONNX model needs ONNX Runtime: pip install 'deepfake-cli[onnx]'") from None
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device.startswith("cuda"):
        raise DeepfakeError(f"--device {device}: this ONNX Runtime has no CUDA provider; pip install onnxruntime-gpu, "
                            "or use --device cpu")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not the user's input
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types, one per failure
        reason = str(e).strip().splitlines()[0][:160]
        raise DeepfakeError(f"{path}: ONNX Runtime cannot load it ({reason}); export it again with `deepfake export`") from None


def load_models(checkpoints: list[Path], device: str = "auto"):
    """The scoring function of the loaded, warmed-up members, giving each one's (M, N) raw P(fake) and the
    members' mean (N, T) frame P(fake) (None when none has a frame head); the ModelInfo; and the
    function of one window that gives the members' mean heatmaps (see `Scorer.explain`)."""
    import numpy as np

    from deepfake_cli.ensemble import ModelInfo, check_inputs, mean_heatmaps

    loaded = [load(path, device) for path in checkpoints]
    check_inputs([(path, inputs) for path, (_, _, inputs, _) in zip(checkpoints, loaded)])

    def score(crops: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        scored = [fn(crops, vectors) for fn, _, _, _ in loaded]
        frames = [f for _, f in scored if f is not None]
        return np.stack([p for p, _ in scored]), np.mean(frames, axis=0) if frames else None

    def explain(crops: np.ndarray, vectors: np.ndarray) -> dict[str, np.ndarray]:
        return mean_heatmaps([fn(crops, vectors) for _, _, _, fn in loaded if fn is not None])

    return score, ModelInfo(tuple(member for _, member, _, _ in loaded), loaded[0][2]), explain


def load(checkpoint: Path, device: str = "auto"):
    """One model: the scoring function of the loaded, warmed-up model ((N,) raw P(fake), (N, T) frame
    P(fake) or None), the Member it is, its InputSpec, and its heatmaps of one window (None for an .onnx)."""
    from deepfake_cli.ensemble import Member

    if is_onnx(checkpoint):
        return (*load_onnx(checkpoint, device), None)
    import numpy as np
    import torch

    from deepfake_cli.checkpoint import load_detector
    from deepfake_cli.device import resolve_amp, resolve_device
    from deepfake_cli.inference import score_windows
    from deepfake_cli.model import CPU_PIXELS_PER_PASS

    device_ = resolve_device(device)
    detector = load_detector(checkpoint, device_)
    amp = resolve_amp("auto", device_)
    inputs = detector.inputs

    def score(crops: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        frames = torch.from_numpy(np.stack([inputs.frames(list(window)) for window in crops]))  # (N, T, S, S, 3)
        return score_windows(detector.model, frames.permute(0, 1, 4, 2, 3), torch.from_numpy(np.asarray(vectors)),
                             inputs, device_, amp)

    # The first pass of each layer sets its kernels up (a few hundred ms on CPU): do it now,
    # while the parent is still finding faces, on one chunk of the shape the model will see.
    size = inputs.image_size
    frames = max(1, min(inputs.seq_len, CPU_PIXELS_PER_PASS // (size * size)))
    score(np.zeros((1, frames, size, size, 3), np.uint8), np.ones((1, frames, 5)))

    def explain(crops: np.ndarray, vectors: np.ndarray) -> dict[str, np.ndarray]:
        from deepfake_cli.heatmap import explain_window

        return explain_window(detector, crops, vectors, device_)

    member = Member(str(checkpoint), detector.describe(), detector.threshold, detector.calibration)
    return score, member, inputs, explain


def load_onnx(path: Path, device: str = "auto"):
    """`load` for an exported model, ONNX Runtime and numpy without torch: the scoring function of
    (N, T, S, S, 3) uint8 crops and (N, T, 5) distances, and what the model is."""
    import numpy as np

    from deepfake_cli.calibration import Calibration, describe_threshold
    from deepfake_cli.ensemble import Member
    from deepfake_cli.inputs import InputSpec
    from deepfake_cli.onnxfile import read_description

    description = read_description(path)
    inputs = InputSpec.from_dict(description["inputs"])
    session = onnx_session(path, device)

    names = [o.name for o in session.get_outputs()]
    wanted = ["raw_p_fake"] + (["frame_p_fake"] if "frame_p_fake" in names else [])  # the calibration is predict's

    def score(crops: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        frames = np.stack([inputs.frames(list(window)) for window in crops])  # (N, T, S, S, 3)
        out = session.run(wanted, {"crops": frames, "vectors": np.asarray(vectors, np.float32)})
        return out[0].astype(np.float64), out[1].astype(np.float64) if len(out) > 1 else None

    kind = "reference state_dict" if description.get("reference") else f"deepfake-cli model, {description['backbone']}"
    calibration = Calibration.from_dict(description.get("calibration"))
    described = f"{path} [ONNX export of a {kind}, {describe_threshold(description['threshold'], calibration)}]"
    return score, Member(str(path), described, float(description["threshold"]), calibration), inputs
