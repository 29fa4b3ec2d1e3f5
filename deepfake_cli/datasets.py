"""The datasets as they download, read without renaming anything: which video goes to which label folder.

Each layout maps a dataset's tree to `extract`'s jobs: the label folder in OUT (real or a
manipulation method), the video id, its label, and, where the dataset says so, the real
video a fake was made from (`made_on`, for the identity split and `--pairs`).

- FaceForensics++ (`original_sequences/`, `manipulated_sequences/`): the real videos of
  `youtube` and `actors` go to `original`, each method's fakes to the method's name
  (Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter, DeepFakeDetection);
  `compression` picks raw, c23 or c40 where several were downloaded.
- Celeb-DF v1/v2 (`Celeb-real/`, `YouTube-real/`, `Celeb-synthesis/`): folders kept, the
  first two real.
- DFDC (`dfdc_train_part_N/` or one such folder, each with `metadata.json`): real videos to
  `DFDC_real`, fakes to `DFDC`, each fake with the `original` its metadata names.
- Anything else: one level of label folders (`original` real), or loose videos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from deepfake_cli.errors import DeepfakeError
from deepfake_cli.video import VIDEO_SUFFIXES

COMPRESSIONS = ("raw", "c23", "c40")
CELEB_REAL = ("Celeb-real", "YouTube-real")
DFDC_REAL, DFDC_FAKE = "DFDC_real", "DFDC"


@dataclass(frozen=True)
class VideoJob:
    source: Path
    folder: str  # label folder in OUT
    video: str  # file stem: the video id of the reference layout
    label: int | None  # 0 real, 1 fake, as the dataset says; None: the label folder's name decides, when read
    made_on: str | None = None  # OUT key of the real video this fake was made from, where the dataset records it

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.video}"


def find_videos(videos: Path, compression: str | None = None) -> tuple[str, list[VideoJob]]:
    """The layout `videos` is in and its videos: a file, a folder of videos, a folder of label
    folders, or one of the datasets above."""
    if not videos.exists():
        raise DeepfakeError(f"{videos}: no such file or folder; pass a video or a folder of videos")
    if compression is not None and compression not in COMPRESSIONS:
        raise DeepfakeError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    if videos.is_file():
        return "file", [_job(videos, videos.resolve().parent.name)]
    for name, matches, read in LAYOUTS:
        if matches(videos):
            if compression is not None and name != "FaceForensics++":
                raise DeepfakeError(f"--compression picks FaceForensics++'s raw, c23 or c40; {videos} is laid out "
                                    f"as {name}: leave it out")
            jobs = read(videos, compression) if name == "FaceForensics++" else read(videos)
            if not jobs:
                raise DeepfakeError(f"{videos}: laid out as {name}, but no videos ({_suffixes()}) were found in it")
            return name, jobs
    raise AssertionError("the plain layout matches every folder")


def _job(path: Path, folder: str, real: bool | None = None, made_on: str | None = None) -> VideoJob:
    return VideoJob(path, folder, path.stem, None if real is None else int(not real), made_on)


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) if folder.is_dir() else []


def _suffixes() -> str:
    return " ".join(sorted(VIDEO_SUFFIXES))


# ---- FaceForensics++ ------------------------------------------------------------------------


def _is_ffpp(root: Path) -> bool:
    return (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir()


def _read_ffpp(root: Path, compression: str | None) -> list[VideoJob]:
    # (OUT folder, real, the folder holding <c>/videos)
    sources = [("original", True, d) for d in _subdirs(root / "original_sequences")]
    sources += [(d.name, False, d) for d in _subdirs(root / "manipulated_sequences")]
    found = {c for _, _, d in sources for c in COMPRESSIONS if (d / c / "videos").is_dir()}
    if not found:
        raise DeepfakeError(f"{root}: FaceForensics++'s folders hold no raw/, c23/ or c40/ videos/; pass the folder "
                            "its download script wrote into")
    if compression is None:
        if len(found) > 1:
            have = " and ".join(c for c in COMPRESSIONS if c in found)
            raise DeepfakeError(f"{root} holds FaceForensics++ at {have}; pass --compression to pick one")
        compression = found.pop()
    elif compression not in found:
        raise DeepfakeError(f"--compression {compression}: {root} holds FaceForensics++ at "
                            f"{', '.join(c for c in COMPRESSIONS if c in found)} only")
    return [_job(p, folder, real) for folder, real, d in sources for p in _videos_in(d / compression / "videos")]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")) if folder.is_dir() else []


# ---- Celeb-DF -------------------------------------------------------------------------------


def _is_celeb_df(root: Path) -> bool:
    return (root / "Celeb-synthesis").is_dir() or (root / "Celeb-real").is_dir()


def _read_celeb_df(root: Path) -> list[VideoJob]:
    return [_job(p, d.name, d.name in CELEB_REAL) for d in _subdirs(root) for p in _videos_in(d)
            if d.name in (*CELEB_REAL, "Celeb-synthesis")]


# ---- DFDC -----------------------------------------------------------------------------------


def _dfdc_parts(root: Path) -> list[Path]:
    return [d for d in [root, *_subdirs(root)] if (d / "metadata.json").is_file()]


def _read_dfdc(root: Path) -> list[VideoJob]:
    jobs = []
    for part in _dfdc_parts(root):
        try:
            metadata = json.loads((part / "metadata.json").read_text())
            entries = {name: (entry["label"].upper(), entry.get("original")) for name, entry in metadata.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise DeepfakeError(f"{part / 'metadata.json'}: not DFDC metadata (a JSON object of video -> "
                                "{\"label\": \"REAL\"|\"FAKE\", \"original\": ...})") from None
        for path in _videos_in(part):
            label, original = entries.get(path.name, (None, None))
            if label == "REAL":
                jobs.append(_job(path, DFDC_REAL, True))
            elif label == "FAKE":
                made_on = f"{DFDC_REAL}/{Path(original).stem}" if original else None
                jobs.append(_job(path, DFDC_FAKE, False, made_on))
            # a video metadata.json does not name has no label: it is left out
    return jobs


# ---- the layout extract always read -----------------------------------------------------------


def _read_plain(root: Path) -> list[VideoJob]:
    jobs = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            jobs += [_job(p, entry.name) for p in _videos_in(entry)]
        elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:  # loose videos go to a folder named after VIDEOS
            jobs.append(_job(entry, root.resolve().name))
    if not jobs:
        if root.name in ("original_sequences", "manipulated_sequences") or root.parent.name.endswith("_sequences"):
            raise DeepfakeError(f"{root} is part of a FaceForensics++ download: pass the folder that holds "
                                "original_sequences/ and manipulated_sequences/")
        raise DeepfakeError(f"{root}: no videos found ({_suffixes()}) in it or in its sub-folders")
    return jobs


LAYOUTS = (
    ("FaceForensics++", _is_ffpp, _read_ffpp),
    ("Celeb-DF", _is_celeb_df, _read_celeb_df),
    ("DFDC", lambda root: bool(_dfdc_parts(root)), _read_dfdc),
    ("label folders", lambda root: True, _read_plain),
)
