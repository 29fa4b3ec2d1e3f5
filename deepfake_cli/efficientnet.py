"""EfficientNet-B0 exactly as torchvision builds it, without importing torchvision.

Same modules, parameter names, initialisation and arithmetic as
`torchvision.models.efficientnet_b0()` with its classifier removed, so torchvision's ImageNet
weights and the reference notebook's `cnn.*` keys load unchanged (tests compare the two
number by number). Why: `import torchvision` costs about 1.5 s (its ops import torch._dynamo),
half of a cold `deepfake predict`; this module costs nothing beyond torch.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURE_DIM = 1280  # the pooled feature width
# Per stage: expand ratio, kernel, first stride, input and output channels, blocks
# (torchvision's _efficientnet_conf("efficientnet_b0"), width and depth multipliers 1.0).
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
STOCHASTIC_DEPTH = 0.2  # the last block's drop probability; earlier blocks scale linearly to 0


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
            activation: bool = True) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias) -> BatchNorm -> SiLU; keys .0, .1."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.SiLU()) if activation else nn.Sequential(*layers)


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
    """Inverted residual: [expand 1x1] -> depthwise kxk -> squeeze-excitation -> project 1x1."""

    def __init__(self, in_channels: int, out_channels: int, expand: int, kernel: int, stride: int, drop: float):
        super().__init__()
        hidden = in_channels * expand
        layers = [conv_bn(in_channels, hidden, 1)] if hidden != in_channels else []
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden),
                   SqueezeExcitation(hidden, max(1, in_channels // 4)),
                   conv_bn(hidden, out_channels, 1, activation=False)]
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


class EfficientNetB0(nn.Module):
    """(N, 3, H, W) normalised RGB -> (N, 1280) pooled features."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, STAGES[0][3], 3, stride=2)]
        total, block = sum(stage[-1] for stage in STAGES), 0
        for expand, kernel, stride, in_channels, out_channels, blocks in STAGES:
            stage = []
            for i in range(blocks):
                stage.append(MBConv(in_channels if i == 0 else out_channels, out_channels, expand, kernel,
                                    stride if i == 0 else 1, STOCHASTIC_DEPTH * block / total))
                block += 1
            layers.append(nn.Sequential(*stage))
        layers.append(conv_bn(STAGES[-1][4], FEATURE_DIM, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # (N, 1280)
