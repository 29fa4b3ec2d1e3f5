"""The values each choice option takes, in one light module: the CLI lists them in --help (as enums)
without importing torch, and the modules that act on them check they agree."""

SCHEDULES = ("none", "cosine", "plateau")
AMP_MODES = ("auto", "bf16", "fp16", "off")
SELECTS = ("macro-f1", "f1", "auc", "loss")  # train/history.py: what each maximises
BACKBONES = ("efficientnet_b0", "efficientnet_lite0")  # backbones.py: how each is built
AGGREGATES = ("mean", "max")  # predict: how a clip's window scores combine
