"""`predict`: P(fake) for whole clips, from windows spread over their full length, per tracked person."""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.faces import FaceAnalyzer
from deepfake_cli.inputs import peek_inputs
from deepfake_cli.sampling import FaceFrame, SkipVideo, sample_faces
from deepfake_cli.scorer import ModelInfo, Scorer
from deepfake_cli.video import VIDEO_SUFFIXES, Video

log = logging.getLogger(__name__)

AGGREGATES = ("mean", "max")
MAX_PEOPLE = 4
SECONDS_PER_WINDOW = 5.0  # --windows 0: one window per this much video, between 2 and 8


def auto_windows(duration: float) -> int:
    return int(min(max(round(duration / SECONDS_PER_WINDOW), 2), 8))


@dataclass
class Verdict:
    """One input file's result; `status` is ok, no_face, too_short or unreadable."""

    path: str
    status: str
    reason: str | None = None
    p_fake: float | None = None
    label: str | None = None
    threshold: float | None = None
    windows: int = 0
    faces: int = 0
    suspicious_time: float | None = None  # seconds: centre of the highest-scoring window
    people: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    evidence: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def find_inputs(items: list[str]) -> list[Path]:
    """Files, folders (their videos) and glob patterns, in order, without duplicates."""
    paths: list[Path] = []
    for item in items:
        matches = [Path(p) for p in sorted(glob.glob(item))] if any(c in item for c in "*?[") else [Path(item)]
        if not matches:
            raise DeepfakeError(f"{item}: the pattern matches no file")
        for path in matches:
            if path.is_dir():
                videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
                if not videos:
                    raise DeepfakeError(f"{path}: no videos in this folder")
                paths += videos
            elif path.exists():
                paths.append(path)
            else:
                raise DeepfakeError(f"{path}: no such file or folder")
    return list(dict.fromkeys(paths))


class Predictor:
    """Holds the model and MediaPipe for a whole batch of files: both start once per process."""

    def __init__(self, checkpoint: Path, windows: int = 0, aggregate: str = "mean", device: str = "auto",
                 scorer: Scorer | None = None):
        if windows < 0:
            raise DeepfakeError(f"--windows must be 0 (automatic) or more, got {windows}")
        if aggregate not in AGGREGATES:
            raise DeepfakeError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        self.windows, self.aggregate = windows, aggregate
        # torch and the model load in their own process (seconds, cold) while MediaPipe starts
        # and the first clip is decoded, which needs only the checkpoint's input settings.
        self.scorer = scorer or Scorer(checkpoint, device)
        self.inputs = peek_inputs(checkpoint) or self.scorer.info.inputs
        self.analyzer = FaceAnalyzer(max_faces=MAX_PEOPLE)

    @property
    def model_info(self) -> ModelInfo:
        return self.scorer.info

    def close(self) -> None:
        self.analyzer.close()
        self.scorer.close()

    def predict(self, path: Path, evidence_dir: Path | None = None) -> Verdict:
        started = time.perf_counter()
        inputs = self.inputs
        t = inputs.seq_len
        try:
            with Video(path) as video:
                info = video.info
                windows = min(self.windows or auto_windows(info.duration), info.frame_count // t)
                if windows < 1:
                    raise SkipVideo(f"too short: {info.frame_count} frames, {t} needed")
                sampled = sample_faces(video, self.analyzer, windows * t, inputs.crop, max_people=MAX_PEOPLE)
        except SkipVideo as e:
            status = "too_short" if str(e).startswith("too short") else "no_face"
            return Verdict(str(path), status, str(e))
        except DeepfakeError as e:
            return Verdict(str(path), "unreadable", str(e).removeprefix(f"{path}: "))
        decoded = time.perf_counter()

        people, batches = [], []
        for person in sampled.people:
            for w in range(windows):
                frames = window_frames(person[w * t:(w + 1) * t])
                if frames is not None:
                    batches.append((len(people), w, frames))
            people.append(person)
        if not batches:
            return Verdict(str(path), "no_face", f"no window with a face in at least half of its {t} frames")
        threshold = self.model_info.threshold  # wait for the model here, not in the timing of the model itself
        loaded = time.perf_counter()
        scores = self.scorer.score(np.stack([[f.crop for f in frames] for _, _, frames in batches]),
                                   np.stack([[f.vector for f in frames] for _, _, frames in batches]))
        scored = time.perf_counter()

        per_person = []
        for p, person in enumerate(people):
            mine = [(w, float(s)) for (q, w, _), s in zip(batches, scores) if q == p]
            if not mine:
                continue
            values = np.array([s for _, s in mine])
            per_person.append({
                "person": p, "p_fake": float(values.mean() if self.aggregate == "mean" else values.max()),
                "faces": sum(f is not None for f in person), "window_scores": [round(s, 4) for _, s in mine],
                "windows": [w for w, _ in mine],
            })
        worst = max(per_person, key=lambda r: r["p_fake"])
        top_window = worst["windows"][int(np.argmax(worst["window_scores"]))]
        start, stop = sampled.slots[top_window * t][0], sampled.slots[(top_window + 1) * t - 1][1]
        verdict = Verdict(
            str(path), "ok", p_fake=worst["p_fake"], threshold=threshold,
            label="fake" if worst["p_fake"] >= threshold else "real",
            windows=len(worst["windows"]), faces=worst["faces"], people=per_person,
            suspicious_time=round((start + stop) / 2 / info.fps, 2) if info.fps else None,
            timings={"decode_and_faces": round(decoded - started, 3), "waiting_for_model": round(loaded - decoded, 3),
                     "model": round(scored - loaded, 3)},
        )
        if evidence_dir is not None:
            from deepfake_cli.plots import contact_sheet

            scored_frames = {(p, w): frames for p, w, frames in batches}
            rows = [(w, s, scored_frames[worst["person"], w]) for w, s in zip(worst["windows"], worst["window_scores"])]
            sheet = evidence_dir / f"{path.stem}.png"
            contact_sheet(rows, top_window, info.fps, sampled.slots, t, verdict, sheet)
            verdict.evidence = str(sheet)
        return verdict

def window_frames(window: list[FaceFrame | None]) -> list[FaceFrame] | None:
    """A window's faces with gaps filled by the nearest face in time; None if under half are present."""
    present = [i for i, f in enumerate(window) if f is not None]
    if len(present) * 2 < len(window):
        return None
    return [window[i] if window[i] is not None else window[min(present, key=lambda j: abs(j - i))] for i in range(len(window))]
