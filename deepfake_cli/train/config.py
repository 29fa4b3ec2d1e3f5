"""What a training run is: `TrainConfig`, a typed part per concern, checked when made; `configure`
(the defaults, a --config file, what was typed) and what `--resume` may change."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from deepfake_cli import backbones
from deepfake_cli.choices import AMP_MODES, SCHEDULES
from deepfake_cli.crop import CropSpec
from deepfake_cli.efficientnet import PARTS as BACKBONE_PARTS
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.train.history import SELECTS

# The stem and the first two stages of the backbone stay at their ImageNet weights: a third of a CPU training
# step's time at 256 px is their backward pass (docs/performance.md, "Frozen early stages").
FROZEN_STAGES = 3
# An epoch shows at least this many sequences: a training set smaller than that is gone over again, with fresh
# draws. Six epochs of one pass over a few dozen videos were too few steps to learn from (docs/experiments.md,
# "Epochs long enough to learn from"); larger sets are not affected.
EPOCH_SIZE = 96


def _checked(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise DeepfakeError(message)


@dataclass
class DataConfig:
    """What the model learns from, and how it is read."""

    root: Path  # the `extract` OUT folder (flag and config key: `data`)
    seq_len: int = 16  # frames per video (--frames)
    image_size: int = 256
    val_fraction: float = 0.2
    split_file: Path | None = None
    real_folders: tuple[str, ...] | None = None  # None: as extract read the dataset's layout, else original/
    crop: str | None = None  # how data without OUT/.deepfake/extract.json was cut; None: the reference's
    balance: bool = True
    augment: bool = True
    pairs: bool = True  # batch fakes beside the real videos they were made on, augmented alike
    skip_bad: bool = False
    cache: bool = False
    self_blend: bool = False  # train on real videos and their self-blends (selfblend.py)
    blend_fakes: bool = False  # supervised: each real video's self-blend is one more training fake (MixedDataset)
    # The fewest sequences an epoch shows: a smaller training set is gone over again, with fresh draws; 0: once.
    # None: EPOCH_SIZE, or 0 with self_blend (its passes were not shown to help, and cost the time they take).
    epoch_size: int | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.split_file = Path(self.split_file) if self.split_file else None
        self.real_folders = tuple(self.real_folders) if self.real_folders is not None else None
        self.blend_fakes = self.blend_fakes and not self.self_blend  # --self-blend trains on blends alone already
        if self.epoch_size is None:
            self.epoch_size = 0 if self.self_blend else EPOCH_SIZE
        _checked([(self.seq_len >= 1, "--frames must be at least 1"),
                  (self.image_size >= 32, "--image-size must be at least 32"),
                  (0 < self.val_fraction < 1, "--val-fraction must be between 0 and 1"),
                  (self.epoch_size >= 0, "--epoch-size must be 0 (each video once an epoch) or more")])
        self.given_crop  # a bad --crop is refused now

    @property
    def blends(self) -> bool:
        """Whether training makes self-blended fakes (alone, or beside the data's own)."""
        return self.self_blend or self.blend_fakes

    def passes(self, items: int) -> int:
        """How many times an epoch goes over a training set of `items` sequences: enough to show `epoch_size`."""
        return max(1, -(-self.epoch_size // max(items, 1)))

    @property
    def given_crop(self) -> CropSpec | None:
        try:
            return CropSpec.parse(self.crop) if self.crop else None
        except ValueError as e:
            raise DeepfakeError(str(e)) from None


@dataclass
class ModelConfig:
    """The detector and where its weights start."""

    backbone: str | None = None  # None: efficientnet_b0 with ImageNet weights, offline efficientnet_lite0
    pretrained: bool | None = None  # None: ImageNet weights (never a silent from-scratch backbone)
    backbone_weights: Path | None = None
    freeze_backbone: bool = False
    freeze_stages: int | None = None  # leading backbone stages kept (the stem is one); None: FROZEN_STAGES on pretrained weights
    frame_loss: float = 2.0  # weight of the frame head's per-frame loss; 0: no frame head
    mask_loss: float | None = None  # weight of the mask head's loss (self-blends); None: 1 with self-blends

    def __post_init__(self) -> None:
        self.backbone_weights = Path(self.backbone_weights) if self.backbone_weights else None
        _checked([(self.freeze_stages is None or 0 <= self.freeze_stages <= BACKBONE_PARTS,
                   f"--freeze-stages must be between 0 (train every stage) and {BACKBONE_PARTS}"),
                  (self.frame_loss >= 0, "--frame-loss must be 0 (off) or more")])
        if self.backbone is not None:
            backbones.get(self.backbone)  # an unknown name is refused there, by the table


@dataclass
class OptimConfig:
    """How the weights move: steps, learning rate, the weight average."""

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "none"
    clip_grad: float = 1.0  # max gradient norm; 0 turns clipping off
    ema: float = 0.9  # per-step decay of the weight average that is validated and saved; 0: the weights as trained
    warmup: bool = True  # the learning rate rises linearly to `lr` over epoch 1

    def __post_init__(self) -> None:
        _checked([(self.epochs >= 1, "--epochs must be at least 1"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.lr > 0, "--lr must be positive"),
                  (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
                  (0 <= self.ema < 1, "--ema must be 0 (off) or a decay below 1, such as 0.9")])


@dataclass
class HardwareConfig:
    """Where and how fast it runs; nothing here changes what is learnt beyond float rounding."""

    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    workers: int = -1  # DataLoader processes; -1: one per core, at most 8

    def __post_init__(self) -> None:
        _checked([(self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}")])


@dataclass
class RunConfig:
    """The run itself: its folder, seed, and which epoch it keeps."""

    folder: Path | None = None  # default: runs/<timestamp> (flag --run-dir, config key `run`)
    seed: int = 42
    select: str | None = None  # which validation metric picks best.pt (SELECTS); None: auc, or loss with self_blend
    patience: int = 0  # epochs without a better selection metric before stopping; 0: never
    save_examples: int = 0  # with self_blend: a PNG of this many real / mask / blend rows

    def __post_init__(self) -> None:
        self.folder = Path(self.folder) if self.folder else None
        _checked([(self.patience >= 0, "--patience must be 0 (off) or more"),
                  (self.save_examples >= 0, "--save-examples must be 0 (none) or more")])


PARTS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "hardware": HardwareConfig, "run": RunConfig}
# Settings whose flat name (train's flag, config.json's key) is not their field's.
RENAMED = {"data": ("data", "root"), "run": ("run", "folder")}


def _flat_names() -> dict[str, tuple[str, str]]:
    """Each flat setting name -> (part, field)."""
    names = {f.name: (part, f.name) for part, cls in PARTS.items() for f in dataclasses.fields(cls)}
    for (part, field) in RENAMED.values():
        del names[field]
    return names | RENAMED


class TrainConfig:
    """A training run's settings: one typed part per concern (`data`, `model`, `optim`, `hardware`,
    `run`), each checked when made, and the checks that span parts here. Made from, and written as,
    one flat mapping of train's option names (config.json, `--config` files, `TrainConfig(data=...,
    lr=...)`); an unknown name is an error."""

    NAMES = _flat_names()

    def __init__(self, data: Path | str, **settings) -> None:
        unknown = sorted(set(settings) - set(self.NAMES))
        if unknown:
            raise DeepfakeError(f"unknown training settings: {', '.join(unknown)}")
        given: dict[str, dict] = {part: {} for part in PARTS}
        for name, value in {"data": data, **settings}.items():
            part, field = self.NAMES[name]
            given[part][field] = value
        self.data = DataConfig(**given["data"])
        self.model = ModelConfig(**given["model"])
        self.optim = OptimConfig(**given["optim"])
        self.hardware = HardwareConfig(**given["hardware"])
        self.run = RunConfig(**given["run"])
        blends = self.data.blends
        # Self-blended validation fakes are the training recipe's own: their AUC keeps rising while the
        # model narrows to them, so --self-blend picks by the loss, which weighs every video's score
        # (docs/experiments.md, "Model selection").
        self.run.select = self.run.select or ("loss" if self.data.self_blend else "auc")
        self.model.mask_loss = (1.0 if blends else 0.0) if self.model.mask_loss is None else self.model.mask_loss
        _checked([
            (self.run.select in SELECTS, f"--select must be one of {', '.join(SELECTS)}"),
            (self.model.mask_loss >= 0, "--mask-loss must be 0 (off) or more"),
            (blends or not self.model.mask_loss, "--mask-loss learns where self-blends were blended; add --self-blend "
             "or --blend-fakes"),
            (self.data.self_blend or not self.run.save_examples, "--save-examples shows self-blended fakes; add --self-blend"),
            (not (blends and self.model.freeze_backbone), "self-blends are new fakes every epoch, which a frozen "
             "backbone's feature cache cannot hold; leave out --freeze-backbone"),
            (not self.data.self_blend or self.optim.batch_size % 2 == 0, "--self-blend puts each real video and its blend "
             "in one batch: --batch-size must be even"),
        ])

    def to_dict(self) -> dict:
        """The flat mapping it was made from (defaults filled in): config.json."""
        def plain(v):
            return str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v

        return {name: plain(getattr(getattr(self, part), field)) for name, (part, field) in self.NAMES.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrainConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


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
    saved = {"epoch_size": 0} | json.loads(config.read_text())  # a run from before --epoch-size went over its set once
    # The folder resumed is the one given, wherever the run was first written (a moved or copied run).
    return TrainConfig.from_dict(saved | {"run": str(run)} | {k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})


# Options whose flag is not their setting's name: a config file may use either.
FLAG_NAMES = {"frames": "seq_len", "run_dir": "run"}


def read_config_file(path: Path) -> dict:
    """Training settings from a TOML or JSON file: train's options with _ for - (or TrainConfig's names,
    as a run's config.json holds them). Anything else is refused in one line."""
    if not path.is_file():
        raise DeepfakeError(f"--config {path}: no such file")
    toml = path.suffix.lower() == ".toml"
    try:
        settings = tomllib.loads(path.read_text()) if toml else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DeepfakeError(f"--config {path}: not valid {'TOML' if toml else 'JSON'} ({e}); a .toml file is read as "
                            "TOML, anything else as JSON") from None
    if not isinstance(settings, dict):
        raise DeepfakeError(f"--config {path}: expected settings by name, as in a run's config.json")
    settings = {FLAG_NAMES.get(name, name): value for name, value in settings.items()}
    if unknown := sorted(set(settings) - set(TrainConfig.NAMES)):
        raise DeepfakeError(f"--config {path}: unknown settings {', '.join(unknown)}; the names are train's options "
                            "with _ for - (a run's config.json lists them all)")
    return settings


def configure(options: dict, typed: dict[str, str], resume: bool = False, config_file: Path | None = None) -> TrainConfig:
    """The run `deepfake train` asks for. `options` holds every setting by TrainConfig's names (None where
    the default depends on the machine), `typed` the ones given on the command line, with their flags.

    With `resume`, the run's own settings and the changes RESUMABLE allows; otherwise the defaults,
    the `config_file` over them, and what was typed over the file."""
    if resume:
        if config_file is not None:
            raise DeepfakeError("--config starts a run with its settings, --resume continues one as it began; "
                                "leave one out")
        typed = {name: flag for name, flag in typed.items() if name != "run"}
        return resume_config(options["run"] or _latest_run(), {name: options[name] for name in typed}, typed)
    settings = dict(options)
    if config_file is not None:
        settings |= read_config_file(config_file) | {name: options[name] for name in typed}
    if settings["data"] is None:
        raise DeepfakeError("missing DATA: the `extract` OUT folder to train on (or --resume a run, or --config)")
    if settings["epochs"] is None:
        settings["epochs"] = 10
    if settings["batch_size"] is None:  # a GPU wants more videos per step than a CPU can take in time
        from deepfake_cli.device import resolve_device

        settings["batch_size"] = 16 if resolve_device(settings["device"]).type == "cuda" else 4
    return TrainConfig(**settings)


def _latest_run() -> Path:
    from deepfake_cli.files import newest_in_runs

    last = newest_in_runs("last.pt")
    if last is None:
        raise DeepfakeError("no run to resume under runs/; pass --run-dir DIR")
    return last.parent
