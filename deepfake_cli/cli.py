"""The `deepfake` command line: thin commands over the core modules.

Only this module imports Typer and renders with rich; heavy imports (torch, mediapipe) happen
inside the commands so that `deepfake --help` answers at once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from deepfake_cli import __version__
from deepfake_cli.errors import DeepfakeError

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
    videos: Path = typer.Argument(..., help="A video, a folder of videos, or a folder of label folders "
                                  "(FaceForensics++ layout: original/, Deepfakes/, ...)."),
    out: Path = typer.Argument(..., help="Output folder: OUT/<folder>/<video>_<i>.jpg and .npy, "
                               "plus OUT/.deepfake/manifest.jsonl (one row per video)."),
    frames: int = typer.Option(16, help="Frames per video, spread over its whole length."),
    margin: float = typer.Option(0.2, help="Crop margin around the landmark box, as a fraction of the face size."),
    size: int = typer.Option(256, help="Side of the square face crop in pixels."),
    workers: int = typer.Option(0, help="Parallel processes, each with its own MediaPipe; 0 = one per CPU core."),
    shard: str = typer.Option("1/1", help="Do only part K of N (e.g. 3/8) so a job array can split a dataset."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo every video, even those already done."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Find the face in each video, write face crops and landmark vectors for training.

    Re-running resumes: finished videos are skipped, half-done ones redone. Exit code 0 when
    every video was extracted or skipped with a reason (no face, too short), 1 when a video
    failed to decode or nothing could be extracted, 2 on bad arguments, 130 on Ctrl-C.
    """
    from deepfake_cli.extract import ExtractConfig, extract as run_extract, parse_shard, summary_dict
    from deepfake_cli.faces import CropSpec

    try:
        crop = CropSpec(size=size, margin=margin)
    except ValueError as e:
        raise DeepfakeError(str(e)) from None
    cfg = ExtractConfig(frames=frames, crop=crop, workers=workers, shard=parse_shard(shard), overwrite=overwrite)
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

    table = Table(title=f"extract -> {out}")
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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
