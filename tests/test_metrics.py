import numpy as np
import pytest

from deepfake_cli.metrics import best_threshold, classification_metrics


def test_the_threshold_has_the_best_macro_f1_of_any():
    from sklearn.metrics import f1_score

    def macro_f1(labels, probs, t):
        return f1_score(labels, probs >= t, average="macro", labels=[0, 1], zero_division=0)

    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1.01, 203)
    for _ in range(12):
        labels = rng.integers(0, 2, 30)
        probs = np.round(rng.random(30), 1)  # ties, and scores of exactly 0 and 1
        chosen = macro_f1(labels, probs, best_threshold(labels, probs))
        assert chosen == pytest.approx(max(macro_f1(labels, probs, t) for t in grid))
        assert chosen == pytest.approx(classification_metrics(labels, probs, best_threshold(labels, probs))["macro_f1"])


def test_the_threshold_does_not_call_everything_fake():
    """Two fakes per real and overlapping scores: the fake class's F1 alone is best at 0 (everything fake)."""
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.35, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    threshold = best_threshold(labels, probs)
    assert 0.2 < threshold <= 0.4 and classification_metrics(labels, probs, threshold)["macro_f1"] > 0.7
    assert best_threshold(np.zeros(4, int), np.random.default_rng(1).random(4)) == 0.5  # one class: undefined
