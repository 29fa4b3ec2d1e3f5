"""`deepfake predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from deepfake_cli.cli import render
from deepfake_cli.cli.app import Aggregate, app, user_errors
from deepfake_cli.cli.render import console, out_console


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
