"""`train`: the EfficientNet (B0 or Lite0) + BiLSTM detector, trained on `extract` output.

A run folder describes itself: config.json, split.json, metrics.csv, curves.png, best.pt
(the best validation epoch by `--select`) and last.pt (for --resume). Multi-GPU/multi-node: launch the same
command under `torchrun`; every rank trains, rank 0 validates and writes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from deepfake_cli import backbones, calibration, data as D, distributed
from deepfake_cli.checkpoint import read_checkpoint, save_checkpoint
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.faces import CropSpec
from deepfake_cli.files import atomic_write_bytes, atomic_write_json
from deepfake_cli.inputs import InputSpec, face_scale
from deepfake_cli.device import autocast, resolve_amp
from deepfake_cli.efficientnet import PARTS as BACKBONE_PARTS
from deepfake_cli.metrics import bce, best_threshold, classification_metrics, predict_batches
from deepfake_cli.model import FEATURE_DIM, DeepfakeDetector

log = logging.getLogger(__name__)

SCHEDULES = ("none", "cosine", "plateau")
AMP_MODES = ("auto", "bf16", "fp16", "off")
METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "accuracy", "f1", "macro_f1", "auc", "ap", "eer", "threshold",
                  "unseen_auc", "lr", "clips_per_s", "seconds", "select", "best")
# How best.pt is chosen: a validation row -> a key to maximise (ties broken by the second item).
# AUC by default: it needs no threshold and "everything is fake" scores 0.5 (the fake class's F1
# alone rewards it: 0.91 on FF++). Macro F1 at 0.5 did too, but once --pairs made the scores
# confident it kept early epochs whose calibration happened to suit 0.5: on unseen people its
# picks scored 0.832 AUC where AUC's scored 0.874 (docs/experiments.md, "Model selection").
SELECTS: dict[str, Callable[[dict], tuple[float, float]]] = {
    "macro-f1": lambda row: (row["macro_f1"], _or_worst(row["auc"])),
    "f1": lambda row: (row["f1"], _or_worst(row["auc"])),
    "auc": lambda row: (_or_worst(row["auc"]), -row["val_loss"]),
    "loss": lambda row: (-row["val_loss"], _or_worst(row["auc"])),
}


def _or_worst(value: float | None) -> float:
    return float("-inf") if value is None else value


# What a config.json written before --ema, --warmup, --pairs, --select, --mask-loss, --blend-fakes and
# --freeze-stages existed trained with.
OLD_DEFAULTS = {"ema": 0.0, "warmup": False, "pairs": False, "select": "macro-f1", "mask_loss": 0.0, "blend_fakes": False,
                "freeze_stages": 0}
# The stem and the first two stages of the backbone stay at their ImageNet weights: a third of a CPU training
# step's time at 256 px is their backward pass (docs/performance.md, "Frozen early stages").
FROZEN_STAGES = 3


@dataclass
class TrainConfig:
    data: Path
    run: Path | None = None  # default: runs/<timestamp>
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "none"
    clip_grad: float = 1.0  # max gradient norm; 0 turns clipping off
    seed: int = 42
    seq_len: int = 16
    image_size: int = 256
    val_fraction: float = 0.2
    split_file: Path | None = None
    real_folders: tuple[str, ...] | None = None  # None: as extract read the dataset's layout, else original/
    crop: str | None = None  # how data without OUT/.deepfake/extract.json was cut; None: the reference's
    balance: bool = True
    augment: bool = True
    backbone: str | None = None  # None: efficientnet_b0 with ImageNet weights, offline efficientnet_lite0
    pretrained: bool | None = None  # None: ImageNet weights (never a silent from-scratch backbone)
    backbone_weights: Path | None = None
    freeze_backbone: bool = False
    freeze_stages: int | None = None  # leading backbone stages kept (the stem is one); None: FROZEN_STAGES on pretrained weights
    workers: int = -1  # DataLoader processes; -1: one per core, at most 8
    cache: bool = False
    select: str | None = None  # which validation metric picks best.pt (SELECTS); None: auc, or loss with self_blend
    frame_loss: float = 2.0  # weight of the frame head's per-frame loss; 0: no frame head
    mask_loss: float | None = None  # weight of the training-only mask head's loss (self-blends); None: 1 with self_blend
    patience: int = 0  # epochs without a better selection metric before stopping; 0: never
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    skip_bad: bool = False
    self_blend: bool = False  # train on real videos and their self-blends (selfblend.py)
    blend_fakes: bool = False  # supervised: each real video's self-blend is one more training fake (MixedDataset)
    save_examples: int = 0  # with self_blend: a PNG of this many real / mask / blend rows
    ema: float = 0.9  # per-step decay of the weight average that is validated and saved; 0: the weights as trained
    warmup: bool = True  # the learning rate rises linearly to `lr` over epoch 1
    pairs: bool = True  # batch fakes beside the real videos they were made on, augmented alike

    def __post_init__(self) -> None:
        self.data, self.run = Path(self.data), Path(self.run) if self.run else None
        # Self-blended validation fakes are the training recipe's own: their AUC keeps rising while the
        # model narrows to them (0.90 -> 0.97 while unseen methods fell 0.77 -> 0.67). The loss weighs
        # every video's score where macro F1 at 0.5 moves in steps over 24 videos: over 38 runs its picks
        # scored 0.733 on unseen methods, macro F1's 0.724, AUC's 0.708 (docs/experiments.md, "Model selection").
        self.select = self.select or ("loss" if self.self_blend else "auc")
        self.blend_fakes = self.blend_fakes and not self.self_blend  # --self-blend trains on blends alone already
        self.mask_loss = (1.0 if self.blends else 0.0) if self.mask_loss is None else self.mask_loss
        self.split_file = Path(self.split_file) if self.split_file else None
        self.backbone_weights = Path(self.backbone_weights) if self.backbone_weights else None
        self.real_folders = tuple(self.real_folders) if self.real_folders is not None else None
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.seq_len >= 1, "--seq-len must be at least 1"),
            (self.image_size >= 32, "--image-size must be at least 32"),
            (0 < self.val_fraction < 1, "--val-fraction must be between 0 and 1"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}"),
            (self.patience >= 0, "--patience must be 0 (off) or more"),
            (self.freeze_stages is None or 0 <= self.freeze_stages <= BACKBONE_PARTS,
             f"--freeze-stages must be between 0 (train every stage) and {BACKBONE_PARTS}"),
            (self.select in SELECTS, f"--select must be one of {', '.join(SELECTS)}"),
            (self.frame_loss >= 0, "--frame-loss must be 0 (off) or more"),
            (self.mask_loss >= 0, "--mask-loss must be 0 (off) or more"),
            (self.blends or not self.mask_loss, "--mask-loss learns where self-blends were blended; add --self-blend "
             "or --blend-fakes"),
            (self.save_examples >= 0, "--save-examples must be 0 (none) or more"),
            (0 <= self.ema < 1, "--ema must be 0 (off) or a decay below 1, such as 0.9"),
            (self.self_blend or not self.save_examples, "--save-examples shows self-blended fakes; add --self-blend"),
            (not (self.blends and self.freeze_backbone), "self-blends are new fakes every epoch, which a frozen "
             "backbone's feature cache cannot hold; leave out --freeze-backbone"),
            (not self.self_blend or self.batch_size % 2 == 0, "--self-blend puts each real video and its blend in "
             "one batch: --batch-size must be even"),
        ]
        for ok, message in checks:
            if not ok:
                raise DeepfakeError(message)
        if self.backbone is not None:
            backbones.get(self.backbone)  # an unknown name is refused there, by the table
        self.given_crop  # a bad --crop is refused now

    @property
    def blends(self) -> bool:
        """Whether training makes self-blended fakes (alone, or beside the data's own)."""
        return self.self_blend or self.blend_fakes

    @property
    def given_crop(self) -> CropSpec | None:
        try:
            return CropSpec.parse(self.crop) if self.crop else None
        except ValueError as e:
            raise DeepfakeError(str(e)) from None

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise DeepfakeError(f"unknown training settings {sorted(unknown)} in config.json")
        return cls(**{**OLD_DEFAULTS, **d})  # a run from before those options resumes as it began


# What --resume may change: how long the run goes on, and where and how fast it runs. Anything else
# would make the second half another recipe than the first (and --resume promises the same run).
RESUMABLE = ("data", "epochs", "patience", "workers", "device")


def resume_config(run: Path, changes: dict | None = None, flags: dict[str, str] | None = None) -> TrainConfig:
    """The configuration `run` began with, with the `changes` --resume may make (RESUMABLE: a moved
    data folder, more epochs, patience, workers, device). Any other change is refused, by its
    command-line name in `flags`."""
    changes, flags = changes or {}, flags or {}
    config = run / "config.json"
    if not config.is_file():
        raise DeepfakeError(f"{run} holds no run to resume (no config.json); check --run-dir")
    refused = [flags.get(name, name) for name in changes if name not in RESUMABLE]
    if refused:
        raise DeepfakeError(f"--resume continues {run} as it began, so {', '.join(refused)} cannot change; leave "
                            f"{'it' if len(refused) == 1 else 'them'} out, or start a new run with another --run-dir")
    saved = json.loads(config.read_text())
    # The folder resumed is the one given, wherever the run was first written (a moved or copied run).
    return TrainConfig.from_dict(saved | {"run": str(run)} | {k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})


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


# ---- environment -----------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- data ------------------------------------------------------------------------------------


def prepare_split(cfg: TrainConfig) -> dict[str, list[D.Sample]]:
    samples = D.check_samples(cfg.data, D.scan(cfg.data, cfg.seq_len, cfg.real_folders), cfg.seq_len, cfg.skip_bad)
    split = D.read_split_file(cfg.split_file, samples) if cfg.split_file else {}
    if "train" not in split:  # no split file, or a test list alone (Celeb-DF's): the rest split by identity
        held_out = set(split.get("test", []))
        split |= D.identity_split([s for s in samples if s not in held_out], cfg.val_fraction, cfg.seed)
    if cfg.self_blend:  # fakes are never trained on; the validation people's are scored as unseen manipulations
        split["train"] = [s for s in split["train"] if s.label == 0]
        for part in ("train", "val"):
            if not any(s.label == 0 for s in split.get(part, [])):
                raise DeepfakeError(f"--self-blend trains on real videos, and the {part} split has none; put real "
                                    "videos in original/ (or name their folders with --real-folders)")
    for part in ("train", "val"):
        if not split.get(part):
            raise DeepfakeError(f"the {part} split is empty; add videos or change --val-fraction/--split-file")
    if not cfg.self_blend and len({s.label for s in split["train"]}) < 2:
        raise DeepfakeError("the training split has only one class; it needs real (original/ or --real-folders) "
                            "and fake videos")
    return split


def landmark_stats(cfg: TrainConfig, samples: list[D.Sample]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of face-scaled landmark vectors over (up to 1000) training videos."""
    chosen = random.Random(cfg.seed).sample(samples, min(len(samples), 1000))
    vectors = face_scale(np.concatenate([D.load_vectors(cfg.data, s, cfg.seq_len) for s in chosen]))
    return tuple(vectors.mean(0).round(6).tolist()), tuple(np.maximum(vectors.std(0), 1e-3).round(6).tolist())


class FeatureDataset(Dataset):
    """Cached backbone features (N, T, 1280) float16 + raw vectors, for --freeze-backbone.

    The vectors are read once up front: per-step file reads would dominate a step that is
    only an LSTM and a small head.
    """

    def __init__(self, features: np.ndarray, base: D.SequenceDataset):
        self.features, self.samples = features, base.samples  # samples: for training_order's groups
        self.vectors = torch.from_numpy(np.stack([D.load_vectors(base.root, s, base.inputs.seq_len) for s in base.samples]))
        self.labels = torch.tensor([float(s.label) for s in base.samples])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int, int]):
        index = key[0] if isinstance(key, tuple) else key  # (index, seed, epoch) from SeededSampler
        return torch.from_numpy(self.features[index].astype(np.float32)), self.vectors[index], self.labels[index]


def cached_features(model: DeepfakeDetector, dataset: D.SequenceDataset, path: Path, device: torch.device,
                    amp: torch.dtype | None, workers: int, batch_size: int) -> np.ndarray:
    """Backbone features of every video, computed once and memory-mapped from disk afterwards."""
    if not path.is_file():
        loader = D.loader(dataset, batch_size, workers, device)
        tmp = path.with_suffix(".partial.npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                        shape=(len(dataset), dataset.inputs.seq_len, model.cnn.features[-1][0].out_channels))
        model.eval()
        start = 0
        with torch.no_grad():
            for frames, _, _ in loader:
                with autocast(device, amp):
                    feats = model.forward_features(dataset.inputs.images(frames.to(device, non_blocking=True)))
                out[start:start + len(feats)] = feats.float().cpu().numpy()
                start += len(feats)
        out.flush()
        del out
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


@torch.no_grad()
def calibrate_batchnorm(model: DeepfakeDetector, dataset: D.SequenceDataset, device: torch.device, workers: int,
                        batch_size: int) -> None:
    """Set the backbone's BatchNorm statistics from the data, for a frozen from-scratch backbone.

    A randomly initialised backbone in eval mode normalises with mean 0 / variance 1, which
    its activations do not have; its features then collapse. One pass in train mode (cumulative
    averages, no gradients) gives well-conditioned random features for the head to learn from.
    """
    norms = [m for m in model.cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the whole pass
    model.cnn.train()
    for frames, _, _ in D.loader(dataset, batch_size, workers, device):
        model.forward_features(dataset.inputs.images(frames.to(device)))
    model.cnn.eval()


def feature_cache_key(choice: backbones.BackboneChoice, model: DeepfakeDetector, inputs: InputSpec,
                      samples: list[D.Sample]) -> str:
    digest = hashlib.sha1()
    digest.update(json.dumps([choice.name, choice.weights, inputs.image_size, inputs.seq_len, inputs.rgb, inputs.mean, inputs.std]).encode())
    digest.update(model.cnn.features[0][0].weight.detach().cpu().numpy().tobytes())
    digest.update("\n".join(s.key for s in samples).encode())
    return digest.hexdigest()[:16]


# ---- the run ---------------------------------------------------------------------------------


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def train(cfg: TrainConfig, callbacks: Callbacks | None = None, resume: bool = False) -> TrainResult:
    """Train, validating after every epoch; keep best.pt (best by `cfg.select`) and last.pt in the run folder."""
    callbacks = callbacks or Callbacks()
    ranks = distributed.Ranks.from_env()
    device = distributed.start(ranks, cfg.device)
    try:
        return _train(cfg, callbacks, resume, ranks.rank, ranks.world, device)
    finally:
        if ranks.world > 1:
            distributed.stop()


def _train(cfg: TrainConfig, callbacks: Callbacks, resume: bool, rank: int, world: int, device: torch.device) -> TrainResult:
    main = rank == 0
    run = cfg.run or default_run_dir()
    amp = resolve_amp(cfg.amp, device, cfg.image_size)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    state = read_checkpoint(run / "last.pt") if resume else None
    if not resume and main and (run / "last.pt").exists():
        raise DeepfakeError(f"{run} already holds a run; pass --resume to continue it, or choose another --run-dir")

    split = prepare_split(cfg)
    folders = {s.folder for part in split.values() for s in part}
    crop, crop_source = D.data_crop(cfg.data, folders, cfg.given_crop)
    sampling = D.data_sampling(cfg.data, folders)
    seed_everything(cfg.seed)
    if state is None:
        cnn, choice = backbones.choose(cfg.backbone, cfg.pretrained, cfg.backbone_weights)
        # The frame head learns from the per-frame loss, through the backbone: a frozen one has no use for it.
        model = DeepfakeDetector(readout="final", backbone=choice.name, cnn=cnn,
                                 frame_head=cfg.frame_loss > 0 and not cfg.freeze_backbone)
        mean, std = landmark_stats(cfg, split["train"])  # with --self-blend, the real videos: what it trains on
        spec = backbones.get(choice.name)
        inputs = InputSpec(image_size=cfg.image_size, seq_len=cfg.seq_len, mean=spec.mean, std=spec.std,
                           landmark_mean=mean, landmark_std=std, crop=crop, sampling=sampling)
    else:  # before anything uses the weights: the frozen-backbone feature cache is keyed by them
        # A run from before the frame head kept the same layer as a training-only probe: it resumes as the head.
        old_probe = {f"frame_head.{k}": v for k, v in state.get("frame_probe", {}).items()}
        model = DeepfakeDetector(**state["model_args"], **({"frame_head": True} if old_probe else {}))
        model.load_state_dict({**state.get("trained_model", state["model"]), **old_probe})  # with --ema, "model" is the average
        saved = state["meta"]  # runs from before Lite0 kept the weights' origin under "backbone"
        choice = backbones.BackboneChoice(model.backbone, saved.get("weights", saved["backbone"]), saved.get("backbone_note"))
        inputs = InputSpec.from_dict(state["inputs"])
        if inputs.crop != crop:
            raise DeepfakeError(f"--resume: the run was trained on crops cut {inputs.crop.describe()}, but {cfg.data} "
                                f"now holds {crop.describe()}; resume on the data it started with")
    counts = D.describe_split(split)
    n_real, n_fake = counts["train"]["real"], counts["train"]["fake"]
    # Weighting positives by real/fake makes both classes count equally in the loss (FF++ has ~4 fakes per real).
    # Self-blending makes one fake per real.
    # --blend-fakes adds one fake per real video.
    pos_weight = n_real / (n_fake + n_real * cfg.blend_fakes) if cfg.balance and not cfg.self_blend else 1.0
    if main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / "config.json", cfg.to_dict())
        atomic_write_json(run / "split.json", {name: [s.key for s in part] for name, part in split.items()})
    model.to(device)
    if cfg.channels_last:
        model.cnn.to(memory_format=torch.channels_last)
    frozen = cfg.freeze_stages if cfg.freeze_stages is not None else FROZEN_STAGES * (choice.weights != "scratch")
    if frozen and not cfg.freeze_backbone:
        model.cnn.freeze(frozen)

    Dataset = D.SelfBlendDataset if cfg.self_blend else D.SequenceDataset
    Training = D.MixedDataset if cfg.blend_fakes else Dataset
    train_ds = Training(cfg.data, split["train"], inputs, augment=cfg.augment and not cfg.freeze_backbone,
                        cache_dir=run / "cache" / "frames" if cfg.cache else None)
    # With --self-blend: the validation people's real videos and their (fixed) blends pick best.pt; their
    # fakes, if any, are unseen manipulations, scored against the same real videos.
    val_ds = Dataset(cfg.data, [s for s in split["val"] if not cfg.self_blend or s.label == 0], inputs,
                     cache_dir=train_ds.cache_dir)
    unseen = [s for s in split["val"] if s.label == 1] if cfg.self_blend else []
    unseen_ds = D.SequenceDataset(cfg.data, unseen, inputs, cache_dir=train_ds.cache_dir) if unseen else None
    workers = min(os.cpu_count() or 1, 8) if cfg.workers < 0 else cfg.workers
    if cfg.freeze_backbone:
        model.cnn.requires_grad_(False)
        if choice.weights == "scratch" and state is None:
            calibrate_batchnorm(model, train_ds, device, workers, cfg.batch_size)
        features = {}
        for name, ds in (("train", train_ds), ("val", val_ds)):
            path = run / "cache" / f"features-{name}-{feature_cache_key(choice, model, inputs, ds.samples)}.npy"
            if main:
                features[name] = cached_features(model, ds, path, device, amp, workers, cfg.batch_size)
            distributed.barrier(device)
            features[name] = np.load(path, mmap_mode="r")
        train_ds, val_ds = FeatureDataset(features["train"], train_ds), FeatureDataset(features["val"], val_ds)
        workers = 0  # everything is in memory or memory-mapped: worker processes would only add start-up

    frame_loss = cfg.frame_loss if model.frame_head is not None else 0.0
    net: nn.Module = model
    masked = None  # with --mask-loss, the detector and its training-only mask head
    if cfg.mask_loss:
        net = masked = MaskHead(model).to(device)
        train_ds.mask_grid = MaskHead.grid(cfg.image_size)
        if state is not None:
            masked.head.load_state_dict(state["mask_head"])
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    average = WeightAverage.resumed(model, cfg.ema, state)
    kept = average.module if average is not None else model  # what is validated and saved as "model"

    start_epoch, best, history, bad_epochs = 1, None, [], 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history, bad_epochs = state["epoch"] + 1, state["best"], state["history"], state["bad_epochs"]
    meta = {"backbone": choice.name, "weights": choice.weights, "backbone_note": choice.note, "select": cfg.select,
            "data": str(cfg.data), "run": str(run), "pos_weight": pos_weight, "real_folders": sorted({s.folder for part in split.values() for s in part if s.label == 0}),
            "split": counts, "freeze_backbone": cfg.freeze_backbone,
            "frozen_stages": BACKBONE_PARTS if cfg.freeze_backbone else frozen, "crop_source": crop_source,
            "self_blend": mask_sources(train_ds) if cfg.blends else None}
    if main:
        callbacks.on_start({**meta, "crop": inputs.crop.describe(), "sampling": inputs.sampling.describe(inputs.seq_len), "device": str(device), "amp": str(amp).removeprefix("torch.") if amp else "off",
                            "world_size": world, "start_epoch": start_epoch, "epochs": cfg.epochs,
                            "methods": dict(D.method_counts(split["train"] + split["val"]))})

    # One loader for the whole run, its worker processes kept: a short epoch no longer pays for
    # starting them. Its sampler hands out (index, seed, epoch), so a video's augmentation is
    # drawn from its own stream whatever worker loads it, and --resume replays it exactly.
    shuffle = torch.Generator()
    sampler = training_order(train_ds, cfg, shuffle, rank, world)
    loader = D.loader(train_ds, cfg.batch_size, workers, device, sampler=sampler, persistent=True)
    val_loader = D.loader(val_ds, cfg.batch_size, workers, device, persistent=True)
    unseen_loader = D.loader(unseen_ds, cfg.batch_size, workers, device) if unseen_ds else None
    if main and cfg.save_examples:
        save_examples(train_ds, cfg.save_examples, cfg.seed, run / "self-blend-examples.png")
    stopped_early, batches = False, None
    for epoch in range(start_epoch, cfg.epochs + 1):
        # Every random draw of an epoch derives from (seed, epoch): --resume replays it exactly.
        seed_everything(cfg.seed * 1000 + epoch)
        if batches is None:  # the first epoch of this process
            batches = epoch_batches(loader, sampler, shuffle, cfg.seed, epoch)
        started = time.perf_counter()
        train_loss = _train_epoch(net, batches, inputs, cfg, device, amp, optimizer, scaler, criterion, epoch,
                                  callbacks, run, from_features=cfg.freeze_backbone, frame_loss=frame_loss,
                                  mask_loss=cfg.mask_loss, warmup=cfg.warmup and epoch == 1, average=average)
        seconds = time.perf_counter() - started
        # The workers build the next epoch's first batches while this one is validated and saved.
        batches = epoch_batches(loader, sampler, shuffle, cfg.seed, epoch + 1) if epoch < cfg.epochs else None
        verdict = [0.0, 0.0]  # (stop?, validation loss): rank 0 decides, every rank follows
        if main:
            probs, labels = predict_batches(kept, val_loader, inputs, device, amp, from_features=cfg.freeze_backbone)
            threshold = best_threshold(labels, probs)
            m = classification_metrics(labels, probs, 0.5)
            scored = unseen_scores(kept, unseen_loader, unseen_ds, probs[labels == 0], inputs, device, amp)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": bce(labels, probs), "accuracy": m["accuracy"],
                   "f1": m["f1"], "macro_f1": m["macro_f1"], "auc": m["auc"], "ap": m["ap"], "eer": m["eer"],
                   "threshold": threshold, **scored, "lr": optimizer.param_groups[0]["lr"], "clips_per_s": len(train_ds) / seconds,
                   "seconds": seconds, "select": cfg.select}
            history.append(row)
            improved = is_better(row, best, cfg.select)
            if improved:
                best, bad_epochs = row, 0
            else:
                bad_epochs += 1
            # P(fake) calibrated on these validation videos: 0.5 is then the decision (calibration.py).
            fitted = calibration.fit(labels, probs)
            ckpt = dict(model=kept, model_args=model_args(model), inputs=inputs, calibration=fitted,
                        threshold=0.5 if fitted is not None else threshold,
                        meta={**meta, "epoch": epoch, "metrics": row, "raw_threshold": threshold})
            if improved:
                save_checkpoint(run / "best.pt", **ckpt)
            trained = {"trained_model": model.state_dict(), "average_steps": average.steps} if average is not None else {}
            if masked is not None:  # training-only: in last.pt for --resume, never in best.pt
                trained["mask_head"] = masked.head.state_dict()
            save_checkpoint(run / "last.pt", **ckpt, **trained, epoch=epoch, best=best, history=history,
                            bad_epochs=bad_epochs, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict() if scheduler is not None else None)
            write_metrics(run, history, best)
            callbacks.on_epoch({**row, "best": improved})
            verdict = [float(bool(cfg.patience and bad_epochs >= cfg.patience)), row["val_loss"]]
        stop, val_loss = distributed.broadcast(verdict, device)
        if scheduler is not None:
            scheduler.step(val_loss) if cfg.schedule == "plateau" else scheduler.step()
        if stop:
            stopped_early = True
            break
    return TrainResult(run=run, best=best, history=history, stopped_early=stopped_early)


def mask_sources(dataset: D.SelfBlendDataset) -> dict:
    """Where the self-blend masks of a run's training videos come from, for the checkpoint and the start-up line."""
    landmarks = sum(dataset.has_landmarks)
    return {"landmarks": landmarks, "crop_ellipse": len(dataset.has_landmarks) - landmarks}


def unseen_scores(model: DeepfakeDetector, loader: DataLoader | None, dataset: D.SequenceDataset | None,
                  real_probs: np.ndarray, inputs: InputSpec, device: torch.device, amp: torch.dtype | None) -> dict:
    """With --self-blend, the validation people's fakes (manipulations never trained on) against their real
    videos: AUC over all of them and per method. Empty without such fakes."""
    if loader is None:
        return {"unseen_auc": None}
    from sklearn.metrics import roc_auc_score

    probs, _ = predict_batches(model, loader, inputs, device, amp)
    folders = np.array([s.folder for s in dataset.samples])

    def auc(fake_probs: np.ndarray) -> float:
        return float(roc_auc_score(np.r_[np.zeros(len(real_probs)), np.ones(len(fake_probs))], np.r_[real_probs, fake_probs]))

    methods = sorted({s.folder for s in dataset.samples})  # str, not numpy's: checkpoints load weights-only
    return {"unseen_auc": auc(probs), "unseen_methods": {m: auc(probs[folders == m]) for m in methods}}


def save_examples(dataset: D.SelfBlendDataset, n: int, seed: int, path: Path) -> None:
    """A PNG grid, one training video a row: its first frame, the mask and the self-blend, as epoch 1 draws them."""
    import cv2

    rows = []
    for video in range(min(n, len(dataset.samples))):
        frame, mask, blend = dataset.example(video, seed)
        mask = cv2.cvtColor(np.round(mask * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        rows.append(np.hstack([frame, mask, blend]))
    grid = np.vstack(rows)
    scale = max(1, 192 // dataset.inputs.image_size)  # small crops are enlarged to be seen
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    header = np.full((28, grid.shape[1], 3), 255, np.uint8)
    for k, title in enumerate(("real", "mask", "self-blend")):
        cv2.putText(header, title, (k * grid.shape[1] // 3 + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    atomic_write_bytes(path, cv2.imencode(".png", np.vstack([header, grid]))[1].tobytes())


def is_better(row: dict, best: dict | None, select: str) -> bool:
    """Whether this validation row beats the best so far by the `select` metric (ties: the second key)."""
    key = SELECTS[select]
    return best is None or key(row) > key(_filled(best))


def _filled(row: dict) -> dict:
    """A row from a run before macro F1 was recorded: it counts as the worst on what it lacks."""
    return {"macro_f1": float("-inf"), "auc": None, "val_loss": float("inf"), **row}


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    return None


def epoch_batches(loader: DataLoader, sampler: SeededSampler, shuffle: torch.Generator, seed: int, epoch: int):
    """An epoch's batches, in the order (seed, epoch) draws. Loader workers start on them at once,
    whether or not the previous epoch is still being validated."""
    shuffle.manual_seed(seed * 1000 + epoch)
    sampler.set_epoch(epoch)
    return iter(loader)


def training_order(train_ds: D.SequenceDataset | FeatureDataset, cfg: TrainConfig, shuffle: torch.Generator, rank: int = 0,
                   world: int = 1) -> SeededSampler:
    """The order training reads `train_ds` in, each epoch reshuffled by `shuffle` (seeded per epoch).

    With --pairs, each group of `D.pair_groups` (a fake, the real video it was made on, the real
    video of the face it carries) comes one video after another and shares one augmentation
    draw, so that in a batch a fake and the real videos differ by the manipulation alone. On
    unseen generated people that raised epochs 4 to 6 on three seeds of four (docs/experiments.md, "Pairs").
    """
    if cfg.pairs and not cfg.self_blend:  # self-blends are paired with their real video already
        groups = D.pair_groups(train_ds.samples)
        train_ds.shared_draws = {i: n for n, group in enumerate(groups) for i in group}
        return SeededSampler(D.GroupedSampler(groups, shuffle, rank, world), cfg.seed)
    train_ds.shared_draws = None
    videos = range(len(train_ds.samples)) if cfg.self_blend else train_ds  # what is shuffled: videos, or pairs
    order = (DistributedSampler(videos, world, rank, shuffle=True, seed=cfg.seed) if world > 1
             else RandomSampler(videos, generator=shuffle))
    return SeededSampler(D.PairedSampler(order) if cfg.self_blend else order, cfg.seed)


class SeededSampler(Sampler):
    """Wraps a sampler: yields (index, seed, epoch) keys for `SequenceDataset`'s per-sample draws."""

    def __init__(self, sampler: Sampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((index, self.seed, self.epoch) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


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


class MaskHead(nn.Module):
    """The detector as `--self-blend` trains it: with a head that learns where each frame was blended.

    Face X-ray's idea (Li et al., CVPR 2020): a 1x1 convolution reads the backbone's last feature
    map (4 x 4 cells at 128 px) and predicts, per cell, the share of it the blend covered (0 in
    real videos). A pooled feature can separate blends from real faces by anything that differs;
    the map must point at the blend, so the backbone learns the local traces every swap leaves.
    The head itself is training-only: validation, best.pt and predict use the detector alone, whose
    keys are unchanged. On unseen people and manipulations (docs/experiments.md, "Self-blended training"):
    0.785 / 0.785 / 0.803 / 0.742 AUC on four seeds, against 0.790 / 0.754 / 0.763 / 0.760 without it.
    """

    def __init__(self, model: DeepfakeDetector):
        super().__init__()
        self.model = model
        self.head = nn.Conv2d(FEATURE_DIM, 1, 1)

    @staticmethod
    def grid(image_size: int) -> int:
        """The side of the backbone's last map: EfficientNet halves it five times, rounding up."""
        return -(-image_size // 32)

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor, precomputed: bool = False,
                parts: bool = False) -> tuple[torch.Tensor | tuple, torch.Tensor]:
        """What the detector returns (`DeepfakeDetector.forward`), and the (B*T, 1, grid, grid) mask logits.
        (Never `precomputed`: --self-blend cannot go with a frozen backbone's cached features.)"""
        features, maps = self.model.forward_features(images, maps=True)
        return self.model(features, landmarks, precomputed=True, parts=parts), self.head(maps)


def model_args(model: DeepfakeDetector) -> dict:
    """What `DeepfakeDetector(**args)` needs to rebuild the trained model (`frame_head` only where it has one)."""
    return {"readout": model.readout, "backbone": model.backbone, **({"frame_head": True} if model.frame_head is not None else {})}


def _train_epoch(net: nn.Module, batches: Iterable, inputs: InputSpec, cfg: TrainConfig, device: torch.device,
                 amp: torch.dtype | None, optimizer, scaler, criterion, epoch: int, callbacks: Callbacks, run: Path,
                 from_features: bool, frame_loss: float = 0.0, mask_loss: float = 0.0, warmup: bool = False,
                 average: WeightAverage | None = None) -> float:
    """One pass over `batches` (an epoch's, from `epoch_batches`, or any sized iterable of batches).
    `net`: the detector, or with `mask_loss` its `MaskHead` (batches then carry masks)."""
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
                group["lr"] = cfg.lr * step / steps
        scaler.scale(loss).backward()
        if cfg.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if average is not None:
            average.update()
        total += loss.item()
        callbacks.on_batch(epoch, step, steps, total / step)
    return total / max(steps, 1)


def write_metrics(run: Path, history: list[dict], best: dict | None = None) -> None:
    """metrics.csv (one row per epoch; `best` is 1 on the epoch best.pt holds) and curves.png."""
    lines = [",".join(METRIC_COLUMNS)]
    history = [{**row, "best": int(best is not None and row["epoch"] == best["epoch"])} for row in history]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                              for c in METRIC_COLUMNS))
    atomic_write_bytes(run / "metrics.csv", ("\n".join(lines) + "\n").encode())
    from deepfake_cli.plots import training_curves

    training_curves(history, run / "curves.png")
