"""Several models, one verdict: what `--model` given more than once scores with.

Each member's raw P(fake) is calibrated as its own checkpoint says and turned into a logit measured
from the member's own decision point (0 where that model alone would call the clip fake); the
ensemble's P(fake) is the sigmoid of the members' mean, so 0.5 is its decision. With calibrated
members (every model `train` writes) that is the mean of their calibrated logits; a reference
state_dict, which has no calibration, takes part through its own threshold. One model alone is
that model, its numbers unchanged to the last digit.

The members must read the same input: faces cut the same way, as many frames, sampled alike. Image
size and normalisation may differ, as each member resizes and normalises the crops itself.

numpy only: `predict` combines the members without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepfake_cli.calibration import Calibration, logit, sigmoid
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.inputs import InputSpec


@dataclass(frozen=True)
class Member:
    """One model of the ensemble (or the only one), as the scorer loaded it."""

    path: str
    description: str
    threshold: float  # on the calibrated scale where `calibration` is set
    calibration: Calibration | None = None

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        return self.calibration.apply(raw) if self.calibration is not None else raw

    def margin(self, raw: np.ndarray) -> np.ndarray:
        """The calibrated logit less the threshold's: how far, and on which side, of this model's decision."""
        z = self.calibration.logit(raw) if self.calibration is not None else logit(raw)
        return z - logit(np.float64(self.threshold))


@dataclass(frozen=True)
class Scores:
    """The ensemble's scores of N windows or videos."""

    p_fake: np.ndarray  # (N,) on the scale `ModelInfo.threshold` reads
    raw_p_fake: np.ndarray  # (N,) before any calibration: sigmoid of the members' mean raw logit
    members: np.ndarray  # (M, N) each member's P(fake), calibrated as its checkpoint says
    # (N,) and (M, N): the same order as p_fake and members without their float64 saturation at 0 and 1,
    # for AUC, AP and EER (distance from the decision, in logits)
    ranking: np.ndarray
    member_ranking: np.ndarray


@dataclass(frozen=True)
class ModelInfo:
    """What the parent needs to know of the loaded models."""

    members: tuple[Member, ...]
    inputs: InputSpec

    @property
    def single(self) -> bool:
        return len(self.members) == 1

    @property
    def description(self) -> str:
        if self.single:
            return self.members[0].description
        return f"ensemble of {len(self.members)}: " + "; ".join(m.description for m in self.members)

    @property
    def threshold(self) -> float:
        return self.members[0].threshold if self.single else 0.5

    @property
    def calibrated_scale(self) -> bool:
        """Whether P(fake) is a calibrated probability (every member's is)."""
        return all(m.calibration is not None for m in self.members)

    def combine(self, raw: np.ndarray) -> Scores:
        """(M, N) raw P(fake) of each member -> the ensemble's Scores."""
        raw = np.asarray(raw, np.float64).reshape(len(self.members), -1)
        members = np.stack([m.calibrated(r) for m, r in zip(self.members, raw)])
        margins = np.stack([m.margin(r) for m, r in zip(self.members, raw)])
        if self.single:
            return Scores(members[0], raw[0], members, margins[0], margins)
        return Scores(sigmoid(margins.mean(0)), sigmoid(logit(raw).mean(0)), members, margins.mean(0), margins)


def mean_heatmaps(explained: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """An ensemble's heatmaps (`heatmap.explain_window`'s, one dict per member that gives them): each kind
    averaged over the members that have it; none without such members (.onnx ones have no gradients)."""
    kinds = {kind for e in explained for kind in e}
    return {kind: np.mean([e[kind] for e in explained if kind in e], axis=0) for kind in sorted(kinds)}


def check_inputs(models: list[tuple[object, InputSpec]]) -> None:
    """One clear line when the members of an ensemble would need different faces, frames or sampling."""
    (first, ours), rest = models[0], models[1:]
    for path, theirs in rest:
        for what, a, b in (("crops cut", ours.crop.describe(), theirs.crop.describe()),
                           ("sequences of", f"{ours.seq_len} frames", f"{theirs.seq_len} frames"),
                           ("sampling", ours.sampling.describe(ours.seq_len), theirs.sampling.describe(theirs.seq_len))):
            if a != b:
                raise DeepfakeError(f"--model {path}: trained on {what} {b}, but {first} on {a}; the models of one "
                                    "ensemble must read the same faces (train them on the same extract)")
