"""The Typer app, its root options, and what every command shares: the user-error line, renamed
options' old spellings, the options typed, the choice enums."""

from __future__ import annotations

import functools
import gc
import logging
import os
from enum import Enum
from typing import Callable

import typer
from rich.logging import RichHandler
from typer.core import TyperCommand

from deepfake_cli import __version__, choices
from deepfake_cli.cli.render import console
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
    # This tool's own messages from INFO; other libraries' chatter (absl, matplotlib, the ONNX exporter's
    # optimiser, which logs a line per graph rewrite) only from WARNING, unless asked for.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
        handlers=[RichHandler(console=console, show_time=False, show_path=False)], force=True,
    )
    logging.getLogger("deepfake_cli").setLevel(logging.DEBUG if verbose else logging.INFO)


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


def main() -> None:
    try:
        app()
    finally:
        # The process ends here: spare it the interpreter's last garbage collections over all
        # that torch and MediaPipe allocated (0.2 s of a 3 s `predict`). Every file is already
        # closed and the model process stopped, so no finaliser is waited for.
        gc.freeze()
