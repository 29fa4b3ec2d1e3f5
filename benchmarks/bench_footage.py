"""Footage unlike the close-ups: wide shots with small faces, and phone video stored sideways.

    python benchmarks/bench_footage.py [--quick]

Generated stand-ins for the real-footage cases (examples/make_dataset.py): 12 people in
1920x1080 wide shots with faces of 130, 100 and 60 px (`--face-size`), and the same 12 people
in 320x240 close-ups stored turned by 90, 180 or 270 degrees with the display matrix that
turns them back (how phones store portrait video). Each set goes through `deepfake extract`;
a wide shot counts when it is extracted, a turned clip when it is extracted and its crops are
upright (its first crop matches the crop of the same clip stored upright).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np

import common

FULL = dict(people=12, seconds=1.0)
QUICK = dict(people=2, seconds=0.6)
FACE_SIZES = (130, 100, 60)


def extract(videos: Path, out: Path) -> dict[str, dict]:
    """`deepfake extract` (4 frames a video); its manifest rows by video."""
    subprocess.run(["deepfake", "extract", str(videos), str(out), "--frames", "4"], capture_output=True)  # 1: none extracted
    rows = [json.loads(line) for line in (out / ".deepfake" / "manifest.jsonl").open()]
    return {row["video"]: row for row in rows}


def turned(source: Path, path: Path, degrees: int) -> None:
    """`source` stored turned by `degrees`, with the display matrix that turns it back."""
    with av.open(str(source)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stored = [np.ascontiguousarray(np.rot90(f, -degrees // 90)) for f in frames]
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in stored:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())


def main() -> None:
    p, quick = common.settings(__doc__, FULL, QUICK, "2 people, short clips: a smoke check")
    md = common.make_dataset_module()
    idle = common.wait_until_idle(quick)
    measured, rows = {}, []
    for face_px in FACE_SIZES:
        videos = common.scratch_dir(f"wide-{face_px}")
        md.make_dataset(videos, identities=p["people"], seed=5, size=(1920, 1080), seconds=p["seconds"],
                        methods=(), face_px=face_px)
        got = extract(videos, common.scratch_dir(f"wide-{face_px}-out"))
        ok = sum(row["status"] == "ok" for row in got.values())
        measured[f"wide_{face_px}"] = {"extracted": ok, "of": len(got)}
        rows.append(common.row(f"1080p wide shots, faces of {face_px} px: extracted", f"{ok} of {len(got)}",
                               target=">= 11 of 12" if face_px == 130 else "-",
                               met=ok >= len(got) - 1 if face_px == 130 else None))

    upright = common.scratch_dir("upright")
    md.make_dataset(upright, identities=p["people"], seed=6, seconds=p["seconds"], methods=())
    sideways = common.scratch_dir("sideways") / "original"
    sideways.mkdir(parents=True)
    sources = sorted((upright / "original").glob("*.mp4"))
    for i, source in enumerate(sources):
        turned(source, sideways / source.name, (90, 180, 270)[i % 3])
    upright_out, sideways_out = common.scratch_dir("upright-out"), common.scratch_dir("sideways-out")
    want, got = extract(upright, upright_out), extract(sideways.parent, sideways_out)
    good = 0
    for video, row in got.items():
        if row["status"] == "ok" and want[video]["status"] == "ok":
            a = cv2.imread(str(sideways_out / "original" / f"{video}_0.jpg")).astype(int)
            b = cv2.imread(str(upright_out / "original" / f"{video}_0.jpg")).astype(int)
            good += bool(np.abs(a - b).mean() < 8)
    measured["rotated"] = {"extracted_upright": good, "of": len(got)}
    rows.append(common.row("clips stored turned 90/180/270: extracted with upright crops", f"{good} of {len(got)}",
                           target=">= 10 of 12", met=good >= len(got) - 2))
    common.save_results("bench_footage", quick, idle, {**p, "face_sizes": FACE_SIZES}, measured, rows)
    common.remove_scratch()


if __name__ == "__main__":
    main()
