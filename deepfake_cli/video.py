"""Decoding the frames we need from a video, each once, with flat memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from deepfake_cli.errors import DeepfakeError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})

# x264's default keyframe interval. A seek decodes from the keyframe before its target, so
# when the next wanted frame is further away than a GOP, seeking decodes less than reading on.
SEEK_GAP = 250


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frame_count: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def open_video(path: Path, threads: int = 0) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open `path` with OpenCV's FFmpeg backend; `threads=0` lets FFmpeg choose its decode threads."""
    if not path.is_file():
        raise DeepfakeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DeepfakeError(f"{path}: empty file (0 bytes); re-copy it or remove it")
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    if frame_count <= 0:
        cap.release()
        raise DeepfakeError(f"{path}: not a readable video (corrupt, truncated or not a video file)")
    info = VideoInfo(
        path=path,
        frame_count=frame_count,
        fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    return cap, info


def probe_video(path: Path) -> VideoInfo:
    cap, info = open_video(path)
    cap.release()
    return info


def sample_frame_indices(start: int, stop: int, n: int) -> list[int]:
    """`n` frame indices spread evenly over [start, stop): the centre of each of n equal segments."""
    length = stop - start
    return [start + int((i + 0.5) * length / n) for i in range(n)]


def read_frames(path: Path, indices: list[int], threads: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(index, BGR frame)` for the distinct `indices`, in increasing order.

    Every frame is decoded at most once. Between two wanted frames we either `grab()` on
    (decode without colour conversion) or seek, whichever decodes less; only one frame is
    held at a time, so memory stays flat for an hour-long video. Indices past the real end
    of the stream (container frame counts can lie) are silently not yielded.
    """
    cap, _ = open_video(path, threads)
    try:
        position = 0  # index of the frame the next grab() decodes
        for index in sorted(set(indices)):
            if index - position > SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                position = index
            while position < index:
                if not cap.grab():
                    return
                position += 1
            ok, frame = cap.read()
            if not ok:
                return
            position += 1
            yield index, frame
    finally:
        cap.release()
