"""Generate small synthetic deepfake-detection video datasets in the FaceForensics++ layout.

Faces are the 100 face crops of ``skimage.data.lfw_subset()``, upscaled, tinted with a skin
colour and moved smoothly over a synthetic background::

    OUT/original/000.mp4         one real video per identity
    OUT/FaceSwap/000_001.mp4     <target>_<source>: the source's inner face on the target
    OUT/SelfBlend/000.mp4        the identity's own inner face, colour-shifted, enlarged and
                                 blended back (self-blended images, Shiohara & Yamasaki 2022)
    OUT/LowResSwap/000_001.mp4   the source's inner face, colour-matched to the target and
                                 rendered at an autoencoder's low resolution (Deepfakes-like)
    OUT/MouthEdit/000.mp4        only the mouth re-rendered: moved and smoothed (NeuralTextures-like)

By default every identity gets one fake per method (``--methods``), as FaceForensics++ does;
``--one-fake`` gives each identity a single fake, the methods taken in turn. ``--variety``
grades each identity's videos (gamma, white balance, noise) and re-compresses their frames
(JPEG quality 30-95), real and fakes alike, as footage from different sources differs.
``--first-identity`` starts at another LFW face, so two sets can hold different people.

A fake reuses its target's background and motion exactly, so only the face region differs
from the real video. Everything is derived from ``numpy.random.default_rng`` streams keyed by
(seed, identity), so the same arguments always give the same frames.

    python examples/make_dataset.py OUT [--identities 8] [--seed 0] [--size 320x240]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data

METHODS = ("FaceSwap", "SelfBlend")  # the default set (the demo's and the tests')
ALL_METHODS = ("FaceSwap", "SelfBlend", "LowResSwap", "MouthEdit")
SWAPS = ("FaceSwap", "LowResSwap")  # <target>_<source> names: the FF++ pairing identity XOR 1
LFW_FACES = 100  # lfw_subset() holds 100 faces followed by 100 non-faces
# LFW faces MediaPipe often misses once downscaled (turned heads, sunglasses, low contrast):
# they become the last identities, so that identities 0-90 are detected reliably.
_HARD_FACES = (30, 4, 76, 47, 32, 9, 21, 13, 28)
# Independent random streams per (seed, identity), so e.g. the blend parameters drawn for a
# fake never shift the looks of the real video.
_TINT, _SCENE, _BLEND, _SECOND, _EMPTY, _GRADE = range(6)
_INNER_CENTRE, _INNER_AXES = (0.5, 0.56), (0.31, 0.35)  # eyes-nose-mouth in an LFW crop
_FACE_HEIGHT = (0.45, 0.6)  # face size range as a fraction of the frame height
FACE_OF_SPRITE = 0.87  # the face's landmark box over the pasted LFW crop's side (measured: 0.76-0.95)

Size = tuple[int, int]  # (width, height), as OpenCV wants it


@dataclass(frozen=True)
class _Track:
    """Smooth sinusoidal path of a face centre plus a slow breathing of its scale."""

    centre: np.ndarray  # (x, y) rest position, pixels
    amplitude: np.ndarray  # (x, y) sway either side of the rest position, pixels
    omega: np.ndarray  # (x, y, scale) angular frequencies, rad/s
    phase: np.ndarray  # (x, y, scale)
    wobble: float  # relative scale change

    def at(self, t: float) -> tuple[np.ndarray, float]:
        wave = np.sin(self.omega * t + self.phase)
        return self.centre + self.amplitude * wave[:2], 1.0 + self.wobble * wave[2]


@dataclass(frozen=True)
class _Person:
    texture: np.ndarray  # square BGR float32 face image at its base size
    track: _Track


def _rng(seed: int, identity: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, identity, stream])


@functools.lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    """The LFW face crops in identity order, the hard ones last."""
    order = [index for index in range(LFW_FACES) if index not in _HARD_FACES]
    order += _HARD_FACES
    return data.lfw_subset()[order].astype(np.float32)


@functools.lru_cache(maxsize=1)
def _astronaut_face() -> np.ndarray:
    """Head of skimage's astronaut (BGR): a real colour face for the second person."""
    return data.astronaut()[30:210, 135:315, ::-1].astype(np.float32)


def _skin_tint(identity: int, seed: int) -> np.ndarray:
    """Per-identity BGR skin colour from light to dark; the spread makes swaps mismatch."""
    rng = _rng(seed, identity, _TINT)
    light, dark = np.array([0.72, 0.84, 1.0]), np.array([0.42, 0.55, 0.78])
    return (light + (dark - light) * rng.random()) * rng.uniform(0.95, 1.05, 3)


def _face_texture(identity: int, size: int, tint: np.ndarray) -> np.ndarray:
    gray = _lfw_faces()[identity]
    # Stretch contrast: MediaPipe misses the dimmest LFW faces once tinted and downscaled.
    low, high = np.percentile(gray, [2, 98])
    gray = np.clip((gray - low) / max(high - low, 1e-3), 0, 1)
    gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(gray[..., None] * tint * 255.0, 0, 255).astype(np.float32)


def _ellipse_mask(size: int, centre, axes, feather: float, angle: float = 0.0) -> np.ndarray:
    """Soft elliptical mask in [0, 1]; centre, axes and feather are fractions of ``size``."""
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (round(centre[0] * size), round(centre[1] * size)),
                (round(axes[0] * size), round(axes[1] * size)), angle, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), feather * size)


def _blend(face: np.ndarray, inner: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return face * (1.0 - mask[..., None]) + inner * mask[..., None]


def _face_swap(face: np.ndarray, source: int, seed: int) -> np.ndarray:
    """The target ``face`` with the source's inner face, still in the source's skin colour."""
    size = face.shape[0]
    inner = _face_texture(source, size, _skin_tint(source, seed))
    return _blend(face, inner, _ellipse_mask(size, _INNER_CENTRE, _INNER_AXES, 0.03))


def _self_blend(face: np.ndarray, identity: int, seed: int) -> np.ndarray:
    """Blend a colour-shifted, slightly enlarged copy of the inner face back onto itself."""
    rng = _rng(seed, identity, _BLEND)
    size = face.shape[0]
    zoom = cv2.getRotationMatrix2D((size * _INNER_CENTRE[0], size * _INNER_CENTRE[1]), 0.0,
                                   rng.uniform(1.03, 1.08))
    inner = cv2.warpAffine(face, zoom, (size, size), borderMode=cv2.BORDER_REFLECT)
    # Shift warmth (red against blue) and brightness by at least 7 % each, so the seam always
    # shows, while the skin stays skin-coloured for the face detector (green casts hurt it).
    warmth, brightness = rng.choice([-1.0, 1.0], 2) * rng.uniform(0.07, 0.16, 2)
    gain = (1.0 + brightness) * (1.0 + warmth * np.array([-1.0, 0.0, 1.0]))
    mean = inner.mean(axis=(0, 1))
    inner = np.clip((inner - mean) * rng.uniform(0.9, 1.2) + mean * gain, 0, 255)
    axes = np.multiply(_INNER_AXES, rng.uniform(0.9, 1.1, 2))  # a jittered, tilted outline
    mask = _ellipse_mask(size, _INNER_CENTRE, axes, 0.015, angle=rng.uniform(-12, 12))
    return _blend(face, inner, mask)


def _low_res_swap(face: np.ndarray, identity: int, source: int, seed: int) -> np.ndarray:
    """The source's inner face, colour-matched to the target, at an autoencoder's output resolution."""
    rng = _rng(seed, identity, _BLEND)
    size = face.shape[0]
    inner = _face_texture(source, size, _skin_tint(source, seed))
    region = _ellipse_mask(size, _INNER_CENTRE, _INNER_AXES, 0.01) > 0.5
    # Colour transfer inside the face (mean and spread per channel), as face-swap tools do.
    mean, spread = inner[region].mean(0), inner[region].std(0) + 1e-3
    inner = (inner - mean) / spread * face[region].std(0) + face[region].mean(0)
    low = max(12, round(size / rng.uniform(2.5, 4.0)))  # e.g. a 64 px decoder for a 200 px face
    inner = cv2.resize(cv2.resize(inner, (low, low), interpolation=cv2.INTER_AREA), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    mask = _ellipse_mask(size, _INNER_CENTRE, np.multiply(_INNER_AXES, 1.04), 0.04)
    return _blend(face, np.clip(inner, 0, 255), mask)


def _mouth_edit(face: np.ndarray, identity: int, seed: int) -> np.ndarray:
    """Only the mouth changes: opened or closed a little and re-rendered smoother."""
    rng = _rng(seed, identity, _BLEND)
    size = face.shape[0]
    centre = (0.5, 0.76)
    move = cv2.getRotationMatrix2D((size * centre[0], size * centre[1]), rng.uniform(-4, 4), 1.0)
    move[1] += [0.0, rng.uniform(0.08, 0.2), rng.choice([-1, 1]) * rng.uniform(0.01, 0.025) * size]  # y stretch and shift
    mouth = cv2.warpAffine(face, move, (size, size), borderMode=cv2.BORDER_REFLECT)
    mouth = cv2.GaussianBlur(mouth, (0, 0), size * rng.uniform(0.006, 0.012)) * rng.uniform(0.9, 1.1)
    return _blend(face, np.clip(mouth, 0, 255), _ellipse_mask(size, centre, (0.2, 0.1), 0.02))


def _graded(frames: Iterable[np.ndarray], identity: int, seed: int) -> Iterator[np.ndarray]:
    """One identity's source look: gamma, white balance, sensor noise and JPEG re-compression."""
    rng = _rng(seed, identity, _GRADE)
    gamma, gains = rng.uniform(0.8, 1.25), rng.uniform(0.9, 1.1, 3)
    noise, quality = rng.uniform(0, 6), int(rng.integers(30, 96))
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255)
    for index, frame in enumerate(frames):
        noisy = lut[frame] * gains + _rng(seed, identity, 100 + index).normal(0, noise, frame.shape)
        graded = np.clip(noisy, 0, 255).astype(np.uint8)
        yield cv2.imdecode(cv2.imencode(".jpg", graded, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def _background(rng: np.random.Generator, size: Size) -> np.ndarray:
    """Colour gradient, two blurred shapes and mild noise: texture that is not a face."""
    width, height = size
    low, high = rng.uniform(30, 225, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    image = (low + (high - low) * ramp[..., None]).astype(np.float32)
    for _ in range(2):
        colour = rng.uniform(0, 255, 3).tolist()
        x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        extent = int(rng.uniform(0.06, 0.18) * min(size))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), extent, colour, -1)
        else:
            cv2.rectangle(image, (x - extent, y - extent // 2), (x + extent, y + extent // 2),
                          colour, -1)
    image = cv2.GaussianBlur(image, (0, 0), 1.5)
    return image + rng.normal(0.0, 4.0, image.shape).astype(np.float32)


def _track(rng: np.random.Generator, region: tuple[float, float, float, float],
           face_size: int) -> _Track:
    """A path keeping the face square, even at its largest, inside (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = region
    wobble = rng.uniform(0.03, 0.07)
    room = np.array([x1 - x0, y1 - y0]) / 2 - face_size * (1 + wobble) / 2 - 1
    if (room < 0).any():
        raise ValueError(f"frame too small for a {face_size} px face")
    return _Track(centre=np.array([(x0 + x1) / 2, (y0 + y1) / 2]),
                  amplitude=room * rng.uniform(0.5, 0.95, 2),
                  omega=2 * np.pi / rng.uniform(1.5, 4.0, 3),
                  phase=rng.uniform(0, 2 * np.pi, 3), wobble=wobble)


def _scene(identity: int, seed: int, size: Size,
           faces: int = 1, face_px: int | None = None) -> tuple[np.ndarray, list[_Person]]:
    """Background and people of an identity's video; fakes of it reuse exactly this scene."""
    if not 0 <= identity < LFW_FACES:
        raise ValueError(f"identity must be in 0..{LFW_FACES - 1}, got {identity}")
    if faces not in (1, 2):
        raise ValueError(f"faces must be 1 or 2, got {faces}")
    width, height = size
    rng = _rng(seed, identity, _SCENE)
    background = _background(rng, size)
    # Two faces get separate halves so they never overlap; the first stays the larger one.
    split = width * (0.56 if faces == 2 else 1.0)
    face_size = round(min(height * rng.uniform(*_FACE_HEIGHT), split * 0.8))
    if face_px:  # a wide shot: a small face in a large frame. An LFW crop holds some hair and
        face_size = round(face_px / FACE_OF_SPRITE)  # background: its face (landmark box) is ~0.87 of it
    texture = _face_texture(identity, face_size, _skin_tint(identity, seed))
    people = [_Person(texture, _track(rng, (0, 0, split, height), face_size))]
    if faces == 2:
        other_size = round(min(face_size * 0.7, (width - split) * 0.85))
        other = cv2.resize(_astronaut_face(), (other_size, other_size),
                           interpolation=cv2.INTER_AREA)
        other_track = _track(_rng(seed, identity, _SECOND), (split, 0, width, height), other_size)
        people.append(_Person(other, other_track))
    return background, people


@functools.lru_cache(maxsize=8)
def _outline(size: int) -> np.ndarray:
    """Feathered oval that hides the square corners of a pasted LFW crop."""
    return _ellipse_mask(size, (0.5, 0.5), (0.47, 0.5), 0.03)


def _render(background: np.ndarray, people: list[_Person], frames: int,
            fps: float) -> Iterator[np.ndarray]:
    """Paste every person along their track onto the background, frame by frame (BGR uint8)."""
    height, width = background.shape[:2]
    # Premultiplied BGRA warps cleanly: resampling never bleeds black into the soft edge.
    sprites = []
    for person in people:
        alpha = _outline(person.texture.shape[0])[..., None]
        sprites.append((np.dstack([person.texture * alpha, alpha]), person.track))
    for index in range(frames):
        frame = background.copy()
        for sprite, track in sprites:
            (cx, cy), scale = track.at(index / fps)
            half = scale * sprite.shape[0] / 2
            warp = np.float32([[scale, 0, cx - half], [0, scale, cy - half]])
            layer = cv2.warpAffine(sprite, warp, (width, height), flags=cv2.INTER_LINEAR)
            frame = frame * (1.0 - layer[..., 3:]) + layer[..., :3]
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], size: Size,
                 fps: float) -> Path:
    """Encode next to ``path`` under a temporary name, then rename: never half a video."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
    os.close(handle)
    writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    try:
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {path}")
        for frame in frames:
            writer.write(frame)
        writer.release()  # finish the file before it gets its final name
        os.replace(temporary, path)
    finally:
        writer.release()
        Path(temporary).unlink(missing_ok=True)
    return path


def _manipulate(people: list[_Person], identity: int, seed: int,
                manipulation: str | None) -> list[_Person]:
    """Swap the first person's texture for a fake one; background and motion stay the same."""
    first = people[0]
    if manipulation is None:
        return people
    if manipulation == "FaceSwap":  # the FF++ pairing (0, 1), (2, 3), ...: identity XOR 1
        texture = _face_swap(first.texture, identity ^ 1, seed)
    elif manipulation == "LowResSwap":
        texture = _low_res_swap(first.texture, identity, identity ^ 1, seed)
    elif manipulation == "SelfBlend":
        texture = _self_blend(first.texture, identity, seed)
    elif manipulation == "MouthEdit":
        texture = _mouth_edit(first.texture, identity, seed)
    else:
        raise ValueError(f"unknown manipulation {manipulation!r}; expected one of {ALL_METHODS}")
    return [_Person(texture.astype(np.float32), first.track), *people[1:]]


def make_clip(path: str | os.PathLike, *, identity: int = 0, seed: int = 0,
              size: Size = (320, 240), seconds: float = 2.0, fps: float = 25,
              faces: int = 1, manipulation: str | None = None) -> Path:
    """Write one clip of ``identity``; ``faces=2`` adds skimage's astronaut, smaller, on the right.

    ``manipulation`` (None or one of ``ALL_METHODS``) applies to the first face. With one
    face the clip equals the matching video of :func:`make_dataset` for the same seed, size,
    length and fps: FaceSwap pairs identity with ``identity ^ 1`` as the source.
    """
    background, people = _scene(identity, seed, size, faces)
    people = _manipulate(people, identity, seed, manipulation)
    return _write_video(path, _render(background, people, round(seconds * fps), fps), size, fps)


def make_no_face_clip(path: str | os.PathLike, *, seed: int = 0, size: Size = (320, 240),
                      seconds: float = 1.0, fps: float = 25) -> Path:
    """Write a clip of background only, for the no-face code paths."""
    background = _background(_rng(seed, 0, _EMPTY), size)
    return _write_video(path, _render(background, [], round(seconds * fps), fps), size, fps)


def store_turned(source: str | os.PathLike, path: str | os.PathLike, degrees: int, *, lossless: bool = False) -> Path:
    """``source`` stored turned by ``degrees`` (90, 180, 270), with the display matrix that turns it
    back, as phones store portrait video. H.264; ``lossless``: 4:4:4 at qp 0."""
    import av

    with av.open(str(source)) as container:
        stored = [np.ascontiguousarray(np.rot90(f.to_ndarray(format="bgr24"), -degrees // 90))
                  for f in container.decode(video=0)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"} if lossless else {})
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in stored:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())
    return Path(path)


def make_dataset(out: str | os.PathLike, *, identities: int = 8, seed: int = 0,
                 size: Size = (320, 240), seconds: float = 2.0, fps: float = 25,
                 methods: Iterable[str] = METHODS, first_identity: int = 0, one_fake: bool = False,
                 variety: bool = False, face_px: int | None = None) -> list[Path]:
    """Write ``original/<id>.mp4`` and its fakes, one per method, under ``out``.

    Identities run from ``first_identity`` (even, so swap pairs stay inside the set). The swaps
    (FaceSwap, LowResSwap) pair identities (0, 1), (2, 3), ... and write both directions as
    ``<method>/<target>_<source>.mp4``; a last identity without its partner gets no swap.
    SelfBlend and MouthEdit write ``<method>/<id>.mp4``. ``one_fake``: one fake per identity,
    the methods in turn. ``variety``: see the module docstring. Returns the written paths,
    sorted. Identities 91-99 use the LFW faces MediaPipe often misses (see ``_HARD_FACES``).
    ``face_px``: faces about this many pixels tall, as Face Mesh's landmark box measures them (a
    wide shot), instead of about half the frame.
    """
    methods = tuple(methods)
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {ALL_METHODS}")
    last = first_identity + identities
    if first_identity % 2 or not 1 <= identities or last > LFW_FACES:
        raise ValueError(f"identities {first_identity}..{last - 1} must lie in 0..{LFW_FACES - 1}, starting even")
    out, frames = Path(out), round(seconds * fps)
    written = []
    for identity in range(first_identity, last):
        name = f"{identity:03d}"
        background, people = _scene(identity, seed, size, face_px=face_px)
        mine = (methods[(identity - first_identity) % len(methods)],) if one_fake else methods
        videos = {out / "original" / f"{name}.mp4": None}
        for method in mine:
            if method not in SWAPS:
                videos[out / method / f"{name}.mp4"] = method
            elif identity ^ 1 < last:
                videos[out / method / f"{name}_{identity ^ 1:03d}.mp4"] = method
        for path, manipulation in videos.items():
            fake = _manipulate(people, identity, seed, manipulation)
            rendered = _render(background, fake, frames, fps)
            written.append(_write_video(path, _graded(rendered, identity, seed) if variety else rendered, size, fps))
    return sorted(written)


def _parse_size(text: str) -> Size:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}")
    return width, height


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="dataset folder to write")
    parser.add_argument("--identities", type=int, default=8, help="number of people (1-100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_parse_size, default=(320, 240), help="WIDTHxHEIGHT")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--first-identity", type=int, default=0, help="first LFW face (even)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {','.join(ALL_METHODS)}")
    parser.add_argument("--one-fake", action="store_true", help="one fake per identity, methods in turn")
    parser.add_argument("--variety", action="store_true", help="per-identity colour grade and compression")
    parser.add_argument("--face-size", type=int, default=None,
                        help="face height in pixels, e.g. 130 in --size 1920x1080 for a wide shot")
    args = parser.parse_args(argv)
    paths = make_dataset(args.out, identities=args.identities, seed=args.seed, size=args.size,
                         seconds=args.seconds, fps=args.fps, first_identity=args.first_identity,
                         methods=[m.strip() for m in args.methods.split(",") if m.strip()],
                         one_fake=args.one_fake, variety=args.variety, face_px=args.face_size)
    counts = Counter(path.parent.name for path in paths)
    print(f"wrote {len(paths)} videos to {args.out}: "
          + ", ".join(f"{folder}={count}" for folder, count in sorted(counts.items())))


if __name__ == "__main__":
    main()
