"""The run: `train(cfg)` sets it up (`setup.py`) and `fit` repeats train_epoch, validate, save."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from deepfake_cli import calibration, data as D, distributed
from deepfake_cli.calibration import Calibration
from deepfake_cli.checkpoint import save_checkpoint
from deepfake_cli.inference import predict_batches
from deepfake_cli.inputs import InputSpec
from deepfake_cli.metrics import auc_per_method, bce, best_threshold, classification_metrics
from deepfake_cli.model import DeepfakeDetector, model_args
from deepfake_cli.train.config import TrainConfig
from deepfake_cli.train.history import is_better, write_metrics
from deepfake_cli.train.order import epoch_batches
from deepfake_cli.train.setup import Run, seed_everything, setup
from deepfake_cli.train.step import train_epoch


@dataclass
class Callbacks:
    on_start: Callable[[dict], None] = lambda info: None
    on_batch: Callable[[int, int, int, float], None] = lambda epoch, done, total, loss: None
    on_epoch: Callable[[dict], None] = lambda row: None


@dataclass
class TrainResult:
    run: Path
    best: dict  # metrics of the best epoch
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def train(cfg: TrainConfig, callbacks: Callbacks | None = None, resume: bool = False) -> TrainResult:
    """Train, validating after every epoch; keep best.pt (best by `cfg.run.select`) and last.pt in the run folder."""
    callbacks = callbacks or Callbacks()
    ranks = distributed.Ranks.from_env()
    device = distributed.start(ranks, cfg.hardware.device)
    try:
        run = setup(cfg, resume, ranks.rank, ranks.world, device)
        if run.main:
            callbacks.on_start(start_info(run, ranks.world))
        return fit(run, callbacks)
    finally:
        if ranks.world > 1:
            distributed.stop()


def fit(run: Run, callbacks: Callbacks) -> TrainResult:
    """Epochs from `run.start_epoch` on, each validated and saved by rank 0, until --epochs or --patience."""
    cfg = run.cfg
    stopped_early, batches = False, None
    for epoch in range(run.start_epoch, cfg.optim.epochs + 1):
        # Every random draw of an epoch derives from (seed, epoch): --resume replays it exactly.
        seed_everything(cfg.run.seed * 1000 + epoch)
        if batches is None:  # the first epoch of this process
            batches = epoch_batches(run.loader, run.sampler, run.shuffle, cfg.run.seed, epoch)
        started = time.perf_counter()
        train_loss = train_epoch(run.step, batches, epoch, callbacks.on_batch, warmup=cfg.optim.warmup and epoch == 1)
        seconds = time.perf_counter() - started
        # The workers build the next epoch's first batches while this one is validated and saved.
        batches = epoch_batches(run.loader, run.sampler, run.shuffle, cfg.run.seed, epoch + 1) if epoch < cfg.optim.epochs else None
        verdict = [0.0, 0.0]  # (stop?, validation loss): rank 0 decides, every rank follows
        if run.main:
            row, fitted = validate(run, epoch, train_loss, seconds)
            improved = is_better(row, run.best, cfg.run.select)
            run.history.append(row)
            if improved:
                run.best, run.bad_epochs = row, 0
            else:
                run.bad_epochs += 1
            save(run, epoch, row, fitted, improved)
            callbacks.on_epoch({**row, "best": improved})
            verdict = [float(bool(cfg.run.patience and run.bad_epochs >= cfg.run.patience)), row["val_loss"]]
        stop, val_loss = distributed.broadcast(verdict, run.device)
        if run.scheduler is not None:
            run.scheduler.step(val_loss) if cfg.optim.schedule == "plateau" else run.scheduler.step()
        if stop:
            stopped_early = True
            break
    return TrainResult(run=run.folder, best=run.best, history=run.history, stopped_early=stopped_early)


def validate(run: Run, epoch: int, train_loss: float, seconds: float) -> tuple[dict, Calibration | None]:
    """The epoch's metrics row on the validation videos, and the calibration fitted on them (0.5 is
    then the decision: calibration.py)."""
    cfg = run.cfg
    probs, labels = predict_batches(run.kept, run.val_loader, run.inputs, run.device, run.amp,
                                    from_features=cfg.model.freeze_backbone)
    threshold = best_threshold(labels, probs)
    m = classification_metrics(labels, probs, 0.5)
    scored = unseen_scores(run.kept, run.unseen_loader, run.unseen_ds, probs[labels == 0], run.inputs, run.device, run.amp)
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": bce(labels, probs), "accuracy": m["accuracy"],
           "f1": m["f1"], "macro_f1": m["macro_f1"], "auc": m["auc"], "ap": m["ap"], "eer": m["eer"],
           "threshold": threshold, **scored, "lr": run.step.optimizer.param_groups[0]["lr"],
           "clips_per_s": len(run.sampler) / seconds, "seconds": seconds, "select": cfg.run.select}
    return row, calibration.fit(labels, probs)


def save(run: Run, epoch: int, row: dict, fitted: Calibration | None, improved: bool) -> None:
    """best.pt when the epoch is the best so far; always last.pt (everything --resume needs), metrics.csv."""
    ckpt = dict(model=run.kept, model_args=model_args(run.model), inputs=run.inputs, calibration=fitted,
                threshold=0.5 if fitted is not None else row["threshold"],
                meta={**run.meta, "epoch": epoch, "metrics": row, "raw_threshold": row["threshold"]})
    if run.masked is not None:  # 1,281 weights: reports show where it takes a face for blended
        ckpt["mask_head"] = run.masked.head.state_dict()
    if improved:
        save_checkpoint(run.folder / "best.pt", **ckpt)
    average, scheduler = run.average, run.scheduler
    trained = {"trained_model": run.model.state_dict(), "average_steps": average.steps} if average is not None else {}
    save_checkpoint(run.folder / "last.pt", **ckpt, **trained, epoch=epoch, best=run.best, history=run.history,
                    bad_epochs=run.bad_epochs, optimizer=run.step.optimizer.state_dict(),
                    scheduler=scheduler.state_dict() if scheduler is not None else None)
    write_metrics(run.folder, run.history, run.best)


def start_info(run: Run, world: int) -> dict:
    """What the start-up line shows: the checkpoint's meta, and where and how the run trains."""
    inputs, split = run.inputs, run.split
    return {**run.meta, "crop": inputs.crop.describe(), "sampling": inputs.sampling.describe(inputs.seq_len),
            "device": str(run.device), "amp": str(run.amp).removeprefix("torch.") if run.amp else "off",
            "world_size": world, "start_epoch": run.start_epoch, "epochs": run.cfg.optim.epochs,
            "methods": dict(D.method_counts(split["train"] + split["val"]))}


def unseen_scores(model: DeepfakeDetector, loader: DataLoader | None, dataset: D.SequenceDataset | None,
                  real_probs: np.ndarray, inputs: InputSpec, device: torch.device, amp: torch.dtype | None) -> dict:
    """With --self-blend, the validation people's fakes (manipulations never trained on) against their real
    videos: AUC over all of them and per method. Empty without such fakes."""
    if loader is None:
        return {"unseen_auc": None}
    from sklearn.metrics import roc_auc_score

    probs, _ = predict_batches(model, loader, inputs, device, amp)
    labels = np.r_[np.zeros(len(real_probs)), np.ones(len(probs))]
    both = np.r_[real_probs, probs]
    folders = [""] * len(real_probs) + [s.folder for s in dataset.samples]
    return {"unseen_auc": float(roc_auc_score(labels, both)), "unseen_methods": auc_per_method(folders, labels, both)}
