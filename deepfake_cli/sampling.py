"""Sampling face sequences from a video: spread over its whole length, one track per person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from deepfake_cli.crop import CropSpec, crop_face, crop_landmarks
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.faces import MAX_SHIFT, Face, FaceAnalyzer, Track, face_distance, landmark_vector, track_faces
from deepfake_cli.video import Video, VideoInfo

# How many other frames of its segment a slot tries when its own frame shows no face.
ALTERNATES_PER_SLOT = 4
# The reference preprocessing's candidate frames (evenly spaced); borrowing searches them all,
# so every video the reference keeps is kept here too.
REFERENCE_CANDIDATES = 60
# With an analyzer that looks for every face (predict's), the first pass over a video's frames looks
# for small faces beside those Face Mesh finds on every SMALL_FACE_PROBE-th frame only, and on every
# frame after the first search that finds one: a search costs as much as Face Mesh itself, and most
# clips hold one person, near the camera. A face missed before that first find leaves its slots
# empty, and their alternates are searched in full.
SMALL_FACE_PROBE = 4


class SkipVideo(DeepfakeError):
    """The video is readable but cannot yield what was asked (too short, too few faces)."""

    @classmethod
    def too_short(cls, frame_count: int, needed: int) -> "SkipVideo":
        return cls(f"too short: {frame_count} frame{'s' * (frame_count != 1)}, {needed} needed")


@dataclass(frozen=True)
class FaceFrame:
    """One person's face on one source frame."""

    index: int  # source frame index
    crop: np.ndarray  # (size, size, 3) uint8 BGR
    vector: np.ndarray  # (5,) float64 landmark distances in source pixels
    score: float  # detection confidence
    landmarks: np.ndarray  # (468, 2) float32 Face Mesh landmarks in crop pixels (self-blend masks)


OnFace = Callable[[FaceFrame], None]


@dataclass
class VideoFaces:
    info: VideoInfo
    slots: list[tuple[int, int]]  # [start, stop) source frames of each segment
    # per tracked person, per window, one entry per slot (None: no face); each window a sequence of the
    # kind `extract` writes, in time order
    people: list[list[list[FaceFrame | None]]]
    borrowed: int = 0  # slots of the first person's first window filled from frames outside their own segment


def window_phases(windows: int) -> list[float]:
    """Where in its segment each window's slot reads, as a share of the segment: the first window at the
    centre (`extract`'s frame), the others spread evenly around it (0.5, 0.0 for two; 0.5, 0.75, 0.0, 0.25)."""
    return [(0.5 + w / windows) % 1.0 for w in range(windows)]


def sample_faces(video: Video, analyzer: FaceAnalyzer, n_slots: int, spec: CropSpec, *, max_people: int = 1,
                 borrow: bool = False, windows: int = 1, on_face: OnFace | None = None) -> VideoFaces:
    """Cut the video into `n_slots` equal segments and find each tracked person's face in each.

    Each slot reads the frame at its segment's centre. A slot whose frame shows no face (of
    that person) tries up to ALTERNATES_PER_SLOT other frames of its segment, nearest first,
    so a video still yields `n_slots` faces when it can. People are tracked across slots so a
    second person never swaps into another's sequence; the most-seen person comes first.
    With `borrow`, a person's slots still empty take their face from other frames (see
    `_borrow`; for people after the first, only frames already read), and the sequence is then
    in time order rather than one frame per slot.
    With several `windows`, each is another draw of the same sampling: its slots read another
    point of every segment (`window_phases`); the first window is the one-window sampling.
    `on_face` is called with every face as it is cut, before it is known whose it is or whether it is used.
    """
    info = video.info
    if info.frame_count < n_slots:
        raise SkipVideo.too_short(info.frame_count, n_slots)
    slots = [(round(i * info.frame_count / n_slots), round((i + 1) * info.frame_count / n_slots)) for i in range(n_slots)]
    framings = [[a + int(phase * (b - a)) for a, b in slots] for phase in window_phases(windows)]  # per window

    found = _detect(video, analyzer, sorted({i for frames in framings for i in frames}), spec, on_face, SMALL_FACE_PROBE)
    if borrow and not any(found.values()):  # a face in one short stretch only: look where the reference would
        found |= _detect(video, analyzer, sorted(set(_reference_candidates(info)) - set(found)), spec, on_face)
    if not any(found.values()):
        raise SkipVideo(f"no face found in {len(found)} frames sampled across the video")
    tracks = track_faces((i, [face for face, _ in found[i]]) for i in sorted(found))[:max_people]
    people = [[[_pick(track, found.get(c, []), c) for c in frames] for frames in framings] for track in tracks]

    missing = {(w, s) for person in people for w, window in enumerate(person) for s, f in enumerate(window) if f is None}
    if missing:
        alternates = {(w, s): _alternates(*slots[s], framings[w][s]) for w, s in missing}
        found |= _detect(video, analyzer, sorted({i for frames in alternates.values() for i in frames} - set(found)), spec,
                         on_face)
        for person, track in zip(people, tracks):
            for w, s in missing:
                if person[w][s] is None:
                    person[w][s] = next((f for i in alternates[w, s] if (f := _pick(track, found.get(i, []), i)) is not None),
                                        None)
    borrowed = 0
    if borrow:
        for p, (person, track) in enumerate(zip(people, tracks)):
            for w, window in enumerate(person):
                if None in window:  # the first person as extract follows it; others from frames already read
                    person[w], filled = _borrow(video, analyzer, spec, window, track, slots, framings[w], found, p == 0,
                                                on_face)
                    borrowed = filled if (p, w) == (0, 0) else borrowed
    return VideoFaces(info=info, slots=slots, people=people, borrowed=borrowed)


def sample_reference(video: Video, analyzer: FaceAnalyzer, seq_len: int, spec: CropSpec, windows: int = 1,
                     on_face: OnFace | None = None) -> VideoFaces:
    """The reference preprocessing's sampling: REFERENCE_CANDIDATES frames evenly spaced, read in order,
    the first `seq_len` with a face kept (one person, as its Face Mesh found one). A window short of
    faces is left with None in its last slots. Further windows shift every candidate by the same share
    of their spacing (`window_phases`), the first window being the reference's own frames."""
    info = video.info
    if info.frame_count < seq_len:
        raise SkipVideo.too_short(info.frame_count, seq_len)
    spacing = (info.frame_count - 1) / (REFERENCE_CANDIDATES - 1)
    person = []
    for phase in window_phases(windows):
        candidates = np.clip(np.linspace(0, info.frame_count - 1, REFERENCE_CANDIDATES) + (phase - 0.5) * spacing,
                             0, info.frame_count - 1).astype(int)
        kept: list[FaceFrame | None] = []
        for index, frame in video.read(candidates.tolist()):  # distinct frames, in order, as the reference read them
            faces = analyzer.faces(frame)
            if faces:
                kept.append(_face_frame(frame, index, faces[0], spec, on_face))
                if len(kept) == seq_len:
                    break
        person.append(kept + [None] * (seq_len - len(kept)))
    if all(window[0] is None for window in person):
        raise SkipVideo(f"no face found in {REFERENCE_CANDIDATES} frames sampled across the video")
    return VideoFaces(info=info, slots=[(0, info.frame_count)], people=[person])


def _borrow(video: Video, analyzer: FaceAnalyzer, spec: CropSpec, person: list[FaceFrame | None], track: Track,
            slots: list[tuple[int, int]], centres: list[int], found: dict,
            search: bool = True, on_face: OnFace | None = None) -> tuple[list[FaceFrame | None], int]:
    """Fill empty slots with the person's face on the nearest frames not yet used; then sort by time.

    Distinct frames only: if the video has fewer frames with the face than slots, nothing is
    filled (the caller skips it). More frames are searched (with `search`) only when those
    already seen are too few: the reference's candidates and the rest of every segment's alternates.
    """
    def spare() -> dict[int, FaceFrame]:
        used = {f.index for f in person if f is not None}
        return {i: f for i in sorted(found) if i not in used and (f := _pick(track, found[i], i)) is not None}

    have = sum(f is not None for f in person)
    if search and have + len(spare()) < len(person):
        more = set(_reference_candidates(video.info))
        more |= {i for (a, b), c in zip(slots, centres) for i in _alternates(a, b, c)}
        found |= _detect(video, analyzer, sorted(more - set(found)), spec, on_face)
    pool = spare()
    if have + len(pool) < len(person):
        return person, 0
    filled = list(person)
    for s, frame in enumerate(person):
        if frame is None:
            filled[s] = pool.pop(min(pool, key=lambda i: abs(i - centres[s])))
    return sorted(filled, key=lambda f: f.index), len(person) - have


def _reference_candidates(info: VideoInfo) -> list[int]:
    return np.linspace(0, info.frame_count - 1, REFERENCE_CANDIDATES, dtype=int).tolist()


def _detect(video: Video, analyzer: FaceAnalyzer, indices: list[int], spec: CropSpec, on_face: OnFace | None = None,
            probe: int = 1) -> dict[int, list[tuple[Face, FaceFrame]]]:
    """Faces on each frame in `indices`, each with its crop (cut while the frame is in hand). Small faces
    beside Face Mesh's are looked for on every `probe`-th frame until one is found, then on every frame."""
    found, searching = {}, probe <= 1
    for k, (index, frame) in enumerate(video.read(indices)):
        faces = analyzer.faces(frame, beside=searching or k % probe == 0)
        searching = searching or any(face.small for face in faces)
        found[index] = [(face, _face_frame(frame, index, face, spec, on_face)) for face in faces]
    return found


def _face_frame(frame: np.ndarray, index: int, face: Face, spec: CropSpec, on_face: OnFace | None = None) -> FaceFrame:
    cut = FaceFrame(index, crop_face(frame, face, spec), landmark_vector(face.landmarks), face.score,
                    crop_landmarks(face, frame.shape, spec))
    if on_face is not None:
        on_face(cut)
    return cut


def _pick(track: Track, candidates: list[tuple[Face, FaceFrame]], index: int) -> FaceFrame | None:
    """The candidate face that belongs to `track`, judged against its face nearest in time."""
    reference = track.faces.get(index) or track.nearest(index)
    matches = [(d, k) for k, (face, _) in enumerate(candidates) if (d := face_distance(face, reference)) < MAX_SHIFT]
    return candidates[min(matches)[1]][1] if matches else None


def _alternates(start: int, stop: int, centre: int) -> list[int]:
    """Other frames of the segment [start, stop), nearest the centre first."""
    step = max(1, (stop - start) // (ALTERNATES_PER_SLOT + 2))
    offsets = [k * step * sign for k in range(1, ALTERNATES_PER_SLOT + 1) for sign in (1, -1)]
    frames = [centre + o for o in offsets if start <= centre + o < stop]
    return frames[:ALTERNATES_PER_SLOT]
