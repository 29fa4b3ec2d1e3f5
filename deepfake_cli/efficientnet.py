"""EfficientNet-B0 and EfficientNet-Lite0 and -Lite2 feature extractors, without importing torchvision.

B0 has the same modules, parameter names, initialisation and arithmetic as
`torchvision.models.efficientnet_b0()` with its classifier removed, so torchvision's ImageNet
weights and the reference notebook's `cnn.*` keys load unchanged (tests compare the two
number by number). Why not torchvision itself: `import torchvision` costs about 1.5 s (its ops
import torch._dynamo), half of a cold `deepfake predict`.

Lite0 is the same network as the TensorFlow release defines it: no squeeze-and-excitation,
ReLU6 instead of SiLU, BatchNorm eps 1e-3 and TensorFlow's "same" padding (stride-2
convolutions pad one pixel more on the bottom/right). It is laid out like B0 (`features.N`),
so inference folds its BatchNorm the same way; `lite_from_efficientnet_pytorch` maps the
published weights' key layout onto it. Lite2 is Lite0 scaled as the TensorFlow release scales it:
channels x1.1 and blocks x1.2, except the stem, the head and the first and last stages.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1280  # the pooled feature width of every network here (Lite keeps its head at 1280)
# Per stage: expand ratio, kernel, first stride, input and output channels, blocks
# (torchvision's _efficientnet_conf("efficientnet_b0"); Lite0 has the same stages).
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
PARTS = len(STAGES) + 2  # `features`: the stem, the stages, the head convolution
LITE2_SCALE = (1.1, 1.2)  # width and depth multipliers of EfficientNet-Lite2 (efficientnet_lite_builder.py)
STOCHASTIC_DEPTH = 0.2  # the last block's drop probability; earlier blocks scale linearly to 0
# conv_bn() settings of every Lite0 unit (B0 takes conv_bn's defaults).
LITE_UNIT = dict(activation=nn.ReLU6, tf_same=True, eps=1e-3)


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding: asymmetric when the stride is 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]), (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right), then (top, bottom)
        return self._conv_forward(F.pad(x, pads), self.weight, self.bias)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
            activation: type[nn.Module] | None = nn.SiLU, tf_same: bool = False, eps: float = 1e-5) -> nn.Sequential:
    """conv (no bias) -> BatchNorm -> activation, keys .0, .1 (torchvision's Conv2dNormActivation)."""
    if tf_same and stride > 1:
        conv = SamePadConv2d(in_channels, out_channels, kernel, stride, 0, groups=groups, bias=False)
    else:  # odd kernels at stride 1: "same" is symmetric
        conv = nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    layers = [conv, nn.BatchNorm2d(out_channels, eps=eps)]
    return nn.Sequential(*layers, activation()) if activation else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)  # (N, C, 1, 1)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return scale * x


class MBConv(nn.Module):
    """Inverted residual: [expand 1x1] -> depthwise kxk -> [squeeze-excitation] -> project 1x1."""

    def __init__(self, in_channels: int, out_channels: int, expand: int, kernel: int, stride: int, drop: float,
                 lite: bool = False):
        super().__init__()
        hidden = in_channels * expand
        unit = LITE_UNIT if lite else {}
        layers = [conv_bn(in_channels, hidden, 1, **unit)] if hidden != in_channels else []
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, **unit))
        if not lite:
            layers.append(SqueezeExcitation(hidden, max(1, in_channels // 4)))
        layers.append(conv_bn(hidden, out_channels, 1, **(unit | {"activation": None})))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            if self.training and self.drop > 0:
                # Stochastic depth, "row" mode: drop the whole residual branch per sample.
                keep = 1.0 - self.drop
                noise = torch.empty([result.shape[0]] + [1] * (result.ndim - 1), dtype=result.dtype, device=result.device)
                result = result * noise.bernoulli_(keep).div_(keep)
            result += x
        return result


def scaled_stages(width: float = 1.0, depth: float = 1.0) -> tuple[tuple[int, ...], ...]:
    """STAGES scaled as EfficientNet-Lite is: channels rounded to multiples of 8 (never 10% below the
    scaled value), blocks rounded up, the first and last stages' blocks unscaled, the stem fixed at 32."""
    def channels(c: int) -> int:
        scaled = c * width
        rounded = max(8, int(scaled + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * scaled else rounded

    last = len(STAGES) - 1
    return tuple((expand, kernel, stride, 32 if i == 0 else channels(c_in), channels(c_out),
                  blocks if i in (0, last) else math.ceil(blocks * depth))
                 for i, (expand, kernel, stride, c_in, c_out, blocks) in enumerate(STAGES))


class EfficientNet(nn.Module):
    """(N, 3, H, W) normalised RGB -> (N, 1280) pooled features. `lite`: EfficientNet-Lite, its stages
    `scaled_stages` (STAGES for Lite0 and B0)."""

    def __init__(self, lite: bool = False, stages: tuple[tuple[int, ...], ...] = STAGES):
        super().__init__()
        unit = LITE_UNIT if lite else {}
        layers: list[nn.Module] = [conv_bn(3, stages[0][3], 3, stride=2, **unit)]
        total, block = sum(stage[-1] for stage in stages), 0
        for expand, kernel, stride, in_channels, out_channels, blocks in stages:
            stage = []
            for i in range(blocks):
                stage.append(MBConv(in_channels if i == 0 else out_channels, out_channels, expand, kernel,
                                    stride if i == 0 else 1, STOCHASTIC_DEPTH * block / total, lite))
                block += 1
            layers.append(nn.Sequential(*stage))
        layers.append(conv_bn(stages[-1][4], FEATURE_DIM, 1, **unit))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.frozen = 0  # leading `features` kept as they are (`freeze`)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def freeze(self, stages: int) -> None:
        """Keep the first `stages` of `features` (the stem is the first) as they are: no gradients, and
        BatchNorm on its running statistics even in training. Autograd then stops below them, so their
        backward pass, the dearest part of a training step at high resolution, is never run."""
        self.frozen = stages
        for i, part in enumerate(self.features):
            part.requires_grad_(i >= stages)
        self.train(self.training)

    def train(self, mode: bool = True) -> EfficientNet:
        super().train(mode)
        for part in self.features[:self.frozen]:
            part.eval()
        return self

    def forward(self, x: torch.Tensor, maps: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(N, 1280) pooled features; with `maps`, also the last feature map they pool, (N, 1280, H/32, W/32)."""
        grid = self.features(x)
        pooled = torch.flatten(self.avgpool(grid), 1)
        return (pooled, grid) if maps else pooled


def EfficientNetB0() -> EfficientNet:
    return EfficientNet(lite=False)


def EfficientNetLite0() -> EfficientNet:
    return EfficientNet(lite=True)


def EfficientNetLite2() -> EfficientNet:
    return EfficientNet(lite=True, stages=scaled_stages(*LITE2_SCALE))


def _block_names(stages: tuple[tuple[int, ...], ...]) -> list[str]:
    """`features.S.J` of each MBConv, in the published weights' `_blocks.N` order."""
    return [f"features.{s + 1}.{j}" for s, stage in enumerate(stages) for j in range(stage[-1])]


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def lite_from_efficientnet_pytorch(state: dict[str, torch.Tensor],
                                   stages: tuple[tuple[int, ...], ...] = STAGES) -> tuple[dict, dict]:
    """The efficientnet_pytorch layout (`_conv_stem`, `_blocks.N._expand_conv`, ...) -> ours.

    Returns (backbone state_dict in the keys of `EfficientNet(lite=True, stages=stages)`: Lite0's by
    default, the `_fc` classifier's tensors). Keys that are not part of that layout are passed through
    unchanged, so a caller can tell.
    """
    blocks = _block_names(stages)
    out, classifier = {}, {}
    for key, value in state.items():
        if key.startswith("_fc."):
            classifier[key.removeprefix("_fc.")] = value
            continue
        if key == "_conv_stem.weight":
            new = "features.0.0.weight"
        elif m := re.fullmatch(r"_bn0\." + _BN, key):
            new = f"features.0.1.{m[1]}"
        elif key == "_conv_head.weight":
            new = f"features.{len(STAGES) + 1}.0.weight"
        elif m := re.fullmatch(r"_bn1\." + _BN, key):
            new = f"features.{len(STAGES) + 1}.1.{m[1]}"
        elif m := re.fullmatch(r"_blocks\.(\d+)\.(_expand_conv|_depthwise_conv|_project_conv|_bn0|_bn1|_bn2)\.(.+)", key):
            n, part, leaf = int(m[1]), m[2], m[3]
            expands = n > 0  # only the first block (expand ratio 1) has no expansion conv
            position = {"_expand_conv": 0, "_bn0": 0, "_depthwise_conv": 1, "_bn1": 1, "_project_conv": 2, "_bn2": 2}[part]
            position -= 0 if expands else 1
            new = f"{blocks[n]}.block.{position}.{'0' if part.endswith('conv') else '1'}.{leaf}"
        else:
            new = key
        out[new] = value
    return out, classifier
