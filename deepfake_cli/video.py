"""Decoding the frames we need from a video, each once, with flat memory (FFmpeg through PyAV)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TypeVar

import av
import numpy as np

from deepfake_cli.errors import DeepfakeError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts",
                            ".m2ts", ".3gp"})

# x264's default keyframe interval. A seek decodes from the keyframe before its target, so
# when the next wanted frame is further away than a GOP, seeking decodes less than reading on.
SEEK_GAP = 250
READ_AHEAD = 2  # frames decoded ahead of the caller with Video(read_ahead=True)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frame_count: int
    fps: float
    width: int
    height: int
    codec: str = ""  # FFmpeg's name of the video codec: h264, hevc, vp9, ...

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DeepfakeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DeepfakeError(f"{path}: empty file (0 bytes); re-copy it or remove it")
    try:
        # FFmpeg's probe decodes a stream's first frames (7 or more of H.264: 15 ms at 720p, the
        # cost of a dozen frames' decoding) to learn facts most containers state in their header.
        # So it first runs with the decoder skipping every frame; where that leaves a fact
        # unknown (an MPEG-4 Part 2 frame size, a Matroska start time), it runs again in full.
        container = av.open(str(path), options={"skip_frame": "all"})
        if container.streams.video and not _header_complete(container.streams.video[0]):
            container.close()
            container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError):
        raise DeepfakeError(f"{path}: not a readable video (corrupt, truncated or not a video file)") from None
    if not container.streams.video:
        container.close()
        raise DeepfakeError(f"{path}: no video stream in this file (audio only?)")
    return container


def _header_complete(stream: av.video.stream.VideoStream) -> bool:
    return bool(stream.codec_context.width and stream.start_time is not None)


def _info(path: Path, stream: av.video.stream.VideoStream) -> VideoInfo:
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    frame_count = stream.frames  # the container's count; some formats (mkv, webm) leave it 0
    if frame_count <= 0 and stream.duration and fps:
        frame_count = round(float(stream.duration * stream.time_base) * fps)
    if frame_count <= 0 and stream.container.duration and fps:
        frame_count = round(stream.container.duration / av.time_base * fps)
    if frame_count <= 0 or not stream.codec_context.width:
        raise DeepfakeError(f"{path}: not a readable video (corrupt, truncated or not a video file)")
    return VideoInfo(path, frame_count, fps, stream.codec_context.width, stream.codec_context.height,
                     stream.codec_context.name or "")


def sample_frame_indices(start: int, stop: int, n: int) -> list[int]:
    """`n` frame indices spread evenly over [start, stop): the centre of each of n equal segments."""
    length = stop - start
    return [start + int((i + 0.5) * length / n) for i in range(n)]


class Video:
    """An open video file: its facts (`info`) and the frames asked of it (`read`).

    A video is opened once and read as often as needed: some files (Matroska, MPEG-4 Part 2
    video) still need a full probe on opening, which decodes frames. `threads=0` lets FFmpeg
    choose its decode threads; a process pool passes 1, as its workers already fill the cores.
    `read_ahead`: decode in a thread of its own, up to READ_AHEAD frames ahead of the caller, so
    that decoding (which releases the GIL) overlaps what the caller does with each frame.
    """

    def __init__(self, path: Path, threads: int = 0, read_ahead: bool = False):
        self.path, self.read_ahead = path, read_ahead
        self._container = _open(path)
        self._stream = self._container.streams.video[0]
        try:
            self.info = _info(path, self._stream)
        except DeepfakeError:
            self._container.close()
            raise
        codec = self._stream.codec_context
        codec.thread_count, codec.thread_type = threads, "AUTO"
        # Frame index of a timestamp, as OpenCV counts them: (pts - start) / frame duration.
        self._per_tick = float(self._stream.time_base * (self._stream.average_rate or self._stream.guessed_rate or 1))
        self._start = self._stream.start_time or 0
        self._position = -1  # index of the latest packet demuxed
        # Degrees the stored frames are turned counter-clockwise for display (the container's
        # display matrix: phones store portrait video sideways). Known once a frame is decoded.
        self.rotation = 0

    def read(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield `(index, BGR frame)` for the distinct `indices`, in increasing order.

        Between two wanted frames the decoder skips every frame that no other frame refers to
        (FFmpeg's skip_frame=NONREF: most B-frames, about half the decoding work of x264
        output), while the wanted frames and all reference frames are decoded in full, so
        every wanted frame is bit-identical to a plain decode. Past a gap of SEEK_GAP frames,
        or back to frames already passed, it seeks instead. One frame is held at a time: memory
        stays flat for an hour-long video (READ_AHEAD frames with `read_ahead`). Indices past
        the real end of the stream (container frame counts can lie) are silently not yielded.
        """
        frames = self._read(indices)
        return _ahead(frames, READ_AHEAD) if self.read_ahead else frames

    def _read(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        pending = sorted(set(indices))
        wanted = set(pending)
        sought = None  # the target of the last seek: one seek per target, even if it lands short
        codec = self._stream.codec_context

        def far_ahead() -> bool:  # the next wanted frame is worth a seek
            return pending[0] - self._position > SEEK_GAP and pending[0] != sought

        while pending:
            # Before demuxing on: a frame already passed is only reachable by seeking back.
            if pending[0] <= self._position or far_ahead():
                sought = pending[0]
                self._container.seek(self._start + int(sought / self._per_tick), stream=self._stream, backward=True)
                self._position = -1
            for packet in self._container.demux(self._stream):
                index = self._index_of(packet.pts)
                if index is not None:
                    self._position = max(self._position, index)
                codec.skip_frame = "DEFAULT" if index is None or index in wanted else "NONREF"
                for frame in _decode(packet, self.path):
                    index = self._index_of(frame.pts)
                    index = self._position if index is None else index
                    # A wanted index with no frame of its own (a variable-rate gap) takes the next frame.
                    while pending and pending[0] <= index:
                        yield pending.pop(0), self._upright(frame)
                if not pending or far_ahead():
                    break
            else:
                return  # the end of the stream

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as the video is shown, rotation applied."""
        w, h = self.info.width, self.info.height
        return (h, w) if self.rotation in (90, 270) else (w, h)

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as BGR, turned as the display matrix says (frames are read upright everywhere)."""
        image = frame.to_ndarray(format="bgr24")
        self.rotation = round((frame.rotation or 0) / 90) % 4 * 90
        return np.ascontiguousarray(np.rot90(image, self.rotation // 90)) if self.rotation else image

    def _index_of(self, pts: int | None) -> int | None:
        return None if pts is None else round((pts - self._start) * self._per_tick)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def _ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items`, produced by a thread of their own up to `depth` ahead of the consumer. What the producer
    raises is raised here; a consumer that stops early stops the producer before this returns, so the
    source is never read by two threads at once."""
    ready: queue.Queue = queue.Queue(depth)
    stop, done = threading.Event(), object()

    def produce() -> None:
        try:
            for item in items:
                ready.put(item)
                if stop.is_set():
                    return
            ready.put(done)
        except BaseException as e:  # handed to the consumer, which raises it as its own
            ready.put(_Raised(e))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting for room
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)
        thread.join()


def _decode(packet: av.Packet, path: Path) -> list[av.VideoFrame]:
    """The frames a packet completes; a damaged packet is dropped (as FFmpeg's own tools do)."""
    try:
        return packet.decode()
    except av.FFmpegError as e:
        log.debug("%s: dropped a damaged packet (%s)", path, e)
        return []
