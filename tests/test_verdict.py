"""`predict`'s verdict: real, fake, or uncertain with the reason, on clips built to be each."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from deepfake_cli.cli import app
from deepfake_cli.predict import DISAGREE, MIN_EYE_SPAN, MIN_FACE_SCORE, UNCERTAIN_BAND, uncertain_reasons
from make_dataset import make_clip, make_no_face_clip

runner = CliRunner()
CLEAR = dict(segments_with_face=16, segments=16, eye_span_px=60.0, face_score=0.95, window_scores=[0.9, 0.85], calibrated=True)


def test_clear_evidence_gives_no_reason():
    assert uncertain_reasons(0.9, 0.5, **CLEAR) == []
    assert uncertain_reasons(0.55, 0.5, **{**CLEAR, "calibrated": False}) == []  # a raw score's band means nothing


@pytest.mark.parametrize("change, p_fake, says", [
    (dict(segments_with_face=7), 0.9, "a face in only 7 of 16 stretches"),
    (dict(eye_span_px=MIN_EYE_SPAN - 1), 0.9, "a small face"),
    (dict(face_score=MIN_FACE_SCORE - 0.1), 0.9, "low confidence"),
    (dict(window_scores=[0.5 - DISAGREE - 0.01, 0.5 + DISAGREE + 0.3]), 0.9, "windows disagree"),
    ({}, 0.5 + UNCERTAIN_BAND / 2, "within 0.1 of the threshold"),
])
def test_each_rule_names_its_reason(change, p_fake, says):
    (reason,) = uncertain_reasons(p_fake, 0.5, **{**CLEAR, **change})
    assert says in reason


def _clip_with_a_face_on_the_first_frames(tmp_path, frames_with_face: int):
    face, empty = make_clip(tmp_path / "face.mp4", identity=1, seed=3), make_no_face_clip(tmp_path / "empty.mp4",
                                                                                          seconds=2.0)
    out = tmp_path / "mostly-empty.mp4"
    readers = [cv2.VideoCapture(str(p)) for p in (face, empty)]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for i in range(50):
        ok_face, with_face = readers[0].read()
        ok_empty, without = readers[1].read()
        assert ok_face and ok_empty
        writer.write(with_face if i < frames_with_face else without)
    writer.release()
    return out


def test_a_clip_with_a_face_on_few_frames_is_uncertain_and_says_why(trained_run, clips, tmp_path):
    thin = _clip_with_a_face_on_the_first_frames(tmp_path, frames_with_face=12)  # 2 of 8 segments, 12 frames to borrow
    result = runner.invoke(app, ["predict", str(thin), str(clips["real"]), "--model", str(trained_run / "best.pt"),
                                 "--json", "--windows", "2"])
    assert result.exit_code == 0, result.output
    thin_verdict, full = (json.loads(line) for line in result.stdout.splitlines() if line.startswith("{"))
    assert thin_verdict["label"] == "uncertain"
    assert thin_verdict["checks"]["segments_with_face"] <= 3 and thin_verdict["checks"]["segments"] == 8
    assert any("a face in only" in r for r in thin_verdict["reasons"])
    assert "uncertain" in result.output and "a face in only" in result.output  # the table's note, not only --json
    # The same person on every frame: no thin-evidence reason, and a label that is the threshold's where no rule fires.
    assert full["checks"]["segments_with_face"] == full["checks"]["segments"]
    assert not any("a face in only" in r for r in full["reasons"])
    assert full["checks"]["eye_span_px"] >= MIN_EYE_SPAN and full["checks"]["face_score"] >= MIN_FACE_SCORE
    expected = "fake" if full["p_fake"] >= full["threshold"] else "real"
    assert full["label"] == ("uncertain" if full["reasons"] else expected)


def _shrunk(clip, out, scale: float, canvas=(640, 480)):
    """`clip`'s frames scaled by `scale` onto a grey canvas: the same face, far smaller."""
    reader = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 25, canvas)
    while True:
        ok, frame = reader.read()
        if not ok:
            break
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        page = np.full((canvas[1], canvas[0], 3), 128, np.uint8)
        page[:small.shape[0], :small.shape[1]] = small
        writer.write(page)
    writer.release()
    return out


def test_a_small_face_is_uncertain_and_says_why(trained_run, clips, tmp_path):
    small = _shrunk(clips["real"], tmp_path / "far.mp4", scale=0.3)
    result = runner.invoke(app, ["predict", str(small), "--model", str(trained_run / "best.pt"), "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert verdict["status"] == "ok", verdict
    assert verdict["checks"]["eye_span_px"] < MIN_EYE_SPAN
    assert verdict["label"] == "uncertain" and any("a small face" in r for r in verdict["reasons"])
