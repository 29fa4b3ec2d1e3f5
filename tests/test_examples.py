"""The example generator: the sets bench_quality.py builds (other people, one fake each, graded)."""

import cv2
import numpy as np
import pytest

from deepfake_cli.faces import FaceAnalyzer
from make_dataset import ALL_METHODS, make_dataset


def first_frame(path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read()
    capture.release()
    assert ok, path
    return frame.astype(np.int16)


def test_one_fake_per_person_other_people_every_method(tmp_path):
    paths = make_dataset(tmp_path, identities=4, first_identity=60, seed=2, seconds=0.2, methods=ALL_METHODS,
                         one_fake=True)
    names = sorted(str(p.relative_to(tmp_path)) for p in paths)
    assert names == ["FaceSwap/060_061.mp4", "LowResSwap/062_063.mp4", "MouthEdit/063.mp4", "SelfBlend/061.mp4",
                     "original/060.mp4", "original/061.mp4", "original/062.mp4", "original/063.mp4"]
    real, fake = first_frame(tmp_path / "original/063.mp4"), first_frame(tmp_path / "MouthEdit/063.mp4")
    changed = np.abs(real - fake).max(axis=2) > 12
    assert changed.sum() > 50 and changed.mean() < 0.05  # only a small region (the mouth) differs


def test_variety_grades_each_person_the_same_in_real_and_fake(tmp_path):
    plain = make_dataset(tmp_path / "plain", identities=2, seconds=0.2, methods=["SelfBlend"])
    graded = make_dataset(tmp_path / "graded", identities=2, seconds=0.2, methods=["SelfBlend"], variety=True)
    again = make_dataset(tmp_path / "again", identities=2, seconds=0.2, methods=["SelfBlend"], variety=True)
    for p, g, a in zip(plain, graded, again):
        assert np.abs(first_frame(p) - first_frame(g)).mean() > 3  # the grade shows
        assert np.array_equal(first_frame(g), first_frame(a))  # reproducible by seed
    with pytest.raises(ValueError, match="starting even"):
        make_dataset(tmp_path / "odd", identities=2, first_identity=61)


def test_face_size_makes_wide_shots_with_small_faces(tmp_path):
    (path,) = make_dataset(tmp_path, identities=1, seed=5, size=(1920, 1080), seconds=0.2, methods=(), face_px=130)
    with FaceAnalyzer() as analyzer:
        (face,) = analyzer.faces(first_frame(path).astype(np.uint8))
    assert 110 < face.size < 150
