"""Detection quality on people the detector never saw, the way the field reports it.

    python benchmarks/bench_quality.py [--quick] [--seeds 42,1] [--only ours,graded,cross,self-blend,predict,reference]
                                       [--train='--val-fraction 0.4']
    BASELINE=SRC python benchmarks/bench_quality.py   # predict's figures beside another release's (SRC/deepfake_cli)

Generated sets (examples/make_dataset.py, all four methods, one fake per person as in the
acceptance check): A holds people 0-59 (seed 1) and is trained on; B holds people 60-99
(seed 2), a separate generation, and is only evaluated. Each comes plain and "graded"
(`--variety`: per-person gamma, white balance, noise and JPEG quality 30-95, a harder,
c40-like set). Each run reports video-level AUC, accuracy at the checkpoint's own threshold,
AP and AUC per manipulation method, next to the CPU time it took:

1. `deepfake train A --epochs 6 --image-size 128 --batch-size 8 --lr 5e-4` (the offline
   default: EfficientNet-Lite0 from its bundled ImageNet weights), then `deepfake evaluate B`;
   on the plain sets and on the graded ones.
2. Cross-method (plain sets): the same recipe on A's real videos and one method's fakes; on B,
   the AUC of the method it saw against those it never saw.
3. Self-blended (`--self-blend`, the same recipe otherwise) on A's real videos alone; on B, every
   method is one it never saw. Side by side with run 2's supervised one-method models.
4. `deepfake predict` on B's clips themselves with run 1's model (and, with BASELINE, another
   release's predict on the same clips and weights), next to `evaluate` on B's extract.
Each run trains once per `--seeds` seed (train's `--seed`; default 42, train's own default), so
the per-seed tables can be re-run; `--only` picks runs (predict and reference need run 1's model,
which they then train). Run 1 also reports how well its calibrated P(fake) holds on B's unseen
people (expected calibration error and Brier score, as `evaluate` gives them), on B and on B's
people in three more generations (seeds 3-5: other scenes, motions and fakes; 4 x 80 videos, where
a perfectly calibrated model's ECE is about half what it is on B's 80 alone); with several
seeds, the seeds' run-1 models are also scored as one ensemble (`evaluate --model` once each).

5. The reference notebook's recipe (BGR 0..1 input, last-step read-out, Adam 1e-4, batch 4,
   BCELoss, no augmentation or balancing, best validation F1 at 0.5) on the same split of A
   and for the same CPU time as run 1. Its ImageNet B0 weights cannot be had offline, so it
   starts from the same Lite0 ImageNet weights as ours: the difference is the recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

import common

FULL = dict(train_people=60, test_people=40, epochs=6, image_size=128, batch_size=8)
QUICK = dict(train_people=8, test_people=8, epochs=1, image_size=64, batch_size=8)
LR = 5e-4
CROSS_METHODS = ("FaceSwap", "SelfBlend")
RUNS = ("ours", "graded", "cross", "self-blend", "predict", "reference")
MORE_B = (3, 4, 5)  # generation seeds of B's people again, for calibration measured on more videos


def generated(name: str, people: int, first: int, seed: int, variety: bool) -> Path:
    """A --one-fake set of `people` people from LFW face `first` on, extracted; cached."""
    md = common.make_dataset_module()
    root = common.RESULTS / "data" / f"quality-{name}-{first}-{people}-seed{seed}{'-graded' * variety}"
    videos, out, done = root / "videos", root / "extracted", root / "extracted.done"
    if not done.is_file():
        md.make_dataset(videos, identities=people, first_identity=first, seed=seed, methods=md.ALL_METHODS,
                        one_fake=True, variety=variety)
    if not done.is_file() or not (out / ".deepfake" / "landmarks").is_dir():  # sets from before landmark sidecars
        subprocess.run(["deepfake", "extract", str(videos), str(out), "--overwrite"], check=True, capture_output=True)
        done.touch()
    return out


def only(data: Path, method: str | None) -> Path:
    """`data` with its real videos and one method's fakes, or none (links, nothing copied)."""
    view = common.scratch_dir(f"quality-data-{method or 'real'}")
    for folder in ("original", method) if method else ("original",):
        (view / folder).symlink_to(data / folder)
    return view


def deepfake(*args: str) -> dict:
    """Run the CLI; its --json output (stdout) parsed, and the wall time."""
    started = time.perf_counter()
    result = subprocess.run(["deepfake", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"deepfake {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return {"seconds": time.perf_counter() - started, "stdout": result.stdout}


def train_and_test(name: str, train_data: Path, test_data: Path, p: dict, *options: str,
                   more_tests: tuple[Path, ...] = ()) -> dict:
    run = common.scratch_dir(f"quality-run-{name}") / "run"
    trained = deepfake("train", str(train_data), "--run-dir", str(run), "--epochs", str(p["epochs"]), "--image-size",
                       str(p["image_size"]), "--batch-size", str(p["batch_size"]), "--lr", str(LR), "--json", *options)
    best = json.loads(trained["stdout"].splitlines()[-1])["best"]
    tested = evaluated(test_data, [run / "best.pt"], run.parent / "test.json")
    result = summarise(tested)
    if more_tests:
        result["calibration_more"] = calibration_on(tested["scores"], more_tests, [run / "best.pt"])
    # The raw scores the calibration was fitted on and those it is judged on: a calibration method can be
    # compared on them afterwards without training again.
    validated = evaluated(train_data, [run / "best.pt"], run.parent / "val.json", split="val")
    result["raw_scores"] = {part: [[s["label"], s["raw_p_fake"]] for s in report["scores"]]
                            for part, report in (("val", validated), ("test", tested))}
    result.update(train_seconds=round(trained["seconds"], 1), val_auc=best["auc"], best_epoch=best["epoch"],
                  run=str(run))
    print(f"{name}: AUC {result['auc']:.3f}, accuracy {result['accuracy']:.3f} on unseen people "
          f"({result['train_seconds']:.0f} s to train)", flush=True)
    return result


def predict_scores(videos: Path, ckpt: Path, package: Path | None = None) -> dict:
    """`deepfake predict` over B's clips with run 1's model (`package`: another release's source tree):
    video-level AUC and accuracy at the threshold, as evaluate reports them on B's extract."""
    from sklearn.metrics import roc_auc_score

    where = common.other_release(package) if package is not None else {}
    child = common.run_child([common.PYTHON, "-m", "deepfake_cli", "predict", str(videos), "--model", str(ckpt), "--json"],
                             **where)
    verdicts = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    scored = [v for v in verdicts if v["status"] == "ok"]
    labels = np.array([int(Path(v["path"]).parent.name != "original") for v in scored])
    probs = np.array([v["p_fake"] for v in scored])
    called = probs >= np.array([v["threshold"] for v in scored])
    return {"clips": len(verdicts), "scored": len(scored), "auc": float(roc_auc_score(labels, probs)),
            "accuracy": float(np.mean(called == (labels == 1))), "seconds": round(child.seconds, 1),
            "windows": sorted({v["windows"] for v in scored})}


def evaluated(data: Path, models: list[Path], report: Path, split: str = "all") -> dict:
    """`deepfake evaluate` of `data` by `models` (one, or an ensemble); the report it wrote to `report`."""
    deepfake("evaluate", str(data), *[a for m in models for a in ("--model", str(m))], "--split", split,
             "--out", str(report))
    return json.loads(report.read_text())


def calibration_on(scored: list[dict], more: tuple[Path, ...], models: list[Path]) -> dict:
    """Expected calibration error and Brier score of the (ensembled) `models` over the videos they `scored`
    already and every video of the `more` sets."""
    from deepfake_cli.calibration import brier, ece_if_calibrated, expected_calibration_error

    scores = list(scored)
    for i, data in enumerate(more):
        scores += evaluated(data, models, models[0].parent.parent / f"calibration-{len(models)}-{i}.json")["scores"]
    labels, p_fake = np.array([s["label"] for s in scores]), np.array([s["p_fake"] for s in scores])
    return {"videos": len(scores), "ece": expected_calibration_error(labels, p_fake),
            "ece_if_calibrated": ece_if_calibrated(p_fake), "brier": brier(labels, p_fake),
            "raw_scores": [[s["label"], s["raw_p_fake"]] for s in scores]}  # to compare calibrations offline


def summarise(report: dict) -> dict:
    at = report["at_threshold"]
    return {"n": report["n"], "auc": at["auc"], "accuracy": at["accuracy"], "ap": at["ap"], "threshold": at["threshold"],
            "per_method": {r["method"]: r["auc_vs_real"] for r in report["per_method"] if r["label"] == "fake"},
            "ece": report["calibration"]["ece"], "ece_if_calibrated": report["calibration"]["ece_if_calibrated"],
            "brier": report["calibration"]["brier"]}


def reference_recipe(train_data: Path, split: dict, test_data: Path, seconds: float, image_size: int) -> dict:
    """The notebook's loop on `split` for `seconds` of training, its best epoch by validation F1 at 0.5."""
    import torch
    from sklearn import metrics as skm

    from deepfake_cli import backbones
    from deepfake_cli.model import DeepfakeDetector
    from reference import ReferenceDataset, reference_forward, reference_loader

    torch.manual_seed(0)
    model = DeepfakeDetector(readout="last", backbone="efficientnet_lite0")  # the notebook's module layout
    model.cnn.load_state_dict(backbones.lite_imagenet())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = torch.nn.BCELoss()
    train, val = (ReferenceDataset.from_folder(train_data, set(split[part]), size=image_size) for part in ("train", "val"))
    test = ReferenceDataset.from_folder(test_data, None, size=image_size)

    def scores(dataset) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        probs, labels = [], []
        with torch.no_grad():
            for imgs, lmks, y in reference_loader(dataset, shuffle=False):
                probs.append(reference_forward(model, imgs, lmks))
                labels.append(y)
        return torch.cat(probs).numpy(), torch.cat(labels).numpy().astype(int)

    started, epochs, best_f1, best_state = time.perf_counter(), 0, -1.0, None
    while time.perf_counter() - started < seconds:
        model.train()
        for imgs, lmks, labels in reference_loader(train, shuffle=True):
            loss = criterion(reference_forward(model, imgs, lmks), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs += 1
        probs, labels = scores(val)
        f1 = skm.f1_score(labels, probs >= 0.5, zero_division=0)
        if f1 > best_f1:
            best_f1, best_state = f1, {k: v.clone() for k, v in model.state_dict().items()}
    train_seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    probs, labels = scores(test)
    folders = np.array([Path(folder).name for folder, _, _ in test.videos])
    per_method = {}
    for method in sorted(set(folders) - {"original"}):
        mine = (folders == method) | (folders == "original")
        per_method[method] = float(skm.roc_auc_score(labels[mine], probs[mine]))
    result = {"n": len(labels), "auc": float(skm.roc_auc_score(labels, probs)),
              "accuracy": float(skm.accuracy_score(labels, probs >= 0.5)),
              "ap": float(skm.average_precision_score(labels, probs)), "threshold": 0.5, "per_method": per_method,
              "train_seconds": round(train_seconds, 1), "epochs": epochs, "val_f1": float(best_f1)}
    print(f"reference recipe: AUC {result['auc']:.3f}, accuracy {result['accuracy']:.3f} on unseen people "
          f"({epochs} epochs in {train_seconds:.0f} s)", flush=True)
    return result


def main() -> None:
    p, quick = common.settings(__doc__, FULL, QUICK, "8 + 8 people, 1 epoch, 64 px: a smoke check",
                               text={"seeds": ("42", "comma-separated training seeds"),
                                     "only": (",".join(RUNS), "the runs to do"),
                                     "train": ("", "more `deepfake train` options for every run, "
                                                   "e.g. --train='--val-fraction 0.4'")})
    runs = {r.strip() for r in p["only"].split(",") if r.strip()}
    if unknown := runs - set(RUNS):
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(RUNS)}")
    if runs & {"predict", "reference"}:
        runs.add("ours")
    seeds = [int(s) for s in p["seeds"].split(",")]
    people_a, people_b = p["train_people"], p["test_people"]
    a, b = generated("A", people_a, 0, 1, variety=False), generated("B", people_b, 60, 2, variety=False)
    more_b = tuple(generated("B", people_b, 60, s, variety=False) for s in MORE_B) if "ours" in runs else ()
    graded_a, graded_b = (generated("A", people_a, 0, 1, variety=True), generated("B", people_b, 60, 2, variety=True)) \
        if "graded" in runs else (None, None)
    idle = common.wait_until_idle(quick)
    measured, rows = {}, []
    for seed in seeds:
        mine = run_seed(seed, runs, p, a, b, graded_a, graded_b, more_b)
        measured.update({f"{name}-seed{seed}" if len(seeds) > 1 else name: value for name, value in mine.items()})
        rows += [{**row, "figure": f"seed {seed}: {row['figure']}"} if len(seeds) > 1 else row
                 for row in quality_rows(mine, people_b)]
    if len(seeds) > 1 and "ours" in runs:  # the seeds' run-1 models as one ensemble (evaluate's --model, once each)
        members = [Path(measured[f"ours-seed{seed}"]["run"]) / "best.pt" for seed in seeds]
        scored = evaluated(b, members, members[0].parent.parent / "ensemble.json")
        ensemble = measured["ours-ensemble"] = summarise(scored)
        ensemble["calibration_more"] = calibration_on(scored["scores"], more_b, members)
        rows.append(common.row(f"ensemble of the {len(seeds)} seeds' run-1 models: AUC; accuracy; ECE",
                               f"{ensemble['auc']:.3f}; {ensemble['accuracy']:.3f}; {ensemble['ece']:.3f}",
                               "members alone: AUC " + ", ".join(f"{measured[f'ours-seed{seed}']['auc']:.3f}" for seed in seeds),
                               f"{ensemble['auc'] - np.mean([measured[f'ours-seed{seed}']['auc'] for seed in seeds]):+.3f}"))
        rows.append(calibration_row("the ensemble", ensemble["calibration_more"]))
    settings = {**p, "lr": LR, "train_set": str(a), "test_set": str(b), "graded_sets": [str(graded_a), str(graded_b)]}
    common.save_results("bench_quality", quick, idle, settings, measured, rows)
    common.remove_scratch()


def run_seed(seed: int, runs: set[str], p: dict, a: Path, b: Path, graded_a: Path | None, graded_b: Path | None,
             more_b: tuple[Path, ...] = ()) -> dict:
    """The chosen runs, each trained with this seed."""
    option = ("--seed", str(seed), *p["train"].split())
    measured = {}
    if "ours" in runs:
        measured["ours"] = train_and_test(f"ours-{seed}", a, b, p, *option, more_tests=more_b)
    if "graded" in runs:
        measured["ours_graded"] = train_and_test(f"ours-graded-{seed}", graded_a, graded_b, p, *option)
    for method in CROSS_METHODS if "cross" in runs else ():
        measured[f"only_{method}"] = train_and_test(f"only-{method}-{seed}", only(a, method), b, p, *option)
    if "self-blend" in runs:
        measured["self_blend"] = train_and_test(f"self-blend-{seed}", only(a, None), b, p, "--self-blend", *option)
    if "predict" in runs:  # on B's clips themselves, with run 1's model: what a user's `deepfake predict` gives
        videos, model = b.parent / "videos", Path(measured["ours"]["run"]) / "best.pt"
        measured["predict"] = predict_scores(videos, model)
        if baseline := os.environ.get("BASELINE"):
            measured["predict_baseline"] = {"package": baseline, **predict_scores(videos, model, Path(baseline))}
    if "reference" in runs:
        split = json.loads((Path(measured["ours"]["run"]) / "split.json").read_text())
        measured["reference"] = reference_recipe(a, split, b, measured["ours"]["train_seconds"], p["image_size"])
    return measured


def calibration_row(what: str, more: dict) -> dict:
    return common.row(f"{what} on B's people in {len(MORE_B) + 1} generations ({more['videos']} videos): ECE; Brier",
                      f"{more['ece']:.3f}; {more['brier']:.3f}",
                      f"a calibrated model by chance alone: below {more['ece_if_calibrated']:.3f} 9 in 10", "-",
                      "ECE <= 0.1", more["ece"] <= 0.1)


def quality_rows(measured: dict, people_b: int) -> list[dict]:
    """The table of whichever runs `measured` holds."""
    rows = []
    ours, ref, graded = measured.get("ours"), measured.get("reference"), measured.get("ours_graded")
    if ours:
        rows += [
            common.row(f"AUC on {people_b} unseen people, every method", f"{ours['auc']:.3f}",
                       f"reference recipe {ref['auc']:.3f}" if ref else "-", "-", ">= 0.85", ours["auc"] >= 0.85),
            common.row("accuracy at the checkpoint's threshold", f"{ours['accuracy']:.3f} (t={ours['threshold']:.2f})",
                       f"reference {ref['accuracy']:.3f} (t=0.5)" if ref else "-", "-", ">= 0.75", ours["accuracy"] >= 0.75),
            common.row("calibration on unseen people: ECE; Brier", f"{ours['ece']:.3f}; {ours['brier']:.3f}",
                       f"a calibrated model by chance alone: below {ours['ece_if_calibrated']:.3f} 9 in 10", "-",
                       "ECE <= 0.1", ours["ece"] <= 0.1),
            *([calibration_row("the same", ours["calibration_more"])] if "calibration_more" in ours else []),
            common.row("average precision", f"{ours['ap']:.3f}", f"reference {ref['ap']:.3f}" if ref else "-"),
            common.row("training time (CPU)", f"{ours['train_seconds']:.0f} s",
                       f"reference {ref['train_seconds']:.0f} s ({ref['epochs']} epochs)" if ref else "-"),
        ]
    if graded:
        rows += [
            common.row("graded sets: AUC on unseen people", f"{graded['auc']:.3f}", "-", "-", ">= 0.85", graded["auc"] >= 0.85),
            common.row("graded sets: accuracy at the checkpoint's threshold",
                       f"{graded['accuracy']:.3f} (t={graded['threshold']:.2f})", "-", "-", ">= 0.75", graded["accuracy"] >= 0.75),
            common.row("graded sets: ECE; Brier", f"{graded['ece']:.3f}; {graded['brier']:.3f}"),
        ]
    if said := measured.get("predict"):
        rows.append(common.row(f"`deepfake predict` on B's {said['clips']} clips (windows {said['windows']}): AUC; accuracy",
                               f"{said['auc']:.3f}; {said['accuracy']:.3f} ({said['scored']} scored)",
                               f"evaluate on B's extract {ours['auc']:.3f}; {ours['accuracy']:.3f}"))
    if before := measured.get("predict_baseline"):
        rows.append(common.row("  the same with the release in BASELINE", f"{before['auc']:.3f}; {before['accuracy']:.3f} "
                               f"({before['scored']} scored)", f"this release {said['auc']:.3f}; {said['accuracy']:.3f}",
                               f"{said['seconds'] / before['seconds']:.2f}x the time"))
    for method, auc in ours["per_method"].items() if ours else ():
        rows.append(common.row(f"  AUC, {method} vs real", f"{auc:.3f}", f"reference {ref['per_method'][method]:.3f}" if ref else "-",
                               f"graded: {graded['per_method'][method]:.3f}" if graded else "-"))
    for method in CROSS_METHODS if "only_FaceSwap" in measured else ():
        cross = measured[f"only_{method}"]
        seen = cross["per_method"][method]
        unseen = [auc for m, auc in cross["per_method"].items() if m != method]
        rows.append(common.row(f"cross-method: trained on {method} only, AUC on unseen methods (mean)",
                               f"{np.mean(unseen):.3f}", f"{method} itself {seen:.3f}", f"{np.mean(unseen) - seen:+.3f}"))
        for m, auc in cross["per_method"].items():
            if m != method:
                rows.append(common.row(f"  trained on {method}, tested on {m}", f"{auc:.3f}"))
    if blend := measured.get("self_blend"):
        rows.append(common.row("self-blend, trained on A's real videos alone: AUC on B, every method unseen",
                               f"{blend['auc']:.3f}", f"supervised on all four methods {ours['auc']:.3f}" if ours else "-",
                               "-", ">= 0.8", blend["auc"] >= 0.8))
        for m, auc in blend["per_method"].items():
            supervised = "; ".join(f"{method}-only {measured[f'only_{method}']['per_method'][m]:.3f}"
                                   + (" (seen)" if method == m else "") for method in CROSS_METHODS
                                   if f"only_{method}" in measured)
            rows.append(common.row(f"  self-blend, tested on {m}", f"{auc:.3f}", supervised or "-"))
    return rows


if __name__ == "__main__":
    main()
