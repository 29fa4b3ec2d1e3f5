"""Reading extracted data (ours or the reference preprocessing's) for training and evaluation."""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.faces import REFERENCE_CROP, CropSpec
from deepfake_cli.files import atomic_write
from deepfake_cli.inputs import InputSpec, SamplingSpec
from deepfake_cli.layout import META_DIR, REAL_FOLDERS, labels_path, landmarks_path
from deepfake_cli.selfblend import SelfBlend
from deepfake_cli.video import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

PAIR_GROUP_MOST = 32  # videos in one --pairs group at most (pair_groups)


@dataclass(frozen=True, order=True)
class Sample:
    folder: str  # label folder: a manipulation method, or a real folder
    video: str  # video id: the file stem before the last underscore
    label: int  # 0 real, 1 fake
    made_on: str | None = field(default=None, compare=False)  # the real video's key, where the dataset recorded it

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.video}"

    @property
    def made_on_video(self) -> str | None:
        """The id of the real video this one was made on, where the dataset recorded it."""
        return self.made_on.split("/", 1)[-1] if self.made_on else None

    def stem(self, root: Path, i: int) -> Path:
        return root / self.folder / f"{self.video}_{i}"


def scan(root: Path, seq_len: int, real_folders: tuple[str, ...] | None = None,
         fallback: tuple[str, ...] = REAL_FOLDERS) -> list[Sample]:
    """Videos with frames 0..seq_len-1 under root/<folder>/. Files and hidden folders at the top are ignored.

    A folder's label: real if it is one of `real_folders` when they are given; else as `extract`
    read it from the dataset's layout (labels.json); else real if it is one of `fallback`.
    """
    if not root.is_dir():
        raise DeepfakeError(f"{root}: no such folder; pass the OUT folder of `deepfake extract`")
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames: dict[str, set[int]] = {}
        for path in folder.glob("*.jpg"):
            video, _, index = path.stem.rpartition("_")
            if video and index.isdigit():
                frames.setdefault(video, set()).add(int(index))
        recorded, named = _recorded_labels(folder), folder.resolve().name  # a linked folder: by its real name
        if real_folders is not None:
            label = int(folder.name not in real_folders)
        else:
            label = recorded["labels"].get(named, int(folder.name not in fallback))
        samples += [Sample(folder.name, v, label, recorded["made_on"].get(f"{named}/{v}"))
                    for v, idx in frames.items() if idx.issuperset(range(seq_len))]
    if not samples:
        if next((p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES), None) is not None:
            raise DeepfakeError(f"{root} holds videos, not extracted faces: run `deepfake extract {root} OUT` first, "
                                "then use OUT")
        raise DeepfakeError(f"{root}: no video with {seq_len} frames (<video>_0.jpg .. _{seq_len - 1}.jpg in label folders); "
                            "run `deepfake extract` first, or lower --seq-len")
    return sorted(samples)


def _recorded_labels(folder: Path) -> dict:
    """What extract recorded of a label folder's dataset (labels.json beside it, or where a linked folder lives)."""
    path = labels_path(folder.resolve().parent)
    try:
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        return {"labels": dict(recorded.get("labels", {})), "made_on": dict(recorded.get("made_on", {}))}
    except (OSError, ValueError, TypeError):
        raise DeepfakeError(f"{path}: unreadable; run `deepfake extract` into that folder again") from None


def check_samples(root: Path, samples: list[Sample], seq_len: int, skip_bad: bool) -> list[Sample]:
    """Up-front check of every file a sample will read, so a bad file fails now and by name.

    Cheap: .npy headers and values, JPEG start/end markers (a truncated JPEG lacks its end).
    """
    good = []
    for sample in samples:
        problem = next((p for i in range(seq_len) if (p := _file_problem(sample.stem(root, i)))), None)
        if problem is None:
            good.append(sample)
        elif skip_bad:
            log.warning("skipping %s: %s", sample.key, problem)
        else:
            raise DeepfakeError(f"{problem}; fix or delete that video's files, or pass --skip-bad to leave such videos out")
    if not good:
        raise DeepfakeError(f"{root}: every video had a bad file; see the warnings above")
    return good


def _file_problem(stem: Path) -> str | None:
    jpg, npy = stem.with_suffix(".jpg"), stem.with_suffix(".npy")
    if not npy.is_file():
        return f"{npy}: missing (every .jpg needs its landmark .npy)"
    try:
        vector = np.load(npy)
    except (ValueError, OSError) as e:
        return f"{npy}: unreadable ({e})"
    if vector.shape != (5,) or not np.isfinite(vector).all():
        return f"{npy}: expected 5 finite landmark distances, got shape {vector.shape}"
    with open(jpg, "rb") as f:
        head = f.read(2)
        f.seek(max(0, jpg.stat().st_size - 2))
        tail = f.read(2)
    if head != b"\xff\xd8" or tail != b"\xff\xd9":
        return f"{jpg}: not a complete JPEG image"
    return None


def _extract_records(root: Path, folders: set[str]) -> dict[str, dict | None]:
    """Each label folder's OUT/.deepfake/extract.json (None: none, as in the reference preprocessing's data).

    A label folder linked in from another extract is looked up where it really lives.
    """
    found = {}
    for folder in sorted(folders):
        record = (root / folder).resolve().parent / META_DIR / "extract.json"
        try:
            found[folder] = json.loads(record.read_text()) if record.is_file() else None
        except (OSError, ValueError):
            raise DeepfakeError(f"{record}: unreadable extract settings; re-run `deepfake extract` into that folder") from None
    return found


def data_crop(root: Path, folders: set[str], given: CropSpec | None = None) -> tuple[CropSpec, str]:
    """The crop `root`'s label folders were cut with, and where that came from.

    `extract` records it in OUT/.deepfake/extract.json. Data without a record was written by the
    reference preprocessing (landmark box + 20 px, stretched), unless `given` says otherwise.
    """
    found = {}
    for folder, record in _extract_records(root, folders).items():
        try:
            found[folder] = CropSpec(**record["crop"]) if record is not None else None
        except (KeyError, TypeError, ValueError):
            raise DeepfakeError(f"{root / folder}: its extract.json has no usable crop; re-run `deepfake extract` "
                                "into that folder") from None
    crops = set(found.values())
    if len(crops) > 1:
        cut = "; ".join(f"{folder}: {crop.describe() if crop else 'no extract.json'}" for folder, crop in found.items())
        raise DeepfakeError(f"{root}: its folders were cut differently ({cut}); extract them again with the same "
                            "--margin and --size")
    recorded = crops.pop()
    if recorded is None:
        return (given, "--crop") if given else (REFERENCE_CROP, "no extract.json: the reference preprocessing's")
    if given is not None and given != recorded:
        raise DeepfakeError(f"--crop: {root} was extracted with {recorded.describe()}; leave --crop out")
    return recorded, "extract.json"


def data_sampling(root: Path, folders: set[str]) -> SamplingSpec:
    """How `root`'s videos were sampled: extract's segments (as many as its --frames), or, without an
    extract.json, the reference preprocessing's first faces. Folders sampled differently are refused."""
    found = {folder: SamplingSpec("segments", record.get("frames")) if record else SamplingSpec("reference")
             for folder, record in _extract_records(root, folders).items()}
    if len(set(found.values())) > 1:
        kinds = "; ".join(f"{folder}: {s.rule}{f' of {s.frames}' if s.frames else ''}" for folder, s in found.items())
        raise DeepfakeError(f"{root}: its folders were sampled differently ({kinds}); extract them again with the "
                            "same --frames")
    return next(iter(found.values()))


# ---- splitting without identity leakage ------------------------------------------------------


DFD_REAL = re.compile(r"(\d+)__\w+")  # DeepFakeDetection's actors: `01__kitchen_pan` is actor 01
DFD_FAKE = re.compile(r"(\d+)_(\d+)__(\w+)__[A-Za-z0-9]+")  # `01_02__kitchen_pan__YVGY8LOK`: 02's face on 01's video


def identity_tokens(video: str) -> frozenset[str]:
    """The people in a video, from its id.

    FaceForensics++: `033` is person 033; the fake `033_097` shows 033 and 097.
    DeepFakeDetection: `01__kitchen_pan` is actor 01; `01_02__kitchen_pan__YVGY8LOK` shows actors 01 and 02.
    Celeb-DF: `id0_0003` is person id0; `id0_id16_0003` shows id0 and id16.
    Anything else: the video is its own identity.
    """
    if fake := DFD_FAKE.fullmatch(video):
        return frozenset({f"actor{fake[1]}", f"actor{fake[2]}"})
    if real := DFD_REAL.fullmatch(video):
        return frozenset({f"actor{real[1]}"})
    parts = video.split("_")
    if all(p.isdigit() for p in parts):
        return frozenset(parts)
    people = [p for p in parts if re.fullmatch(r"id\d+", p)]
    return frozenset(people) if people else frozenset([video])


def made_on(video: str) -> str:
    """The real video a fake was made on, from its id (a real video's is its own).

    FaceForensics++: `033_097` is 097's face on 033's video `033`. DeepFakeDetection:
    `01_02__kitchen_pan__YVGY8LOK` is made on `01__kitchen_pan`. Celeb-DF: `id0_id16_0003` is
    id16's face on `id0_0003`. Anything else (a SelfBlend `033`): the video of the same id.
    """
    if fake := DFD_FAKE.fullmatch(video):
        return f"{fake[1]}__{fake[3]}"
    parts = video.split("_")
    if len(parts) > 1 and all(p.isdigit() for p in parts):
        return parts[0]
    if len(parts) == 3 and re.fullmatch(r"id\d+", parts[0]) and re.fullmatch(r"id\d+", parts[1]):
        return f"{parts[0]}_{parts[2]}"
    return video


def identity_groups(samples: list[Sample]) -> list[list[Sample]]:
    """Videos grouped so that those sharing a person are together (union-find over identities)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def people(s: Sample) -> frozenset[str]:  # with the people of the real video it was made on, where recorded
        return identity_tokens(s.video) | (identity_tokens(s.made_on_video) if s.made_on else frozenset())

    for s in samples:
        first, *rest = sorted(people(s))
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(find(min(people(s))), []).append(s)
    return [groups[g] for g in sorted(groups)]


def identity_split(samples: list[Sample], val_fraction: float, seed: int) -> dict[str, list[Sample]]:
    """Split so that videos sharing a person land on the same side."""
    order = identity_groups(samples)
    random.Random(seed).shuffle(order)
    val, target = [], val_fraction * len(samples)
    for group in order:
        if len(val) >= target:
            break
        val += group
    val_keys = {s.key for s in val}
    return {"train": [s for s in samples if s.key not in val_keys], "val": sorted(val)}


def pair_groups(samples: list[Sample], most: int = PAIR_GROUP_MOST) -> list[list[int]]:
    """Indices of `samples` in the groups --pairs batches together and augments alike.

    A group is the people a fake shows with all their videos (`identity_groups`): FaceForensics++'s
    `000_003` with `003_000`, `000` and `003`, so a swap sits beside the real video it was made on
    and the real video of the face it carries. Where swaps chain many people into one group (as in
    Celeb-DF), a group of more than `most` videos is cut into each real video with the fakes made
    on it (`made_on`).
    """
    index = {s.key: i for i, s in enumerate(samples)}
    groups = []
    for group in identity_groups(samples):
        if len(group) <= most:
            groups.append([index[s.key] for s in group])
            continue
        by_video: dict[str, list[int]] = {}
        for s in group:
            by_video.setdefault(s.made_on_video or made_on(s.video), []).append(index[s.key])
        groups += by_video.values()
    return groups


SPLIT_PARTS = ("train", "val", "test")


def read_split_file(path: Path, samples: list[Sample], flag: str = "--split-file") -> dict[str, list[Sample]]:
    """A JSON object {"train": [...], "val": [...], "test": [...]} ("test" optional), or a Celeb-DF test
    list (`read_test_list`), which gives "test" alone.

    Entries are video ids (`033`, `033_097`), folder-qualified keys (`Deepfakes/033_097`), or
    FaceForensics++ pairs (`["033", "097"]`: the real videos and both fakes of the pair).
    Any other key, or a part that is not such a list, is refused: a typo must not quietly
    leave a part out.
    """
    if path.suffix == ".txt":
        return {"test": read_test_list(path, samples, flag)}
    shape = "a JSON object with 'train' and 'val' (and optionally 'test') lists of video ids"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DeepfakeError(f"{flag} {path}: not a readable JSON file; expected {shape}") from None
    if not isinstance(spec, dict) or not {"train", "val"} <= set(spec):
        raise DeepfakeError(f"{flag} {path}: expected {shape}")
    unknown = sorted(set(spec) - set(SPLIT_PARTS))
    if unknown:
        raise DeepfakeError(f"{flag} {path}: unknown key {', '.join(map(repr, unknown))}; the keys are train, val and test")
    split: dict[str, list[Sample]] = {}
    for name, entries in spec.items():
        if not isinstance(entries, list) or not all(_split_entry(e) for e in entries):
            raise DeepfakeError(f"{flag} {path}: '{name}' must be a list of video ids (\"033\"), keys "
                                "(\"Deepfakes/033_097\") or pairs ([\"033\", \"097\"])")
        wanted = set()
        for e in entries:
            if isinstance(e, list):
                wanted |= {*e, "_".join(e), "_".join(reversed(e))}
            else:
                wanted.add(e)
        split[name] = [s for s in samples if s.video in wanted or s.key in wanted]
    return split


def read_test_list(path: Path, samples: list[Sample], flag: str) -> list[Sample]:
    """Celeb-DF's List_of_testing_videos.txt: lines `<1 real | 0 fake> <folder>/<video>.mp4`."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        raise DeepfakeError(f"{flag} {path}: unreadable; expected Celeb-DF's List_of_testing_videos.txt") from None
    keys = {str(Path(line[1]).with_suffix("")) for line in lines if len(line) == 2 and line[0] in ("0", "1")}
    if not keys or len(keys) < len(lines):
        raise DeepfakeError(f"{flag} {path}: expected lines '<1|0> <folder>/<video>.mp4', as Celeb-DF's "
                            "List_of_testing_videos.txt has them")
    return [s for s in samples if s.key in keys]


def _split_entry(entry) -> bool:
    return isinstance(entry, str) or (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry))


def describe_split(split: dict[str, list[Sample]]) -> dict[str, dict[str, int]]:
    return {name: {"real": sum(s.label == 0 for s in part), "fake": sum(s.label == 1 for s in part)}
            for name, part in split.items()}


def method_counts(samples: list[Sample]) -> Counter:
    return Counter(s.folder for s in samples)


# ---- loading sequences -----------------------------------------------------------------------


def load_vectors(root: Path, sample: Sample, seq_len: int) -> np.ndarray:
    return np.stack([np.load(sample.stem(root, i).with_suffix(".npy")) for i in range(seq_len)]).astype(np.float32)


def augment(frames: np.ndarray, vectors: np.ndarray, rng: np.random.Generator,
            masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Augment a (T, H, W, 3) uint8 sequence with one draw for all its frames.

    Per-frame draws would make frames flicker, a temporal artefact the LSTM could learn.
    `masks`, (T, H, W) float32 if given (where a self-blend was blended), are mirrored and
    cropped with the frames, and returned third (else None).
    """
    t, h, w, _ = frames.shape
    flip = rng.random() < 0.5
    if flip:  # mirror: left and right eye-to-mouth distances swap places
        frames = frames[:, :, ::-1]
        vectors = vectors[:, [0, 1, 2, 4, 3]]
    scale = rng.uniform(0.9, 1.0)  # crop jitter
    ch, cw = int(h * scale), int(w * scale)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    if masks is not None:
        masks = masks[:, :, ::-1] if flip else masks
        masks = np.stack([cv2.resize(np.ascontiguousarray(m[y:y + ch, x:x + cw]), (w, h)) for m in masks])
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, size=3)  # contrast and colour
    shift = rng.uniform(-20, 20)  # brightness
    quality = int(rng.integers(40, 96)) if rng.random() < 0.5 else None  # re-compression
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


class SequenceDataset(Dataset):
    """(frames, vectors, label) per video: (T, 3, S, S) uint8 BGR, (T, 5) float32 raw distances, float.

    Normalisation happens on the model's device (`InputSpec.images`), so only uint8 crosses
    the bus. With `cache_dir`, each video's decoded, resized frames are stored once as .npy and
    memory-mapped on later epochs instead of decoding T JPEGs again.
    """

    def __init__(self, root: Path, samples: list[Sample], inputs: InputSpec, augment: bool = False,
                 cache_dir: Path | None = None):
        self.root, self.samples, self.inputs = root, samples, inputs
        self.augment, self.cache_dir = augment, cache_dir
        self.shared_draws: dict[int, int] | None = None  # index -> whose augmentation draw it shares

    def __len__(self) -> int:
        return len(self.samples)

    def frames(self, sample: Sample) -> np.ndarray:
        """(T, S, S, 3) uint8 BGR."""
        cached = self.cache_dir / f"{sample.folder}__{sample.video}.npy" if self.cache_dir else None
        if cached is not None and cached.is_file():
            return np.load(cached, mmap_mode="r")
        crops = []
        for i in range(self.inputs.seq_len):
            path = sample.stem(self.root, i).with_suffix(".jpg")
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise DeepfakeError(f"{path}: unreadable image")
            crops.append(image)
        frames = self.inputs.frames(crops)
        if cached is not None:
            atomic_write(cached, lambda f: np.save(f, frames))
        return frames

    def __getitem__(self, key: int | tuple[int, int, int]):
        """`key`: an index, or (index, seed, epoch) to draw this video's augmentation from its own stream
        (the same in any worker process, and again on --resume)."""
        index, *draw = key if isinstance(key, tuple) else (key,)
        sample = self.samples[index]
        return self.item(self.frames(sample), load_vectors(self.root, sample, self.inputs.seq_len), sample.label,
                         [*draw, self.shared_draws[index] if self.shared_draws else index] if draw else None)

    def item(self, frames: np.ndarray, vectors: np.ndarray, label: int, stream: list[int] | None,
             masks: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
        """The sequence as the model takes it, augmented (when on) by a draw from `stream`; with `masks`,
        those too, augmented alike, as a fourth item."""
        if self.augment:
            frames, vectors, masks = augment(frames, vectors, np.random.default_rng(stream), masks)
        images = torch.from_numpy(np.require(frames, requirements=["C", "W"])).permute(0, 3, 1, 2)  # (T, 3, S, S)
        item = images, torch.from_numpy(vectors), torch.tensor(float(label))
        return item if masks is None else (*item, torch.from_numpy(masks))


class SelfBlendDataset(SequenceDataset):
    """Real videos twice over: item 2i is video i as itself (label 0), item 2i+1 its self-blend (label 1).

    The pair shares its augmentation draw, so the two differ by the blend (as in the paper) and, in
    training, for half the pairs by the real video's own alteration over the whole frame, as a blend
    alters its copy (`SelfBlend.alter_whole`): still real, so that only a blend's seams tell them apart.
    With `mask_grid`, each item has a fourth part, (T, grid, grid) float32: the share of every
    cell that was blended (zero for the real video), the target of training's mask head.
    Masks come from the landmark sidecars `extract` writes; a video without one gets the ellipse
    its crop implies (`selfblend.crop_mask`). Without a (seed, epoch) key, every video's blend is
    the same each time: a fixed validation set.
    """

    def __init__(self, root: Path, samples: list[Sample], inputs: InputSpec, augment: bool = False,
                 cache_dir: Path | None = None):
        super().__init__(root, samples, inputs, augment, cache_dir)
        self.recipe = SelfBlend(inputs.crop)
        self.mask_grid: int | None = None  # set: items carry each frame's mask as the mean over grid x grid cells
        self.has_landmarks = [self._sidecar(s) is not None for s in samples]  # headers only: no landmarks read

    def __len__(self) -> int:
        return 2 * len(self.samples)

    def _sidecar(self, sample: Sample) -> np.ndarray | None:
        """The video's landmark sidecar, memory-mapped, or None when it is missing or does not fit."""
        try:
            points = np.load(landmarks_path(self.root, sample.folder, sample.video), mmap_mode="r")
        except (OSError, ValueError):
            return None
        fits = points.ndim == 3 and points.shape[0] >= self.inputs.seq_len and points.shape[1:] == (468, 2)
        return points if fits else None

    def landmarks(self, sample: Sample) -> np.ndarray | None:
        """(T, 468, 2) float32 in the pixels of the resized frames, or None without a usable sidecar."""
        points = self._sidecar(sample)
        if points is None:
            return None
        return points[:self.inputs.seq_len].astype(np.float32) * (self.inputs.image_size / self.inputs.crop.size)

    def _blend(self, sample: Sample, frames: np.ndarray, stream: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The video's self-blend and masks, drawn from `stream` + [1] (the pair's augmentation draws from `stream`)."""
        return self.recipe(frames, self.landmarks(sample), np.random.default_rng([*stream, 1]))

    def __getitem__(self, key: int | tuple[int, int, int]):
        index, *draw = key if isinstance(key, tuple) else (key,)
        video, fake = divmod(index, 2)
        sample = self.samples[video]
        frames = self.frames(sample)
        stream = [*draw, video]  # (seed, epoch, video), or (video,) for the fixed validation blends
        masks = None
        if fake:
            frames, masks = self._blend(sample, frames, stream)
        elif draw:  # training's real videos: some altered over the whole frame, so that only a blend's seams tell
            frames = self.recipe.alter_whole(frames, np.random.default_rng([*stream, 2]))
        return self.masked_item(frames, load_vectors(self.root, sample, self.inputs.seq_len), fake, stream, masks)

    def masked_item(self, frames: np.ndarray, vectors: np.ndarray, label: int, stream: list[int],
                    masks: np.ndarray | None, unknown: bool = False) -> tuple[torch.Tensor, ...]:
        """`item`, and with a mask grid each frame's share of every cell that was blended: `masks` pooled,
        zero where nothing was (`masks` None), or -1 throughout where it is not known (`unknown`)."""
        g = self.mask_grid
        if not g:
            return self.item(frames, vectors, label, stream)
        if masks is None:
            fill = -1.0 if unknown else 0.0
            return (*self.item(frames, vectors, label, stream), torch.full((len(frames), g, g), fill))
        *item, masks = self.item(frames, vectors, label, stream, masks)
        cells = np.stack([cv2.resize(m, (g, g), interpolation=cv2.INTER_AREA) for m in masks.numpy()])
        return (*item, torch.from_numpy(cells))

    def example(self, video: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A video's first frame, its mask and its blend, as training draws them (without the shared augmentation)."""
        sample = self.samples[video]
        frames = self.frames(sample)
        fakes, masks = self._blend(sample, frames, [seed, 1, video])  # epoch 1's stream
        return np.asarray(frames[0]), masks[0], fakes[0]


BLEND_FOLDER = "self-blend"  # the pseudo-folder of the self-blends MixedDataset adds (nothing on disk)


class MixedDataset(SelfBlendDataset):
    """Supervised training with self-blends mixed in: every training video as itself (as
    `SequenceDataset` gives it), then each real video's self-blend as one more fake.

    The blends are listed in `samples` under BLEND_FOLDER with `made_on` their real video, so the
    identity groups of `--pairs` put each beside its real video, sharing its augmentation draw.
    Training's real videos are altered over the whole frame as in `SelfBlendDataset`, half of them.
    With a mask grid, blends carry their cells, real videos zeros, and the dataset's own fakes -1
    (where they were manipulated is not known: no mask loss on them).
    """

    def __init__(self, root: Path, samples: list[Sample], inputs: InputSpec, augment: bool = False,
                 cache_dir: Path | None = None):
        self.base = list(samples)
        self.reals = [s for s in samples if s.label == 0]
        super().__init__(root, self.reals, inputs, augment, cache_dir)
        self.samples = self.base + [Sample(BLEND_FOLDER, s.video, 1, s.key) for s in self.reals]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int, int]):
        index, *draw = key if isinstance(key, tuple) else (key,)
        stream = [*draw, self.shared_draws[index] if self.shared_draws else index]
        if index >= len(self.base):  # a real video's self-blend
            sample = self.reals[index - len(self.base)]
            frames, masks = self._blend(sample, self.frames(sample), stream)
            return self.masked_item(frames, load_vectors(self.root, sample, self.inputs.seq_len), 1, stream, masks)
        sample = self.base[index]
        frames = self.frames(sample)
        if sample.label == 0 and draw:  # as SelfBlendDataset alters training's real videos
            frames = self.recipe.alter_whole(frames, np.random.default_rng([*stream, 2]))
        return self.masked_item(frames, load_vectors(self.root, sample, self.inputs.seq_len), sample.label, stream,
                                None, unknown=sample.label == 1)


class PairedSampler(Sampler):
    """Wraps a sampler over videos: yields 2i, 2i+1 for each video i it yields (a `SelfBlendDataset`'s pair),
    so each batch of an even size is half real, half self-blended."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return (2 * i + fake for i in self.sampler for fake in (0, 1))

    def __len__(self) -> int:
        return 2 * len(self.sampler)


class GroupedSampler(Sampler):
    """Each epoch, the groups in random order and each group's videos shuffled, one group after another.

    With `pair_groups`, a batch holds a fake beside the real videos of the people it shows
    (FaceForensics++ and Celeb-DF fakes keep the real video's scene and motion). With several
    processes, each takes its own stretch of the one order (every rank's generator is seeded
    alike), padded from the start to equal lengths as `DistributedSampler` pads.
    """

    def __init__(self, groups: list[list[int]], generator: torch.Generator, rank: int = 0, world: int = 1):
        self.groups, self.generator, self.rank, self.world = groups, generator, rank, world

    def __iter__(self):
        order = []
        for g in torch.randperm(len(self.groups), generator=self.generator).tolist():
            group = self.groups[g]
            order += [group[i] for i in torch.randperm(len(group), generator=self.generator).tolist()]
        share = len(self)
        order += order[:share * self.world - len(order)]
        return iter(order[self.rank * share:(self.rank + 1) * share])

    def __len__(self) -> int:
        return math.ceil(sum(map(len, self.groups)) / self.world)


def loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device, sampler: Sampler | None = None,
           persistent: bool = False) -> DataLoader:
    """The one way data is loaded for the model (training, validation, evaluate).

    Worker processes are forked, and OpenCV is set to one thread in this process first: a
    fork inherits OpenCV's thread pool without its threads, and OpenCV in the child could
    then wait forever on a lock no thread will release (seen after extract ran in the same
    process). With one thread there is no pool to inherit, and a worker, one of several
    processes, should not start a thread per core anyway. (Not forkserver or spawn: they run
    the caller's script again in every worker unless it has an `if __name__ == "__main__"`
    guard.) The loader has its own generator: it draws a seed each time an epoch starts a
    fresh iterator, which from the global RNG would shift dropout's draws with the number of
    workers.
    """
    if workers:
        cv2.setNumThreads(1)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                      persistent_workers=persistent and workers > 0, generator=torch.Generator())
