"""The values each choice option takes, in one light module: the CLI lists them in --help (as enums)
without importing torch, and the modules that act on them check they agree."""

import os

SCHEDULES = ("none", "cosine", "plateau")
AMP_MODES = ("auto", "bf16", "fp16", "off")
SELECTS = ("macro-f1", "f1", "auc", "loss")  # train/history.py: what each maximises
BACKBONES = ("efficientnet_b0", "efficientnet_lite0", "efficientnet_lite2")  # backbones.py: how each is built
AGGREGATES = ("mean", "max")  # predict: how a clip's window scores combine

LOADER_MOST = 8  # data-loading processes past this wait on the model, not the disk


def worker_count(workers: int, most: int | None = None) -> int:
    """What --workers means in every command: -1 one per core (at most `most`), 0 none (the work runs
    in this process), N exactly N."""
    if workers >= 0:
        return workers
    cores = os.cpu_count() or 1
    return min(cores, most) if most else cores
