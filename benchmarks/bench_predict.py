"""Predict and evaluate speed: a cold `deepfake predict` on one 720p clip, a folder of clips, and
`evaluate` against the reference notebook's per-sample validation loop; the same with the Lite0
checkpoint exported to ONNX (`deepfake export`), against bare `import torch` and `import mediapipe`;
and an ensemble of the two checkpoints (`--model` twice, one model process) against each alone.

    python benchmarks/bench_predict.py [--quick] [--folder-clips N] [--rounds R]
    python benchmarks/bench_predict.py --keep-memory [DATA] [--rounds 3] [--folder-clips 10] [--quick]
                                       # predict and evaluate, freed memory kept vs glibc's default

The checkpoints are small ones trained here once (1 epoch, --freeze-backbone, no ImageNet
weights) at the size under test, and cached; their weights do not change the speed. The cold
start is measured for an EfficientNet-B0 and an EfficientNet-Lite0 checkpoint, alternately.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import common
from reference import ReferenceDataset, reference_evaluate

FULL = dict(identities=8, image_size=256, clip_seconds=10, clip_size=(1280, 720), folder_clips=50, rounds=3)
QUICK = dict(identities=4, image_size=64, clip_seconds=2, clip_size=(640, 360), folder_clips=4, rounds=1)
TARGET_COLD_S = 3.0
TARGET_ONNX_VS_MEDIAPIPE = 1.3  # a cold .onnx predict within this much of `import mediapipe` alone
TARGET_ONNX_VS_PT = 0.5  # ... and at most this share of the same model's cold .pt predict


def checkpoint(data: Path, image_size: int, backbone: str = "efficientnet_b0") -> Path:
    """best.pt of a 1-epoch --freeze-backbone run on `data`; trained once, then cached."""
    from deepfake_cli.train import TrainConfig, train

    run = common.RESULTS / "predict" / f"run-{data.parent.name}-{image_size}px{'' if backbone.endswith('b0') else '-lite0'}"
    if not (run / "best.pt").is_file():
        shutil.rmtree(run, ignore_errors=True)  # a half-finished earlier run would refuse to restart
        train(TrainConfig(data=data, run=run, epochs=1, image_size=image_size, freeze_backbone=True, pretrained=False,
                          backbone=backbone))
    return run / "best.pt"


def predict_child(inputs: list[str], *models: Path, env: dict | None = None) -> tuple[common.Child, list[dict]]:
    """`deepfake predict ... --json` as a fresh process, with one model or an ensemble; its verdicts
    (one JSON line per input)."""
    child = common.run_child([common.PYTHON, "-m", "deepfake_cli", "predict", *inputs,
                              *[a for m in models for a in ("--model", str(m))], "--json"], env=env)
    if child.returncode not in (0, 1):  # 1: some input got no verdict; its status says why
        common.check_child(child, "deepfake predict")
    verdicts = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    return child, verdicts


def clip_folder(clips: list[Path], n: int) -> Path:
    """A folder of `n` links cycling through `clips`: many inputs without encoding many clips."""
    folder = common.scratch_dir(f"predict-folder-{n}")
    for i in range(n):
        (folder / f"clip_{i:03d}.mp4").symlink_to(clips[i % len(clips)])
    return folder


def main() -> None:
    p, quick = common.settings(__doc__, FULL, QUICK, "a small clip and model, few inputs: a smoke check",
                               folder_clips="clips in the throughput folder (default 50; 4 with --quick)",
                               rounds="cold-start repetitions (default 3; 1 with --quick)")

    clips = sorted(common.face_clips(6 if not quick else 2, seconds=p["clip_seconds"], size=p["clip_size"])
                   .glob("clip_*.mp4"))
    data = common.example_dataset(p["identities"])
    ckpt = checkpoint(data, p["image_size"])
    lite0_ckpt = checkpoint(data, p["image_size"], "efficientnet_lite0")
    folder = clip_folder(clips, p["folder_clips"])
    onnx_path = lite0_ckpt.with_suffix(".onnx")
    exported = common.check_child(common.run_child([common.PYTHON, "-m", "deepfake_cli", "export", str(lite0_ckpt),
                                                    str(onnx_path), "--json"]), "deepfake export")
    export = json.loads(exported.stdout.strip().splitlines()[-1])
    idle = common.wait_until_idle(quick)

    # Cold start, alternated with the bare imports it cannot beat.
    cold, imports, lite0_cold, onnx_cold, mediapipe_imports, torch_imports, pair_cold = [], [], [], [], [], [], []
    for r in range(p["rounds"]):
        child, (verdict,) = predict_child([str(clips[0])], lite0_ckpt)
        assert verdict["status"] == "ok", verdict
        lite0_cold.append({"wall_s": round(child.seconds, 3), **{f"{k}_s": v for k, v in verdict["timings"].items()}})
        child, (verdict,) = predict_child([str(clips[0])], onnx_path)
        assert verdict["status"] == "ok", verdict
        onnx_cold.append({"wall_s": round(child.seconds, 3), "peak_rss_mb": round(child.peak_rss_mb, 1),
                          "cpu_s": round(child.cpu_s, 3), **{f"{k}_s": v for k, v in verdict["timings"].items()}})
        for floor, runs in (("import mediapipe", mediapipe_imports), ("import torch", torch_imports)):
            runs.append(common.check_child(common.run_child([common.PYTHON, "-c", floor]), floor))
        imported = common.check_child(common.run_child([common.PYTHON, "-c", "import torch, torchvision"]), "import")
        imports.append(imported.seconds)
        child, (verdict,) = predict_child([str(clips[0])], ckpt)
        assert verdict["status"] == "ok", verdict
        timings = verdict["timings"]  # decode_and_faces, model, and any other stage predict reports
        cold.append({"wall_s": round(child.seconds, 3), "peak_rss_mb": round(child.peak_rss_mb, 1),
                     **{f"{stage}_s": seconds for stage, seconds in timings.items()},
                     "startup_s": round(child.seconds - sum(timings.values()), 3), "windows": verdict["windows"]})
        child, (verdict,) = predict_child([str(clips[0])], lite0_ckpt, ckpt)  # an ensemble of the two
        assert verdict["status"] == "ok" and len(verdict["models"]) == 2, verdict
        pair_cold.append({"wall_s": round(child.seconds, 3), **{f"{k}_s": v for k, v in verdict["timings"].items()}})
        print(f"round {r + 1}: import torch+torchvision {imported.seconds:.2f} s; cold predict {cold[-1]}", flush=True)
    median = {key: common.median([c[key] for c in cold]) for key in cold[0]}
    lite0 = {key: common.median([c[key] for c in lite0_cold]) for key in lite0_cold[0]}
    onnx = {key: common.median([c[key] for c in onnx_cold]) for key in onnx_cold[0]}
    pair = {key: common.median([c[key] for c in pair_cold]) for key in pair_cold[0]}
    import_s = common.median(imports)
    mediapipe_s, torch_s = (common.median([c.seconds for c in runs]) for runs in (mediapipe_imports, torch_imports))
    # The CPU time a cold .onnx predict's processes take in all: on this many cores no overlap of the parent's
    # faces with the model process can bring its wall below that time shared out.
    cores = len(os.sched_getaffinity(0))
    onnx_floor_s = onnx["cpu_s"] / cores
    stages = list(timings)  # as the last cold run reported them

    # Many clips, one process: start-up paid once.
    child, verdicts = predict_child([str(folder)], ckpt)
    ok = sum(v["status"] == "ok" for v in verdicts)
    per_clip = {key: common.median([v["timings"][key] for v in verdicts if v["status"] == "ok"]) for key in stages}
    folder_cps = len(verdicts) / child.seconds
    steady_cps = len(verdicts) / max(child.seconds - median["startup_s"], 1e-9)
    print(f"folder: {len(verdicts)} clips ({ok} ok) in {child.seconds:.1f} s", flush=True)
    # Warm throughput of the same Lite0 model, checkpoint against export: the clips after the first, over
    # the time they added to that model's cold one-clip predict.
    warm = {}
    for name, models, one in (("pt", [lite0_ckpt], lite0), ("onnx", [onnx_path], onnx), ("pair", [lite0_ckpt, ckpt], pair)):
        model_child, model_verdicts = predict_child([str(folder)], *models)
        warm[name] = {"clips": len(model_verdicts), "wall_s": round(model_child.seconds, 2),
                      "clips_per_s": (len(model_verdicts) - 1) / max(model_child.seconds - one["wall_s"], 1e-9)}
    print(f"warm Lite0: .pt {warm['pt']['clips_per_s']:.2f} clips/s, .onnx {warm['onnx']['clips_per_s']:.2f} clips/s, "
          f"ensemble with B0 {warm['pair']['clips_per_s']:.2f} clips/s", flush=True)

    # evaluate against the notebook's validation loop, on the run's validation videos.
    import torch

    from deepfake_cli.evaluate import evaluate

    # Two alternating rounds, best of each: the first forward passes of a process set up kernels.
    val_keys = set(json.loads((ckpt.parent / "split.json").read_text())["val"])
    reference_data = ReferenceDataset.from_folder(data, val_keys, size=p["image_size"])
    ours_runs, reference_runs = [], []
    for _ in range(2):
        seconds, result = common.timed(evaluate, data, ckpt, split="val")
        ours_runs.append({"clips": result["n"], "seconds": round(seconds, 2), "clips_per_s": result["n"] / seconds})
        reference_runs.append(reference_evaluate(reference_data, torch.device("cpu")))
    ours_eval = max(ours_runs, key=lambda r: r["clips_per_s"])
    ref_eval = max(reference_runs, key=lambda r: r["clips_per_s"])
    print(f"evaluate: ours {ours_eval['clips_per_s']:.3f} clips/s, reference {ref_eval['clips_per_s']:.3f} clips/s")

    rows = [
        common.row("cold predict, one clip: wall", f"{median['wall_s']:.2f} s", ratio="-",
                   target=f"< {TARGET_COLD_S:g} s", met=median["wall_s"] < TARGET_COLD_S),
        common.row("  start-up (wall - the stages predict reports)", f"{median['startup_s']:.2f} s",
                   f"`import torch, torchvision` {import_s:.2f} s", f"{median['startup_s'] / import_s:.2f}x"),
        *[common.row(f"  {stage}" + (f" ({median['windows']:.0f} windows)" if stage == "model" else ""),
                     f"{median[stage + '_s']:.2f} s") for stage in stages],
        common.row("cold predict, peak RSS", f"{median['peak_rss_mb']:.0f} MB"),
        common.row("cold predict, a Lite0 checkpoint: wall", f"{lite0['wall_s']:.2f} s", f"B0 {median['wall_s']:.2f} s",
                   f"{lite0['wall_s'] / median['wall_s']:.2f}x", f"< {TARGET_COLD_S:g} s", lite0["wall_s"] < TARGET_COLD_S),
        common.row("  model stage, Lite0 vs B0", f"{lite0['model_s']:.2f} s", f"B0 {median['model_s']:.2f} s",
                   f"{lite0['model_s'] / median['model_s']:.2f}x"),
        common.row("cold predict, Lite0 exported to ONNX: wall", f"{onnx['wall_s']:.2f} s",
                   f"`import mediapipe` {mediapipe_s:.2f} s", f"{onnx['wall_s'] / mediapipe_s:.2f}x",
                   f"<= {TARGET_ONNX_VS_MEDIAPIPE:g}x", onnx["wall_s"] / mediapipe_s <= TARGET_ONNX_VS_MEDIAPIPE),
        common.row("  its CPU time, the parent and the model process", f"{onnx['cpu_s']:.2f} s",
                   f"`import mediapipe` {common.median([c.cpu_s for c in mediapipe_imports]):.2f} s",
                   f"at best {onnx_floor_s:.2f} s wall on {cores} cores: {onnx_floor_s / mediapipe_s:.2f}x the import's wall"),
        common.row("  against the same model's .pt", f"{onnx['wall_s']:.2f} s", f".pt {lite0['wall_s']:.2f} s",
                   f"{onnx['wall_s'] / lite0['wall_s']:.2f}x", f"<= {TARGET_ONNX_VS_PT:g}x",
                   onnx["wall_s"] / lite0["wall_s"] <= TARGET_ONNX_VS_PT),
        common.row("  model stage, .onnx vs .pt", f"{onnx['model_s']:.2f} s", f".pt {lite0['model_s']:.2f} s",
                   f"{onnx['model_s'] / lite0['model_s']:.2f}x"),
        common.row("  `import torch` alone, for scale", f"{torch_s:.2f} s", f"`import mediapipe` {mediapipe_s:.2f} s",
                   f"{torch_s / mediapipe_s:.2f}x"),
        common.row(f"warm Lite0, {warm['onnx']['clips']} clips: .onnx", f"{warm['onnx']['clips_per_s']:.2f} clips/s",
                   f".pt {warm['pt']['clips_per_s']:.2f} clips/s", f"{warm['onnx']['clips_per_s'] / warm['pt']['clips_per_s']:.2f}x",
                   ">= 1x", warm["onnx"]["clips_per_s"] >= warm["pt"]["clips_per_s"]),
        common.row("cold predict, ensemble of the Lite0 and B0: wall", f"{pair['wall_s']:.2f} s", f"B0 alone {median['wall_s']:.2f} s",
                   f"{pair['wall_s'] / median['wall_s']:.2f}x"),
        common.row("  model stage, ensemble vs B0 alone", f"{pair['model_s']:.2f} s", f"B0 {median['model_s']:.2f} s",
                   f"{pair['model_s'] / median['model_s']:.2f}x"),
        common.row(f"warm, {warm['pair']['clips']} clips: the ensemble (one model process)",
                   f"{warm['pair']['clips_per_s']:.2f} clips/s", f"Lite0 alone {warm['pt']['clips_per_s']:.2f} clips/s",
                   f"{warm['pair']['clips_per_s'] / warm['pt']['clips_per_s']:.2f}x"),
        common.row(f"export ({p['image_size']} px Lite0)", f"{export['seconds']:.1f} s", f"{export['bytes'] / 1e6:.1f} MB",
                   f"max |dP| {export['max_difference']:.1g}"),
        common.row(f"predict folder of {len(verdicts)} clips, one process", f"{folder_cps:.2f} clips/s",
                   f"{child.seconds:.1f} s wall", "-"),
        common.row("  after start-up (steady state)", f"{steady_cps:.2f} clips/s",
                   "per clip: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in per_clip.items())),
        common.row(f"evaluate ({ours_eval['clips']} videos, {p['image_size']} px)", f"{ours_eval['clips_per_s']:.3f} clips/s",
                   f"reference loop {ref_eval['clips_per_s']:.3f} clips/s",
                   f"{ours_eval['clips_per_s'] / ref_eval['clips_per_s']:.2f}x"),
    ]
    measured = {"cold": cold, "cold_median": median, "cold_lite0": lite0_cold, "cold_lite0_median": lite0, "import_torch_torchvision_s": imports,
                "cold_onnx": onnx_cold, "cold_onnx_median": onnx, "cold_ensemble": pair_cold, "cold_ensemble_median": pair,
                "import_mediapipe_s": [c.seconds for c in mediapipe_imports],
                "import_mediapipe_cpu_s": [c.cpu_s for c in mediapipe_imports], "cores": cores,
                "onnx_wall_floor_s": onnx_floor_s, "import_torch_s": [c.seconds for c in torch_imports], "warm_lite0": warm, "export": export,
                "folder": {"clips": len(verdicts), "ok": ok, "wall_s": round(child.seconds, 2),
                           "peak_rss_mb": round(child.peak_rss_mb, 1), "clips_per_s": folder_cps,
                           "steady_clips_per_s": steady_cps, "per_clip_median_s": per_clip},
                "evaluate": {"ours": ours_runs, "reference": reference_runs}}
    settings = {**p, "clip": str(clips[0].relative_to(common.REPO)), "checkpoint": str(ckpt.relative_to(common.REPO))}
    common.save_results("bench_predict", quick, idle, settings, measured, rows)
    common.remove_scratch()


def kept_memory_cost(argv: list[str]) -> None:
    """A cold `deepfake predict` of one clip, `predict` of a folder of clips and `evaluate --split all` of
    DATA, each a whole command in a child process with the 256 px Lite0 checkpoint, the memory a pass
    frees kept for the next (the default on glibc, `memory.keep_freed_memory`) against glibc's own
    behaviour, rounds interleaved: wall time, the model's seconds, peak RSS, and whether the scores are
    the same. DATA: an `extract` OUT folder (the FaceForensics++ sample's); without it, generated videos."""
    p = argparse.ArgumentParser(prog="bench_predict.py --keep-memory")
    p.add_argument("data", type=Path, nargs="?")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--folder-clips", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="a small clip and model: a smoke check")
    a = p.parse_args(argv)
    s = QUICK if a.quick else FULL
    clips = sorted(common.face_clips(2, seconds=s["clip_seconds"], size=s["clip_size"]).glob("clip_*.mp4"))
    example = common.example_dataset(s["identities"])
    model = checkpoint(example, s["image_size"], "efficientnet_lite0")
    data = (a.data or example).resolve()  # the commands run from the repository
    folder = clip_folder(clips, a.folder_clips)
    idle = common.wait_until_idle(a.quick)
    measured: dict = {"kept": [], "glibc": []}
    for _ in range(a.rounds):
        for name, env in (("kept", {}), ("glibc", common.GLIBC_DEFAULT)):
            one, (verdict,) = predict_child([str(clips[0])], model, env=env)
            many, verdicts = predict_child([str(folder)], model, env=env)
            evaluated = common.check_child(common.run_child(
                [common.PYTHON, "-m", "deepfake_cli", "evaluate", str(data), "--model", str(model), "--split", "all",
                 "--json"], env=env), f"evaluate ({name})")
            result = json.loads(evaluated.stdout)
            measured[name].append({
                "cold_s": round(one.seconds, 3), "cold_model_s": verdict["timings"]["model"],
                "cold_peak_rss_mb": round(one.peak_rss_mb), "folder_s": round(many.seconds, 2),
                "folder_model_s": round(sum(v["timings"]["model"] for v in verdicts if v["status"] == "ok"), 2),
                "evaluate_s": round(evaluated.seconds, 2), "evaluate_peak_rss_mb": round(evaluated.peak_rss_mb),
                "evaluate_tree_pss_mb": round(evaluated.tree_pss_mb),
                "p_fake": [v.get("p_fake") for v in [verdict, *verdicts]] + [r["p_fake"] for r in result["scores"]]})
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in measured[name][-1].items() if k != "p_fake"), flush=True)
    kept, glibc = ({key: common.median([r[key] for r in measured[name]]) for key in measured[name][0] if key != "p_fake"}
                   for name in ("kept", "glibc"))
    videos = len(json.loads(evaluated.stdout)["scores"])

    def compared(figure: str, key: str, unit: str = "s") -> dict:
        digits = 0 if unit == "MB" else 2
        return common.row(figure, f"{kept[key]:.{digits}f} {unit}", f"glibc's default {glibc[key]:.{digits}f} {unit}",
                          f"{kept[key] / glibc[key]:.2f}x")

    rows = [compared(f"cold predict, one clip (Lite0, {s['image_size']} px): wall", "cold_s"),
            compared("  its model stage", "cold_model_s"),
            compared("  peak RSS", "cold_peak_rss_mb", "MB"),
            compared(f"predict, a folder of {a.folder_clips} clips, one process: wall", "folder_s"),
            compared("  its model stage, all clips", "folder_model_s"),
            compared(f"evaluate --split all, {videos} videos: wall", "evaluate_s"),
            compared("  peak RSS", "evaluate_peak_rss_mb", "MB"),
            compared("  peak PSS of the process tree (loader workers included)", "evaluate_tree_pss_mb", "MB"),
            common.row("the same P(fake), every clip and video, every round",
                       "yes" if all(r["p_fake"] == measured["kept"][0]["p_fake"] for rs in measured.values() for r in rs)
                       else "no")]
    common.save_results("bench_predict-keep-memory", a.quick, idle, {"data": str(data), "model": str(model),
                        "clip": str(clips[0]), "folder_clips": a.folder_clips, "rounds": a.rounds}, measured, rows)
    common.remove_scratch()


if __name__ == "__main__":
    if "--keep-memory" in sys.argv:
        kept_memory_cost([a for a in sys.argv[1:] if a != "--keep-memory"])
    else:
        main()
