"""Several models, one verdict: `--model` given more than once to `evaluate` and `predict`."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from deepfake_cli.calibration import Calibration, logit, sigmoid
from deepfake_cli.cli import app
from deepfake_cli.crop import CropSpec
from deepfake_cli.ensemble import Member, ModelInfo, check_inputs
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.evaluate import evaluate
from deepfake_cli.inputs import InputSpec, peek_inputs
from deepfake_cli.predict import DISAGREE, uncertain_reasons

runner = CliRunner()
RAW = np.array([0.02, 0.3, 0.55, 0.8, 0.97])


def test_one_model_is_that_model_to_the_last_digit():
    for member in (Member("a", "a", 0.5, Calibration(1.7, -0.4, 40)), Member("ref", "ref", 0.83)):
        scores = ModelInfo((member,), InputSpec()).combine(RAW[None])
        assert np.array_equal(scores.p_fake, member.calibrated(RAW)) and np.array_equal(scores.raw_p_fake, RAW)


def test_members_are_averaged_as_calibrated_logits_from_their_own_decision_points():
    calibrated = Member("a", "a", 0.5, Calibration(2.0, 1.0, 40))
    reference = Member("ref", "ref", 0.8)  # no calibration: it takes part through its own threshold
    info = ModelInfo((calibrated, reference), InputSpec())
    other = np.array([0.1, 0.8, 0.8, 0.9, 0.99])
    scores = info.combine(np.stack([RAW, other]))
    expected = sigmoid((logit(calibrated.calibrated(RAW)) + logit(other) - logit(0.8)) / 2)
    np.testing.assert_allclose(scores.p_fake, expected, rtol=1e-12)
    assert info.threshold == 0.5 and not info.calibrated_scale
    # Each member at its own decision point: the ensemble at its own, 0.5.
    at_points = info.combine(np.array([[calibrated.calibration.raw_threshold()], [0.8]])).p_fake
    assert at_points[0] == pytest.approx(0.5)
    np.testing.assert_array_equal(scores.members[1], other)


def test_models_that_disagree_make_the_verdict_uncertain():
    clear = dict(segments_with_face=16, segments=16, eye_span_px=60.0, face_score=0.95, window_scores=[0.6, 0.62],
                 calibrated=True)
    apart = [0.5 - DISAGREE - 0.05, 0.5 + DISAGREE + 0.05]
    assert uncertain_reasons(0.9, 0.5, **clear, model_p_fake=[0.85, 0.95], model_thresholds=[0.5, 0.5]) == []
    (reason,) = uncertain_reasons(0.9, 0.5, **clear, model_p_fake=apart, model_thresholds=[0.5, 0.5])
    assert reason.startswith("models disagree")
    # Sides are each model's own: 0.3 is above a reference model's threshold of 0.01.
    assert uncertain_reasons(0.9, 0.5, **clear, model_p_fake=[0.3, 0.95], model_thresholds=[0.01, 0.5]) == []


def test_members_that_read_different_faces_are_refused_in_one_line():
    ours = InputSpec()
    check_inputs([("a.pt", ours), ("b.pt", InputSpec(image_size=128))])  # each member resizes for itself
    for theirs, says in ((InputSpec(seq_len=8), "sequences of 8 frames"),
                         (InputSpec(crop=CropSpec(margin=0.5)), "crops cut")):
        with pytest.raises(DeepfakeError, match=says) as e:
            check_inputs([("a.pt", ours), ("b.pt", theirs)])
        assert "\n" not in str(e.value) and "--model b.pt" in str(e.value)


@pytest.fixture(scope="module")
def pair(trained_run, lite0_run):
    return [trained_run / "best.pt", lite0_run / "best.pt"]


def test_evaluate_scores_with_the_ensemble_and_reports_each_member(extracted, pair):
    alone = [evaluate(extracted, path, split="all", workers=0) for path in pair]
    both = evaluate(extracted, pair, split="all", workers=0)
    info = ModelInfo(tuple(Member(str(p), "", r["at_threshold"]["threshold"]) for p, r in zip(pair, alone)), InputSpec())
    # The members' own calibrated scores, each from its own threshold, averaged as logits.
    margins = [logit(np.array([s["p_fake"] for s in r["scores"]])) - logit(r["at_threshold"]["threshold"]) for r in alone]
    np.testing.assert_allclose([s["p_fake"] for s in both["scores"]], sigmoid(np.mean(margins, 0)), atol=1e-9)
    assert [m["model"] for m in both["members"]] == [str(p) for p in pair]
    assert [m["auc"] for m in both["members"]] == pytest.approx([r["at_threshold"]["auc"] for r in alone])
    assert both["at_threshold"]["threshold"] == info.threshold == 0.5
    assert len(both["scores"][0]["model_p_fake"]) == 2


def test_evaluate_cli_shows_the_members_beside_the_ensemble(extracted, pair, tmp_path):
    result = runner.invoke(app, ["evaluate", str(extracted), "-m", str(pair[0]), "-m", str(pair[1]),
                                 "--split", "all", "--workers", "0", "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "each alone" in result.output and "ensemble" in result.output
    assert len(json.loads((tmp_path / "m.json").read_text())["members"]) == 2


def test_members_validated_on_different_videos_need_an_explicit_split(extracted, pair, copy_of):
    other = copy_of(pair[1].parent)
    split = json.loads((other / "split.json").read_text())
    split["val"], split["train"] = split["train"][:3], split["val"] + split["train"][3:]
    (other / "split.json").write_text(json.dumps(split))
    result = runner.invoke(app, ["evaluate", str(extracted), "-m", str(pair[0]), "-m", str(other / "best.pt"),
                                 "--workers", "0"])
    assert result.exit_code != 0 and "--split all" in result.output
    assert "Traceback" not in result.output


def test_predict_with_two_models_gives_one_verdict_from_both(pair, clips):
    def run(*models):
        args = ["predict", str(clips["fake"]), "--json", "--windows", "2"]
        result = runner.invoke(app, args + [a for m in models for a in ("--model", str(m))])
        assert result.exit_code == 0, result.output
        return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{"))), result.output

    alone = [run(path)[0] for path in pair]
    both, shown = run(*pair)
    assert [m["model"] for m in both["models"]] == [str(p) for p in pair]
    # The same windows, scored by each member as it scores them alone, in one model process.
    assert [m["p_fake"] for m in both["models"]] == pytest.approx([v["p_fake"] for v in alone], abs=1e-4)
    margins = [logit(np.array(v["people"][0]["window_scores"])) - logit(v["threshold"]) for v in alone]
    assert both["people"][0]["window_scores"] == pytest.approx(list(sigmoid(np.mean(margins, 0))), abs=1e-3)
    assert both["threshold"] == 0.5 and both["label"] in ("real", "fake", "uncertain")
    assert "models" in shown and "ensemble of 2" in shown


def test_an_ensemble_of_different_sequence_lengths_fails_before_scoring(extracted, pair, clips, tmp_path):
    from deepfake_cli.train import train

    run = tmp_path / "seq3"
    train(tiny_config(extracted, run, seq_len=3))
    assert peek_inputs(run / "best.pt").seq_len == 3
    for command in (["predict", str(clips["real"])], ["evaluate", str(extracted), "--split", "all"]):
        result = runner.invoke(app, command + ["-m", str(pair[0]), "-m", str(run / "best.pt")])
        assert result.exit_code == 2, result.output
        assert "sequences of 3 frames" in result.output and "Traceback" not in result.output
