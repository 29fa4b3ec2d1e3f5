"""`train`: the EfficientNet (B0 or Lite0) + BiLSTM detector, trained on `extract` output.

A run folder describes itself: config.json, split.json, metrics.csv, curves.png, best.pt
(the best validation epoch by `--select`) and last.pt (for --resume). Multi-GPU/multi-node: launch the same
command under `torchrun`; every rank trains, rank 0 validates and writes.

- config.py: `TrainConfig`, checked when made; `configure`: the defaults, a --config file, the options
  typed, and what --resume may change;
- setup.py: the run built (or resumed) before its first epoch: model, data, optimiser;
- loop.py: `train` and `fit`, the epochs: train_epoch (step.py), validate, save;
- history.py: which epoch best.pt keeps, metrics.csv;
- order.py: the seeded order of the videos; features.py: --freeze-backbone's cache; average.py: --ema.
"""

from deepfake_cli.train.config import TrainConfig, configure, resume_config
from deepfake_cli.train.loop import Callbacks, TrainResult, train

__all__ = ["Callbacks", "TrainConfig", "TrainResult", "configure", "resume_config", "train"]
