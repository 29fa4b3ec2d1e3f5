"""`deepfake evaluate` and `deepfake export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from deepfake_cli.cli import render
from deepfake_cli.cli.app import app, user_errors
from deepfake_cli.cli.render import console, out_console


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
    with console.status("scoring videos" + (" and finding where the model looked on its worst mistakes..." if report
                                            else "...")):
        result = run_evaluate(data, model, split=split, batch_size=batch_size, workers=workers, device=device,
                              skip_bad=skip_bad, report=report)
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
        console.print(f"report written to {report}", highlight=False)


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
