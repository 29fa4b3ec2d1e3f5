import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.video import SEEK_GAP, VIDEO_SUFFIXES, Video, sample_frame_indices
from make_dataset import store_turned


BITS, BAR = 10, 16  # a frame's index, in black and white bars wide enough to survive compression


def numbered_frame(i: int) -> np.ndarray:
    """Frame `i` shows its index in binary, so a decoded frame tells which it is."""
    bits = np.array([(i >> b) & 1 for b in range(BITS)], np.uint8) * 255
    return np.ascontiguousarray(np.broadcast_to(np.repeat(bits, BAR)[None, :, None], (32, BITS * BAR, 3)))


def numbered_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (BITS * BAR, 32))
    for i in range(frames):
        writer.write(numbered_frame(i))
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


def encoded_video(path: Path, frames: int, codec: str = "libx264", size: tuple[int, int] = (128, 96)) -> Path:
    """Moving texture through `codec` (x264 defaults: B-frames, B-pyramid, 3 reference frames)."""
    width, height = size
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (height, 2 * width, 3), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(texture, 3 * i, axis=1)[:, :width]), format="bgr24")
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


@pytest.mark.parametrize("name, codec", [("clip.mkv", "libx264"), ("clip.webm", "libvpx"), ("clip.avi", "mpeg4"),
                                         ("clip.mov", "libx264"), ("clip.ts", "libx264"), ("clip.m4v", "mpeg4")])
def test_other_containers_and_codecs_read_the_same_frames(tmp_path, name, codec):
    video = encoded_video(tmp_path / name, 40, codec)
    assert video.suffix in VIDEO_SUFFIXES  # extract and predict pick it out of a folder
    with av.open(str(video)) as container:
        every = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    with Video(video) as opened:
        assert opened.info.frame_count == 40  # mkv and webm carry no count: from the duration
    got = dict(read_frames(video, [0, 13, 39]))
    assert sorted(got) == [0, 13, 39] and all(np.array_equal(got[i], every[i]) for i in got)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_stream_that_starts_late_is_indexed_from_its_first_frame(tmp_path, suffix):
    """A cut clip's timestamps start late. Matroska's header does not say where, so the
    quick probe (no decoding) is not enough there and the file is probed in full."""
    with av.open(str(tmp_path / f"late{suffix}"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = BITS * BAR, 32, "yuv420p"
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(numbered_frame(i), format="bgr24")
            frame.pts, frame.time_base = 50 + i, Fraction(1, 25)  # starts at 2 s
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    got = read_frames(tmp_path / f"late{suffix}", [0, 7, 39])
    assert [i for i, _ in got] == [0, 7, 39]
    assert [frame_number(frame) for _, frame in got] == [0, 7, 39]


def test_an_open_video_reads_again_backwards_and_forwards(tmp_path):
    with Video(numbered_video(tmp_path / "n.mp4", SEEK_GAP + 60)) as video:
        assert video.info.frame_count == SEEK_GAP + 60
        for wanted in ([20, 40], [5, 41], [SEEK_GAP + 50], [0]):  # on, back, far ahead, back to the start
            got = list(video.read(wanted))
            assert [i for i, _ in got] == wanted
            assert [frame_number(frame) for _, frame in got] == wanted


def test_reading_ahead_gives_the_same_frames_and_stops_with_the_caller(tmp_path):
    path = numbered_video(tmp_path / "n.mp4", SEEK_GAP + 60)
    wanted = [3, 10, 11, 40, SEEK_GAP + 50]
    with Video(path) as plain, Video(path, read_ahead=True) as ahead:
        expected = list(plain.read(wanted))
        got = list(ahead.read(wanted))
        assert [i for i, _ in got] == wanted and all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected))
        threads = threading.active_count()
        for index, _ in ahead.read(wanted):  # a caller that stops early: the decoding thread stops before it goes on
            if index == 10:
                break
        assert threading.active_count() == threads
        assert [frame_number(f) for _, f in ahead.read([0, SEEK_GAP + 55])] == [0, SEEK_GAP + 55]  # and reads again


def test_reading_ahead_raises_the_decoders_error_in_the_caller(tmp_path):
    path = numbered_video(tmp_path / "n.mp4", 40)
    with Video(path, read_ahead=True) as video:
        video._upright = lambda frame: (_ for _ in ()).throw(DeepfakeError(f"{path}: damaged"))  # a frame that cannot be had
        with pytest.raises(DeepfakeError, match="damaged"):
            list(video.read([5, 20]))


def test_read_frames_stops_quietly_past_the_end(tmp_path):
    video = numbered_video(tmp_path / "n.mp4", 20)
    assert [i for i, _ in read_frames(video, [5, 19, 25])] == [5, 19]


@pytest.mark.parametrize("content", [b"", b"plain text, not a video"])
def test_open_video_rejects_non_videos_with_a_clear_message(tmp_path, content):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(DeepfakeError, match="empty file|not a readable video"):
        Video(path)


def test_reused_frame_memory_is_not_page_faulted_in_again_for_every_frame(tmp_path, untuned_env):
    video = encoded_video(tmp_path / "hd.mp4", 24, size=(1280, 720))
    code = """if True:
        import resource, sys
        from pathlib import Path
        from deepfake_cli.memory import reuse_frame_memory
        from deepfake_cli.video import Video
        if sys.argv[2] == "reuse":
            reuse_frame_memory()
        def read_all():
            with Video(Path(sys.argv[1]), threads=1) as video:
                for _, frame in video.read(list(range(24))):
                    frame[::2].copy()  # a frame-sized temporary, as crops and colour conversions make
        read_all()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        read_all()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
    faults = {mode: int(subprocess.run([sys.executable, "-c", code, str(video), mode], check=True, env=untuned_env,
                                       capture_output=True, text=True).stdout) for mode in ("default", "reuse")}
    assert faults["reuse"] * 10 < faults["default"], faults  # measured: 42 against 9345 page faults


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_frames_are_read_upright_whatever_the_display_matrix(tmp_path, degrees):
    upright = numbered_video(tmp_path / "upright.mp4", 12)
    turned = store_turned(upright, tmp_path / f"turned{degrees}.mp4", degrees, lossless=True)
    with Video(upright) as a, Video(turned) as b:
        want, got = dict(a.read([0, 5, 11])), dict(b.read([0, 5, 11]))
        assert b.rotation == degrees and b.display_size == (a.info.width, a.info.height)
    for i in want:
        assert got[i].shape == want[i].shape and frame_number(got[i]) == i
        assert np.abs(got[i].astype(int) - want[i]).mean() < 3  # lossless but for the colour conversion
