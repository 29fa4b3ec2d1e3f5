"""The datasets in the layouts they download in: small trees of real clips, extracted with real MediaPipe."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from deepfake_cli.cli import app
from deepfake_cli.data import identity_groups, identity_split, made_on, read_split_file, scan
from deepfake_cli.datasets import find_videos
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.extract import ExtractConfig, extract
from make_dataset import make_clip

runner = CliRunner()
FRAMES = 4


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory):
    """A real clip and a face-swapped one, copied wherever a layout wants a video."""
    root = tmp_path_factory.mktemp("layout-clips")
    return (make_clip(root / "real.mp4", identity=3, seed=5, seconds=0.8),
            make_clip(root / "fake.mp4", identity=3, seed=5, seconds=0.8, manipulation="FaceSwap"))


def lay_out(root, files: dict, two_clips):
    for relative, fake in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(two_clips[fake], root / relative)
    return root


FFPP = {
    "original_sequences/youtube/c40/videos/000.mp4": 0,
    "original_sequences/youtube/c40/videos/003.mp4": 0,
    "original_sequences/actors/c40/videos/01__kitchen_pan.mp4": 0,
    "original_sequences/actors/c40/videos/02__talking_against_wall.mp4": 0,
    "manipulated_sequences/Deepfakes/c40/videos/000_003.mp4": 1,
    "manipulated_sequences/Face2Face/c40/videos/003_000.mp4": 1,
    "manipulated_sequences/DeepFakeDetection/c40/videos/01_02__kitchen_pan__YVGY8LOK.mp4": 1,
    "manipulated_sequences/Deepfakes/masks/videos/000_003.mp4": 1,  # FF++'s masks: not videos to train on
}


def test_faceforensics_as_downloaded_is_read_without_renaming_anything(tmp_path, two_clips):
    root = lay_out(tmp_path / "ff", FFPP, two_clips)
    lay_out(root, {"original_sequences/youtube/c23/videos/000.mp4": 0}, two_clips)  # a second compression
    with pytest.raises(DeepfakeError, match="holds FaceForensics\\+\\+ at c23 and c40; pass --compression"):
        find_videos(root)
    with pytest.raises(DeepfakeError, match="--compression raw: .* at c23, c40 only"):
        find_videos(root, "raw")
    with pytest.raises(DeepfakeError, match="part of a FaceForensics\\+\\+ download: pass the folder that holds"):
        find_videos(root / "original_sequences")
    layout, jobs = find_videos(root, "c40")
    assert layout == "FaceForensics++"
    assert sorted((j.folder, j.video, j.label) for j in jobs) == sorted([
        ("original", "000", 0), ("original", "003", 0), ("original", "01__kitchen_pan", 0),
        ("original", "02__talking_against_wall", 0), ("Deepfakes", "000_003", 1), ("Face2Face", "003_000", 1),
        ("DeepFakeDetection", "01_02__kitchen_pan__YVGY8LOK", 1)])

    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(root), str(out), "--compression", "c40", "--frames", str(FRAMES),
                                 "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layout"] == "FaceForensics++"
    samples = scan(out, FRAMES)
    assert sorted((s.folder, s.label) for s in samples) == sorted((j.folder, j.label) for j in jobs)
    # The actors' names say who is in a video, as FF++'s numbers do: one group per pair of people.
    groups = sorted(sorted(s.key for s in g) for g in identity_groups(samples))
    assert groups == [["DeepFakeDetection/01_02__kitchen_pan__YVGY8LOK", "original/01__kitchen_pan",
                       "original/02__talking_against_wall"],
                      ["Deepfakes/000_003", "Face2Face/003_000", "original/000", "original/003"]]
    assert made_on("01_02__kitchen_pan__YVGY8LOK") == "01__kitchen_pan"
    # Pointed at the videos rather than at OUT, train says what to run first.
    result = runner.invoke(app, ["train", str(root), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "holds videos, not extracted faces: run `deepfake extract" in result.output


def test_celeb_df_as_downloaded_with_its_test_list(tmp_path, two_clips):
    root = lay_out(tmp_path / "Celeb-DF-v2", {
        "Celeb-real/id0_0000.mp4": 0, "Celeb-real/id1_0000.mp4": 0, "YouTube-real/00000.mp4": 0,
        "Celeb-synthesis/id0_id1_0000.mp4": 1, "Celeb-synthesis/id1_id0_0000.mp4": 1}, two_clips)
    (root / "List_of_testing_videos.txt").write_text("1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n")
    out = tmp_path / "out"
    assert extract(root, out, ExtractConfig(frames=FRAMES, workers=1)).layout == "Celeb-DF"
    samples = scan(out, FRAMES)  # no --real-folders: the layout says which folders are real
    assert {(s.folder, s.label) for s in samples} == {("Celeb-real", 0), ("YouTube-real", 0), ("Celeb-synthesis", 1)}
    test = read_split_file(root / "List_of_testing_videos.txt", samples)["test"]
    assert sorted(s.key for s in test) == ["Celeb-synthesis/id1_id0_0000", "YouTube-real/00000"]
    (root / "bad.txt").write_text("Celeb-real/id0_0000.mp4\n")
    with pytest.raises(DeepfakeError, match="expected lines '<1|0> <folder>/<video>.mp4'"):
        read_split_file(root / "bad.txt", samples)


def test_dfdc_as_downloaded_keeps_each_fake_with_the_real_video_it_was_made_from(tmp_path, two_clips):
    root = lay_out(tmp_path / "dfdc", {
        "dfdc_train_part_0/aaqaifqrwn.mp4": 0, "dfdc_train_part_0/bbtpqzwxyz.mp4": 1, "dfdc_train_part_0/cczlhjmnop.mp4": 0,
        "dfdc_train_part_1/ddqwertyui.mp4": 1, "dfdc_train_part_1/eeunlisted.mp4": 1}, two_clips)
    metadata = {"dfdc_train_part_0": {"aaqaifqrwn.mp4": {"label": "REAL", "split": "train", "original": None},
                                      "bbtpqzwxyz.mp4": {"label": "FAKE", "split": "train", "original": "aaqaifqrwn.mp4"},
                                      "cczlhjmnop.mp4": {"label": "REAL", "split": "train", "original": None}},
                "dfdc_train_part_1": {"ddqwertyui.mp4": {"label": "FAKE", "split": "train", "original": "cczlhjmnop.mp4"}}}
    for part, entries in metadata.items():
        (root / part / "metadata.json").write_text(json.dumps(entries))
    out = tmp_path / "out"
    assert extract(root, out, ExtractConfig(frames=FRAMES, workers=1)).layout == "DFDC"
    samples = scan(out, FRAMES)
    assert sorted((s.key, s.label) for s in samples) == [
        ("DFDC/bbtpqzwxyz", 1), ("DFDC/ddqwertyui", 1), ("DFDC_real/aaqaifqrwn", 0), ("DFDC_real/cczlhjmnop", 0)]
    groups = sorted(sorted(s.key for s in g) for g in identity_groups(samples))  # a video a metadata.json leaves out: none
    assert groups == [["DFDC/bbtpqzwxyz", "DFDC_real/aaqaifqrwn"], ["DFDC/ddqwertyui", "DFDC_real/cczlhjmnop"]]
    for seed in range(5):  # a fake never lands on the other side of the split from its real video
        split = identity_split(samples, 0.5, seed)
        sides = {s.key: part for part, chosen in split.items() for s in chosen}
        assert sides["DFDC/bbtpqzwxyz"] == sides["DFDC_real/aaqaifqrwn"]
    (root / "dfdc_train_part_1" / "metadata.json").write_text("[1, 2]")
    with pytest.raises(DeepfakeError, match="not DFDC metadata"):
        find_videos(root)


def test_the_plain_layout_is_read_as_before_and_compression_is_for_faceforensics_only(tmp_path, two_clips):
    root = lay_out(tmp_path / "plain", {"original/a.mp4": 0, "FaceSwap/a_b.mp4": 1, "loose.mp4": 0}, two_clips)
    layout, jobs = find_videos(root)
    assert layout == "label folders"
    assert sorted((j.folder, j.video) for j in jobs) == [("FaceSwap", "a_b"), ("original", "a"), ("plain", "loose")]
    assert all(j.label is None for j in jobs)  # the folder's name decides, when the data is read
    with pytest.raises(DeepfakeError, match="--compression picks FaceForensics"):
        find_videos(root, "c23")
