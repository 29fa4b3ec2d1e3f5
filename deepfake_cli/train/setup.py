"""Everything a run needs before its first epoch, built or resumed from last.pt: `setup(cfg)`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from deepfake_cli import backbones, data as D, distributed
from deepfake_cli.checkpoint import read_checkpoint
from deepfake_cli.device import resolve_amp
from deepfake_cli.efficientnet import PARTS as BACKBONE_PARTS
from deepfake_cli.choices import LOADER_MOST, worker_count
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import atomic_write_bytes, atomic_write_json
from deepfake_cli.inputs import InputSpec, face_scale
from deepfake_cli.memory import keep_freed_memory
from deepfake_cli.model import DeepfakeDetector, MaskHead
from deepfake_cli.train.average import WeightAverage
from deepfake_cli.train.config import FROZEN_STAGES, TrainConfig
from deepfake_cli.train.features import FeatureDataset, cached_features, calibrate_batchnorm, feature_cache_key
from deepfake_cli.train.order import SeededSampler, training_order
from deepfake_cli.train.step import Step


@dataclass
class Run:
    """A run ready to train: its model, data, optimiser and, on --resume, where it stopped."""

    cfg: TrainConfig
    folder: Path
    main: bool  # rank 0: validates and writes
    device: torch.device
    amp: torch.dtype | None
    model: DeepfakeDetector  # the weights as trained
    kept: DeepfakeDetector  # what is validated and saved as "model": the weight average where there is one
    masked: MaskHead | None  # with --mask-loss, the detector and its training-only mask head
    average: WeightAverage | None
    step: Step
    scheduler: object | None
    inputs: InputSpec
    meta: dict  # what every checkpoint records of the run
    split: dict[str, list[D.Sample]]
    train_ds: D.SequenceDataset | FeatureDataset
    val_ds: D.SequenceDataset | FeatureDataset
    unseen_ds: D.SequenceDataset | None  # with --self-blend, the validation people's own fakes
    sampler: SeededSampler
    shuffle: torch.Generator
    loader: DataLoader
    val_loader: DataLoader
    unseen_loader: DataLoader | None
    start_epoch: int = 1
    best: dict | None = None
    history: list[dict] | None = None
    bad_epochs: int = 0


def setup(cfg: TrainConfig, resume: bool, rank: int, world: int, device: torch.device) -> Run:
    main = rank == 0
    run = cfg.run.folder or default_run_dir()
    amp = resolve_amp(cfg.hardware.amp, device, cfg.data.image_size)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    else:  # before the loader's workers fork, so that they keep theirs too
        keep_freed_memory()
    state = read_checkpoint(run / "last.pt") if resume else None
    if not resume and main and (run / "last.pt").exists():
        raise DeepfakeError(f"{run} already holds a run; pass --resume to continue it, or choose another --run-dir")

    split = prepare_split(cfg)
    folders = {s.folder for part in split.values() for s in part}
    crop, crop_source = D.data_crop(cfg.data.root, folders, cfg.data.given_crop)
    sampling = D.data_sampling(cfg.data.root, folders)
    seed_everything(cfg.run.seed)
    model, choice, inputs = build_model(cfg, state, split, crop, sampling)
    counts = D.describe_split(split)
    n_real, n_fake = counts["train"]["real"], counts["train"]["fake"]
    # Weighting positives by real/fake makes both classes count equally in the loss (FF++ has ~4 fakes per real).
    # Self-blending makes one fake per real.
    # --blend-fakes adds one fake per real video.
    pos_weight = n_real / (n_fake + n_real * cfg.data.blend_fakes) if cfg.data.balance and not cfg.data.self_blend else 1.0
    if main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / "config.json", cfg.to_dict())
        atomic_write_json(run / "split.json", {name: [s.key for s in part] for name, part in split.items()})
    model.to(device)
    if cfg.hardware.channels_last:
        model.cnn.to(memory_format=torch.channels_last)
    frozen = cfg.model.freeze_stages if cfg.model.freeze_stages is not None else FROZEN_STAGES * (choice.weights != "scratch")
    if frozen and not cfg.model.freeze_backbone:
        model.cnn.freeze(frozen)

    train_ds, val_ds, unseen_ds = datasets(cfg, run, split, inputs)
    workers = worker_count(cfg.hardware.workers, LOADER_MOST)
    if cfg.model.freeze_backbone:
        train_ds, val_ds = frozen_features(cfg, run, model, choice, inputs, train_ds, val_ds, state is None, device,
                                           amp, workers, main)
        workers = 0  # everything is in memory or memory-mapped: worker processes would only add start-up

    frame_loss = cfg.model.frame_loss if model.frame_head is not None else 0.0
    net: nn.Module = model
    masked = None
    if cfg.model.mask_loss:
        net = masked = MaskHead(model).to(device)
        train_ds.mask_grid = MaskHead.grid(cfg.data.image_size)
        if state is not None:
            masked.head.load_state_dict(state["mask_head"])
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = _scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    average = WeightAverage.resumed(model, cfg.optim.ema, state)
    step = Step(net, inputs, cfg, device, amp, optimizer, scaler, criterion, run, from_features=cfg.model.freeze_backbone,
                frame_loss=frame_loss, mask_loss=cfg.model.mask_loss, average=average)

    start_epoch, best, history, bad_epochs = 1, None, [], 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history, bad_epochs = state["epoch"] + 1, state["best"], state["history"], state["bad_epochs"]
    meta = run_meta(cfg, run, choice, split, counts, pos_weight, frozen, crop_source, train_ds)

    # One loader for the whole run, its worker processes kept: a short epoch no longer pays for
    # starting them. Its sampler hands out (index, seed, epoch), so a video's augmentation is
    # drawn from its own stream whatever worker loads it, and --resume replays it exactly.
    shuffle = torch.Generator()
    sampler = training_order(train_ds, cfg, shuffle, rank, world)
    loader = D.loader(train_ds, cfg.optim.batch_size, workers, device, sampler=sampler, persistent=True)
    val_loader = D.loader(val_ds, cfg.optim.batch_size, workers, device, persistent=True)
    unseen_loader = D.loader(unseen_ds, cfg.optim.batch_size, workers, device) if unseen_ds else None
    if main and cfg.run.save_examples:
        save_examples(train_ds, cfg.run.save_examples, cfg.run.seed, run / "self-blend-examples.png")
    return Run(cfg, run, main, device, amp, model, average.module if average is not None else model, masked, average,
               step, scheduler, inputs, meta, split, train_ds, val_ds, unseen_ds, sampler, shuffle, loader, val_loader,
               unseen_loader, start_epoch, best, history, bad_epochs)


def run_meta(cfg: TrainConfig, run: Path, choice: backbones.BackboneChoice, split: dict, counts: dict, pos_weight: float,
             frozen: int, crop_source: str, train_ds) -> dict:
    """What every checkpoint of the run records of it, beside the weights and inputs."""
    return {"backbone": choice.name, "weights": choice.weights, "backbone_note": choice.note, "select": cfg.run.select,
            "data": str(cfg.data.root), "run": str(run), "pos_weight": pos_weight,
            "real_folders": sorted({s.folder for part in split.values() for s in part if s.label == 0}),
            "split": counts, "passes": cfg.data.passes(len(train_ds)), "freeze_backbone": cfg.model.freeze_backbone,
            "frozen_stages": BACKBONE_PARTS if cfg.model.freeze_backbone else frozen, "crop_source": crop_source,
            "self_blend": mask_sources(train_ds) if cfg.data.blends else None}


def build_model(cfg: TrainConfig, state: dict | None, split: dict, crop, sampling) -> tuple[DeepfakeDetector, backbones.BackboneChoice, InputSpec]:
    """A new model and its InputSpec, or on --resume the run's own (before anything uses the weights:
    the frozen-backbone feature cache is keyed by them)."""
    if state is None:
        cnn, choice = backbones.choose(cfg.model.backbone, cfg.model.pretrained, cfg.model.backbone_weights)
        # The frame head learns from the per-frame loss, through the backbone: a frozen one has no use for it.
        model = DeepfakeDetector(readout="final", backbone=choice.name, cnn=cnn,
                                 frame_head=cfg.model.frame_loss > 0 and not cfg.model.freeze_backbone)
        mean, std = landmark_stats(cfg, split["train"])  # with --self-blend, the real videos: what it trains on
        spec = backbones.get(choice.name)
        inputs = InputSpec(image_size=cfg.data.image_size, seq_len=cfg.data.seq_len, mean=spec.mean, std=spec.std,
                           landmark_mean=mean, landmark_std=std, crop=crop, sampling=sampling)
        return model, choice, inputs
    model = DeepfakeDetector(**state["model_args"])
    model.load_state_dict(state.get("trained_model", state["model"]))  # with --ema, "model" is the average
    choice = backbones.BackboneChoice(model.backbone, state["meta"]["weights"], state["meta"]["backbone_note"])
    inputs = InputSpec.from_dict(state["inputs"])
    if inputs.crop != crop:
        raise DeepfakeError(f"--resume: the run was trained on crops cut {inputs.crop.describe()}, but {cfg.data.root} "
                            f"now holds {crop.describe()}; resume on the data it started with")
    return model, choice, inputs


def datasets(cfg: TrainConfig, run: Path, split: dict, inputs: InputSpec):
    """The training, validation and (with --self-blend) unseen-manipulation datasets."""
    Dataset = D.SelfBlendDataset if cfg.data.self_blend else D.SequenceDataset
    Training = D.MixedDataset if cfg.data.blend_fakes else Dataset
    train_ds = Training(cfg.data.root, split["train"], inputs, augment=cfg.data.augment and not cfg.model.freeze_backbone,
                        cache_dir=run / "cache" / "frames" if cfg.data.cache else None)
    # With --self-blend: the validation people's real videos and their (fixed) blends pick best.pt; their
    # fakes, if any, are unseen manipulations, scored against the same real videos.
    val_ds = Dataset(cfg.data.root, [s for s in split["val"] if not cfg.data.self_blend or s.label == 0], inputs,
                     cache_dir=train_ds.cache_dir)
    unseen = [s for s in split["val"] if s.label == 1] if cfg.data.self_blend else []
    unseen_ds = D.SequenceDataset(cfg.data.root, unseen, inputs, cache_dir=train_ds.cache_dir) if unseen else None
    return train_ds, val_ds, unseen_ds


def frozen_features(cfg: TrainConfig, run: Path, model: DeepfakeDetector, choice: backbones.BackboneChoice,
                    inputs: InputSpec, train_ds, val_ds, new: bool, device: torch.device, amp, workers: int,
                    main: bool) -> tuple[FeatureDataset, FeatureDataset]:
    """--freeze-backbone: the two datasets as their backbone features, computed once (rank 0) and cached."""
    model.cnn.requires_grad_(False)
    if choice.weights == "scratch" and new:
        calibrate_batchnorm(model, train_ds, device, workers, cfg.optim.batch_size)
    features = {}
    for name, ds in (("train", train_ds), ("val", val_ds)):
        path = run / "cache" / f"features-{name}-{feature_cache_key(choice, model, inputs, ds.samples)}.npy"
        if main:
            features[name] = cached_features(model, ds, path, device, amp, workers, cfg.optim.batch_size)
        distributed.barrier(device)
        features[name] = np.load(path, mmap_mode="r")
    return FeatureDataset(features["train"], train_ds), FeatureDataset(features["val"], val_ds)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.optim.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.optim.epochs)
    if cfg.optim.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    return None


def prepare_split(cfg: TrainConfig) -> dict[str, list[D.Sample]]:
    samples = D.check_samples(cfg.data.root, D.scan(cfg.data.root, cfg.data.seq_len, cfg.data.real_folders), cfg.data.seq_len, cfg.data.skip_bad)
    split = D.read_split_file(cfg.data.split_file, samples) if cfg.data.split_file else {}
    if "train" not in split:  # no split file, or a test list alone (Celeb-DF's): the rest split by identity
        held_out = set(split.get("test", []))
        split |= D.identity_split([s for s in samples if s not in held_out], cfg.data.val_fraction, cfg.run.seed)
    if cfg.data.self_blend:  # fakes are never trained on; the validation people's are scored as unseen manipulations
        split["train"] = [s for s in split["train"] if s.label == 0]
        for part in ("train", "val"):
            if not any(s.label == 0 for s in split.get(part, [])):
                raise DeepfakeError(f"--self-blend trains on real videos, and the {part} split has none; put real "
                                    "videos in original/ (or name their folders with --real-folders)")
    for part in ("train", "val"):
        if not split.get(part):
            raise DeepfakeError(f"the {part} split is empty; add videos or change --val-fraction/--split-file")
    if not cfg.data.self_blend and len({s.label for s in split["train"]}) < 2:
        raise DeepfakeError("the training split has only one class; it needs real (original/ or --real-folders) "
                            "and fake videos")
    return split


def landmark_stats(cfg: TrainConfig, samples: list[D.Sample]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of face-scaled landmark vectors over (up to 1000) training videos."""
    chosen = random.Random(cfg.run.seed).sample(samples, min(len(samples), 1000))
    vectors = face_scale(np.concatenate([D.load_vectors(cfg.data.root, s, cfg.data.seq_len) for s in chosen]))
    return tuple(vectors.mean(0).round(6).tolist()), tuple(np.maximum(vectors.std(0), 1e-3).round(6).tolist())


def mask_sources(dataset: D.SelfBlendDataset) -> dict:
    """Where the self-blend masks of a run's training videos come from, for the checkpoint and the start-up line."""
    landmarks = sum(dataset.has_landmarks)
    return {"landmarks": landmarks, "crop_ellipse": len(dataset.has_landmarks) - landmarks}


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
