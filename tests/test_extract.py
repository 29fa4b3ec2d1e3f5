import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import FRAMES
from deepfake_cli.cli import app
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.extract import ExtractConfig, extract, find_videos, in_shard, read_manifest
from deepfake_cli.faces import FaceAnalyzer
from deepfake_cli.video import Video
from make_dataset import store_turned
from reference_notebook import DeepfakeDataset

runner = CliRunner()


def test_output_follows_the_reference_format(extracted):
    assert sorted(p.name for p in extracted.iterdir()) == [".deepfake", "FaceSwap", "SelfBlend", "original"]
    rows = [r for r in read_manifest(extracted).values() if r["status"] == "ok"]
    for row in rows:
        for i in range(FRAMES):
            image = cv2.imread(str(extracted / row["folder"] / f"{row['video']}_{i}.jpg"))
            vector = np.load(extracted / row["folder"] / f"{row['video']}_{i}.npy")
            assert image.shape == (256, 256, 3)
            assert vector.shape == (5,) and vector.dtype == np.float64 and (vector > 0).all()
        assert not (extracted / row["folder"] / f"{row['video']}_{FRAMES}.jpg").exists()
    assert {r["folder"] for r in rows} == {"original", "FaceSwap", "SelfBlend"}
    assert any(r["video"] == "000_001" for r in rows)  # FF++ <target>_<source> names kept


def test_the_reference_notebook_reader_reads_our_output_unchanged(extracted):
    dataset = DeepfakeDataset(str(extracted), sequence_length=FRAMES, split="train", val_split=0.2)
    images, vectors, label = dataset[0]
    assert images.shape == (FRAMES, 3, 256, 256) and vectors.shape == (FRAMES, 5)
    assert len(dataset) + len(DeepfakeDataset(str(extracted), FRAMES, split="val")) >= 15


def test_manifest_records_each_video_for_auditing(extracted, videos):
    rows = read_manifest(extracted)
    assert len(rows) == len(find_videos(videos))
    row = rows["original/000"]
    assert row["status"] == "ok" and row["label"] == 0 and row["frames"] == FRAMES
    assert (row["width"], row["height"], row["fps"]) == (320, 240, 25.0)
    indices = row["frame_indices"]
    assert len(indices) == FRAMES and indices == sorted(indices) and indices[-1] > 30  # spread over all 40 frames
    assert 0.5 <= row["face_confidence"] <= 1
    assert rows["FaceSwap/000_001"]["label"] == 1


def test_bad_videos_are_recorded_and_do_not_stop_the_others(tmp_path, clips):
    videos = tmp_path / "in" / "original"
    videos.mkdir(parents=True)
    for name in ("real", "no_face", "text", "empty", "short"):
        (videos / clips[name].name).write_bytes(clips[name].read_bytes())
    result = runner.invoke(app, ["extract", str(tmp_path / "in"), str(tmp_path / "out"), "--frames", "4", "--workers", "1", "--json"])
    assert result.exit_code == 1  # something failed
    summary = json.loads(result.stdout)
    by_video = {r["video"]: r for r in summary["videos"]}
    assert by_video["real"]["status"] == "ok"
    assert by_video["noface"]["status"] == "skipped" and "no face" in by_video["noface"]["reason"]
    assert by_video["short"]["status"] == "skipped" and "too short" in by_video["short"]["reason"]
    assert by_video["notes"]["status"] == "failed" and "not a readable video" in by_video["notes"]["reason"]
    assert by_video["empty"]["status"] == "failed" and "empty file" in by_video["empty"]["reason"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: p, "no videos found"),
])
def test_bad_input_folders_get_one_clear_line(tmp_path, make, message):
    result = runner.invoke(app, ["extract", str(make(tmp_path)), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_an_unwritable_out_gets_one_clear_line(tmp_path, clips):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = runner.invoke(app, ["extract", str(clips["real"]), str(blocker / "out")])
    assert result.exit_code == 2 and "cannot write to" in result.output


def test_rerun_skips_done_videos_and_redoes_partial_ones(tmp_path, clips):
    videos = tmp_path / "in"
    videos.mkdir()
    for name in ("real", "fake"):
        (videos / clips[name].name).write_bytes(clips[name].read_bytes())
    out = tmp_path / "out"
    cfg = ExtractConfig(frames=4, workers=1)
    assert extract(videos, out, cfg).count("ok") == 2
    # A half-done video: its row lost, one file torn. It must be redone; the other kept.
    manifest = out / ".deepfake" / "manifest.jsonl"
    manifest.write_text(manifest.read_text().splitlines()[0] + "\n")
    done = json.loads(manifest.read_text())["video"]
    partial = "real" if done == "fake" else "fake"
    (out / "in" / f"{partial}_2.jpg").write_bytes(b"torn")
    again = extract(videos, out, cfg)
    assert again.already_done == 1 and [r["video"] for r in again.rows] == [partial]
    assert cv2.imread(str(out / "in" / f"{partial}_2.jpg")) is not None
    assert len(read_manifest(out)) == 2


def test_changed_settings_are_refused_without_overwrite(tmp_path, clips):
    extract(clips["real"], tmp_path / "out", ExtractConfig(frames=4, workers=1))
    with pytest.raises(DeepfakeError, match="other settings"):
        extract(clips["real"], tmp_path / "out", ExtractConfig(frames=6, workers=1))
    assert extract(clips["real"], tmp_path / "out", ExtractConfig(frames=6, workers=1, overwrite=True)).count("ok") == 1


def test_a_killed_run_resumes_where_it_stopped(tmp_path, videos):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "deepfake_cli", "extract", str(videos), str(out), "--frames", "4", "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / ".deepfake" / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or len(manifest.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no clean-up at all: the worst case
    process.wait()
    before = read_manifest(out)  # a row torn by the kill is not read: its video is not done
    assert 3 <= len(before) < len(find_videos(videos))  # 15 more videos cannot finish within one 50 ms poll
    resumed = subprocess.run(command + ["--json"], capture_output=True, text=True)
    summary = json.loads(resumed.stdout)
    # Every row read back has its files (rows are written after them), so exactly those videos are kept
    # and exactly the others are done now, each once.
    assert summary["already_done"] == len(before)
    assert sorted(f"{r['folder']}/{r['video']}" for r in summary["videos"]) == \
        sorted(j.key for j in find_videos(videos) if j.key not in before)
    rows = read_manifest(out)
    assert len(rows) == len(find_videos(videos))
    for row in rows.values():
        for i in range(row["frames"]):
            assert cv2.imread(str(out / row["folder"] / f"{row['video']}_{i}.jpg")) is not None


def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path, videos):
    many = tmp_path / "many" / "original"  # enough work that the run is still going at Ctrl-C
    many.mkdir(parents=True)
    for copy in range(100):
        for video in (videos / "original").iterdir():
            (many / f"{copy}_{video.name}").symlink_to(video)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "deepfake_cli", "extract", str(many.parent), str(out), "--frames", "4",
               "--workers", "2"]
    # A shell starts its background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored: run
    # this suite as `make test &` and extract would never see the Ctrl-C. Ctrl-C at a terminal is the default.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest = out / ".deepfake" / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or not manifest.read_text()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert 0 < len(read_manifest(out)) < 600  # finished videos kept


def test_shards_split_the_videos_deterministically_and_completely(videos):
    """The same parts in every process: a job array's machines each compute their own share."""
    jobs = find_videos(videos)
    parts = [[j.key for j in jobs if in_shard(j, (k, 3))] for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(j.key for j in jobs)
    assert all(parts)
    code = ("import json, sys; from pathlib import Path; from deepfake_cli.extract import find_videos, in_shard; "
            "jobs = find_videos(Path(sys.argv[1])); "
            "print(json.dumps([[j.key for j in jobs if in_shard(j, (k, 3))] for k in (1, 2, 3)]))")
    for hash_seed in ("1", "2"):  # Python's str hash differs between these two processes; the parts must not
        other = subprocess.run([sys.executable, "-c", code, str(videos)], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert json.loads(other.stdout) == parts


def test_parallel_workers_write_the_same_files_as_one(tmp_path, clips):
    videos = tmp_path / "in"
    videos.mkdir()
    for name in ("real", "fake", "two_people", "no_face"):
        (videos / clips[name].name).write_bytes(clips[name].read_bytes())
    one = extract(videos, tmp_path / "one", ExtractConfig(frames=4, workers=1))
    two = extract(videos, tmp_path / "two", ExtractConfig(frames=4, workers=2))
    assert sorted((r["video"], r["status"], r["frames"]) for r in one.rows) == \
        sorted((r["video"], r["status"], r["frames"]) for r in two.rows)
    assert one.count("ok") == 3 and one.count("skipped") == 1

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.suffix in (".jpg", ".npy")}

    # 4 crops and vectors for each of 3 videos, and each one's landmark sidecar
    assert files(tmp_path / "one") == files(tmp_path / "two") and len(files(tmp_path / "one")) == 3 * 4 * 2 + 3


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"], ["predict", "--help"]])
def test_help_and_version_do_not_import_torch_or_mediapipe(args):
    """In a fresh interpreter: the test process itself has long imported both."""
    code = ("import sys\nfrom deepfake_cli.cli import main\nsys.argv = ['deepfake', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mediapipe', 'cv2'))\n"
            "assert not heavy, heavy[:5]")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]
    assert ("deepfake-cli" if args == ["--version"] else "Usage") in result.stdout


def test_one_face_moving_across_the_frame_stays_one_person(tmp_path):
    """Sampled frames can be seconds apart: a face that moved far between them is still the same person."""
    from make_dataset import make_clip

    videos = tmp_path / "in"
    for identity in range(4):
        make_clip(videos / f"clip{identity}.mp4", identity=identity, size=(640, 360), seconds=6)
    summary = extract(videos, tmp_path / "out", ExtractConfig(frames=16, workers=1))
    assert [r["status"] for r in summary.rows] == ["ok"] * 4, [r["reason"] for r in summary.rows]


def test_shards_from_the_command_line_together_make_the_whole(tmp_path, clips):
    videos = tmp_path / "in"
    videos.mkdir()
    for name in ("real", "fake", "two_people", "no_face"):
        shutil.copy(clips[name], videos / clips[name].name)
    for k in (1, 2):
        result = runner.invoke(app, ["extract", str(videos), str(tmp_path / "out"), "--shard", f"{k}/2", "--frames", "4",
                                     "--workers", "1", "--json"])
        assert result.exit_code == 0, result.output
    parts = [[json.loads(line)["video"] for line in (tmp_path / "out" / ".deepfake" / f"manifest-{k}-of-2.jsonl").open()]
             for k in (1, 2)]
    assert sorted(parts[0] + parts[1]) == sorted(p.stem for p in videos.iterdir()) and all(parts)
    result = runner.invoke(app, ["extract", str(videos), str(tmp_path / "out"), "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard must be K/N" in result.output


@pytest.mark.parametrize("degrees", [90, 270])
def test_a_phone_clip_stored_sideways_gives_upright_crops(tmp_path, clips, degrees):
    videos = tmp_path / "in"
    videos.mkdir()
    shutil.copy(clips["real"], videos / "upright.mp4")
    store_turned(clips["real"], videos / "turned.mp4", degrees, lossless=True)
    summary = extract(videos, tmp_path / "out", ExtractConfig(frames=4, workers=1))
    rows = {r["video"]: r for r in summary.rows}
    assert rows["turned"]["status"] == "ok" and rows["turned"]["rotation"] == degrees
    assert (rows["turned"]["width"], rows["turned"]["height"]) == (rows["upright"]["width"], rows["upright"]["height"])
    for i in range(4):
        want = cv2.imread(str(tmp_path / "out" / "in" / f"upright_{i}.jpg")).astype(int)
        got = cv2.imread(str(tmp_path / "out" / "in" / f"turned_{i}.jpg")).astype(int)
        assert np.abs(got - want).mean() < 4, i  # the same face, upright
        assert np.abs(np.rot90(got, degrees // 90) - want).mean() > 4 * np.abs(got - want).mean()


def with_blank_frames(source, path, blank):
    """`source` with the frames in `blank` replaced by an empty grey picture."""
    with Video(source) as video:
        frames = [frame for _, frame in video.read(list(range(video.info.frame_count)))]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    for i, frame in enumerate(frames):
        writer.write(np.full_like(frame, 128) if i in blank else frame)
    writer.release()
    return path


def test_a_segment_without_the_face_borrows_the_nearest_frame_with_it(tmp_path, clips):
    videos = tmp_path / "in"
    videos.mkdir()
    with_blank_frames(clips["real"], videos / "gap.mp4", set(range(13, 25)))  # 50 frames: segment 2 of 4 is empty
    with_blank_frames(clips["real"], videos / "mostly.mp4", set(range(8, 50)))  # a face on frames 0-7 only
    with_blank_frames(clips["real"], videos / "little.mp4", set(range(3, 50)))  # 3 frames with a face, 4 needed
    rows = {r["video"]: r for r in extract(videos, tmp_path / "out", ExtractConfig(frames=4, workers=1)).rows}
    gap, mostly = rows["gap"], rows["mostly"]
    assert gap["status"] == "ok" and gap["borrowed"] == 1
    assert gap["frame_indices"] == sorted(set(gap["frame_indices"])) and not set(gap["frame_indices"]) & set(range(13, 25))
    assert mostly["status"] == "ok" and mostly["borrowed"] == 3 and len(set(mostly["frame_indices"])) == 4
    assert max(mostly["frame_indices"]) < 8 and mostly["frame_indices"] == sorted(mostly["frame_indices"])
    assert rows["little"]["status"] == "skipped" and "too few other frames" in rows["little"]["reason"]


def test_a_wide_1080p_shot_with_a_small_face_is_extracted(tmp_path):
    from make_dataset import make_dataset

    make_dataset(tmp_path / "in", identities=1, seed=2, size=(1920, 1080), seconds=0.6, methods=(), face_px=125)
    (row,) = extract(tmp_path / "in", tmp_path / "out", ExtractConfig(frames=4, workers=1)).rows
    assert row["status"] == "ok" and (row["width"], row["height"]) == (1920, 1080), row
    crop = cv2.imread(str(tmp_path / "out" / "original" / "000_0.jpg"))
    with FaceAnalyzer() as analyzer:
        assert analyzer.faces(crop)  # the crop is of the face
