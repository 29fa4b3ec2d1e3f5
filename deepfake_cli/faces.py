"""Faces in a frame: MediaPipe Face Mesh with detection scores, the landmark vector, and tracks.

`extract`, `evaluate` and `predict` all go through `FaceAnalyzer.faces` and `crop.crop_face`,
so the features a model sees at prediction time are the ones it was trained on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

# Face Mesh (468-point topology) landmark pairs of the 5-d vector, in the reference's order:
# outer eye corners, mouth corners, nose tip to chin, right eye to mouth, left eye to mouth.
LANDMARK_PAIRS = ((33, 263), (61, 291), (1, 199), (33, 61), (263, 291))
# Small faces: Face Mesh runs on a square this many times the full-range detection's box, resized to
# REGION_SIZE pixels, so the face fills the mesh's input as a close-up would.
REGION_SCALE = 2.2
REGION_SIZE = 256
TILE_MIN_SIDE = 480  # the smallest square tile searched (from frames at least this short side)
# With `every_face`, frames this large are searched in tiles even when the whole frame showed some
# faces: at 1080p the whole-frame pass misses faces under about 130 px beside larger ones.
CROWD_MIN_SIDE = 1000


@dataclass(frozen=True)
class Face:
    landmarks: np.ndarray  # (468, 2) float64, source-frame pixels
    score: float  # face-detection confidence, 0..1
    small: bool = False  # found by the second stage (full-range detection, then Face Mesh on its region)

    @functools.cached_property  # tracking asks for it hundreds of times per video
    def box(self) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.landmarks.min(0), self.landmarks.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def size(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    @property
    def center(self) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


def landmark_vector(landmarks: np.ndarray) -> np.ndarray:
    """The reference's 5 landmark distances, in source-frame pixels: shape (5,), float64."""
    a, b = np.array(LANDMARK_PAIRS).T
    return np.linalg.norm(landmarks[a] - landmarks[b], axis=1)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ libraries (TFLite, absl) write straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceAnalyzer:
    """MediaPipe Face Mesh (legacy solutions graph; its models ship in the wheel), with scores.

    One graph run per frame gives both the mesh and the confidence of the short-range face
    detection it starts from: the graph's `face_detections` stream, which mp.solutions'
    FaceMesh computes but does not return. Build one per process: MediaPipe graphs are not
    shareable across processes.
    """

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5, every_face: bool = False):
        """`every_face`: also look for small faces on frames where Face Mesh found some but fewer than
        `max_faces` (a crowd, a wide shot with one person near the camera); predict scores every person."""
        face_mesh = _import_solution("face_mesh")
        with quiet_native_stderr():
            # The graph, side inputs and option names mp.solutions.face_mesh.FaceMesh uses for
            # static_image_mode=True (every frame detected afresh), refine_landmarks=False.
            self._graph = face_mesh.SolutionBase(
                binary_graph_path=face_mesh._BINARYPB_FILE_PATH,
                side_inputs={"num_faces": max_faces, "with_attention": False, "use_prev_landmarks": False},
                calculator_params={
                    "facedetectionshortrangecpu__facedetectionshortrange__facedetection"
                    "__TensorsToDetectionsCalculator.min_score_thresh": min_confidence,
                },
                outputs=["multi_face_landmarks", "face_detections"],
            )
            # TFLite logs its set-up on the first inference: get that over with here.
            self._graph.process({"image": np.zeros((64, 64, 3), np.uint8)})

        self._max_faces, self._min_confidence, self._every_face = max_faces, min_confidence, every_face
        self._full_range = None  # started on the first frame that needs it

    def faces(self, frame_bgr: np.ndarray, beside: bool = True) -> list[Face]:
        """Faces in the frame, largest first.

        Face Mesh finds its own faces with a short-range detector (faces within about 2 m of
        the camera). On a frame where it finds none, MediaPipe's full-range detector looks for
        small ones, and Face Mesh runs again on an enlarged region around each, scaled so the
        face fills the mesh's input; the landmarks are mapped back to source-frame pixels.
        With `every_face`, small faces are also looked for beside those Face Mesh found, unless
        `beside` is False for this frame.
        """
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        faces = self._mesh(rgb)
        if not faces or (self._every_face and beside and len(faces) < self._max_faces):
            faces += self.small_faces(rgb, known=faces)
        return sorted(faces, key=lambda f: -f.size)[:self._max_faces]

    def _mesh(self, rgb: np.ndarray) -> list[Face]:
        """Face Mesh on the whole image: landmarks in its pixels, scores from the detections it started from."""
        with quiet_native_stderr():  # the graph's calculators log set-up on first use
            result = self._graph.process({"image": rgb})
        if not result.multi_face_landmarks:
            return []
        height, width = rgb.shape[:2]
        scale = np.array([width, height], dtype=np.float64)
        boxes = []
        for d in result.face_detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append((b.xmin * width, b.ymin * height, (b.xmin + b.width) * width, (b.ymin + b.height) * height, d.score[0]))
        faces = []
        for mesh in result.multi_face_landmarks:
            points = np.array([(p.x, p.y) for p in mesh.landmark], dtype=np.float64) * scale
            faces.append(Face(landmarks=points, score=_matching_score(points, boxes)))
        return faces

    def small_faces(self, rgb: np.ndarray, known: list[Face] = ()) -> list[Face]:
        """Full-range detection, then Face Mesh on a square region REGION_SCALE times each detection
        that is not one of the `known` faces."""
        height, width = rgb.shape[:2]
        faces: list[Face] = []
        for score, cx, cy, box_side in self._full_range_detections(rgb):
            if any(f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3] for f in [*known, *faces]):
                continue  # a face already meshed
            side = int(min(REGION_SCALE * box_side, width, height))
            x0 = int(min(max(cx - side / 2, 0), width - side))
            y0 = int(min(max(cy - side / 2, 0), height - side))
            region = cv2.resize(rgb[y0:y0 + side, x0:x0 + side], (REGION_SIZE, REGION_SIZE),
                                interpolation=cv2.INTER_AREA if side > REGION_SIZE else cv2.INTER_CUBIC)
            found = self._mesh(region)
            if found:
                mesh = min(found, key=lambda f: np.hypot(*(f.center - REGION_SIZE / 2)))  # the face detected
                faces.append(Face(landmarks=mesh.landmarks * (side / REGION_SIZE) + (x0, y0), score=score, small=True))
            if len(known) + len(faces) == self._max_faces:
                break
        return faces

    def _full_range_detections(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        """(score, centre x, centre y, box side) in frame pixels, best first.

        The detector sees its input at 192x192: a 1080p frame shrinks tenfold and a 100 px face
        to 10. So when the whole frame shows nothing, overlapping square tiles of it are tried,
        as tall as the frame, then (from 960 lines) half as tall, where a 60 px face is 21 px.
        With `every_face`, frames of 1000 lines or more are searched in the first tiles even
        when the whole frame showed some faces, but fewer than `max_faces` (a crowd).
        """
        if self._full_range is None:
            with quiet_native_stderr():
                self._full_range = _import_solution("face_detection").FaceDetection(
                    model_selection=1, min_detection_confidence=self._min_confidence)
        height, width = rgb.shape[:2]
        short = min(width, height)
        levels = [[(0, 0, width, height)]]
        levels += [_tiles(width, height, side) for side in (short, short // 2) if side >= TILE_MIN_SIDE]
        found = []
        for level, views in enumerate(levels):
            for x0, y0, w, h in views:
                with quiet_native_stderr():
                    detections = self._full_range.process(np.ascontiguousarray(rgb[y0:y0 + h, x0:x0 + w])).detections
                for d in detections or []:
                    b = d.location_data.relative_bounding_box
                    found.append((d.score[0], x0 + (b.xmin + b.width / 2) * w, y0 + (b.ymin + b.height / 2) * h,
                                  max(b.width * w, b.height * h)))
            crowd = self._every_face and level == 0 and len(found) < self._max_faces and short >= CROWD_MIN_SIDE
            if found and not crowd:
                break
        return sorted(found, reverse=True)

    def close(self) -> None:
        self._graph.close()
        if self._full_range is not None:
            self._full_range.close()

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tiles(width: int, height: int, side: int) -> list[tuple[int, int, int, int]]:
    """Overlapping side x side squares covering a width x height frame: (x, y, side, side)."""
    def starts(length: int) -> list[int]:
        return np.linspace(0, length - side, int(np.ceil(length / side)) + 1).astype(int).tolist() if length > side else [0]
    return [(x, y, side, side) for y in starts(height) for x in starts(width)]


def _import_solution(name: str) -> types.ModuleType:
    """mp.solutions.<name>, without running the __init__ of `mediapipe` and of its `solutions`.

    Those two load every solution and task API, and matplotlib and sounddevice with them:
    0.28 s, against 0.05 s for what a Face Mesh graph needs. Every extract worker and every
    `predict` would pay it at start-up. So both packages go into sys.modules un-run, and each
    runs its __init__ at the first attribute asked of it that it lacks (`mp.solutions`,
    `mp.__version__`): other code using mediapipe sees no difference.
    """
    for package_name in ("mediapipe", "mediapipe.python.solutions"):
        if package_name not in sys.modules:
            package = importlib.util.module_from_spec(importlib.util.find_spec(package_name))
            package.__class__ = _PackageInitOnDemand
            sys.modules[package_name] = package
            parent, _, child = package_name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, package)
    return importlib.import_module(f"mediapipe.python.solutions.{name}")


class _PackageInitOnDemand(types.ModuleType):
    def __getattr__(self, name: str):  # called only for attributes the package lacks
        if name.startswith("__") and name != "__version__":
            raise AttributeError(name)  # introspection (copy, pickle, inspect) must not run it
        self.__class__ = types.ModuleType
        self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def _matching_score(points: np.ndarray, boxes: list[tuple[float, ...]]) -> float:
    """Score of the detection whose box centre is nearest the mesh's centre."""
    if not boxes:
        return 0.0
    center = (points.min(0) + points.max(0)) / 2
    return min(boxes, key=lambda b: np.hypot((b[0] + b[2]) / 2 - center[0], (b[1] + b[3]) / 2 - center[1]))[4]


# ---- following faces across sampled frames -------------------------------------------------


@dataclass
class Track:
    """One person's faces across frames: frame index -> Face."""

    faces: dict[int, Face]

    def nearest(self, index: int) -> Face:
        return self.faces[min(self.faces, key=lambda i: abs(i - index))]

    @property
    def mean_size(self) -> float:
        return float(np.mean([f.size for f in self.faces.values()]))


# Sampled frames can be seconds apart, so a person may have moved far between two of them.
MAX_SHIFT = 2.0  # centre distance, in face sizes, still taken for the same person
MAX_SIZE_RATIO = 2.0


def face_distance(a: Face, b: Face) -> float:
    """Centre distance in units of the larger face's size; inf when their sizes are too far apart."""
    ratio = max(a.size, b.size) / max(min(a.size, b.size), 1e-6)
    if ratio > MAX_SIZE_RATIO:
        return float("inf")
    return float(np.linalg.norm(a.center - b.center) / max(a.size, b.size, 1e-6))


def track_faces(frames: Iterable[tuple[int, list[Face]]]) -> list[Track]:
    """Group per-frame faces into tracks, most-seen (then largest) first.

    In frame order, faces and tracks are paired closest first (each at most once per frame),
    so two people stay apart even when each has moved; an unpaired face starts a new track.
    """
    tracks: list[Track] = []
    for index, faces in frames:
        pairs = sorted(
            (d, f, k) for f, face in enumerate(faces) for k, track in enumerate(tracks)
            if (d := face_distance(face, track.nearest(index))) < MAX_SHIFT
        )
        taken_faces, taken_tracks = set(), set()
        for _, f, k in pairs:
            if f not in taken_faces and k not in taken_tracks:
                tracks[k].faces[index] = faces[f]
                taken_faces.add(f)
                taken_tracks.add(k)
        tracks += [Track({index: face}) for f, face in enumerate(faces) if f not in taken_faces]
    return sorted(tracks, key=lambda t: (-len(t.faces), -t.mean_size))
