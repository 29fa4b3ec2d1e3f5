"""Extracted data on disk: the videos of an `extract` OUT folder (ours or the reference
preprocessing's), their files checked, and the crop and sampling they were cut with."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deepfake_cli.crop import REFERENCE_CROP, CropSpec
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import atomic_write
from deepfake_cli.inputs import InputSpec, SamplingSpec
from deepfake_cli.layout import META_DIR, REAL_FOLDERS, labels_path
from deepfake_cli.video import VIDEO_SUFFIXES

log = logging.getLogger(__name__)


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
                            "run `deepfake extract` first, or lower --frames")
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


def load_vectors(root: Path, sample: Sample, seq_len: int) -> np.ndarray:
    return np.stack([np.load(sample.stem(root, i).with_suffix(".npy")) for i in range(seq_len)]).astype(np.float32)


def load_frames(root: Path, sample: Sample, inputs: InputSpec, cache_dir: Path | None = None) -> np.ndarray:
    """(T, S, S, 3) uint8 BGR: the video's crops as the model takes them. With `cache_dir`, each video's
    decoded, resized frames are stored once as .npy and memory-mapped on later reads."""
    cached = cache_dir / f"{sample.folder}__{sample.video}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached, mmap_mode="r")
    crops = []
    for i in range(inputs.seq_len):
        path = sample.stem(root, i).with_suffix(".jpg")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DeepfakeError(f"{path}: unreadable image")
        crops.append(image)
    frames = inputs.frames(crops)
    if cached is not None:
        atomic_write(cached, lambda f: np.save(f, frames))
    return frames
