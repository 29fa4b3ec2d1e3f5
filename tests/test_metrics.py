import numpy as np
import pytest

from deepfake_cli.metrics import best_threshold, classification_metrics


def error_gap(labels, probs, t):
    called = probs >= t
    return abs(called[labels == 0].mean() - (~called[labels == 1]).mean())  # |false positive rate - false negative rate|


def test_the_threshold_is_where_the_error_rates_meet():
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1.01, 203)
    for _ in range(12):
        labels = rng.integers(0, 2, 30)
        probs = np.round(rng.random(30), 1)  # ties, and scores of exactly 0 and 1
        threshold = best_threshold(labels, probs)
        assert error_gap(labels, probs, threshold) == pytest.approx(min(error_gap(labels, probs, t) for t in grid))


def test_the_threshold_does_not_move_with_the_class_sizes():
    """Five copies of every fake (FaceForensics++ has five methods per real) leave the rates, and the threshold, as they were."""
    rng = np.random.default_rng(3)
    labels = np.array([0] * 12 + [1] * 12)
    probs = np.concatenate([rng.beta(2, 5, 12), rng.beta(5, 2, 12)])
    many = np.concatenate([probs[:12], *[probs[12:]] * 5])
    assert best_threshold(np.array([0] * 12 + [1] * 60), many) == best_threshold(labels, probs)


def test_the_threshold_does_not_call_everything_fake():
    """Two fakes per real and overlapping scores: the fake class's F1 alone is best at 0 (everything fake)."""
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.35, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    threshold = best_threshold(labels, probs)
    assert 0.2 < threshold <= 0.4 and classification_metrics(labels, probs, threshold)["macro_f1"] > 0.7
    assert best_threshold(np.zeros(4, int), np.random.default_rng(1).random(4)) == 0.5  # one class: undefined
