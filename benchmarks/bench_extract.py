"""Extract speed and memory: deepfake_cli.extract against a plain decode pass and the reference preprocessing.

    python benchmarks/bench_extract.py [--quick] [--clips N] [--rounds R]

Baseline A is the floor: one sequential OpenCV decode of every frame, one process. Baseline B
is the notebooks' preprocessing (../shared/REFERENCE.md), which stops after the first quarter
of each video while we sample the whole length. Rounds alternate the order of the contenders;
each figure is the best of its rounds (the least disturbed by other work on the machine).

16 clips by default: a dataset run is hundreds of videos or more, and the pool's fixed
start-up (each worker process imports OpenCV, PyAV and MediaPipe) is reported on its own row
rather than left to dominate; `--clips 6` shows a small run.
"""

from __future__ import annotations

import json

import cv2

import common
from reference import reference_extract_video, reference_face_mesh

FULL = dict(clips=16, seconds=10, size=(1280, 720), long_seconds=60, rounds=3)
QUICK = dict(clips=2, seconds=2, size=(640, 360), long_seconds=6, rounds=1)
FRAMES = 16


def decode_pass(clips: list, grab_only: bool = False) -> int:
    """Decode every frame of every clip with read() (or grab(): no colour conversion); frame count."""
    frames = 0
    for clip in clips:
        cap = cv2.VideoCapture(str(clip))
        while cap.grab() if grab_only else cap.read()[0]:
            frames += 1
        cap.release()
    return frames


def ours(folder, workers: int) -> dict:
    """deepfake_cli's extract into a fresh folder: how many videos came out ok, and the sum of
    their own per-video seconds (what the workers spent inside videos, start-up excluded)."""
    from deepfake_cli.extract import ExtractConfig, extract

    out = common.scratch_dir(f"extract-ours-{workers}")
    summary = extract(folder, out, ExtractConfig(frames=FRAMES, workers=workers))
    return {"ok": summary.count("ok"), "video_seconds": round(sum(r["seconds"] for r in summary.rows), 3)}


def reference(clips: list) -> int:
    """The reference preprocessing over every clip, one process; returns how many got 16 faces."""
    out = common.scratch_dir("extract-reference")
    mesh = reference_face_mesh()
    try:
        return sum(reference_extract_video(clip, out / "clips", mesh, frames=FRAMES) == FRAMES for clip in clips)
    finally:
        mesh.close()


def face_costs(clip) -> dict:
    """Per-frame milliseconds of the face work alone, on 16 frames of one clip: where the time goes."""
    import time

    from deepfake_cli.faces import FaceAnalyzer

    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(FRAMES)]
    cap.release()
    costs = {}
    with FaceAnalyzer() as analyzer:
        mesh = reference_face_mesh()
        for name, fn in (("ours_faces_ms", analyzer.faces),
                         ("reference_mesh_ms", lambda f: mesh.process(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)))):
            fn(frames[0])  # first call sets graphs up
            started = time.perf_counter()
            for frame in frames:
                fn(frame)
            costs[name] = round((time.perf_counter() - started) / len(frames) * 1000, 2)
        mesh.close()
    return costs


def extract_memory(clip) -> tuple[common.Child, str]:
    """`deepfake extract CLIP --workers 1` in a child process: one worker's peak RSS, and the video's status.

    A skipped video (exit 1) still counts: it was read to its end all the same.
    """
    out = common.scratch_dir(f"extract-memory-{clip.stem}")
    child = common.run_child([common.PYTHON, "-m", "deepfake_cli", "extract", str(clip), str(out), "--workers", "1",
                              "--frames", str(FRAMES), "--json"])
    if child.returncode not in (0, 1) or not child.stdout.strip():
        common.check_child(child, f"deepfake extract {clip}")
    row = json.loads(child.stdout)["videos"][0]
    return child, row["status"] if row["status"] == "ok" else f"{row['status']}: {row['reason']}"


def main() -> None:
    p, quick = common.settings(__doc__, FULL, QUICK, "tiny clips, one round: a smoke check",
                               clips="number of clips (default 16; 2 with --quick)",
                               rounds="alternating rounds (default 3; 1 with --quick)")
    width, height = p["size"]

    print(f"clips: {p['clips']} x {p['seconds']} s {width}x{height} H.264 (made once, cached in results/clips)")
    folder = common.face_clips(p["clips"], seconds=p["seconds"], size=p["size"])
    clips = sorted(folder.glob("clip_*.mp4"))
    long_name = f"long-{width}x{height}-{p['long_seconds']}s-slow{common.SLOWDOWN}.mp4"
    long_clip = common.face_clip(common.RESULTS / "clips" / long_name,
                                 seconds=p["long_seconds"], size=p["size"])
    import mediapipe  # noqa: F401  imported before timing: every contender but the decode pass needs it

    idle = common.wait_until_idle(quick)
    contenders = {
        "decode": lambda: decode_pass(clips),
        "grab": lambda: decode_pass(clips, grab_only=True),
        "ours_workers_1": lambda: ours(folder, 1),
        "ours_default_workers": lambda: ours(folder, 0),
        "reference": lambda: reference(clips),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outcomes: dict[str, list] = {}  # what each run returned: frames decoded, videos ok
    for r in range(p["rounds"]):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))  # alternate: drift cancels
        for name in order:
            seconds, result = common.timed(contenders[name])
            times[name].append(round(seconds, 3))
            print(f"round {r + 1}: {name:22s} {seconds:7.2f} s  ({result})", flush=True)
            ok = result["ok"] if isinstance(result, dict) else result
            if name not in ("decode", "grab") and ok != len(clips):
                print(f"warning: {name}: only {ok} of {len(clips)} clips yielded {FRAMES} faces", flush=True)
            outcomes.setdefault(name, []).append(result)
    best = {name: min(t) for name, t in times.items()}
    costs = face_costs(clips[0])
    (short_mem, short_status), (long_mem, long_status) = extract_memory(clips[0]), extract_memory(long_clip)
    print(f"face work per frame: {costs}")

    from deepfake_cli.extract import ExtractConfig

    n_frames = outcomes["decode"][0]
    workers = ExtractConfig().n_workers
    ratio_1, ratio_n = best["ours_workers_1"] / best["decode"], best["ours_default_workers"] / best["decode"]
    # What the pool costs beyond the videos' own work: process start-up (each worker imports
    # OpenCV and MediaPipe and builds its graphs) plus uneven sharing of the videos.
    fastest = times["ours_default_workers"].index(best["ours_default_workers"])
    in_videos = outcomes["ours_default_workers"][fastest]["video_seconds"] / workers
    pool_overhead = best["ours_default_workers"] - in_videos
    vs_reference = best["reference"] / best["ours_default_workers"]
    vs_reference_1 = best["reference"] / best["ours_workers_1"]
    rows = [
        common.row("decode pass (A), all clips", f"{best['decode']:.2f} s ({n_frames / best['decode']:.0f} frames/s)"),
        common.row("grab-only pass (no colour conversion)", f"{best['grab']:.2f} s", f"A {best['decode']:.2f} s",
                   f"{best['grab'] / best['decode']:.2f}x"),
        common.row("extract, workers=1", f"{best['ours_workers_1']:.2f} s", f"A {best['decode']:.2f} s",
                   f"{ratio_1:.2f}x", "<= 1.5x", ratio_1 <= 1.5),
        common.row(f"extract, default workers ({workers})", f"{best['ours_default_workers']:.2f} s",
                   f"A {best['decode']:.2f} s", f"{ratio_n:.2f}x", "<= 1.0x", ratio_n <= 1.0),
        common.row("  of which pool start-up + imbalance", f"{pool_overhead:.2f} s",
                   f"in-video work / {workers} workers {in_videos:.2f} s"),
        common.row("reference preprocessing (B)", f"{best['reference']:.2f} s"),
        common.row("extract default workers vs B (speed-up)", f"{best['ours_default_workers']:.2f} s",
                   f"B {best['reference']:.2f} s", f"{vs_reference:.2f}x", "> 1x", vs_reference > 1),
        common.row("extract workers=1 vs B (speed-up)", f"{best['ours_workers_1']:.2f} s", f"B {best['reference']:.2f} s",
                   f"{vs_reference_1:.2f}x"),
        common.row("  default workers, start-up excluded, vs B", f"{in_videos:.2f} s", f"B {best['reference']:.2f} s",
                   f"{best['reference'] / in_videos:.2f}x"),
        common.row(f"peak RSS, 1 worker, {p['seconds']} s clip", f"{short_mem.peak_rss_mb:.0f} MB ({short_status})"),
        common.row(f"peak RSS, 1 worker, {p['long_seconds']} s clip", f"{long_mem.peak_rss_mb:.0f} MB ({long_status})",
                   f"{p['seconds']} s clip {short_mem.peak_rss_mb:.0f} MB",
                   f"{long_mem.peak_rss_mb / short_mem.peak_rss_mb:.2f}x", "flat (~1.0x)",
                   long_mem.peak_rss_mb <= 1.1 * short_mem.peak_rss_mb),
        common.row("face work per frame (ours: mesh + its detection scores)", f"{costs['ours_faces_ms']:.1f} ms",
                   f"reference mesh {costs['reference_mesh_ms']:.1f} ms",
                   f"{costs['ours_faces_ms'] / costs['reference_mesh_ms']:.2f}x"),
    ]
    measured = {"seconds": times, "best_seconds": best, "frames_decoded_per_pass": n_frames, "outcomes": outcomes,
                "default_workers": workers, "face_costs_ms": costs,
                "memory": {
                    "short_clip": {"seconds": round(short_mem.seconds, 2), "peak_rss_mb": round(short_mem.peak_rss_mb, 1),
                                   "status": short_status},
                    "long_clip": {"seconds": round(long_mem.seconds, 2), "peak_rss_mb": round(long_mem.peak_rss_mb, 1),
                                  "status": long_status}}}
    common.save_results("bench_extract", quick, idle, {**p, "frames": FRAMES, "gop": common.X264_GOP},
                        measured, rows)
    common.remove_scratch()


if __name__ == "__main__":
    main()
