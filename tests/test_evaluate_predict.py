import csv
import json
import os
import pickle
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from conftest import FRAMES, SEQ_LEN
from deepfake_cli.calibration import ece_if_calibrated
from deepfake_cli.checkpoint import load_detector
from deepfake_cli.cli import app
from deepfake_cli.crop import REFERENCE_CROP
from deepfake_cli.data import SequenceDataset, scan
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.evaluate import evaluate
from deepfake_cli.inputs import peek_inputs
from deepfake_cli.metrics import classification_metrics
from deepfake_cli.predict import Predictor, auto_windows, evidence_names
from reference_notebook import DeepfakeDataset, DeepfakeDetector as ReferenceDetector

runner = CliRunner()


def test_end_to_end_evaluate_with_json_and_plots(trained_run, extracted, tmp_path):
    result = runner.invoke(app, ["evaluate", str(extracted), "--model", str(trained_run / "best.pt"),
                                 "--out", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "classification report" in result.output and "per method" in result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["split"] == "val"  # the run's own validation split by default
    val = json.loads((trained_run / "split.json").read_text())["val"]
    assert sorted(s["video"] for s in metrics["scores"]) == sorted(val)
    for key in ("accuracy", "f1", "auc", "ap", "eer", "confusion", "report"):
        assert key in metrics["at_threshold"] and key in metrics["at_0.5"]
    scores = metrics["scores"]
    folders = np.array([s["video"].split("/")[0] for s in scores])
    labels, probs = np.array([s["label"] for s in scores]), np.array([s["p_fake"] for s in scores])
    assert len(set(labels)) == 2 and [r["method"] for r in metrics["per_method"]] == sorted(set(folders))
    at = metrics["at_threshold"]
    assert at["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert at["accuracy"] == pytest.approx(np.mean((probs >= at["threshold"]) == labels))
    far_frr = [(np.mean(probs[labels == 0] >= t), np.mean(probs[labels == 1] < t)) for t in sorted(set(probs))]
    far, frr = min(far_frr, key=lambda e: abs(e[0] - e[1]))  # brute force over every threshold
    assert at["eer"] == pytest.approx((far + frr) / 2, abs=1 / min(np.bincount(labels)))
    for row in metrics["per_method"]:
        mine = folders == row["method"]
        assert row["n"] == mine.sum() and row["accuracy"] == pytest.approx(np.mean((probs[mine] >= at["threshold"]) == labels[mine]))
        if row["label"] == "fake":
            both = mine | (labels == 0)
            assert row["auc_vs_real"] == pytest.approx(roc_auc_score(labels[both], probs[both]))
    # The best checkpoint on its validation split gives back the best row of metrics.csv (the model's own,
    # uncalibrated scores at 0.5; the calibration was fitted on those same videos).
    best = next(r for r in csv.DictReader(open(trained_run / "metrics.csv")) if r["best"] == "1")
    raw = classification_metrics(labels, np.array([s["raw_p_fake"] for s in scores]), 0.5)
    for key in ("accuracy", "f1", "macro_f1", "auc"):
        assert raw[key] == pytest.approx(float(best[key]), abs=1e-5), key
    assert at["threshold"] == 0.5 and metrics["calibration"]["fitted"]["videos"] == len(scores)
    assert metrics["calibration"]["brier"] == pytest.approx(np.mean((probs - labels) ** 2))
    assert metrics["calibration"]["ece_if_calibrated"] == pytest.approx(ece_if_calibrated(probs))  # from its own scores
    for name in ("roc", "pr", "confusion", "scores", "reliability"):
        png = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert png[:4] == b"\x89PNG" and len(png) > 5000


def test_evaluate_split_all_scores_every_video(trained_run, extracted):
    result = evaluate(extracted, trained_run / "best.pt", split="all", workers=0)
    assert result["n"] == len(scan(extracted, SEQ_LEN))


def test_end_to_end_predict_json_and_evidence(trained_run, clips, tmp_path):
    result = runner.invoke(app, ["predict", str(clips["real"]), str(clips["fake"]), "--model", str(trained_run / "best.pt"),
                                 "--windows", "3", "--json", "--evidence", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [v["status"] for v in verdicts] == ["ok", "ok"]
    for v in verdicts:
        assert v["windows"] == 3 and v["p_fake"] == pytest.approx(np.mean(v["people"][0]["window_scores"]), abs=1e-4)
        assert v["label"] == ("uncertain" if v["reasons"] else "fake" if v["p_fake"] >= v["threshold"] else "real")
        assert v["faces"] >= 3 * SEQ_LEN - 1 and v["suspicious_time"] is not None
        frame = v["suspicious_time"] * 25  # a frame the model scored, of the 40 in these 25 fps clips
        assert frame == pytest.approx(round(frame), abs=1e-6) and 0 <= round(frame) < 40
        png = open(v["evidence"], "rb").read()
        assert png[:4] == b"\x89PNG" and len(png) > 5000
    assert verdicts[0]["p_fake"] != verdicts[1]["p_fake"]  # two clips, two scores: the model sees the faces


def test_predict_with_one_window_gives_a_clip_the_score_evaluate_gives_its_extract(trained_run, clips, tmp_path):
    """The contract between training and predict: a window is the sequence extract writes and training reads."""
    layout = {"original": clips["real"], "FaceSwap": clips["fake"]}
    for folder, clip in layout.items():
        (tmp_path / "clips" / folder).mkdir(parents=True)
        shutil.copy(clip, tmp_path / "clips" / folder / clip.name)
    extracted = runner.invoke(app, ["extract", str(tmp_path / "clips"), str(tmp_path / "out"), "--frames", str(FRAMES),
                                    "--workers", "1"])
    assert extracted.exit_code == 0, extracted.output
    result = evaluate(tmp_path / "out", trained_run / "best.pt", split="all", workers=0)
    scores = {s["video"]: s["p_fake"] for s in result["scores"]}
    clips_given = [tmp_path / "clips" / folder / clip.name for folder, clip in layout.items()]
    predicted = runner.invoke(app, ["predict", *map(str, clips_given), "--model", str(trained_run / "best.pt"),
                                    "--windows", "1", "--json"])
    assert predicted.exit_code == 0, predicted.output
    verdicts = [json.loads(line) for line in predicted.stdout.splitlines()]
    expected = [scores[f"{folder}/{clip.stem}"] for folder, clip in layout.items()]
    assert [v["p_fake"] for v in verdicts] == pytest.approx(expected, abs=1e-5)


def test_evidence_sheets_of_clips_with_one_name_never_overwrite_each_other(trained_run, clips, tmp_path):
    ff = tmp_path / "manipulated_sequences"
    for method, clip in (("Deepfakes", clips["fake"]), ("FaceSwap", clips["real"])):
        (ff / method).mkdir(parents=True)
        shutil.copy(clip, ff / method / "000_003.mp4")
    result = runner.invoke(app, ["predict", str(ff), "--model", str(trained_run / "best.pt"), "--json",
                                 "--evidence", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    sheets = [Path(json.loads(line)["evidence"]) for line in result.stdout.splitlines()]
    assert [s.name for s in sheets] == ["Deepfakes__000_003.png", "FaceSwap__000_003.png"]
    assert sheets[0].read_bytes() != sheets[1].read_bytes()  # each clip's own sheet
    names = evidence_names([Path("a/x.mp4"), Path("a/x.avi"), Path("b/y.mp4")])
    assert list(names.values()) == ["x.mp4.png", "x.avi.png", "y.png"]


def test_predict_scores_each_person_and_keeps_the_highest(trained_run, clips):
    with Predictor(trained_run / "best.pt", windows=2) as predictor:
        verdict = predictor.predict(clips["two_people"])
    assert verdict.status == "ok" and len(verdict.people) == 2
    assert verdict.p_fake == max(p["p_fake"] for p in verdict.people)


def test_predict_aggregate_max_is_the_highest_window_score(trained_run, clips):
    with Predictor(trained_run / "best.pt", windows=3) as predictor:
        mean = predictor.predict(clips["fake"])
    with Predictor(trained_run / "best.pt", windows=3, aggregate="max") as predictor:
        top = predictor.predict(clips["fake"])
    scores = top.people[0]["window_scores"]
    assert scores == mean.people[0]["window_scores"] and len(scores) == 3 and max(scores) > min(scores)
    assert top.p_fake == pytest.approx(max(scores), abs=1e-4)
    assert mean.p_fake == pytest.approx(np.mean(scores), abs=1e-4)


def test_predict_bad_inputs_get_a_status_and_the_others_carry_on(trained_run, clips):
    paths = [clips[k] for k in ("real", "no_face", "text", "fake", "empty", "short")]
    paths.insert(1, clips["real"].parent / "deleted.mp4")
    result = runner.invoke(app, ["predict", *map(str, paths), "--model", str(trained_run / "best.pt"), "--json"])
    assert result.exit_code == 1  # some input could not be scored
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [v["path"] for v in verdicts] == list(map(str, paths))  # input order, though scoring overlaps decoding
    assert [v["status"] for v in verdicts] == ["ok", "missing", "no_face", "unreadable", "ok", "unreadable", "too_short"]
    assert verdicts[1]["reason"] == "no such file; check the path"
    assert re.fullmatch(r"too short: 1 frame, \d+ needed", verdicts[-1]["reason"])


def test_predicting_many_clips_gives_each_the_score_it_gets_alone(trained_run, clips):
    with Predictor(trained_run / "best.pt", windows=2) as predictor:
        together = list(predictor.predict_all([clips["real"], clips["fake"]]))
        alone = [predictor.predict(clips["real"]), predictor.predict(clips["fake"])]
    assert [v.p_fake for v in together] == pytest.approx([v.p_fake for v in alone], abs=1e-6)


def test_predict_without_a_model_uses_the_newest_run_or_says_how_to_train(trained_run, clips, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", str(clips["real"])])
    assert result.exit_code == 2 and "deepfake train" in result.output
    for name, age in (("a-newer", 10), ("b-older", 1000)):  # newest by time written, not by name
        (tmp_path / "runs" / name).mkdir(parents=True)
        shutil.copy(trained_run / "best.pt", tmp_path / "runs" / name / "best.pt")
        os.utime(tmp_path / "runs" / name / "best.pt", (time.time() - age, time.time() - age))
    result = runner.invoke(app, ["predict", str(clips["real"]), "--json"])
    assert result.exit_code == 0 and "using the newest model: runs/a-newer/best.pt" in result.output


def reference_state_dict(path):
    """A state_dict saved exactly as the notebook did, from its own class."""
    torch.manual_seed(0)
    model = ReferenceDetector()
    for module in model.modules():  # give BatchNorm non-trivial statistics, as training would
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), path)
    return model.eval()


def test_a_reference_state_dict_reproduces_the_reference_model(extracted, tmp_path):
    reference = reference_state_dict(tmp_path / "mediapipe_model.pth")
    detector = load_detector(tmp_path / "mediapipe_model.pth")
    assert detector.reference and detector.threshold == 0.5 and detector.inputs.crop == REFERENCE_CROP
    assert detector.inputs.image_size == 256 and detector.inputs.seq_len == 16
    # The notebook's own reader and model, against our loader and transform, on the same files.
    notebook = DeepfakeDataset(str(extracted), sequence_length=4, split="val", val_split=0.3)
    images, vectors, _ = notebook[0]
    with torch.no_grad():
        expected = reference(images[None], vectors[None])
    folder, video, label = notebook.videos[0]
    from deepfake_cli.data import Sample
    from deepfake_cli.inputs import InputSpec

    inputs = InputSpec(**{**detector.inputs.__dict__, "seq_len": 4})
    frames, raw, _ = SequenceDataset(extracted, [Sample(folder.split("/")[-1], video, label)], inputs)[0]
    with torch.no_grad():
        ours = torch.sigmoid(detector.model(inputs.images(frames[None]), inputs.landmark_features(raw[None])))
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), atol=1e-4)


def test_a_reference_state_dict_runs_in_evaluate_and_predict(extracted, clips, tmp_path):
    reference_state_dict(tmp_path / "mediapipe_model.pth")
    result = runner.invoke(app, ["predict", str(clips["real"]), "--model", str(tmp_path / "mediapipe_model.pth"),
                                 "--windows", "1", "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["threshold"] == 0.5
    assert verdict["p_fake"] == verdict["raw_p_fake"]  # no calibration in a reference state_dict: its own numbers
    assert load_detector(tmp_path / "mediapipe_model.pth").calibration is None
    with pytest.raises(DeepfakeError, match="no video with 16 frames"):
        evaluate(extracted, tmp_path / "mediapipe_model.pth", workers=0)  # our tiny data has 8 frames per video


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
    ("truncated", "not a readable PyTorch checkpoint"),
    ("other", "a state_dict of another model"),
    ("code", "not a readable PyTorch checkpoint"),
])
def test_bad_checkpoints_get_a_message_naming_the_file(tmp_path, trained_run, clips, content, message):
    path = tmp_path / "model.pt"
    if content == "truncated":
        path.write_bytes((trained_run / "best.pt").read_bytes()[:5000])
    elif content == "other":
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    elif content == "code":
        torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module: loading it would run code
    else:
        path.write_bytes(content)
    result = runner.invoke(app, ["predict", str(clips["real"]), "--model", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.output.replace("\n", "") and message in result.output.replace("\n", "")
    assert "Traceback" not in result.output


class RunsCode:
    """A pickled object whose unpickling runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_whose_pickle_names_os_system_is_refused_and_never_run(tmp_path, trained_run):
    marker, hostile = tmp_path / "ran", tmp_path / "hostile.pt"
    with zipfile.ZipFile(trained_run / "best.pt") as ours, zipfile.ZipFile(hostile, "w") as theirs:
        for item in ours.infolist():  # a real checkpoint's archive, its data.pkl swapped
            payload = ours.read(item)
            if item.filename.endswith("/data.pkl"):
                payload = pickle.dumps({"inputs": RunsCode(marker), "format": "deepfake-cli/1"}, protocol=2)
            theirs.writestr(item, payload)
    assert peek_inputs(hostile) is None  # predict's early look at the settings
    with pytest.raises(DeepfakeError, match="not a readable PyTorch checkpoint"):
        load_detector(hostile)  # the loader itself
    assert not marker.exists()


def test_a_lite0_checkpoint_through_evaluate_and_predict(lite0_run, extracted, clips):
    result = evaluate(extracted, lite0_run / "best.pt", workers=0)
    assert result["split"] == "val" and result["n"] > 0 and result["at_threshold"]["auc"] is not None
    with Predictor(lite0_run / "best.pt", windows=2) as predictor:
        verdicts = list(predictor.predict_all([clips["real"], clips["fake"]]))
        assert "efficientnet_lite0" in predictor.model_info.description
    assert [v.status for v in verdicts] == ["ok", "ok"]
    for v in verdicts:  # the mean of two windows, each another draw of the clip's frames
        scores = v.people[0]["window_scores"]
        assert len(scores) == 2 and scores[0] != scores[1] and v.p_fake == pytest.approx(np.mean(scores), abs=1e-4)


def test_predict_takes_folders_and_globs_and_picks_its_windows_from_the_length(trained_run, clips, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "day1").mkdir(parents=True)
    shutil.copy(clips["real"], inbox / "day1" / "a.mp4")
    shutil.copy(clips["fake"], inbox / "b.mp4")
    (inbox / "notes.txt").write_text("not a video, not picked up from a folder")
    shutil.copy(clips["two_people"], tmp_path / "c.mp4")
    result = runner.invoke(app, ["predict", str(inbox), str(tmp_path / "*.mp4"), str(inbox / "b.mp4"),
                                 "--model", str(trained_run / "best.pt"), "--json"])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [inbox / "b.mp4", inbox / "day1" / "a.mp4", tmp_path / "c.mp4"]  # each once, in order given
    assert [v["path"] for v in verdicts] == list(map(str, expected))
    assert [v["windows"] for v in verdicts] == [auto_windows(1.6)] * 3 == [2] * 3  # 1.6 s clips: the minimum, 2
    assert (auto_windows(12), auto_windows(600)) == (2, 8) and auto_windows(20) == 4  # one per 5 s, 2 to 8
    result = runner.invoke(app, ["predict", str(tmp_path / "*.avi"), "--model", str(trained_run / "best.pt")])
    assert result.exit_code == 2 and "the pattern matches no file" in result.output
