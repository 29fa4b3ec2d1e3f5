"""Footage unlike the close-ups: wide shots with small faces, and phone video stored sideways.

    python benchmarks/bench_footage.py [--quick]

Generated stand-ins for the real-footage cases (examples/make_dataset.py): 12 people in
1920x1080 wide shots with faces of 130, 100 and 60 px (`--face-size`), encoded with H.264
as real footage is, and 12 people
in 320x240 close-ups stored turned by 90, 180 or 270 degrees with the display matrix that
turns them back (how phones store portrait video). Each set goes through `deepfake extract`;
a wide shot counts when it is extracted, a turned clip when it is extracted and its crops are
upright (its first crop matches the crop of the same clip stored upright). Then split screens
(two people side by side) and crowds (four people in a 1080p wide shot): how many people
predict's face finder tracks with a face in at least half of 16 frames (predict scores each).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np

import common
from deepfake_cli.crop import CropSpec
from deepfake_cli.predict import MAX_PEOPLE, people_finder
from deepfake_cli.sampling import sample_faces
from deepfake_cli.video import Video

FULL = dict(people=12, seconds=1.0)
QUICK = dict(people=2, seconds=0.8)
FACE_SIZES = (130, 100, 60)


def extract(videos: Path, out: Path) -> dict[str, dict]:
    """`deepfake extract` (4 frames a video); its manifest rows by video."""
    subprocess.run(["deepfake", "extract", str(videos), str(out), "--frames", "4"], capture_output=True)  # 1: none extracted
    rows = [json.loads(line) for line in (out / ".deepfake" / "manifest.jsonl").open()]
    return {row["video"]: row for row in rows}


def close_ups(md, identities: list[int], seconds: float) -> list[list[np.ndarray]]:
    """Frames of 320x240 close-ups of these people (faces of 110-140 px)."""
    clips = []
    for identity in identities:
        background, people = md._scene(identity, 7, (320, 240))
        clips.append(list(md._render(background, people, round(seconds * 25), 25)))
    return clips


def split_screen(path: Path, md, k: int, seconds: float) -> Path:
    """Two people side by side, as a video call is recorded."""
    left, right = close_ups(md, [8 * k, 8 * k + 1], seconds)
    return common.write_h264(path, [np.hstack(pair) for pair in zip(left, right)], (640, 240), 25)


def crowd(path: Path, md, k: int, seconds: float) -> Path:
    """Four people in a 1920x1080 wide shot, faces of 100-150 px."""
    people = close_ups(md, [8 * k + i for i in range(2, 6)], seconds)
    spots = [(150, 150, 1.1), (700, 500, 0.9), (1200, 200, 1.2), (1500, 650, 1.0)]
    frames = []
    for i in range(len(people[0])):
        canvas = np.full((1080, 1920, 3), 80, np.uint8)
        for clip, (x, y, scale) in zip(people, spots):
            small = cv2.resize(clip[i], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        frames.append(canvas)
    return common.write_h264(path, frames, (1920, 1080), 25)


def main() -> None:
    p, quick = common.settings(__doc__, FULL, QUICK, "2 people, short clips: a smoke check")
    md = common.make_dataset_module()
    idle = common.wait_until_idle(quick)
    measured, rows = {}, []
    for face_px in FACE_SIZES:
        videos = common.scratch_dir(f"wide-{face_px}")
        for identity in range(p["people"]):  # H.264, as real footage is (the generator writes mp4v)
            background, people = md._scene(identity, 5, (1920, 1080), face_px=face_px)
            frames = list(md._render(background, people, round(p["seconds"] * 25), 25))
            common.write_h264(videos / "original" / f"{identity:03d}.mp4", frames, (1920, 1080), 25)
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
        md.store_turned(source, sideways / source.name, (90, 180, 270)[i % 3])
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
    for name, make in (("split screen", split_screen), ("crowd", crowd)):
        found = []
        for k in range(p["people"] // 4 or 1):
            path = make(common.scratch_dir(f"{name}-{k}") / "clip.mp4", md, k, p["seconds"])
            with Video(path) as video, people_finder() as finder:
                sampled = sample_faces(video, finder, 16, CropSpec(), max_people=MAX_PEOPLE)
            found.append(sum(sum(f is not None for f in person[0]) >= 8 for person in sampled.people))
        measured[name.replace(" ", "_")] = {"people_found": found, "people_there": 2 if name == "split screen" else 4}
        rows.append(common.row(f"{name}: people predict scores (of {2 if name == 'split screen' else 4}), per clip",
                               ", ".join(map(str, found)), target=">= 2", met=min(found) >= 2))
    common.save_results("bench_footage", quick, idle, {**p, "face_sizes": FACE_SIZES}, measured, rows)
    common.remove_scratch()


if __name__ == "__main__":
    main()
