"""`deepfake extract`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from deepfake_cli.cli import render
from deepfake_cli.cli.app import app, renamed, user_errors
from deepfake_cli.errors import DeepfakeError


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
    from deepfake_cli.memory import reuse_frame_memory

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
