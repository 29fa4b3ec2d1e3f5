"""The model in a process of its own: `predict` imports torch (1-2 s) beside MediaPipe and decoding.

A thread cannot overlap the two: imports hold the GIL. A spawned process loads the checkpoint,
warms its kernels up on one dummy chunk, and then scores windows of face crops sent over a pipe,
so a cold `deepfake predict` waits for max(torch, faces) instead of their sum. Each face crop is
sent as soon as it is cut, and the child runs it through the backbone while the parent reads on;
when the clip is read, the windows (rows of those crops) need only the sequence head. This module
imports neither torch nor MediaPipe itself; the child imports torch, the parent never needs to.
An exported `.onnx` model (`deepfake export`) runs on ONNX Runtime instead, and nothing imports torch.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import newest_in_runs
from deepfake_cli.onnxfile import is_onnx

if TYPE_CHECKING:  # kept light: the CLI starts the scorer before importing anything heavy
    import numpy as np

    from deepfake_cli.ensemble import Member, ModelInfo
    from deepfake_cli.inputs import InputSpec


class Scorer:
    """P(fake) for windows of face crops, from checkpoints loaded in a child process: one, or the
    members of an ensemble, all served by the same process.

    Per clip: `add` each crop as it is cut, then `score` the windows as rows of the crops added,
    and `receive` their scores (or `drop` the crops of a clip that has no windows). Sending never
    waits: a thread feeds the pipe, so the parent reads on while the model loads or works."""

    def __init__(self, checkpoints: Path | list[Path], device: str = "auto"):
        checkpoints = [checkpoints] if isinstance(checkpoints, Path) else list(checkpoints)
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: fork would copy MediaPipe's threads
        self._conn, theirs = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(theirs, checkpoints, device), daemon=True,
                                    name="deepfake-model")
        self._process.start()
        theirs.close()
        self._info: ModelInfo | None = None
        self._added = 0  # crops sent since the last `score` or `drop`
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._feed, daemon=True, name="deepfake-model-feed").start()

    @property
    def info(self) -> ModelInfo:
        """Waits for the model to be loaded; raises DeepfakeError if it could not be."""
        if self._info is None:
            self._info = self._receive()
        return self._info

    def add(self, crop: np.ndarray) -> int:
        """Send one (S, S, 3) uint8 BGR face crop of the clip being read; returns its row for `score`."""
        self._outbox.put(("crops", crop[None], None))
        self._added += 1
        return self._added - 1

    def score(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Start scoring (N, T) windows, as rows of the crops added since the last `score` or `drop`, with
        their (N, T, 5) landmark vectors; returns at once (`receive` gives the scores)."""
        self.info  # a load error surfaces here, not as a broken pipe
        self._outbox.put(("score", rows, vectors))
        self._added = 0

    def drop(self) -> None:
        """Forget the crops added since the last `score`: their clip has no window to score."""
        if self._added:
            self._outbox.put(("drop", None, None))
            self._added = 0

    def explain(self, crops: np.ndarray, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Heatmaps of one window's (T, S, S, 3) crops and (T, 5) vectors (`heatmap.explain_window`; an
        ensemble's averaged): empty where no member can give them (an .onnx model has no gradients).
        Call it with no scoring under way: the answers come back in the order asked."""
        self.info
        self._outbox.put(("explain", crops, vectors))
        return self._receive()

    def receive(self) -> tuple[np.ndarray, np.ndarray | None, float]:
        """The oldest windows sent: each member's raw (M, N) P(fake) (`ModelInfo.combine` makes one of
        them), each frame's (N, T), the mean of the members with a frame head (None without one), and
        the seconds the models spent on them and on their crops."""
        return self._receive()

    def _feed(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._conn.send(message)
            except OSError:  # the model process stopped; `_receive` says why
                return

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
        self._outbox.put(None)
        self._process.terminate()  # it holds nothing worth a tidy exit, and torch's teardown is slow
        self._process.join()
        self._conn.close()


def latest_checkpoint(runs: Path = Path("runs")) -> Path:
    found = newest_in_runs("best.pt", runs)
    if found is None:
        raise DeepfakeError("no model given and none found in runs/*/best.pt; train one with "
                            "`deepfake train OUT` or pass --model FILE")
    return found


def _serve(conn, checkpoints: list[Path], device: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        models = Models([load(path, device) for path in checkpoints])
    except DeepfakeError as e:
        conn.send(("error", e))
        return
    conn.send(("ok", models.info))
    while True:
        try:
            asked, first, second = conn.recv()
        except EOFError:
            return
        if asked == "crops":
            models.add(first)
            if not conn.poll():  # crops that came while the backbone ran go through it together
                models.embed()
        elif asked == "score":
            conn.send(("ok", models.score(first, second)))
        elif asked == "drop":
            models.drop()
        elif asked == "explain":
            conn.send(("ok", models.explain(first, second)))


@dataclass
class Model:
    """One loaded model, as the model process and `evaluate` run it: crops through the backbone
    (`embed`), then windows of their features through the sequence head (`head`)."""

    member: Member
    inputs: InputSpec
    embed: Callable | None  # (N, S, S, 3) uint8 BGR crops -> (N, 1280) float32; None: whole windows only
    head: Callable | None  # (K, 1280) features, (N, T) rows of them, (N, T, 5) -> what `score` gives
    score_whole: Callable | None = None  # `score` itself, for a graph of an earlier format (no `embed`)
    explain: Callable | None = None  # one window's heatmaps (None for an .onnx: no gradients)

    def score(self, crops: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, T, S, S, 3) uint8 crops and (N, T, 5) landmark distances -> (N,) raw P(fake) and, with a
        frame head, (N, T) frame P(fake) (else None)."""
        if self.embed is None:
            return self.score_whole(crops, vectors)
        import numpy as np

        n, t = crops.shape[:2]
        return self.head(self.embed(crops.reshape(n * t, *crops.shape[2:])), np.arange(n * t).reshape(n, t), vectors)


class Models:
    """The members of an ensemble (or the one model) in the model process, with the crops of the clip
    being read: each member's features of them, or the crops themselves for a member that scores whole
    windows only."""

    def __init__(self, models: list[Model]):
        from deepfake_cli.ensemble import check_inputs

        check_inputs([(Path(m.member.path), m.inputs) for m in models])
        self.models = models
        self.drop()

    @property
    def info(self) -> ModelInfo:
        from deepfake_cli.ensemble import ModelInfo

        return ModelInfo(tuple(m.member for m in self.models), self.models[0].inputs)

    def add(self, crops: np.ndarray) -> None:
        self.pending.append(crops)

    def embed(self) -> None:
        if not self.pending:
            return
        import numpy as np

        started = time.perf_counter()
        crops, self.pending = np.concatenate(self.pending), []
        for model, features in zip(self.models, self.features):
            if model.embed is not None:
                features.append(model.embed(crops))
        if any(m.embed is None for m in self.models):
            self.crops.append(crops)
        self.seconds += time.perf_counter() - started

    def score(self, rows: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        """Each member's (M, N) raw P(fake) of the (N, T) windows, the members' mean (N, T) frame P(fake)
        (None when none has a frame head), and the seconds spent on the clip; then the next clip starts."""
        import numpy as np

        self.embed()
        started = time.perf_counter()
        crops = np.concatenate(self.crops) if self.crops else None
        scored = [model.head(np.concatenate(features), rows, vectors) if model.embed is not None
                  else model.score_whole(crops[rows], vectors) for model, features in zip(self.models, self.features)]
        seconds = self.seconds + time.perf_counter() - started
        self.drop()
        frames = [f for _, f in scored if f is not None]
        return np.stack([p for p, _ in scored]), np.mean(frames, axis=0) if frames else None, seconds

    def drop(self) -> None:
        """Start a clip: no crops waiting for the backbones (`pending`), no features of crops per member
        (`features`), no crops kept for members without `embed` (`crops`), no seconds spent (`seconds`)."""
        self.pending, self.crops, self.seconds = [], [], 0.0
        self.features: list[list] = [[] for _ in self.models]

    def explain(self, crops: np.ndarray, vectors: np.ndarray) -> dict[str, np.ndarray]:
        from deepfake_cli.ensemble import mean_heatmaps

        return mean_heatmaps([m.explain(crops, vectors) for m in self.models if m.explain is not None])


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
    # Its threads wait for work by spinning, by default: with predict's faces being found beside them,
    # that took the core the parent needed (a cold predict 1.5 s instead of 1.25 s on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types, one per failure
        reason = str(e).strip().splitlines()[0][:160]
        raise DeepfakeError(f"{path}: ONNX Runtime cannot load it ({reason}); export it again with `deepfake export`") from None


def load(checkpoint: Path, device: str = "auto") -> Model:
    """One model, loaded and warmed up."""
    from deepfake_cli.ensemble import Member

    if is_onnx(checkpoint):
        return load_onnx(checkpoint, device)
    import numpy as np
    import torch

    from deepfake_cli.checkpoint import load_detector
    from deepfake_cli.device import resolve_amp, resolve_device
    from deepfake_cli.inference import embed_frames, score_features
    from deepfake_cli.model import CPU_PIXELS_PER_PASS

    device_ = resolve_device(device)
    detector = load_detector(checkpoint, device_)
    amp = resolve_amp("auto", device_)
    inputs, model = detector.inputs, detector.model

    def embed(crops: np.ndarray) -> np.ndarray:
        frames = torch.from_numpy(inputs.frames(list(crops))).permute(0, 3, 1, 2)  # (N, 3, S, S)
        return embed_frames(model, frames, inputs, device_, amp).float().cpu().numpy()  # (N, 1280)

    def head(features: np.ndarray, rows: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        windows = torch.from_numpy(features)[torch.from_numpy(np.asarray(rows))]  # (N, T, 1280)
        return score_features(model, windows, torch.from_numpy(np.asarray(vectors)), inputs, device_, amp)

    # The first pass of each layer sets its kernels up (a few hundred ms on CPU): do it now,
    # while the parent is still finding faces, on one chunk of the shape the model will see.
    size = inputs.image_size
    frames = max(1, min(inputs.seq_len, CPU_PIXELS_PER_PASS // (size * size)))
    head(embed(np.zeros((frames, size, size, 3), np.uint8)), np.zeros((1, inputs.seq_len), np.int64),
         np.ones((1, inputs.seq_len, 5)))

    def explain(crops: np.ndarray, vectors: np.ndarray) -> dict[str, np.ndarray]:
        from deepfake_cli.heatmap import explain_window

        return explain_window(detector, crops, vectors, device_)

    member = Member(str(checkpoint), detector.describe(), detector.threshold, detector.calibration)
    return Model(member, inputs, embed, head, explain=explain)


def load_onnx(path: Path, device: str = "auto") -> Model:
    """`load` for an exported model, ONNX Runtime and numpy without torch."""
    import numpy as np

    from deepfake_cli.calibration import Calibration, describe_threshold
    from deepfake_cli.ensemble import Member
    from deepfake_cli.inputs import InputSpec
    from deepfake_cli.onnxfile import FORMAT, read_description

    description = read_description(path)
    inputs = InputSpec.from_dict(description["inputs"])
    session = onnx_session(path, device)
    names = [o.name for o in session.get_outputs()]
    wanted = ["raw_p_fake"] + (["frame_p_fake"] if "frame_p_fake" in names else [])  # the calibration is predict's
    kind = "reference state_dict" if description.get("reference") else f"deepfake-cli model, {description['backbone']}"
    calibration = Calibration.from_dict(description.get("calibration"))
    described = f"{path} [ONNX export of a {kind}, {describe_threshold(description['threshold'], calibration)}]"
    member = Member(str(path), described, float(description["threshold"]), calibration)

    def run(names: list[str], crops: np.ndarray, features: np.ndarray, rows: np.ndarray, vectors: np.ndarray) -> list:
        return session.run(names, {"crops": crops, "features": features, "windows": np.asarray(rows, np.int64),
                                   "vectors": np.asarray(vectors, np.float32)})

    def scores(out: list) -> tuple[np.ndarray, np.ndarray | None]:
        return out[0].astype(np.float64), out[1].astype(np.float64) if len(out) > 1 else None

    if description["format"] != FORMAT:  # an earlier format's graph: whole windows of crops in
        def score_whole(crops: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            frames = np.stack([inputs.frames(list(window)) for window in crops])  # (N, T, S, S, 3)
            return scores(session.run(wanted, {"crops": frames, "vectors": np.asarray(vectors, np.float32)}))

        return Model(member, inputs, None, None, score_whole)

    size, t = inputs.image_size, inputs.seq_len
    width = next(i.shape[1] for i in session.get_inputs() if i.name == "features")  # the backbone's feature width
    no_crops, no_features = np.zeros((0, size, size, 3), np.uint8), np.zeros((0, width), np.float32)

    def embed(crops: np.ndarray) -> np.ndarray:
        return run(["crop_features"], inputs.frames(list(crops)), no_features, np.zeros((0, t)), np.zeros((0, t, 5)))[0]

    def head(features: np.ndarray, rows: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return scores(run(wanted, no_crops, features, rows, vectors))

    head(embed(np.zeros((1, size, size, 3), np.uint8)), np.zeros((1, t)), np.ones((1, t, 5)))  # the first run sets up
    return Model(member, inputs, embed, head)
