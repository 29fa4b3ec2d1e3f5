"""Predict against another release of the package, side by side: the same clip, checkpoint and machine.

    git worktree add /tmp/before <commit>      # or: git archive <commit> | tar -x -C /tmp/before
    python benchmarks/bench_predict_baseline.py /tmp/before [--rounds 5] [--windows 0] [--onnx]

Cold `deepfake predict` of one 10 s 720p H.264 clip (as in bench_predict.py), alternating
between this checkout's package and the one in SRC (run from SRC, first on PYTHONPATH). The
checkpoint is bench_predict's 256 px B0 one, which both releases must read; with `--onnx`, its
256 px Lite0 one, exported by each release's own `deepfake export`, each scored by its release.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common
from bench_predict import checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="a source tree of the other release (its deepfake_cli/ inside)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=0, help="predict --windows (0: predict's default)")
    parser.add_argument("--onnx", action="store_true", help="each release's export of the Lite0 checkpoint")
    args = parser.parse_args()
    if not (args.baseline / "deepfake_cli" / "__init__.py").is_file():
        parser.error(f"{args.baseline}: no deepfake_cli/ package in it")

    clip = sorted(common.face_clips(1, seconds=10, size=(1280, 720)).glob("clip_*.mp4"))[0]
    ckpt = checkpoint(common.example_dataset(8), 256, "efficientnet_lite0" if args.onnx else "efficientnet_b0")
    releases = {"this": {}, "baseline": common.other_release(args.baseline)}
    models = {name: ckpt for name in releases}
    if args.onnx:
        for name, where in releases.items():
            models[name] = common.scratch_dir(f"onnx-{name}") / "model.onnx"
            common.check_child(common.run_child([common.PYTHON, "-m", "deepfake_cli", "export", str(ckpt),
                                                 str(models[name])], **where), f"export ({name})")
    idle = common.wait_until_idle(False)
    extra = ["--windows", str(args.windows)] if args.windows else []
    runs: dict[str, list[dict]] = {"this": [], "baseline": []}
    for r in range(args.rounds):
        for name, where in releases.items():
            child = common.run_child([common.PYTHON, "-m", "deepfake_cli", "predict", str(clip), "--model", str(models[name]),
                                      "--json", *extra], **where)
            common.check_child(child, f"predict ({name})")
            verdict = json.loads(next(line for line in child.stdout.splitlines() if line.startswith("{")))
            runs[name].append({"wall_s": round(child.seconds, 3), **{f"{k}_s": v for k, v in verdict["timings"].items()},
                               "windows": verdict["windows"], "faces": verdict["faces"], "p_fake": verdict["p_fake"]})
        print(f"round {r + 1}: this {runs['this'][-1]}, baseline {runs['baseline'][-1]}", flush=True)
    median = {name: {k: common.median([run[k] for run in rs]) for k in ("wall_s", "decode_and_faces_s", "model_s")}
              for name, rs in runs.items()}
    rows = [common.row(f"cold predict, {label}", f"{median['this'][key]:.2f} s", f"{median['baseline'][key]:.2f} s",
                       f"{median['this'][key] / median['baseline'][key]:.2f}x")
            for label, key in (("wall", "wall_s"), ("decode and faces", "decode_and_faces_s"), ("model", "model_s"))]
    rows.append(common.row("windows scored", str(runs["this"][0]["windows"]), str(runs["baseline"][0]["windows"])))
    settings = {"baseline": str(args.baseline), "rounds": args.rounds, "windows": args.windows, "onnx": args.onnx,
                "clip": str(clip.relative_to(common.REPO))}
    common.save_results("bench_predict_baseline" + ("-onnx" if args.onnx else ""), False, idle, settings,
                        {"runs": runs, "median": median}, rows)
    common.remove_scratch()


if __name__ == "__main__":
    main()
