"""Validation rows: which epoch best.pt keeps (`--select`), and metrics.csv with curves.png."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from deepfake_cli import choices
from deepfake_cli.files import atomic_write_bytes

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "accuracy", "f1", "macro_f1", "auc", "ap", "eer", "threshold",
                  "unseen_auc", "lr", "clips_per_s", "seconds", "select", "best")
# How best.pt is chosen: a validation row -> a key to maximise (ties broken by the second item).
# AUC by default: it needs no threshold and "everything is fake" scores 0.5 (the fake class's F1
# alone rewards it: 0.91 on FF++). Macro F1 at 0.5 did too, but once --pairs made the scores
# confident it kept early epochs whose calibration happened to suit 0.5: on unseen people its
# picks scored 0.832 AUC where AUC's scored 0.874 (docs/experiments.md, "Model selection").
SELECTS: dict[str, Callable[[dict], tuple[float, float]]] = {
    "macro-f1": lambda row: (row["macro_f1"], _or_worst(row["auc"])),
    "f1": lambda row: (row["f1"], _or_worst(row["auc"])),
    "auc": lambda row: (_or_worst(row["auc"]), -row["val_loss"]),
    "loss": lambda row: (-row["val_loss"], _or_worst(row["auc"])),
}
assert tuple(SELECTS) == choices.SELECTS


def _or_worst(value: float | None) -> float:
    return float("-inf") if value is None else value


def is_better(row: dict, best: dict | None, select: str) -> bool:
    """Whether this validation row beats the best so far by the `select` metric (ties: the second key)."""
    key = SELECTS[select]
    return best is None or key(row) > key(best)


def write_metrics(run: Path, history: list[dict], best: dict | None = None) -> None:
    """metrics.csv (one row per epoch; `best` is 1 on the epoch best.pt holds) and curves.png."""
    lines = [",".join(METRIC_COLUMNS)]
    history = [{**row, "best": int(best is not None and row["epoch"] == best["epoch"])} for row in history]
    for row in history:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                              for c in METRIC_COLUMNS))
    atomic_write_bytes(run / "metrics.csv", ("\n".join(lines) + "\n").encode())
    from deepfake_cli.plots import training_curves

    training_curves(history, run / "curves.png")
