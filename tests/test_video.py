from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.video import SEEK_GAP, open_video, read_frames, sample_frame_indices


def numbered_video(path: Path, frames: int) -> Path:
    """Each frame's grey level encodes its index, so a decoded frame tells which it is."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), (i * 7) % 250, np.uint8))
    writer.release()
    return path


def test_sample_frame_indices_cover_the_whole_video():
    indices = sample_frame_indices(0, 300, 16)
    assert len(indices) == 16 and indices == sorted(indices)
    assert indices[0] < 300 / 16 and indices[-1] > 300 * 15 / 16  # not the first quarter only


def test_read_frames_returns_the_requested_frames_by_grab_and_by_seek(tmp_path):
    video = numbered_video(tmp_path / "n.mp4", 2 * SEEK_GAP + 40)
    wanted = [3, 10, 11, SEEK_GAP + 30, 2 * SEEK_GAP + 35]  # dense (grab) then far apart (seek)
    got = list(read_frames(video, wanted))
    assert [i for i, _ in got] == wanted
    for index, frame in got:
        assert abs(int(frame.mean()) - (index * 7) % 250) <= 3


def test_read_frames_stops_quietly_past_the_end(tmp_path):
    video = numbered_video(tmp_path / "n.mp4", 20)
    assert [i for i, _ in read_frames(video, [5, 19, 25])] == [5, 19]


@pytest.mark.parametrize("content", [b"", b"plain text, not a video"])
def test_open_video_rejects_non_videos_with_a_clear_message(tmp_path, content):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(DeepfakeError, match="empty file|not a readable video"):
        open_video(path)
