"""P(fake) that is a probability: Platt scaling of the model's logit, fitted on validation videos.

A detector's raw sigmoid is not a probability: its decision point (validation's EER threshold)
lands anywhere from 0.01 to 0.96 depending on the data and the run. Platt scaling maps the logit
z to sigmoid(a * z + b), two parameters fitted on the validation videos at the end of each
epoch that is kept, so that 0.5 is the decision and 0.9 means about nine in ten. Validation holds
a few dozen videos, so the fit is regularised: Platt's own smoothed targets ((n + 1) / (n + 2)
instead of 1, 1 / (n + 2) instead of 0) and a weak pull of (a, b) towards (1, 0), the model as it
is. Both classes weigh the same, whatever their counts: P(fake) is for a clip drawn from equal
shares of real and fake videos, as training's loss weighting already assumes.

numpy only: `predict` applies it without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PRIOR_WEIGHT = 1.0  # the pull towards (a, b) = (1, 0), in videos' worth of log-likelihood
MIN_SLOPE = 0.05  # a calibration never turns the model's ranking round (AUC is the model's, calibrated or not)
EPS = 1e-7
BINS = 10  # expected calibration error: equal-width bins of P(fake)
CONSISTENCY_DRAWS = 1000  # label draws behind `ece_if_calibrated`


@dataclass(frozen=True)
class Calibration:
    """sigmoid(a * logit + b): `a` stretches the model's scores, `b` moves its decision point."""

    a: float = 1.0
    b: float = 0.0
    videos: int = 0  # how many validation videos it was fitted on

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Raw P(fake) -> calibrated, elementwise."""
        return sigmoid(self.logit(probs))

    def logit(self, probs: np.ndarray) -> np.ndarray:
        """Raw P(fake) -> the calibrated logit. Rank by this, not by `apply`: a steep calibration takes
        every logit past 37 to exactly 1.0 in float64, and the ties would lower AUC."""
        return self.a * logit(probs) + self.b

    def raw_threshold(self) -> float:
        """The raw score that calibrates to 0.5."""
        return float(sigmoid(-self.b / self.a)) if self.a else 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Calibration | None:
        return cls(**d) if d else None


def describe_threshold(threshold: float, calibration: Calibration | None) -> str:
    return f"calibrated, threshold {threshold:.3f}" if calibration is not None else f"threshold {threshold:.3f}"


def logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(z, np.float64)))  # no overflow warning for large |z|


def fit(labels: np.ndarray, probs: np.ndarray, iterations: int = 50) -> Calibration | None:
    """Platt scaling of raw `probs` against 0/1 `labels` (Newton's method on the regularised, class-balanced
    log-likelihood). None without both classes: there is nothing to fit then."""
    labels = np.asarray(labels, np.float64)
    positives, negatives = labels.sum(), (1 - labels).sum()
    if not positives or not negatives:
        return None
    z = logit(probs)
    targets = np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    weights = np.where(labels == 1, len(labels) / (2 * positives), len(labels) / (2 * negatives))
    a, b = _newton(np.stack([z, np.ones_like(z)], 1), targets, weights, np.array([1.0, 0.0]), iterations)
    if a < MIN_SLOPE:  # validation ranks its videos backwards: keep the slope positive, fit the offset alone
        (b,) = _newton((MIN_SLOPE * z)[:, None], targets, weights, np.array([0.0]), iterations, offset=True)
        a = MIN_SLOPE
    return Calibration(float(a), float(b), int(len(labels)))


def _newton(x: np.ndarray, targets: np.ndarray, weights: np.ndarray, prior: np.ndarray, iterations: int,
            offset: bool = False) -> np.ndarray:
    """Parameters w minimising the weighted log-loss of sigmoid(x @ w) (+ w[-1] with `offset`, whose
    column x then lacks) plus PRIOR_WEIGHT / 2 * |w - prior|^2.

    Damped Newton: each step is halved until the objective falls. The full step can overshoot where
    the scores spread wide (raw logits of +-7 on a few dozen videos) and then swings between two
    wrong answers forever; the objective is convex, so a step that lowers it always exists."""
    base = x[:, 0] if offset else 0.0
    design = np.ones((len(x), 1)) if offset else x

    def objective(w: np.ndarray) -> float:
        z = base + design @ w
        # log(1 + e^z) - t z, written to stay finite for large |z|
        return float(weights @ (np.logaddexp(0, z) - targets * z) + PRIOR_WEIGHT / 2 * np.sum((w - prior) ** 2))

    params = prior.astype(np.float64).copy()
    current = objective(params)
    for _ in range(iterations):
        p = sigmoid(base + design @ params)
        gradient = design.T @ (weights * (p - targets)) + PRIOR_WEIGHT * (params - prior)
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + PRIOR_WEIGHT * np.eye(len(params))
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while objective(params - scale * step) > current and scale > 1e-6:
            scale /= 2
        params = params - scale * step
        current = objective(params)
        if np.abs(scale * step).max() < 1e-10:
            break
    return params


def _bin_index(probs: np.ndarray, bins: int) -> np.ndarray:
    """Each P(fake)'s equal-width bin, 1.0 in the last: one binning for ECE, its chance bound and the diagram."""
    return np.minimum((probs * bins).astype(int), bins - 1)


def _ece(labels: np.ndarray, probs: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The ECE of (..., N) labels against N P(fake) in the (N, bins) one-hot `members`: per bin, |fakes - sum of
    P(fake)| (the videos in it times |share of fakes - mean P(fake)|), summed and divided by N."""
    return np.abs(labels @ members - probs @ members).sum(-1) / len(probs)


def _members(probs: np.ndarray, bins: int) -> np.ndarray:
    """(N, bins) float64 one-hot of each P(fake)'s bin."""
    return (_bin_index(probs, bins)[:, None] == np.arange(bins)).astype(np.float64)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> float:
    """The mean |share of fakes - mean P(fake)| over equal-width bins, weighted by the videos in each."""
    labels, probs = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    return float(_ece(labels, probs, _members(probs, bins)))


def ece_if_calibrated(probs: np.ndarray, bins: int = BINS, share: float = 0.9, draws: int = CONSISTENCY_DRAWS,
                      seed: int = 0) -> float:
    """The expected calibration error that a perfectly calibrated model giving these same P(fake) stays under
    `share` of the time: each draw takes every video's label from its own P(fake) (Broecker and Smith's
    consistency resampling). ECE over a few dozen videos is never 0 by chance alone (a median of 0.1 on 80);
    an observed ECE above this bound is the model's miscalibration, not the sample's."""
    probs = np.asarray(probs, np.float64)
    if not len(probs):
        return 0.0
    members = _members(probs, bins)
    rng = np.random.default_rng(seed)
    step = max(1, 4_000_000 // len(probs))  # draws at a time: a few million labels in memory
    errors = [_ece((rng.random((min(step, draws - start), len(probs))) < probs).astype(np.float64), probs, members)
              for start in range(0, draws, step)]  # each (draws, N) block of labels -> each draw's ECE
    return float(np.quantile(np.concatenate(errors), share))


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per bin of P(fake): its range, videos, mean P(fake) and share of fakes (what the diagram plots)."""
    labels, probs = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    which = _bin_index(probs, bins)
    return [{"from": b / bins, "to": (b + 1) / bins, "videos": int((which == b).sum()),
             "mean_p_fake": float(probs[which == b].mean()), "share_fake": float(labels[which == b].mean())}
            for b in range(bins) if (which == b).any()]


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((np.asarray(probs, np.float64) - np.asarray(labels, np.float64)) ** 2))
