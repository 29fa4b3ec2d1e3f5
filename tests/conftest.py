"""Shared, session-scoped real data: generated videos -> real MediaPipe extraction -> a real tiny run.

Tiny sizes keep the suite fast; nothing is mocked.
"""

import os
import shutil
from pathlib import Path

import pytest

from deepfake_cli.memory import sets_malloc
from make_dataset import make_clip, make_dataset, make_no_face_clip

FRAMES = 8  # frames extracted per video in the tests (the CLI default is 16)
SEQ_LEN = 4  # frames the tiny models see
IMAGE_SIZE = 32  # smallest side the backbone accepts


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """FF++ layout: original/000..005, FaceSwap/<a>_<b>, SelfBlend/<a>; 1.6 s at 25 fps, 320x240."""
    root = tmp_path_factory.mktemp("videos")
    make_dataset(root, identities=6, seed=0, seconds=1.6)
    return root


@pytest.fixture(scope="session")
def extracted(videos, tmp_path_factory) -> Path:
    from deepfake_cli.extract import ExtractConfig, extract

    out = tmp_path_factory.mktemp("extracted")
    summary = extract(videos, out, ExtractConfig(frames=FRAMES, workers=1))
    assert summary.count("ok") >= 15, summary.rows
    return out


def tiny_config(data: Path, run: Path, **overrides):
    from deepfake_cli.train import TrainConfig

    settings = dict(data=data, run=run, epochs=1, batch_size=4, seq_len=SEQ_LEN, image_size=IMAGE_SIZE,
                    pretrained=False, workers=0, seed=0, epoch_size=0)  # one pass: the default's passes are tested apart
    return TrainConfig(**(settings | overrides))


@pytest.fixture(scope="session")
def trained_run(extracted, tmp_path_factory) -> Path:
    from deepfake_cli.train import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(extracted, run, epochs=2))
    return run


@pytest.fixture(scope="session")
def lite0_run(extracted, tmp_path_factory) -> Path:
    """A tiny run of the offline default: EfficientNet-Lite0 fine-tuned from its bundled ImageNet weights."""
    from deepfake_cli.train import train

    run = tmp_path_factory.mktemp("runs") / "lite0"
    train(tiny_config(extracted, run, backbone="efficientnet_lite0", pretrained=None))
    return run


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Single clips for predict: real, fake, two people, no face, unreadable, empty, too short."""
    root = tmp_path_factory.mktemp("clips")
    (root / "notes.mp4").write_text("this is a text file named like a video")
    (root / "empty.mp4").touch()
    return {
        "real": make_clip(root / "real.mp4", identity=1, seed=3),
        "fake": make_clip(root / "fake.mp4", identity=1, seed=3, manipulation="FaceSwap"),
        "two_people": make_clip(root / "two.mp4", identity=2, seed=4, faces=2),
        "no_face": make_no_face_clip(root / "noface.mp4"),
        "short": make_clip(root / "short.mp4", identity=1, seconds=0.04),  # one frame
        "text": root / "notes.mp4",
        "empty": root / "empty.mp4",
    }


@pytest.fixture
def copy_of(tmp_path):
    """A copy, in this test's folder, of a folder the session shares (extracted data, a run) that the test changes."""
    def copy(folder: Path, name: str = "copy") -> Path:
        return Path(shutil.copytree(folder, tmp_path / name, symlinks=True))
    return copy


@pytest.fixture(scope="session")
def untuned_env() -> dict[str, str]:
    """This environment less any variable that tunes glibc's malloc, which would turn deepfake_cli.memory's
    settings off: for subprocesses that count what those settings save."""
    return {k: v for k, v in os.environ.items() if not sets_malloc(k)}
