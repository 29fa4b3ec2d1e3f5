"""`predict`: P(fake) for whole clips, from windows spread over their full length, per tracked person."""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.faces import FaceAnalyzer
from deepfake_cli.inputs import peek_inputs
from deepfake_cli.sampling import FaceFrame, SkipVideo, VideoFaces, sample_faces
from deepfake_cli.scorer import ModelInfo, Scorer
from deepfake_cli.video import VIDEO_SUFFIXES, Video, VideoInfo

log = logging.getLogger(__name__)

AGGREGATES = ("mean", "max")
MAX_PEOPLE = 4
SECONDS_PER_WINDOW = 5.0  # --windows 0: one window per this much video, between 2 and 8


def auto_windows(duration: float) -> int:
    return int(min(max(round(duration / SECONDS_PER_WINDOW), 2), 8))


@dataclass
class Verdict:
    """One input file's result; `status` is ok, no_face, too_short, unreadable or missing."""

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
            else:  # a missing file gets its own verdict: one deleted file must not stop a batch
                paths.append(path)
    return list(dict.fromkeys(paths))


def people_finder() -> FaceAnalyzer:
    """Predict's face finder: up to MAX_PEOPLE faces a frame, small ones beside large ones included."""
    return FaceAnalyzer(max_faces=MAX_PEOPLE, every_face=True)


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
        self.analyzer = people_finder()

    @property
    def model_info(self) -> ModelInfo:
        return self.scorer.info

    def close(self) -> None:
        self.analyzer.close()
        self.scorer.close()

    def predict(self, path: Path, evidence_dir: Path | None = None) -> Verdict:
        return next(self.predict_all([path], evidence_dir))

    def predict_all(self, paths: list[Path], evidence_dir: Path | None = None) -> Iterator[Verdict]:
        """Verdicts in input order. While the model scores one clip, the next is decoded."""
        scoring = None  # the clip whose windows the model process has
        for path in paths:
            clip = self.prepare(path)
            if scoring is not None:
                yield self._finish(scoring, evidence_dir)
                scoring = None
            if isinstance(clip, Verdict):
                yield clip
                continue
            waiting = time.perf_counter()
            self.scorer.info  # the first clip waits here for the model to load
            clip.timings["waiting_for_model"] = round(time.perf_counter() - waiting, 3)
            self.scorer.send(np.stack([[f.crop for f in frames] for _, _, frames in clip.batches]),
                             np.stack([[f.vector for f in frames] for _, _, frames in clip.batches]))
            scoring = clip
        if scoring is not None:
            yield self._finish(scoring, evidence_dir)

    def prepare(self, path: Path) -> "_Clip | Verdict":
        """Decode and cut the faces the model will score; a Verdict already when the clip cannot be scored."""
        started = time.perf_counter()
        t = self.inputs.seq_len
        if not path.exists():
            return Verdict(str(path), "missing", "no such file; check the path")
        try:
            with Video(path, threads=1) as video:  # the model process needs the other core
                info = video.info
                windows = min(self.windows or auto_windows(info.duration), info.frame_count // t)
                if windows < 1:
                    raise SkipVideo(f"too short: {info.frame_count} frames, {t} needed")
                sampled = sample_faces(video, self.analyzer, windows * t, self.inputs.crop, max_people=MAX_PEOPLE)
        except SkipVideo as e:
            status = "too_short" if str(e).startswith("too short") else "no_face"
            return Verdict(str(path), status, str(e))
        except DeepfakeError as e:
            return Verdict(str(path), "unreadable", str(e).removeprefix(f"{path}: "))
        batches = [(p, w, frames) for p, person in enumerate(sampled.people) for w in range(windows)
                   if (frames := window_frames(person[w * t:(w + 1) * t])) is not None]
        if not batches:
            return Verdict(str(path), "no_face", f"no window with a face in at least half of its {t} frames")
        return _Clip(path, info, sampled, batches, {"decode_and_faces": round(time.perf_counter() - started, 3)})

    def _finish(self, clip: "_Clip", evidence_dir: Path | None) -> Verdict:
        scores, model_seconds = self.scorer.receive()
        clip.timings["model"] = round(model_seconds, 3)
        t, threshold = self.inputs.seq_len, self.model_info.threshold
        per_person = []
        for p, person in enumerate(clip.sampled.people):
            mine = [(w, float(s)) for (q, w, _), s in zip(clip.batches, scores) if q == p]
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
        slots, fps = clip.sampled.slots, clip.info.fps
        start, stop = slots[top_window * t][0], slots[(top_window + 1) * t - 1][1]
        verdict = Verdict(
            str(clip.path), "ok", p_fake=worst["p_fake"], threshold=threshold,
            label="fake" if worst["p_fake"] >= threshold else "real",
            windows=len(worst["windows"]), faces=worst["faces"], people=per_person,
            suspicious_time=round((start + stop) / 2 / fps, 2) if fps else None, timings=clip.timings,
        )
        if evidence_dir is not None:
            from deepfake_cli.plots import contact_sheet

            scored_frames = {(p, w): frames for p, w, frames in clip.batches}
            rows = [(w, s, scored_frames[worst["person"], w]) for w, s in zip(worst["windows"], worst["window_scores"])]
            sheet = evidence_dir / f"{clip.path.stem}.png"
            contact_sheet(rows, top_window, fps, slots, t, verdict, sheet)
            verdict.evidence = str(sheet)
        return verdict


@dataclass
class _Clip:
    """A decoded clip whose windows the model is scoring."""

    path: Path
    info: VideoInfo
    sampled: VideoFaces
    batches: list[tuple[int, int, list[FaceFrame]]]  # (person, window, its T faces)
    timings: dict


def window_frames(window: list[FaceFrame | None]) -> list[FaceFrame] | None:
    """A window's faces with gaps filled by the nearest face in time; None if under half are present."""
    present = [i for i, f in enumerate(window) if f is not None]
    if len(present) * 2 < len(window):
        return None
    return [window[i] if window[i] is not None else window[min(present, key=lambda j: abs(j - i))] for i in range(len(window))]
