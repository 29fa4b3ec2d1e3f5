"""The on-disk layout of extracted data, shared by `extract` and the readers (no heavy imports).

FaceForensics++'s: `OUT/<folder>/<video>_<i>.jpg|.npy`, where `original` holds the real videos
and every other folder is a manipulation method.
"""

from pathlib import Path

REAL_FOLDERS = ("original",)
META_DIR = ".deepfake"  # OUT/.deepfake/: extract's settings (extract.json), manifests, landmark sidecars
LANDMARKS_DIR = "landmarks"  # OUT/.deepfake/landmarks/<folder>/<video>.npy: each crop's 468 Face Mesh points


def landmarks_path(out: Path, folder: str, video: str) -> Path:
    """Where a video's landmark sidecar lives: float16 (frames, 468, 2), crop pixels, row i for `<video>_i.jpg`.

    A label folder linked in from another extract is looked up where it really lives.
    """
    real = (out / folder).resolve()
    return real.parent / META_DIR / LANDMARKS_DIR / real.name / f"{video}.npy"


def labels_path(out: Path) -> Path:
    """OUT/.deepfake/labels.json: {"labels": {folder: 0 real | 1 fake}, "made_on": {fake key: real key}}, as extract
    read them from the dataset's layout."""
    return out / META_DIR / "labels.json"
