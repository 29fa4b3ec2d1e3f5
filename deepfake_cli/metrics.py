"""The metrics: one set for model selection inside `train` and for `evaluate`. numpy only, so that
`evaluate` with an exported .onnx model needs no torch (the models' forward passes are in
inference.py). scikit-learn (about 1 s to import) is imported where a metric needs it.
"""

from __future__ import annotations

import numpy as np


def best_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The decision threshold where the two error rates meet on these scores (0.5 when undefined).

    The equal-error-rate point: the share of real videos called fake equals the share of fakes
    called real, whatever the classes' sizes. On a validation set of a few dozen videos the
    threshold with the best macro F1 sits in whichever gap between two scores a video or two
    happens to favour; the crossing of the error rates depends on every score and moves less.
    Chosen on validation, on unseen generated people the 18 `best.pt` of 18 development runs
    scored 0.745 accuracy at it, 0.714 at the macro-F1 one (docs/experiments.md, "Threshold"). Between two
    scores the midpoint is taken; among equally good thresholds, the one nearest 0.5.
    """
    if labels.min() == labels.max():
        return 0.5
    order = np.argsort(-probs, kind="stable")
    scores, fake = probs[order], labels[order].astype(np.float64)
    # Cut k: the k highest scores called fake, k = 0..n; only cuts between distinct scores count.
    k = np.concatenate([[0], np.flatnonzero(np.diff(scores)) + 1, [len(scores)]])
    tp = np.concatenate([[0.0], np.cumsum(fake)])[k]
    fp = k - tp
    false_positive = fp / (len(fake) - fake.sum())
    false_negative = 1 - tp / fake.sum()
    gap = np.abs(false_positive - false_negative)
    above = np.concatenate([[scores[0] + 2e-6], scores])[k]  # the lowest score called fake (past the top if none)
    below = np.concatenate([scores, [0.0]])[k]  # the highest score called real (0 when none is)
    thresholds = (above + below) / 2
    best = np.flatnonzero(gap <= gap.min() + 1e-12)
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - 0.5))]])


def equal_error_rate(labels: np.ndarray, probs: np.ndarray) -> float | None:
    from sklearn import metrics as skm

    if labels.min() == labels.max():
        return None
    fpr, tpr, _ = skm.roc_curve(labels, probs)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float, ranking: np.ndarray | None = None) -> dict:
    """Accuracy, F1, precision, recall, confusion matrix at `threshold`; AUC, AP, EER over all thresholds,
    of `ranking` where given (scores in the order of `probs`, without its saturation), else of `probs`."""
    from sklearn import metrics as skm

    ranked = probs if ranking is None else ranking
    predicted = (probs >= threshold).astype(int)
    both = labels.min() != labels.max()
    return {
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),  # the fake class's
        # Averaged over both classes: "everything is fake" gets at most 0.5 here.
        "macro_f1": float(skm.f1_score(labels, predicted, labels=[0, 1], average="macro", zero_division=0)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "auc": float(skm.roc_auc_score(labels, ranked)) if both else None,
        "ap": float(skm.average_precision_score(labels, ranked)) if both else None,
        "eer": equal_error_rate(labels, ranked),
        "confusion": skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),  # rows: true real, fake
        "report": skm.classification_report(labels, predicted, labels=[0, 1], target_names=["real", "fake"],
                                            zero_division=0, output_dict=True),
        "n": int(len(labels)),
    }


def bce(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def auc_per_method(folders: list[str], labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Each fake folder's AUC against every real video, as FaceForensics++ tables report it (empty
    without real videos). Used by training's unseen-manipulation scores and by `evaluate`."""
    from sklearn.metrics import roc_auc_score

    folders, labels, probs = np.asarray(folders), np.asarray(labels), np.asarray(probs)
    real = labels == 0
    if not real.any():
        return {}
    return {str(folder): float(roc_auc_score(labels[mine], probs[mine]))
            for folder in sorted(set(folders[labels == 1])) for mine in [(folders == folder) | real]}
