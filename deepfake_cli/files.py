"""Atomic file writes: a reader never sees a half-written file, even after a crash or Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through `write(file)` into a temporary sibling, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def newest_in_runs(name: str, runs: Path = Path("runs")) -> Path | None:
    """The most recently written runs/*/<name>, or None."""
    found = sorted(runs.glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())
