"""--ema: the weight average that validation scores and the checkpoints hold."""

from __future__ import annotations

import copy

import torch
from torch import nn

from deepfake_cli.model import DeepfakeDetector


class WeightAverage:
    """An exponential moving average of the weights (BatchNorm statistics included), updated after every step.

    At lr 5e-4 the weights at one epoch's end rank unseen people partly by chance: on the
    generated sets a run's epochs scatter by 0.05-0.1 AUC. The average (mostly the last ten or so
    steps at 0.9) is steadier, and it is what validation scores and the checkpoints hold.
    Only what training changes is averaged (a frozen backbone is not: its steps are short), as
    `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn` would, weight for weight.
    """

    def __init__(self, model: DeepfakeDetector, decay: float):
        self.module, self.decay, self.steps = copy.deepcopy(model), decay, 0
        self.averaged, self.live = [], []
        for mine, theirs in zip(self.module.modules(), model.modules()):
            if any(p.requires_grad for p in theirs.parameters(recurse=False)):
                for a, b in zip(_own_tensors(mine), _own_tensors(theirs)):
                    if b.is_floating_point():
                        self.averaged.append(a.detach())
                        self.live.append(b.detach())

    @torch.no_grad()
    def update(self) -> None:
        if self.steps == 0:
            torch._foreach_copy_(self.averaged, self.live)
        else:
            torch._foreach_lerp_(self.averaged, self.live, 1 - self.decay)
        self.steps += 1

    @classmethod
    def resumed(cls, model: DeepfakeDetector, decay: float, state: dict | None) -> "WeightAverage | None":
        """None when `decay` is 0; on --resume, the run's own average as last.pt saved it."""
        if not decay:
            return None
        average = cls(model, decay)
        if state is not None and "average_steps" in state:
            average.module.load_state_dict(state["model"])
            average.steps = state["average_steps"]
        return average


def _own_tensors(module: nn.Module) -> list[torch.Tensor]:
    """A module's own parameters and buffers (not its children's)."""
    return [*module.parameters(recurse=False), *module.buffers(recurse=False)]
