"""One training step, repeated over an epoch's batches: the loss (the video's, each frame's, the
blend mask's), AdamW with gradient clipping, mixed precision, and the weight average."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from deepfake_cli.device import autocast
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.inputs import InputSpec
from deepfake_cli.train.average import WeightAverage
from deepfake_cli.train.config import TrainConfig


@dataclass
class Step:
    """What a training step needs, fixed for the run."""

    net: nn.Module  # the detector, or with a mask loss its `MaskHead` (batches then carry masks)
    inputs: InputSpec
    cfg: TrainConfig
    device: torch.device
    amp: torch.dtype | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    run: Path  # named in the error when the loss stops being finite
    from_features: bool  # batches hold cached backbone features (--freeze-backbone), not frames
    frame_loss: float = 0.0
    mask_loss: float = 0.0
    average: WeightAverage | None = None


def train_epoch(step_: Step, batches: Iterable, epoch: int, on_batch: Callable[[int, int, int, float], None],
                warmup: bool = False) -> float:
    """One pass over `batches` (an epoch's, from `epoch_batches`, or any sized iterable of batches); the
    mean loss. `warmup`: the learning rate rises linearly to --lr over these batches."""
    net, inputs, cfg, device, amp = step_.net, step_.inputs, step_.cfg, step_.device, step_.amp
    optimizer, scaler, criterion, from_features = step_.optimizer, step_.scaler, step_.criterion, step_.from_features
    frame_loss, mask_loss, average, run = step_.frame_loss, step_.mask_loss, step_.average, step_.run
    net.train()
    total, steps = 0.0, len(batches)
    for step, (x, vectors, labels, *cells) in enumerate(batches, 1):
        x, vectors = x.to(device, non_blocking=True), vectors.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            out = net(x if from_features else inputs.images(x), inputs.landmark_features(vectors),
                      precomputed=from_features, parts=bool(frame_loss))
        out, mask_logits = out if mask_loss else (out, None)
        if frame_loss:  # every frame of a fake video is fake: 16 gradients per video reach the backbone at once
            logits, frame_logits = out  # (B,), (B, T)
            per_frame = criterion(frame_logits.float(), labels[:, None].expand_as(frame_logits))
            loss = criterion(logits.float(), labels) + frame_loss * per_frame
        else:
            loss = criterion(out.float(), labels)
        if mask_loss:  # each cell of each frame: how much of it was blended (all 0 in the real videos)
            target, logits_ = cells[0].to(device, non_blocking=True).flatten(), mask_logits.float().flatten()
            known = target >= 0  # -1: a dataset's own fake, where nobody knows what was manipulated
            if known.all():
                mask_term = nn.functional.binary_cross_entropy_with_logits(logits_, target)
            else:  # every batch keeps the head in the graph (DDP), the unknown cells weighing nothing
                each = nn.functional.binary_cross_entropy_with_logits(logits_, target.clamp_min(0), reduction="none")
                mask_term = (each * known).sum() / known.sum().clamp_min(1)
            loss = loss + mask_loss * mask_term
        if not torch.isfinite(loss):
            raise DeepfakeError(f"the loss became {loss.item()} at epoch {epoch}, step {step}; lower --lr or check the "
                                f"data. The last good checkpoint is kept in {run}/last.pt")
        optimizer.zero_grad(set_to_none=True)
        if warmup:  # epoch 1: the rate rises linearly to --lr, sparing the ImageNet features the first steps' large errors
            for group in optimizer.param_groups:
                group["lr"] = cfg.optim.lr * step / steps
        scaler.scale(loss).backward()
        if cfg.optim.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if average is not None:
            average.update()
        total += loss.item()
        on_batch(epoch, step, steps, total / step)
    return total / max(steps, 1)
