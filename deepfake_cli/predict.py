"""`predict`: P(fake) for whole clips, from windows spread over their full length, per tracked person."""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from deepfake_cli.choices import AGGREGATES
from deepfake_cli.ensemble import ModelInfo, check_inputs
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.faces import FaceAnalyzer
from deepfake_cli.inputs import peek_inputs
from deepfake_cli.sampling import FaceFrame, SkipVideo, VideoFaces, sample_faces, sample_reference
from deepfake_cli.scorer import Scorer
from deepfake_cli.video import VIDEO_SUFFIXES, Video, VideoInfo

log = logging.getLogger(__name__)

MAX_PEOPLE = 4
SECONDS_PER_WINDOW = 5.0  # --windows 0: one window per this much video, between 2 and 8
# A clip is called "uncertain" instead of real or fake when the evidence is thin or contradictory:
UNCERTAIN_BAND = 0.1  # a calibrated P(fake) this close to the threshold: validation's clips there were a coin toss
MIN_FACE_SHARE = 0.5  # segments whose own frames show the face, as a share of all (the rest borrow other frames)
MIN_EYE_SPAN = 20.0  # source pixels between the outer eye corners: smaller faces are mostly upsampling at 256 px
MIN_FACE_SCORE = 0.5  # Face Mesh's median detection confidence
DISAGREE = 0.25  # windows (or an ensemble's models) on both sides of the threshold, each at least this far from it


def auto_windows(duration: float) -> int:
    return int(min(max(round(duration / SECONDS_PER_WINDOW), 2), 8))


@dataclass
class Verdict:
    """One input file's result; `status` is ok, no_face, too_short, unreadable or missing."""

    path: str
    status: str
    reason: str | None = None
    p_fake: float | None = None  # calibrated where the model holds a calibration
    raw_p_fake: float | None = None  # the model's own score, for those who set their own operating point
    label: str | None = None
    threshold: float | None = None
    windows: int = 0
    faces: int = 0
    suspicious_time: float | None = None  # seconds: the frame the frame head scores highest in the top window
    reasons: list[str] = field(default_factory=list)  # why the label is "uncertain"; empty otherwise
    checks: dict = field(default_factory=dict)  # the numbers the uncertain rules read
    people: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)  # each model's P(fake) of the scored person: one, or an ensemble's
    timings: dict = field(default_factory=dict)
    evidence: str | None = None
    video: dict = field(default_factory=dict)  # the file's facts: duration, size as shown, rotation, codec, fps
    detail: dict | None = field(default=None, repr=False)  # for --report: windows, faces, heatmaps (never in --json)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "detail"}


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

    def __init__(self, checkpoints: Path | list[Path], windows: int = 0, aggregate: str = "mean", device: str = "auto",
                 scorer: Scorer | None = None, threshold: float | None = None):
        """`checkpoints`: one model, or an ensemble's members; `threshold`: the P(fake) from which a clip is
        called fake; None: the model's (0.5 when calibrated, and for an ensemble)."""
        checkpoints = [checkpoints] if isinstance(checkpoints, Path) else list(checkpoints)
        if threshold is not None and not 0 < threshold < 1:
            raise DeepfakeError(f"--threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold
        if windows < 0:
            raise DeepfakeError(f"--windows must be 0 (automatic) or more, got {windows}")
        if aggregate not in AGGREGATES:
            raise DeepfakeError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        self.windows, self.aggregate = windows, aggregate
        # torch and the model load in their own process (seconds, cold) while MediaPipe starts
        # and the first clip is decoded, which needs only the checkpoint's input settings.
        self.scorer = scorer or Scorer(checkpoints, device)
        peeked = [peek_inputs(c) for c in checkpoints]
        if None not in peeked:  # members that need different faces fail before any clip is decoded
            check_inputs(list(zip(checkpoints, peeked)))
        self.inputs = peeked[0] or self.scorer.info.inputs
        # The reference preprocessing's Face Mesh looked for one face; extract's sampling tracks people.
        self.analyzer = FaceAnalyzer(max_faces=1) if self.inputs.sampling.rule == "reference" else people_finder()

    @property
    def model_info(self) -> ModelInfo:
        return self.scorer.info

    def close(self) -> None:
        self.analyzer.close()
        self.scorer.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def predict(self, path: Path, evidence_dir: Path | None = None, explain: bool = False) -> Verdict:
        return next(self.predict_all([path], evidence_dir, explain))

    def predict_all(self, paths: list[Path], evidence_dir: Path | None = None, explain: bool = False) -> Iterator[Verdict]:
        """Verdicts in input order. Each face goes to the model process as it is cut, and while the model
        scores one clip's windows, the next clip is decoded.
        With `evidence_dir`, a contact sheet per clip, named by `evidence_names`; with `explain`, each
        verdict's `detail` for a report (the top window's faces and heatmaps: one more model pass)."""
        sheets = {p: evidence_dir / name for p, name in evidence_names(paths).items()} if evidence_dir else {}
        scoring = None  # the clip whose windows the model process has
        for path in paths:
            clip = self.prepare(path)
            if scoring is not None:
                yield self._finish(scoring, sheets.get(scoring.path), explain)
                scoring = None
            if isinstance(clip, Verdict):
                self.scorer.drop()  # the faces it sent before it turned out unscorable
                yield clip
                continue
            waiting = time.perf_counter()
            self.scorer.info  # the first clip waits here for the model to load
            clip.timings["waiting_for_model"] = round(time.perf_counter() - waiting, 3)
            self.scorer.score(np.array([[clip.row(f) for f in frames] for _, _, frames in clip.batches]),
                              np.stack([[f.vector for f in frames] for _, _, frames in clip.batches]))
            scoring = clip
        if scoring is not None:
            yield self._finish(scoring, sheets.get(scoring.path), explain)

    def prepare(self, path: Path) -> "_Clip | Verdict":
        """Decode and cut the faces the model will score; a Verdict already when the clip cannot be scored.

        Each window is a sequence of the kind the model was trained on (`InputSpec.sampling`): with
        `extract`'s sampling, one face from each of its segments over the whole clip, gaps filled as
        extract fills them, and a window without a face in every segment is not scored, as extract skips
        such a video. Several windows are other draws of the same sampling, not pieces of the clip.
        """
        started = time.perf_counter()
        t, sampling = self.inputs.seq_len, self.inputs.sampling
        needed = t if sampling.rule == "reference" else sampling.segments(t)
        if not path.exists():
            return Verdict(str(path), "missing", "no such file; check the path")
        sent: dict[int, tuple[int, FaceFrame]] = {}  # id(face) -> its row in the model process, and the face

        def send(face: FaceFrame) -> None:
            sent[id(face)] = self.scorer.add(face.crop), face

        try:
            with Video(path, threads=1, read_ahead=True) as video:  # the model process needs the other core
                info = video.info
                if info.frame_count < needed:
                    raise SkipVideo.too_short(info.frame_count, needed)
                # No more windows than a segment has frames: each window reads frames of its own.
                windows = max(1, min(self.windows or auto_windows(info.duration), info.frame_count // needed))
                if sampling.rule == "reference":
                    sampled = sample_reference(video, self.analyzer, t, self.inputs.crop, windows, on_face=send)
                else:
                    sampled = sample_faces(video, self.analyzer, needed, self.inputs.crop, max_people=MAX_PEOPLE,
                                           borrow=True, windows=windows, on_face=send)
                width, height = video.display_size
                facts = {"duration_s": round(info.duration, 2), "fps": round(info.fps, 3), "frames": info.frame_count,
                         "width": width, "height": height, "rotation": video.rotation, "codec": info.codec}
        except SkipVideo as e:
            status = "too_short" if str(e).startswith("too short") else "no_face"
            return Verdict(str(path), status, str(e))
        except DeepfakeError as e:
            return Verdict(str(path), "unreadable", str(e).removeprefix(f"{path}: "))
        batches = [(p, w, window[:t]) for p, person in enumerate(sampled.people) for w, window in enumerate(person)
                   if None not in window]
        if not batches:
            return Verdict(str(path), "no_face", f"no window found a face on {needed} frames spread over the clip",
                           video=facts)
        return _Clip(path, info, sampled, batches, {"decode_and_faces": round(time.perf_counter() - started, 3)}, facts,
                     {key: row for key, (row, _) in sent.items()})

    def _finish(self, clip: "_Clip", evidence: Path | None, explain: bool = False) -> Verdict:
        raw, frame_scores, model_seconds = self.scorer.receive()
        clip.timings["model"] = round(model_seconds, 3)
        info = self.model_info
        threshold = self.threshold if self.threshold is not None else info.threshold
        combined = info.combine(raw)
        combine = np.mean if self.aggregate == "mean" else np.max
        per_person = self._people(clip, combined.p_fake, combined.raw_p_fake, combine)
        worst, mine = max(per_person, key=lambda row: row[0]["p_fake"])
        per_person = [row for row, _ in per_person]
        person = clip.sampled.people[worst["person"]]
        frames = [f for window in person for f in window if f is not None]
        segments = len(person[0])
        own = segments - clip.sampled.borrowed if worst["person"] == 0 else segments  # borrowing is counted for person 0
        model_scores = [float(combine(m[mine])) for m in combined.members]
        checks = {"segments_with_face": own, "segments": segments,
                  "eye_span_px": round(float(np.median([f.vector[0] for f in frames])), 1),
                  "face_score": round(float(np.median([f.score for f in frames])), 3),
                  "window_scores": worst["window_scores"], "calibrated": info.calibrated_scale,
                  "model_p_fake": model_scores, "model_thresholds": [m.threshold for m in info.members]}
        reasons = uncertain_reasons(worst["p_fake"], threshold, **checks)
        models = [{"model": m.path, "p_fake": p, "threshold": m.threshold} for m, p in zip(info.members, model_scores)]
        top_window = worst["windows"][int(np.argmax(worst["window_scores"]))]
        top = next(k for k, (p, w, _) in enumerate(clip.batches) if (p, w) == (worst["person"], top_window))
        fps = clip.info.fps
        suspicious = None  # the top window's frame the frame head scores highest (a model without one: none)
        if frame_scores is not None and fps:
            suspicious = round(clip.batches[top][2][int(np.argmax(frame_scores[top]))].index / fps, 2)
        verdict = Verdict(
            str(clip.path), "ok", p_fake=worst["p_fake"], raw_p_fake=worst["raw_p_fake"], threshold=threshold,
            label="uncertain" if reasons else "fake" if worst["p_fake"] >= threshold else "real",
            reasons=reasons, checks=checks,
            windows=len(worst["windows"]), faces=worst["faces"], people=per_person, models=models,
            suspicious_time=suspicious, timings=clip.timings, video=clip.facts,
        )
        rows = [(w, s, frames, None if frame_scores is None else frame_scores[k])
                for k, ((p, w, frames), s) in enumerate(zip(clip.batches, combined.p_fake)) if p == worst["person"]]
        if evidence is not None:
            from deepfake_cli.plots import contact_sheet

            contact_sheet(rows, top_window, fps, verdict, evidence)
            verdict.evidence = str(evidence)
        if explain:
            verdict.detail = self._detail(clip.batches[top][2], top_window, rows, fps,
                                          None if frame_scores is None else frame_scores[top])
        return verdict

    @staticmethod
    def _people(clip: "_Clip", scores: np.ndarray, raw: np.ndarray, combine) -> list[tuple[dict, list[int]]]:
        """Each tracked person's scores, from their windows (whose indices in the batch come with them)."""
        people = []
        for p, person in enumerate(clip.sampled.people):
            mine = [k for k, (q, _, _) in enumerate(clip.batches) if q == p]
            if mine:
                people.append(({
                    "person": p, "p_fake": float(combine(scores[mine])), "raw_p_fake": float(combine(raw[mine])),
                    "faces": len({f.index for window in person for f in window if f is not None}),
                    "window_scores": [round(float(scores[k]), 4) for k in mine], "windows": [clip.batches[k][1] for k in mine],
                }, mine))
        return people

    def _detail(self, faces: list[FaceFrame], top_window: int, rows: list, fps: float, frame_scores) -> dict:
        """What a report shows of a clip: every window of the scored person on the time axis, and the
        top window's faces with their heatmaps (one more pass of the model, on that window alone)."""
        def when(f: FaceFrame) -> float:
            return f.index / fps if fps else float(f.index)

        return {
            "top_window": top_window, "faces": [f.crop for f in faces], "times": [when(f) for f in faces],
            "frame_p_fake": None if frame_scores is None else [float(x) for x in frame_scores],
            "heatmaps": self.scorer.explain(np.stack([f.crop for f in faces]), np.stack([f.vector for f in faces])),
            "windows": [{"window": w, "p_fake": float(s), "times": [when(f) for f in window],
                         "frame_p_fake": None if fs is None else [float(x) for x in fs]} for w, s, window, fs in rows],
        }


def uncertain_reasons(p_fake: float, threshold: float, segments_with_face: int, segments: int, eye_span_px: float,
                      face_score: float, window_scores: list[float], calibrated: bool,
                      model_p_fake: list[float] = (), model_thresholds: list[float] = ()) -> list[str]:
    """Why a clip's evidence is too thin or contradictory for real or fake; empty when it is not.

    `segments_with_face`: the segments of the clip whose own frames show the scored person (the others
    borrowed a frame from elsewhere in the clip); `model_p_fake`, `model_thresholds`: each model's score
    and decision point (an ensemble's members, else the one model); the rest as `Verdict.checks` names
    them. The band applies to calibrated scores only: on a raw score, 0.1 from the threshold means
    nothing in particular."""
    reasons = []
    if segments_with_face < MIN_FACE_SHARE * segments:
        reasons.append(f"a face in only {segments_with_face} of {segments} stretches of the clip (the rest borrowed)")
    if eye_span_px < MIN_EYE_SPAN:
        reasons.append(f"a small face ({eye_span_px:.0f} px between the outer eye corners, {MIN_EYE_SPAN:.0f} wanted)")
    if face_score < MIN_FACE_SCORE:
        reasons.append(f"faces found with low confidence ({face_score:.2f})")
    if min(window_scores) <= threshold - DISAGREE and max(window_scores) >= threshold + DISAGREE:
        reasons.append(f"windows disagree (P(fake) {min(window_scores):.2f} to {max(window_scores):.2f})")
    sides = [p - t for p, t in zip(model_p_fake, model_thresholds)]
    if len(sides) > 1 and min(sides) <= -DISAGREE and max(sides) >= DISAGREE:
        reasons.append("models disagree (P(fake) " + ", ".join(f"{p:.2f}" for p in model_p_fake) + ")")
    if calibrated and abs(p_fake - threshold) < UNCERTAIN_BAND:
        reasons.append(f"P(fake) within {UNCERTAIN_BAND:g} of the threshold")
    return reasons


@dataclass
class _Clip:
    """A decoded clip whose windows the model is scoring."""

    path: Path
    info: VideoInfo
    sampled: VideoFaces
    batches: list[tuple[int, int, list[FaceFrame]]]  # (person, window, its T faces)
    timings: dict
    facts: dict  # Verdict.video
    rows: dict[int, int]  # id(face) -> its row among the crops sent to the model process (`Scorer.add`)

    def row(self, face: FaceFrame) -> int:
        return self.rows[id(face)]


def evidence_names(paths: list[Path]) -> dict[Path, str]:
    """A contact sheet's file name per input, unique in the batch: the clip's stem, with as many of its
    folders as tell it from another input of the same name (`Deepfakes/000_003.mp4` and
    `FaceSwap/000_003.mp4` -> `Deepfakes__000_003.png`, `FaceSwap__000_003.png`)."""
    full = {path: path.resolve().parts for path in paths}

    def tail(path: Path, depth: int, keep_suffix: bool) -> str:
        parts = list(full[path][-depth:])
        parts[-1] = parts[-1] if keep_suffix else Path(parts[-1]).stem
        return "__".join(parts)

    names = {}
    for path in paths:
        keep_suffix = any(Path(full[o][-1]).stem == path.stem and o.name != path.name for o in paths if o != path)
        depth = 1
        while depth < len(full[path]) and any(tail(o, depth, True) == tail(path, depth, True) for o in paths if o != path):
            depth += 1
        names[path] = tail(path, depth, keep_suffix) + ".png"
    return names
