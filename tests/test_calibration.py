"""Calibrated P(fake): Platt scaling recovers a known sigmoid, checkpoints decide at 0.5, predict says so."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from deepfake_cli.calibration import (CONSISTENCY_DRAWS, MIN_SLOPE, Calibration, ece_if_calibrated,
                                      expected_calibration_error, fit, logit, sigmoid)
from deepfake_cli.checkpoint import load_detector, read_checkpoint
from deepfake_cli.cli import app

runner = CliRunner()


def test_platt_scaling_recovers_a_known_sigmoid():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 40000)  # the model's logits
    labels = (rng.random(z.size) < sigmoid(0.5 * z - 0.3)).astype(float)  # the truth: P(fake | z) = sigmoid(0.5 z - 0.3)
    fitted = fit(labels, sigmoid(z))
    # Both classes weigh the same, so the offset also carries log(real / fake), the balance it undoes.
    balance = np.log((1 - labels).sum() / labels.sum())
    assert fitted.a == pytest.approx(0.5, abs=0.02) and fitted.b == pytest.approx(-0.3 + balance, abs=0.03)
    assert fitted.videos == z.size
    balanced = np.r_[np.flatnonzero(labels == 1)[:15000], np.flatnonzero(labels == 0)[:15000]]
    raw, calibrated = sigmoid(z[balanced]), fitted.apply(sigmoid(z[balanced]))
    assert expected_calibration_error(labels[balanced], calibrated) < 0.02 < expected_calibration_error(labels[balanced], raw)


def test_ece_by_chance_alone_is_the_ece_of_labels_drawn_from_p_fake_itself():
    probs = np.random.default_rng(1).random(79)
    draws = np.random.default_rng(0).random((CONSISTENCY_DRAWS, 79)) < probs  # the draws it makes: a calibrated truth
    by_chance = ece_if_calibrated(probs)
    assert by_chance == pytest.approx(np.quantile([expected_calibration_error(d, probs) for d in draws], 0.9))
    assert 0.1 < by_chance < 0.2  # 80 videos: a perfect calibration reads above the 0.1 one might hope for
    assert ece_if_calibrated(np.random.default_rng(2).random(5000)) < 0.03  # the noise shrinks with the sample
    overconfident = np.full(200, 0.9)  # real videos all given P(fake) 0.9
    assert expected_calibration_error(np.zeros(200), overconfident) > 0.8 > ece_if_calibrated(overconfident)


def test_a_few_videos_are_pulled_towards_the_model_as_it_is_and_never_reversed():
    few = fit(np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.9]))
    assert 0 < few.a < 1.5 and abs(few.b) < 1  # regularised: four videos cannot send it anywhere
    labels, probs = np.array([1, 1, 0, 0, 1, 0]), np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])  # ranked backwards
    backwards = fit(labels, probs)
    assert backwards.a == MIN_SLOPE
    assert roc_auc_score(labels, backwards.apply(probs)) == roc_auc_score(labels, probs)  # the model's ranking kept
    assert fit(np.zeros(5), np.full(5, 0.3)) is None  # one class: nothing to fit


def test_the_raw_threshold_is_where_the_calibration_says_one_half():
    calibration = Calibration(a=1.7, b=-0.4)
    assert calibration.apply(np.array([calibration.raw_threshold()]))[0] == pytest.approx(0.5)


def test_a_trained_checkpoint_decides_at_one_half_on_its_calibrated_scores(trained_run, clips):
    payload = read_checkpoint(trained_run / "best.pt")
    detector = load_detector(trained_run / "best.pt")
    assert payload["threshold"] == 0.5 and detector.calibration is not None
    assert detector.calibration.videos == sum(payload["meta"]["split"]["val"].values())
    raw_threshold = payload["meta"]["raw_threshold"]  # validation's EER point on the model's own scores
    assert detector.calibrated(np.array([raw_threshold]))[0] != pytest.approx(raw_threshold)
    result = runner.invoke(app, ["predict", str(clips["real"]), str(clips["fake"]), "--model",
                                 str(trained_run / "best.pt"), "--json", "--windows", "1"])
    assert result.exit_code == 0, result.output
    verdicts = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    for v in verdicts:
        assert v["threshold"] == 0.5
        assert v["label"] == ("uncertain" if v["reasons"] else "fake" if v["p_fake"] >= 0.5 else "real")
        assert v["p_fake"] == pytest.approx(detector.calibrated(np.array([v["raw_p_fake"]]))[0], abs=1e-6)
    # --threshold moves the decision, not the score.
    low = runner.invoke(app, ["predict", str(clips["real"]), "--model", str(trained_run / "best.pt"), "--json",
                              "--windows", "1", "--threshold", "0.001"])
    v = json.loads(low.stdout.strip().splitlines()[-1])
    assert v["threshold"] == 0.001 and v["p_fake"] == pytest.approx(verdicts[0]["p_fake"])
    assert v["label"] == ("uncertain" if v["reasons"] else "fake") and not any("threshold" in r for r in v["reasons"])
    bad = runner.invoke(app, ["predict", str(clips["real"]), "--model", str(trained_run / "best.pt"), "--threshold", "2"])
    assert bad.exit_code == 2 and "--threshold must be between 0 and 1" in bad.output


def test_a_steep_calibration_saturates_p_fake_but_never_ties_the_ranking(trained_run, extracted, tmp_path):
    """sigmoid past a logit of 37 is exactly 1.0 in float64: AUC, AP and EER rank by the calibrated logit,
    so they are the model's own, however steep its calibration."""
    import torch

    payload = read_checkpoint(trained_run / "best.pt")
    a = 5000.0  # the tiny model's raw scores lie within 0.01 of each other: this spreads them over +-50
    payload["calibration"] = {"a": a, "b": -a * float(logit(np.float64(payload["meta"]["raw_threshold"]))), "videos": 10}
    torch.save(payload, tmp_path / "steep.pt")
    from deepfake_cli.evaluate import evaluate

    result = evaluate(extracted, tmp_path / "steep.pt", split="all", workers=0)
    scores = result["scores"]
    labels = np.array([s["label"] for s in scores])
    calibrated, raw = np.array([s["p_fake"] for s in scores]), np.array([s["raw_p_fake"] for s in scores])
    assert len(set(calibrated)) < len(set(raw))  # the saturation is there: several videos at exactly 0 or 1
    assert result["at_threshold"]["auc"] == pytest.approx(roc_auc_score(labels, raw), abs=1e-12)
    assert roc_auc_score(labels, [s["rank"] for s in scores]) == pytest.approx(result["at_threshold"]["auc"], abs=1e-12)
    assert roc_auc_score(labels, calibrated) != pytest.approx(result["at_threshold"]["auc"], abs=1e-6)


def test_the_fit_reaches_the_optimum_where_full_newton_steps_swing_between_two_wrong_answers():
    """A validation set that happened in training (24 videos, raw logits spread over +-7, the classes
    overlapping): undamped Newton swung between a = 59 and a = -30 and stopped at 59, a calibration
    that called every clip 0 or 1. The fit must land where a grid search finds the optimum."""
    real = [-6.8, -6.0, -5.6, -5.6, -4.4, -4.1, -3.5, -2.0, -1.1, -0.8, 2.9, 4.4]
    fake = [-4.5, -4.5, -4.3, -3.5, -3.3, -0.7, -0.7, 1.2, 3.1, 3.1, 6.2, 7.2]
    z = np.array(real + fake)
    labels = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    fitted = fit(labels, sigmoid(z))
    targets = np.where(labels == 1, 13 / 14, 1 / 14)

    def objective(a: float, b: float) -> float:
        q = sigmoid(a * z + b)
        return float(-np.sum(targets * np.log(q) + (1 - targets) * np.log(1 - q)) + ((a - 1) ** 2 + b ** 2) / 2)

    grid = min((objective(a, b), a, b) for a in np.linspace(0.01, 3, 300) for b in np.linspace(-3, 3, 121))
    assert objective(fitted.a, fitted.b) <= grid[0] + 1e-9
    assert fitted.a == pytest.approx(grid[1], abs=0.02) and fitted.b == pytest.approx(grid[2], abs=0.06)
