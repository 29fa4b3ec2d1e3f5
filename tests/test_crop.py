"""The crop travels with the data: extract records it, train puts it in the checkpoint, predict cuts the same."""

import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import FRAMES, SEQ_LEN, tiny_config
from deepfake_cli.cli import app
from deepfake_cli.crop import REFERENCE_CROP, CropSpec, crop_face
from deepfake_cli.data import data_crop
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.evaluate import evaluate
from deepfake_cli.extract import ExtractConfig, extract
from deepfake_cli.faces import FaceAnalyzer
from deepfake_cli.files import atomic_write_json
from deepfake_cli.inputs import SamplingSpec, peek_inputs
from deepfake_cli.layout import META_DIR
from deepfake_cli.predict import Predictor
from deepfake_cli.train import train
from reference import reference_extract_video, reference_face_mesh

PEOPLE = ("000", "001", "002", "003")  # SelfBlend fakes share their person's id: four groups to split


def some_videos(videos, root):
    """Real and self-blended videos of four people, linked from the generated set."""
    for folder in ("original", "SelfBlend"):
        (root / folder).mkdir(parents=True)
        for person in PEOPLE:
            (root / folder / f"{person}.mp4").symlink_to(videos / folder / f"{person}.mp4")
    return root


def jpg(path):
    return cv2.imread(str(path))


def as_written(crop):
    """A crop through the JPEG encoder both preprocessings use (OpenCV, quality 95)."""
    return cv2.imdecode(cv2.imencode(".jpg", crop)[1], cv2.IMREAD_COLOR)


def test_extract_margin_and_size_reach_predict(videos, extracted, tmp_path, caplog):
    out = tmp_path / "out"
    cut = CropSpec(margin=0.4, size=128)
    extract(some_videos(videos, tmp_path / "videos"), out, ExtractConfig(frames=FRAMES, crop=cut, workers=1))
    run = tmp_path / "run"
    train(tiny_config(out, run))
    assert peek_inputs(run / "best.pt").crop == cut

    assert peek_inputs(run / "best.pt").sampling == SamplingSpec("segments", FRAMES)

    with Predictor(run / "best.pt", windows=1) as predictor:
        clip = predictor.prepare(tmp_path / "videos" / "original" / "000.mp4")
    (_, _, crops), = clip.batches  # one window of one person
    assert len(crops) == SEQ_LEN and crops[0].crop.shape == (128, 128, 3)
    for i, crop in enumerate(crops):  # the same source frames, cut the same: the same JPEG
        assert np.array_equal(as_written(crop.crop), jpg(out / "original" / f"000_{i}.jpg"))

    evaluate(out, run / "best.pt", split="all", workers=0)
    assert "cut" not in caplog.text
    evaluate(extracted, run / "best.pt", split="all", workers=0)  # data cut with the default margin, 0.2
    assert "was cut square, margin 0.2 of the face size, 256 px, but the model was trained on crops cut square, " \
           "margin 0.4 of the face size, 128 px" in caplog.text


def test_reference_preprocessing_data_trains_and_predicts_with_its_own_crop(videos, tmp_path):
    data, mesh = tmp_path / "data", reference_face_mesh()
    for folder in ("original", "SelfBlend"):
        for person in PEOPLE:
            assert reference_extract_video(videos / folder / f"{person}.mp4", data / folder, mesh, frames=SEQ_LEN) == SEQ_LEN
    mesh.close()
    run = tmp_path / "run"
    train(tiny_config(data, run))
    crop = peek_inputs(run / "best.pt").crop
    assert crop == REFERENCE_CROP

    # The reference wrote the first SEQ_LEN of 60 evenly spaced candidate frames (faces everywhere here).
    capture = cv2.VideoCapture(str(videos / "original" / "000.mp4"))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    candidates = np.linspace(0, total - 1, 60, dtype=int)[:SEQ_LEN]
    frames = []
    for index in range(candidates[-1] + 1):
        frame = capture.read()[1]
        if index in candidates:
            frames.append(frame)
    with FaceAnalyzer(max_faces=1) as analyzer:
        for i, frame in enumerate(frames):
            written = jpg(data / "original" / f"000_{i}.jpg")
            face = analyzer.faces(frame)[0]
            assert np.array_equal(as_written(crop_face(frame, face, crop)), written)
            assert not np.array_equal(as_written(crop_face(frame, face, CropSpec(margin=20, relative=False, square=False))),
                                      written)  # the same box resized our way is another image

    # Predict samples a clip as the reference did, and so shows the model the very crops it was trained on.
    assert peek_inputs(run / "best.pt").sampling == SamplingSpec("reference")
    with Predictor(run / "best.pt", windows=1) as predictor:
        clip = predictor.prepare(videos / "original" / "000.mp4")
    (_, _, faces), = clip.batches
    assert [f.index for f in faces] == sorted(set(np.linspace(0, total - 1, 60, dtype=int)))[:SEQ_LEN]
    for i, face in enumerate(faces):
        assert np.array_equal(as_written(face.crop), jpg(data / "original" / f"000_{i}.jpg"))


def test_folders_cut_differently_are_refused(extracted, tmp_path):
    other = tmp_path / "other"  # another extract, cut with a wider margin
    shutil.copytree(extracted / "FaceSwap", other / "FaceSwap")
    atomic_write_json(other / META_DIR / "extract.json", ExtractConfig(crop=CropSpec(margin=0.4)).settings())
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "original").symlink_to(extracted / "original")  # a linked folder is looked up where it lives
    (mixed / "FaceSwap").symlink_to(other / "FaceSwap")
    with pytest.raises(DeepfakeError, match="cut differently .*FaceSwap: square, margin 0.4 .*original: square, margin 0.2"):
        data_crop(mixed, {"original", "FaceSwap"})
    assert data_crop(mixed, {"original"}) == (CropSpec(), "extract.json")
    (mixed / "Deepfakes").mkdir()  # no record: the reference preprocessing's
    with pytest.raises(DeepfakeError, match="Deepfakes: no extract.json"):
        data_crop(mixed, {"original", "Deepfakes"})


def test_crop_option_only_for_data_without_a_record(extracted, tmp_path):
    (tmp_path / "plain" / "original").mkdir(parents=True)
    assert data_crop(tmp_path / "plain", {"original"}) == (REFERENCE_CROP, "no extract.json: the reference preprocessing's")
    given = CropSpec.parse("0.3:128")
    assert data_crop(tmp_path / "plain", {"original"}, given) == (CropSpec(margin=0.3, size=128), "--crop")
    assert CropSpec.parse("reference") == REFERENCE_CROP
    runner = CliRunner()
    options = ["--run-dir", str(tmp_path / "r"), "--frames", str(SEQ_LEN)]
    result = runner.invoke(app, ["train", str(extracted), *options, "--crop", "0.3:128"])
    assert result.exit_code == 2 and "was extracted with square, margin 0.2 of the face size, 256 px; leave --crop out" \
        in result.output
    result = runner.invoke(app, ["train", str(extracted), *options, "--crop", "wide"])
    assert result.exit_code == 2 and "--crop wide: expected `reference` or MARGIN:SIZE" in result.output
