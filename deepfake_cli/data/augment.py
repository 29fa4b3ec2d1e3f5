"""Training augmentation: one draw per sequence, applied alike to all its frames."""

from __future__ import annotations

import cv2
import numpy as np

FLIP = 0.5  # chance of a mirrored sequence
CROP_SCALE = (0.9, 1.0)  # side of the random crop, as a share of the frame's, resized back
CONTRAST = (0.8, 1.2)  # gain on every channel
COLOUR = (0.92, 1.08)  # gain per channel, on top
BRIGHTNESS = 20  # shift in pixel values, either way
RECOMPRESS = 0.5  # chance of a JPEG round trip, at a quality drawn from JPEG_QUALITY
JPEG_QUALITY = (40, 96)  # [low, high)

def augment(frames: np.ndarray, vectors: np.ndarray, rng: np.random.Generator,
            masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Augment a (T, H, W, 3) uint8 sequence with one draw for all its frames.

    Per-frame draws would make frames flicker, a temporal artefact the LSTM could learn.
    `masks`, (T, H, W) float32 if given (where a self-blend was blended), are mirrored and
    cropped with the frames, and returned third (else None).
    """
    t, h, w, _ = frames.shape
    flip = rng.random() < FLIP
    if flip:  # mirror: left and right eye-to-mouth distances swap places
        frames = frames[:, :, ::-1]
        vectors = vectors[:, [0, 1, 2, 4, 3]]
    scale = rng.uniform(*CROP_SCALE)
    ch, cw = int(h * scale), int(w * scale)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    if masks is not None:
        masks = masks[:, :, ::-1] if flip else masks
        masks = np.stack([cv2.resize(np.ascontiguousarray(m[y:y + ch, x:x + cw]), (w, h)) for m in masks])
    gain = rng.uniform(*CONTRAST) * rng.uniform(*COLOUR, size=3)
    shift = rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    quality = int(rng.integers(*JPEG_QUALITY)) if rng.random() < RECOMPRESS else None
    # value * gain + shift, clipped, as a per-channel table: the same bytes as the arithmetic on every pixel
    # (which took half a worker's time per video at 256 px), in a table lookup
    table = np.clip(np.arange(256)[:, None] * gain + shift, 0, 255).astype(np.uint8)[None]  # (1, 256, 3)
    out = np.empty_like(frames)
    for i in range(t):
        f = cv2.resize(np.ascontiguousarray(frames[i, y:y + ch, x:x + cw]), (w, h), interpolation=cv2.INTER_LINEAR)
        f = cv2.LUT(f, table)
        if quality is not None:
            f = cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)
        out[i] = f
    return out, vectors, masks
