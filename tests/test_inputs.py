"""What the model is fed: the input transform against values computed by hand, and augmentation."""

import numpy as np
import torch

from deepfake_cli.data import augment
from deepfake_cli.inputs import InputSpec


def test_images_become_rgb_normalised_by_imagenet_mean_and_std():
    bgr = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)  # B, T, C, H, W
    x = InputSpec().images(bgr)
    expected = [(30 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (10 / 255 - 0.406) / 0.225]  # by hand, RGB
    torch.testing.assert_close(x[0, 0, :, 0, 0], torch.tensor(expected), rtol=0, atol=1e-6)
    reference = InputSpec(rgb=False, mean=(0.0,) * 3, std=(1.0,) * 3)  # the notebook's ToTensor() on BGR
    torch.testing.assert_close(reference.images(bgr)[0, 0, :, 0, 0], torch.tensor([10 / 255, 20 / 255, 30 / 255]))


def test_landmarks_lose_the_face_scale_then_are_standardised():
    spec = InputSpec(landmark_mean=(1.0, 0.5, 1.0, 1.0, 1.0), landmark_std=(2.0, 1.0, 1.0, 0.5, 1.0))
    v = torch.tensor([[2.0, 4.0, 6.0, 8.0, 10.0]])  # mean 6
    expected = [(2 / 6 - 1) / 2, (4 / 6 - 0.5) / 1, (6 / 6 - 1) / 1, (8 / 6 - 1) / 0.5, (10 / 6 - 1) / 1]
    torch.testing.assert_close(spec.landmark_features(v), torch.tensor([expected]))
    torch.testing.assert_close(spec.landmark_features(3 * v), spec.landmark_features(v))  # resolution drops out
    torch.testing.assert_close(InputSpec(landmarks="raw").landmark_features(v), v)


def sequence(t=4, size=32):
    """A face-sized sequence whose left half is dark and right half bright, the same in every frame."""
    frame = np.zeros((size, size, 3), np.uint8)
    frame[:, size // 2:] = 200
    vectors = np.tile(np.arange(1, 6, dtype=np.float32), (t, 1))
    return np.repeat(frame[None], t, 0), vectors


def test_augmentation_is_one_draw_for_every_frame_of_a_video():
    frames, vectors = sequence()
    for seed in range(20):
        out, _, _ = augment(frames, vectors, np.random.default_rng(seed))
        assert all(np.array_equal(out[0], f) for f in out[1:]), seed  # no flicker between frames
        assert not np.array_equal(out[0], frames[0])


def test_a_mirrored_video_swaps_its_left_and_right_eye_to_mouth_distances():
    frames, vectors = sequence()
    flipped = kept = 0
    for seed in range(20):
        out, v, _ = augment(frames, vectors, np.random.default_rng(seed))
        left, right = out[0, :, :12].mean(), out[0, :, -12:].mean()
        if left > right:  # the picture was mirrored ...
            flipped += 1
            np.testing.assert_array_equal(v, vectors[:, [0, 1, 2, 4, 3]])  # ... and so were the distances
        else:
            kept += 1
            np.testing.assert_array_equal(v, vectors)
    assert flipped and kept


def test_masks_are_mirrored_and_cropped_with_their_frames():
    """A self-blend's masks stay on the pixels they cover: frames drawn from the masks themselves match them after."""
    yy, xx = np.mgrid[:64, :64]
    masks = np.stack([((yy - 20) ** 2 + (xx - 14 - k) ** 2 < 120).astype(np.float32) for k in range(4)])  # off-centre
    frames = np.repeat((40 + 160 * masks)[..., None], 3, -1).astype(np.uint8)
    vectors = np.ones((4, 5), np.float32)
    for seed in range(12):
        out, _, moved = augment(frames, vectors, np.random.default_rng(seed), masks)
        assert moved.shape == masks.shape
        for image, mask in zip(out, moved):  # colour, JPEG and resampling aside, the same shape in the same place
            assert np.corrcoef(image.mean(-1).ravel(), mask.ravel())[0, 1] > 0.9, seed
