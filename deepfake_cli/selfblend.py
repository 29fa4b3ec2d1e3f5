"""Self-blended fakes (Shiohara and Yamasaki, CVPR 2022): a real face blended with an altered copy of itself.

A detector trained on one generator's fakes learns that generator's fingerprint. A self-blend
carries only what every face swap leaves behind, a blend boundary and a colour and sharpness
mismatch inside it, so a detector trained on real videos and their self-blends has seen the
traces of generators nobody trained on. The recipe is the paper's code (mapooon/SelfBlendedImages,
`sbi.py` and `funcs.py`), drawn once per sequence so that the LSTM sees one consistent fake,
with a flicker variant whose strength changes from frame to frame, as real swaps often do. In
training, half the real videos get the same alteration over the whole frame (`SelfBlend.alter_whole`),
so that a soft or recoloured video is not a fake unless a seam says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from deepfake_cli.crop import CropSpec

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # the paper's: the mask's peak, full strength half the time
NO_FOREHEAD = 0.25  # the share of hulls cut at the eyebrows (the paper's 68-point hull)
# How much of the face is swapped. Swap tools replace anything from the inner face to the whole face
# (DeepFaceLab's face types: half, mid-half, full, whole): half of the hulls are shrunk towards the
# face's centre, keeping this share of its size, so the seam also falls inside the face.
INNER_FACE, INNER_EXTENT = 0.5, (0.6, 0.9)
# Beyond the paper: lip-sync fakes (Wav2Lip and its kind) change the mouth alone. This share of the
# blends covers only the mouth: the hull of Face Mesh's lip points, enlarged by MOUTH_EXTENT.
MOUTH_ONLY, MOUTH_EXTENT = 0.2, (1.3, 1.8)
LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270,
        291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)  # FACEMESH_LIPS
# Also beyond the paper, from what the recipe learnt on generated people it never saw (README,
# "Self-blended training"): with a texture step on every blend the model learns sharpness alone and
# misses colour, while the paper's colour change is small next to the step between two people's skins.
# So a face blend's altered copy is also scaled by a gain (overall, and a little per channel), and only
# this share of face blends gets the downscale-or-sharpen step.
GAIN, CHANNEL_GAIN, TEXTURE = 0.25, 0.07, 0.5
# A lip-sync fake re-renders the mouth: opened or closed a little, and smoother. A mouth blend's copy is
# stretched vertically about the lips' centre and softened (Gaussian sigma, as a fraction of the side)
# instead of the texture step.
MOUTH_STRETCH, MOUTH_SOFTEN = (0.85, 1.2), (0.0, 1.5 / 128)
FLICKER = 0.25  # the share of sequences whose blend strength is redrawn on every frame
# Also beyond the paper: a blend's copy is recoloured, resampled by the move and often blurred or sharpened,
# so a detector can learn to call a whole video fake for being soft or off-colour, with no blend in it
# (a 1 px blur of a whole real video scored AUC 0.999 against the untouched one; docs/experiments.md, "Self-blended
# training"). This share of the real videos in training gets the same alteration over the whole frame:
# no mask and no seam, still real. Only a difference between the face and what surrounds it marks a blend.
WHOLE_ALTERED = 0.5
BROWS, NOSE_TIP = (105, 334), 1  # Face Mesh points: the middle of each eyebrow, the tip of the nose
# Mask softening, in pixels of a 256 px crop (the paper's, at its 380 px, scaled): a first blur that
# shrinks the hull by its radius, then a feathering blur.
KERNELS = range(5, 26, 2)
FEATHER_SIGMAS = (5, 46)
DEFORM_GRID, DEFORM_STD = 6, 0.01  # elastic wobble: a coarse random field, in fractions of the side
JITTER_STD = (0.002, 0.001)  # per-frame drift of the affine move (x, y), fractions of the side


@dataclass(frozen=True)
class BlendDraw:
    """One sequence's blend: everything the recipe draws, fixed for all its frames."""

    mouth: bool  # the mouth region alone, else the face
    forehead: bool  # hull over every landmark, or only those below the eyebrows
    extent: float  # the hull's size about its centre (face: 1 whole, < 1 inner face; mouth: > 1 around the lips)
    ratio: float  # the mask's peak
    alter_source: bool  # the altered copy is pasted inside the mask; else the frame around it is altered
    rgb_shift: np.ndarray  # (3,) added to B, G, R; zeros when not drawn
    hue: float  # OpenCV hue units (0..180)
    saturation: float  # factor
    brightness: float  # added, in 0..255 units
    contrast: float  # factor
    gain: np.ndarray  # (3,) B, G, R factors after the colour change; ones for a mouth blend
    texture: bool  # a face blend's downscale-or-sharpen step
    downscale: int  # 2..4: shrink with nearest and enlarge linearly; 0: sharpen instead
    sharpen: tuple[float, float]  # (alpha, lightness), used when downscale is 0
    stretch: float  # a mouth blend's vertical stretch of its copy, about the lips' centre
    soften: float  # a mouth blend's Gaussian sigma, a fraction of the side
    move: tuple[float, float, float]  # affine move of the source and mask: x, y (fractions of the side), scale
    deform: np.ndarray  # (DEFORM_GRID, DEFORM_GRID, 2) coarse displacement field, fractions of the side
    blur: tuple[int, int, float]  # first kernel, feathering kernel, feathering sigma (256 px units)
    strength: np.ndarray  # (T,) per-frame multiplier of ratio: ones, or the flicker's draws

    @classmethod
    def draw(cls, rng: np.random.Generator, frames: int, flicker: float = FLICKER) -> "BlendDraw":
        return cls(
            mouth=(mouth := rng.random() < MOUTH_ONLY),
            forehead=rng.random() >= NO_FOREHEAD,
            extent=rng.uniform(*MOUTH_EXTENT) if mouth else rng.uniform(*INNER_EXTENT) if rng.random() < INNER_FACE else 1.0,
            ratio=float(rng.choice(BLEND_RATIOS)),
            alter_source=rng.random() < 0.5,
            rgb_shift=rng.uniform(-20, 20, 3) if rng.random() < 0.3 else np.zeros(3),
            hue=rng.uniform(-5, 5), saturation=rng.uniform(0.8, 1.2),
            brightness=rng.uniform(-0.1, 0.1) * 255, contrast=rng.uniform(0.9, 1.1),
            gain=np.ones(3) if mouth else rng.uniform(1 - GAIN, 1 + GAIN) * rng.uniform(1 - CHANNEL_GAIN, 1 + CHANNEL_GAIN, 3),
            texture=not mouth and rng.random() < TEXTURE,
            downscale=int(rng.integers(2, 5)) if rng.random() < 0.5 else 0,
            sharpen=(rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.0)),
            stretch=rng.uniform(*MOUTH_STRETCH), soften=rng.uniform(*MOUTH_SOFTEN),
            move=(rng.uniform(-0.03, 0.03), rng.uniform(-0.015, 0.015), rng.uniform(0.95, 1 / 0.95)),
            deform=rng.normal(0, DEFORM_STD, (DEFORM_GRID, DEFORM_GRID, 2)),
            blur=(int(rng.choice(KERNELS)), int(rng.choice(KERNELS)), float(rng.integers(*FEATHER_SIGMAS))),
            strength=rng.uniform(0.4, 1.0, frames) if rng.random() < flicker else np.ones(frames),
        )


def hull_mask(landmarks: np.ndarray, size: int, forehead: bool = True, extent: float = 1.0,
              mouth: bool = False) -> np.ndarray:
    """(size, size) float32, 1 inside the convex hull of a face's (468, 2) landmarks (crop pixels).

    Without the forehead, only the points on the nose's side of the line through the eyebrows count.
    `extent` scales the hull about the centre of its points. With `mouth`, the hull of the lips alone.
    """
    points = landmarks[list(LIPS)] if mouth else landmarks
    if not forehead and not mouth:
        a, b = landmarks[list(BROWS)]
        normal = np.array([a[1] - b[1], b[0] - a[0]])  # perpendicular to the eyebrow line
        side = (landmarks - a) @ normal
        points = landmarks[side * np.sign(side[NOSE_TIP]) >= 0]
    centre = points.mean(0)
    points = centre + (points - centre) * extent
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1.0)
    return mask


def crop_mask(crop: CropSpec, size: int, extent: float = 1.0, mouth: bool = False) -> np.ndarray:
    """The fallback for videos without landmarks: an ellipse where `crop` puts the face box.

    A square crop with a relative margin holds a face box of 1 / (1 + 2 margin) of its side,
    centred; a pixel margin is taken against a 200 px face. Face Mesh's hull is about as wide
    as 0.85 of its height. `extent` scales the ellipse about its centre; with `mouth`, it is the
    lips' (a quarter of the face wide, a tenth high, a quarter of the face below its centre).
    """
    face = 1 / (1 + 2 * crop.margin) if crop.relative else 200 / (200 + 2 * crop.margin)
    mask = np.zeros((size, size), np.float32)
    width, height, below = (0.13, 0.05, 0.25) if mouth else (0.42, 0.5, 0.0)
    axes = (round(width * face * extent * size), round(height * face * extent * size))
    cv2.ellipse(mask, (size // 2, round(size * (0.5 + below * face))), axes, 0, 0, 360, 1.0, -1)
    return mask


@dataclass(frozen=True)
class SelfBlend:
    """The training-data recipe: a real (T, S, S, 3) uint8 sequence -> its self-blended fake and masks.

    `crop` is how the crops were cut: it places the fallback mask for videos without landmarks.
    """

    crop: CropSpec
    flicker: float = FLICKER

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`landmarks`: (T, 468, 2) in the pixels of `frames`, or None. Returns (T, S, S, 3) uint8, (T, S, S) float32."""
        t, size = len(frames), frames.shape[1]
        draw = BlendDraw.draw(rng, t, self.flicker)
        jitter = rng.normal(0, JITTER_STD, (t, 2))
        maps = wobble(draw.deform, size)
        fallback = crop_mask(self.crop, size, draw.extent, draw.mouth) if landmarks is None else None
        fakes, masks = np.empty(frames.shape, np.uint8), np.empty(frames.shape[:3], np.float32)
        for i in range(t):
            hull = fallback if landmarks is None else hull_mask(landmarks[i], size, draw.forehead, draw.extent, draw.mouth)
            fakes[i], masks[i] = blend_frame(np.ascontiguousarray(frames[i]), hull, draw, i, jitter[i], maps)
        return fakes, masks

    def alter_whole(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A real (T, S, S, 3) uint8 sequence as training shows it: left as it is, or (a WHOLE_ALTERED share)
        altered over the whole frame as a face blend alters its copy (colour, texture step as drawn, move)."""
        if rng.random() >= WHOLE_ALTERED:
            return frames
        draw = BlendDraw.draw(rng, len(frames), self.flicker)
        draw = replace(draw, mouth=False)  # a face blend's alteration: a mouth's stretch is meant for the lips alone
        size = frames.shape[1]
        matrix = move_matrix(draw.move, size)
        return np.stack([cv2.warpAffine(alter(np.ascontiguousarray(f), draw, 0.0), matrix, (size, size),
                                        borderMode=cv2.BORDER_REFLECT) for f in frames])


def blend_frame(frame: np.ndarray, hull: np.ndarray, draw: BlendDraw, i: int, jitter: np.ndarray,
                maps: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Frame `i` of a sequence blended by `draw` (`maps`: its `wobble`): (S, S, 3) uint8 and its (S, S) float32 mask."""
    size = frame.shape[0]
    altered = alter(frame, draw, centre_row(hull) if draw.mouth else 0.0)  # a mouth blend stretches about its centre
    source, target = (altered, frame) if draw.alter_source else (frame, altered)
    matrix = move_matrix(draw.move, size, jitter)
    source = cv2.warpAffine(source, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    mask = soften(cv2.remap(cv2.warpAffine(hull, matrix, (size, size)), *maps, cv2.INTER_LINEAR), draw.blur)
    mask *= draw.ratio * draw.strength[i]
    blended = mask[..., None] * source.astype(np.float32) + (1 - mask[..., None]) * target.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8), mask


def move_matrix(move: tuple[float, float, float], size: int, jitter: np.ndarray | float = 0.0) -> np.ndarray:
    """The affine move as a 2x3 matrix for a side of `size` px: scaled about the centre, then shifted by
    x, y (+ `jitter`), fractions of the side."""
    x, y, scale = move
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 0, scale)
    matrix[:, 2] += (np.array([x, y]) + jitter) * size
    return matrix


def centre_row(mask: np.ndarray) -> float:
    """The row of a mask's centre of mass (0 for an empty mask)."""
    moments = cv2.moments(mask)
    return moments["m01"] / max(moments["m00"], 1e-6)


def alter(image: np.ndarray, draw: BlendDraw, centre_y: float) -> np.ndarray:
    """The drawn colour change, then (drawn) a downscale or a sharpen: what makes the pasted face a stranger.

    A mouth blend's copy is stretched about row `centre_y` (the mask's centre) and softened instead.
    """
    # Each step maps a pixel's channel values one by one, so each is a lookup table of the arithmetic:
    # the same bytes as computing it on every pixel, at a fraction of the cost.
    hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_BGR2HSV), hsv_table(draw.hue, draw.saturation))
    out = cv2.LUT(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), colour_table(draw))
    size = image.shape[0]
    if draw.mouth:
        out = cv2.warpAffine(out, np.float32([[1, 0, 0], [0, draw.stretch, centre_y * (1 - draw.stretch)]]),
                             (size, size), borderMode=cv2.BORDER_REFLECT)
        sigma = draw.soften * size
        return cv2.GaussianBlur(out, (0, 0), sigma) if sigma > 0.3 else out  # below 0.3 px a blur changes nothing
    if not draw.texture:
        return out
    if draw.downscale:
        small = cv2.resize(out, (size // draw.downscale, size // draw.downscale), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    alpha, lightness = draw.sharpen  # albumentations' Sharpen: a Laplacian kernel mixed in by alpha
    kernel = np.array([[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]], np.float32)
    identity = np.zeros((3, 3), np.float32)
    identity[1, 1] = 1
    return cv2.filter2D(out, -1, (1 - alpha) * identity + alpha * kernel)


def hsv_table(hue: float, saturation: float) -> np.ndarray:
    """(1, 256, 3) table: hue turned by `hue` (OpenCV's 0..180), saturation scaled, value kept."""
    v = np.arange(256, dtype=np.float32)
    table = np.stack([(v + hue) % 180, np.clip(v * saturation, 0, 255), v], axis=-1)
    return table.astype(np.uint8)[None]


def colour_table(draw: BlendDraw) -> np.ndarray:
    """(1, 256, 3) table: contrast about 128, brightness and the per-channel shift, clipped, then the gain."""
    v = np.arange(256, dtype=np.float32)[:, None]
    shifted = np.clip((v - 128) * draw.contrast + 128 + draw.brightness + draw.rgb_shift, 0, 255)
    return np.clip(shifted.astype(np.uint8) * draw.gain, 0, 255).astype(np.uint8)[None]


def wobble(field: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The elastic wobble of a mask's edge as `cv2.remap` maps: the coarse field, enlarged smoothly, moves
    every pixel. Once per sequence: the field is."""
    shift = cv2.resize(field.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC) * size  # (S, S, 2)
    grid = np.arange(size, dtype=np.float32)
    return grid[None, :] + shift[..., 0], grid[:, None] + shift[..., 1]


def soften(mask: np.ndarray, blur: tuple[int, int, float]) -> np.ndarray:
    """The paper's two blurs: the first, kept only where it stays 1, shrinks the hull; the second feathers it.

    Peak 1 (when any of the mask survives), so the blend ratio is the mask's peak.
    """
    scale = mask.shape[0] / 256
    first, second = (max(3, int(k * scale) | 1) for k in blur[:2])  # odd kernels, at least 3 px
    inner = cv2.GaussianBlur(mask, (first, first), 0)
    if inner.max() <= 0:
        return inner
    inner = (inner >= inner.max() * (1 - 1e-5)).astype(np.float32)
    soft = cv2.GaussianBlur(inner, (second, second), blur[2] * scale)
    return soft / soft.max()
