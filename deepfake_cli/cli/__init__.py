"""The `deepfake` command line: thin commands over the core modules.

Only this package imports Typer and renders with rich (`render.py`: progress and tables); heavy
imports (torch, mediapipe) happen inside the commands so that `deepfake --help` answers at once.
A module per command; importing them registers them on `app`, in the order --help lists them.
"""

import sys

from deepfake_cli.cli import extract, train, evaluate, predict  # noqa: F401  (registers the commands)
from deepfake_cli.cli.app import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    sys.exit(main())
