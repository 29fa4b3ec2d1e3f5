from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.video import SEEK_GAP, Video, sample_frame_indices


BITS, BAR = 10, 16  # a frame's index, in black and white bars wide enough to survive compression


def numbered_video(path: Path, frames: int) -> Path:
    """Each frame shows its index in binary, so a decoded frame tells which it is."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (BITS * BAR, 32))
    for i in range(frames):
        bits = np.array([(i >> b) & 1 for b in range(BITS)], np.uint8) * 255
        writer.write(np.ascontiguousarray(np.broadcast_to(np.repeat(bits, BAR)[None, :, None], (32, BITS * BAR, 3))))
    writer.release()
    return path


def frame_number(frame: np.ndarray) -> int:
    bars = frame[8:24].reshape(16, BITS, BAR, 3)[:, :, 4:12].mean(axis=(0, 2, 3))  # each bar's middle
    return sum(1 << b for b in range(BITS) if bars[b] > 128)


def test_sample_frame_indices_cover_the_whole_video():
    indices = sample_frame_indices(0, 300, 16)
    assert len(indices) == 16 and indices == sorted(indices)
    assert indices[0] < 300 / 16 and indices[-1] > 300 * 15 / 16  # not the first quarter only


def read_frames(path: Path, wanted: list[int], threads: int = 0) -> list[tuple[int, np.ndarray]]:
    with Video(path, threads) as video:
        return list(video.read(wanted))


def encoded_video(path: Path, frames: int, codec: str = "libx264") -> Path:
    """Moving texture through `codec` (x264 defaults: B-frames, B-pyramid, 3 reference frames)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (96, 256, 3), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(texture, 3 * i, axis=1)[:, :128]), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_read_frames_returns_the_requested_frames_sequentially_and_by_seek(tmp_path):
    video = numbered_video(tmp_path / "n.mp4", 2 * SEEK_GAP + 40)
    wanted = [3, 10, 11, SEEK_GAP + 30, 2 * SEEK_GAP + 35]  # dense (read on) then far apart (seek)
    got = list(read_frames(video, wanted))
    assert [i for i, _ in got] == wanted
    for index, frame in got:
        assert frame_number(frame) == index


def test_skipping_unreferenced_frames_leaves_wanted_frames_bit_identical(tmp_path):
    video = encoded_video(tmp_path / "b.mp4", 60)
    with av.open(str(video)) as container:
        decoded = list(container.decode(video=0))
    assert av.video.frame.PictureType.B in {f.pict_type for f in decoded}  # frames the decoder may skip
    every = [f.to_ndarray(format="bgr24") for f in decoded]
    wanted = [1, 2, 5, 6, 7, 30, 31, 58, 59]  # B-frames among them, and their neighbours skipped
    got = dict(read_frames(video, wanted, threads=1))
    assert sorted(got) == wanted
    for index, frame in got.items():
        assert np.array_equal(frame, every[index]), index


@pytest.mark.parametrize("name, codec", [("clip.mkv", "libx264"), ("clip.webm", "libvpx"), ("clip.avi", "mpeg4")])
def test_other_containers_and_codecs_read_the_same_frames(tmp_path, name, codec):
    video = encoded_video(tmp_path / name, 40, codec)
    with av.open(str(video)) as container:
        every = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    with Video(video) as opened:
        assert opened.info.frame_count == 40  # mkv and webm carry no count: from the duration
    got = dict(read_frames(video, [0, 13, 39]))
    assert sorted(got) == [0, 13, 39] and all(np.array_equal(got[i], every[i]) for i in got)


def test_an_open_video_reads_again_backwards_and_forwards(tmp_path):
    with Video(numbered_video(tmp_path / "n.mp4", SEEK_GAP + 60)) as video:
        assert video.info.frame_count == SEEK_GAP + 60
        for wanted in ([20, 40], [5, 41], [SEEK_GAP + 50], [0]):  # on, back, far ahead, back to the start
            got = list(video.read(wanted))
            assert [i for i, _ in got] == wanted
            assert [frame_number(frame) for _, frame in got] == wanted


def test_read_frames_stops_quietly_past_the_end(tmp_path):
    video = numbered_video(tmp_path / "n.mp4", 20)
    assert [i for i, _ in read_frames(video, [5, 19, 25])] == [5, 19]


@pytest.mark.parametrize("content", [b"", b"plain text, not a video"])
def test_open_video_rejects_non_videos_with_a_clear_message(tmp_path, content):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(DeepfakeError, match="empty file|not a readable video"):
        Video(path)
