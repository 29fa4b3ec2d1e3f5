import pytest
import torch

from deepfake_cli.efficientnet import EfficientNetB0
from deepfake_cli.model import DeepfakeDetector
from reference_notebook import DeepfakeDetector as ReferenceDetector


@pytest.mark.parametrize("readout", ["final", "last"])
def test_forward_and_backward_shapes_are_finite(readout):
    torch.manual_seed(0)
    model = DeepfakeDetector(readout=readout)
    images, landmarks = torch.randn(2, 3, 3, 32, 32), torch.randn(2, 3, 5)
    logits = model(images, landmarks)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0])).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_features_then_head_equals_the_whole_forward():
    model = DeepfakeDetector().eval()
    images, landmarks = torch.randn(1, 2, 3, 32, 32), torch.randn(1, 2, 5)
    features = model.forward_features(images)
    assert features.shape == (1, 2, 1280)
    torch.testing.assert_close(model(features, landmarks, precomputed=True), model(images, landmarks))


@pytest.mark.parametrize("training", [False, True])
def test_our_efficientnet_b0_is_torchvisions_number_for_number(training):
    """Same keys; with the same weights, the same outputs (train mode: same stochastic-depth draws)."""
    from torchvision.models import efficientnet_b0

    torch.manual_seed(1)
    theirs = efficientnet_b0(weights=None)
    theirs.classifier = torch.nn.Identity()
    ours = EfficientNetB0()
    ours.load_state_dict(theirs.state_dict())  # strict: every key matches
    images = torch.randn(3, 3, 64, 64)
    ours.train(training), theirs.train(training)
    torch.manual_seed(2)
    expected = theirs(images)
    torch.manual_seed(2)
    torch.testing.assert_close(ours(images), expected, rtol=0, atol=0)


def test_the_frame_head_averages_the_sequence_and_frame_logits():
    torch.manual_seed(0)
    model = DeepfakeDetector(frame_head=True).eval()
    features, landmarks = torch.randn(2, 4, 1280), torch.randn(2, 4, 5)
    with torch.no_grad():
        sequence, frames = model(features, landmarks, precomputed=True, parts=True)
        assert sequence.shape == (2,) and frames.shape == (2, 4)
        torch.testing.assert_close(model(features, landmarks, precomputed=True), (sequence + frames.mean(1)) / 2)
        torch.testing.assert_close(sequence, model.fc(model.read_out(features, landmarks)).squeeze(1))
    assert DeepfakeDetector()(features, landmarks, precomputed=True, parts=True)[1] is None


def test_cpu_inference_in_chunks_equals_one_pass():
    model = DeepfakeDetector().eval()
    images = torch.randn(1, 6, 3, 256, 256)  # 4 frames per pass at 256 px: chunks of 4 and 2
    with torch.inference_mode():
        whole = model.cnn(images.flatten(0, 1)).view(1, 6, -1)
        torch.testing.assert_close(model.forward_features(images), whole)


def test_state_dict_keys_match_the_reference_notebook():
    assert DeepfakeDetector().state_dict().keys() == ReferenceDetector().state_dict().keys()


def test_final_state_readout_uses_both_directions_whole_sequence():
    """With `final`, the backward half has run back to frame 0; with `last` (the reference's) it saw frame T-1 only."""
    torch.manual_seed(0)
    model = DeepfakeDetector().eval()
    features, landmarks = torch.randn(1, 4, 1280), torch.randn(1, 4, 5)
    changed = features.clone()
    changed[:, 0] += 5  # only the first frame differs
    hidden = model.lstm.hidden_size
    with torch.no_grad():
        backward = [model.read_out(x, landmarks)[:, hidden:] for x in (features, changed)]
        assert (backward[0] - backward[1]).abs().max() > 1e-3
        model.readout = "last"
        backward = [model.read_out(x, landmarks)[:, hidden:] for x in (features, changed)]
        torch.testing.assert_close(backward[0], backward[1], rtol=0, atol=0)
