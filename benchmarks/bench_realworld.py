"""Detection on real footage, as the field reports it: people and methods the detector never saw.

    python benchmarks/bench_realworld.py DATA [--seeds 42,1] [--only lpo,lomo,self-blend]
                                              [--image-size 128] [--epochs 6] [--folds 5]
                                              [--set blend_fakes=true ...] [--label NAME] [--verdicts]
                                              [--degrade 0.4,40]

DATA is a dataset as it downloads (FaceForensics++'s `original_sequences/` and
`manipulated_sequences/`; extracted once into results/data/, then cached) or an `extract`
OUT folder. Footage is never copied into the repository. Every model trains with the
acceptance recipe, `--epochs 6 --batch-size 8 --lr 5e-4` and the defaults otherwise (the crop
size is `--image-size`: the default 256, or 128 for quicker CPU screens). Protocols, each
pooling every held-out video's score over the folds (each video is scored once, by the model
that never saw its people):

- lpo (leave people out): the identity groups (a FaceForensics++ pair with its four methods'
  fakes; a DeepFakeDetection actor) dealt into `--folds` folds; train on the others.
- lomo (leave one method out, FaceForensics++'s protocol for unseen manipulations): in each
  fold, train on three methods and test on the held-out people's real videos and fourth method.
- self-blend: `--self-blend` on the training people's real videos alone; tested on every
  method's fakes of the held-out people.

With `--verdicts`, each model also runs `deepfake predict` at its defaults on
its held-out videos themselves: how many real clips and fakes end fake, uncertain and real.

With `--degrade SCALE,QUALITY`, every model trains on a blurrier copy of the crops (each shrunk to SCALE of
its side, enlarged back and saved at JPEG QUALITY; cached beside the extraction) and its held-out videos
are scored both on that copy and on the original crops: a proxy for footage sharper than training's
(a model trained on c40 and given c23 or a phone's video).

With several seeds, each protocol is also scored by the ensemble of its seeds' models (evaluate's
`--model` given once per seed); with lpo and self-blend both run, each seed's supervised and
self-blend models of a fold are scored as an ensemble too. Reported per protocol and seed: video-level AUC and AP, accuracy at each model's own threshold,
AUC per method, real videos called fake, at the checkpoint's threshold and at 0.5, and how well
the calibrated P(fake) holds on held-out people (expected calibration error, Brier score).
Beside each model's `best.pt`, the folds' held-out videos are also scored by each head alone and by
the last epoch's weights (`last.pt`), and each fold prints the epoch `best.pt` holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

import common

PROTOCOLS = ("lpo", "lomo", "self-blend")
RECIPE = dict(epochs=6, batch_size=8, lr=5e-4)


def extracted(data: Path) -> Path:
    """DATA as an extract OUT folder: itself if it is one, else its extraction (cached under results/)."""
    if (data / ".deepfake" / "extract.json").is_file():
        return data
    digest = hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:8]
    out = common.RESULTS / "data" / f"realworld-{data.name}-{digest}"
    if not (out / "extracted.done").is_file():
        subprocess.run(["deepfake", "extract", str(data), str(out)], check=True)  # resumes if interrupted
        (out / "extracted.done").touch()
    return out


def degraded(out: Path, scale: float, quality: int) -> Path:
    """A copy of the extract OUT folder whose crops are shrunk to `scale` of their side (area), enlarged back
    (linear) and saved at JPEG `quality`; landmarks and labels as they were. Cached."""
    import cv2

    copy = out.parent / f"{out.name}-degraded-{scale:g}-{quality}"
    if not (copy / "degraded.done").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(out, copy, symlinks=True)
        for path in copy.glob("*/*.jpg"):
            image = cv2.imread(str(path))
            side = image.shape[0]
            small = cv2.resize(image, (round(side * scale),) * 2, interpolation=cv2.INTER_AREA)
            image = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        (copy / "degraded.done").touch()
    return copy


def folds(groups: list[list], k: int) -> list[list]:
    """Identity groups dealt into k folds of about equal size (largest first, each to the smallest fold)."""
    dealt: list[list] = [[] for _ in range(k)]
    for group in sorted(groups, key=lambda g: (-len(g), min(s.key for s in g))):
        min(dealt, key=len).extend(group)
    return dealt


def run_fold(out: Path, run: Path, train: list, test: list, seed: int, image_size: int, self_blend: bool,
             also: Path | None = None) -> dict:
    """Train on `train` (its own identity split for validation), score `test`; the scores and the threshold.
    `also`: another OUT folder holding the same videos (other crops of them), where `test` is scored too."""
    from deepfake_cli.data import identity_split
    from deepfake_cli.evaluate import evaluate
    from deepfake_cli.train import TrainConfig, train as run_train

    inner = identity_split(train, RECIPE.get("val_fraction", 0.2), seed)  # as train's own --val-fraction
    split = run / "split-file.json"
    run.mkdir(parents=True, exist_ok=True)
    split.write_text(json.dumps({part: [s.key for s in chosen] for part, chosen in
                                 (("train", inner["train"]), ("val", inner["val"]), ("test", test))}))
    started = time.perf_counter()
    trained = run_train(TrainConfig(data=out, run=run / "run", split_file=split, seed=seed, image_size=image_size,
                                    **{**RECIPE, "self_blend": self_blend or RECIPE.get("self_blend", False)}))
    seconds = time.perf_counter() - started
    result = evaluate(out, run / "run" / "best.pt", split=str(split))
    threshold = result["at_threshold"]["threshold"]
    # The raw scores the calibration was fitted on: a calibration method can be compared on them afterwards.
    validated = evaluate(out, run / "run" / "best.pt", split="val")["scores"]
    heads = head_logits(out, run / "run" / "best.pt", test)
    elsewhere = evaluate(also, run / "run" / "best.pt", split=str(split))["scores"] if also else []
    # The last epoch's (averaged) weights: does choosing an epoch on a few validation videos beat taking the last?
    last = {s["video"]: {"last_rank": s["rank"], "last_raw_p_fake": s["raw_p_fake"]}
            for s in evaluate(out, run / "run" / "last.pt", split=str(split))["scores"]}
    return {"seconds": round(seconds, 1), "threshold": threshold, "best_epoch": trained.best["epoch"],
            "scores": [{**s, "threshold": threshold, **heads.get(s["video"], {}), **last[s["video"]]}
                       for s in result["scores"]],
            "also_scores": [{**s, "threshold": threshold} for s in elsewhere],
            "val_raw": [[s["label"], s["raw_p_fake"]] for s in validated]}


def head_logits(out: Path, checkpoint: Path, samples: list) -> dict[str, dict]:
    """Each video's raw logit from the sequence (BiLSTM) head alone and from the frame head alone (the mean
    of its frames' logits): the two halves of the score, to see which of them carries to unseen people."""
    import torch

    from deepfake_cli.checkpoint import load_detector
    from deepfake_cli.data import load_frames, load_vectors

    detector = load_detector(checkpoint)
    model, inputs = detector.model, detector.inputs
    if model.frame_head is None:
        return {}
    logits = {}
    with torch.no_grad():
        for s in samples:
            frames = torch.from_numpy(np.ascontiguousarray(load_frames(out, s, inputs))).permute(0, 3, 1, 2)[None]
            vectors = torch.from_numpy(load_vectors(out, s, inputs.seq_len))[None]
            sequence, per_frame = model.forward_parts(model.forward_features(inputs.images(frames)),
                                                      inputs.landmark_features(vectors))
            logits[s.key] = {"sequence_logit": float(sequence[0]), "frames_logit": float(per_frame[0].mean())}
    return logits


def verdicts(out: Path, models: list[Path], test: list, fold: str) -> list[dict]:
    """`deepfake predict` at its defaults on the held-out videos themselves (the files extract read):
    each one's label (fake, uncertain, real) or why it got none."""
    sources = {}
    for line in (out / ".deepfake" / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        sources[f"{record['folder']}/{record['video']}"] = record["source"]
    wanted = [s for s in test if s.key in sources and Path(sources[s.key]).is_file()]
    child = subprocess.run([common.PYTHON, "-m", "deepfake_cli", "predict", *[sources[s.key] for s in wanted],
                            *[a for m in models for a in ("--model", str(m))], "--json"], capture_output=True, text=True)
    if child.returncode not in (0, 1):
        raise RuntimeError(f"deepfake predict failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
    found = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    return [{"video": s.key, "label": s.label, "verdict": v["label"] or v["status"], "p_fake": v["p_fake"],
             "reasons": v["reasons"], "fold": fold} for s, v in zip(wanted, found)]


def count_verdicts(rows: list[dict]) -> dict:
    """How many real clips and fakes ended fake, uncertain and real (or with no verdict)."""
    return {kind: {verdict: sum(r["verdict"] == verdict for r in rows if r["label"] == label)
                   for verdict in sorted({r["verdict"] for r in rows})}
            for kind, label in (("real_clips", 0), ("fakes", 1))}


def ensemble_scores(out: Path, runs: list[Path], fold: str) -> list[dict]:
    """A fold's held-out videos scored by the ensemble of the models trained in `runs` (that fold's folders)."""
    from deepfake_cli.evaluate import evaluate

    result = evaluate(out, [run / "run" / "best.pt" for run in runs], split=str(runs[0] / "split-file.json"))
    return [{**s, "threshold": result["at_threshold"]["threshold"], "fold": fold} for s in result["scores"]]


def summarise(scores: list[dict]) -> dict:
    """Pooled video-level figures over every fold's held-out videos."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from deepfake_cli.calibration import brier, ece_if_calibrated, expected_calibration_error

    labels = np.array([s["label"] for s in scores])
    p_fake = np.array([s["p_fake"] for s in scores])
    called = p_fake >= np.array([s["threshold"] for s in scores])
    probs = np.array([s["rank"] for s in scores])  # the order of P(fake), without its ties at 0 and 1
    methods = sorted({s["video"].split("/")[0] for s in scores if s["label"] == 1})
    real = labels == 0
    per_method = {}
    for m in methods:
        mine = np.array([s["video"].startswith(f"{m}/") for s in scores]) | real
        per_method[m] = float(roc_auc_score(labels[mine], probs[mine]))
    # Pooling mixes the folds' models, whose scores need not share a scale; each fold's own AUC does not.
    folds_auc = [float(roc_auc_score(labels[mine], probs[mine])) for f in sorted({s.get("fold") for s in scores})
                 if len(set(labels[mine := np.array([s.get("fold") == f for s in scores])])) == 2]
    heads = {f"auc_{head}_head": float(roc_auc_score(labels, [s[f"{head}_logit"] for s in scores]))
             for head in ("sequence", "frames") if all(f"{head}_logit" in s for s in scores)}
    # Pooled by the uncalibrated score: each fold's calibration, fitted on a few validation videos, adds its error.
    if all(s.get("raw_p_fake") is not None for s in scores):
        heads["auc_raw"] = float(roc_auc_score(labels, [s["raw_p_fake"] for s in scores]))
    if all("last_rank" in s for s in scores):  # the last epoch's weights instead of best.pt's
        heads["auc_last"] = float(roc_auc_score(labels, [s["last_rank"] for s in scores]))
        heads["auc_last_raw"] = float(roc_auc_score(labels, [s["last_raw_p_fake"] for s in scores]))
    return {"videos": len(scores), "real": int(real.sum()), "fake": int((~real).sum()), **heads,
            "auc": float(roc_auc_score(labels, probs)), "ap": float(average_precision_score(labels, probs)),
            "auc_fold_mean": float(np.mean(folds_auc)) if folds_auc else None,
            "accuracy": float(np.mean(called == (labels == 1))),
            "real_called_fake": int(called[real].sum()), "fakes_caught": int(called[~real].sum()),
            "real_called_fake_at_0.5": int((p_fake[real] >= 0.5).sum()), "per_method": per_method,
            "ece": expected_calibration_error(labels, p_fake), "ece_if_calibrated": ece_if_calibrated(p_fake),
            "brier": brier(labels, p_fake)}


def protocol_runs(name: str, samples: list, k: int) -> list[tuple[str, list, list, bool]]:
    """(label, train, test, self_blend) of each model a protocol trains."""
    from deepfake_cli.data import identity_groups

    dealt = folds(identity_groups(samples), k)
    runs = []
    for f, held in enumerate(dealt):
        keys = {s.key for s in held}
        train = [s for s in samples if s.key not in keys]
        if name == "lpo":
            runs.append((f"fold{f}", train, held, False))
        elif name == "self-blend":
            runs.append((f"fold{f}", [s for s in train if s.label == 0], held, True))
        else:
            for method in sorted({s.folder for s in samples if s.label == 1}):
                runs.append((f"{method}-fold{f}", [s for s in train if s.folder != method],
                             [s for s in held if s.label == 0 or s.folder == method], False))
    return runs


def lomo_summary(scores: list[dict]) -> dict:
    """Per held-out method, its fakes against the real videos scored by the same models (those that never
    saw that method), pooled over the folds."""
    methods = sorted({s["video"].split("/")[0] for s in scores if s["label"] == 1})
    return {m: summarise([s for s in scores if s["fold"].startswith(f"{m}-fold")]) for m in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a dataset as downloaded (FaceForensics++ layout) or an extract OUT")
    parser.add_argument("--seeds", default="42,1", help="comma-separated training seeds")
    parser.add_argument("--only", default=",".join(PROTOCOLS), help=f"protocols to run, of {', '.join(PROTOCOLS)}")
    parser.add_argument("--image-size", type=int, default=256, help="train --image-size (the default: 256)")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting to change (TrainConfig's names; JSON values), e.g. blend_fakes=true")
    parser.add_argument("--label", default="", help="a name for this variant, in the results file's name")
    parser.add_argument("--degrade", default="", metavar="SCALE,QUALITY",
                        help="train on crops shrunk to SCALE and saved at JPEG QUALITY; also test on the originals")
    parser.add_argument("--verdicts", action="store_true",
                        help="also run `deepfake predict` on each fold's held-out videos (the files extract read)")
    args = parser.parse_args()
    RECIPE["epochs"] = args.epochs
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            RECIPE[key] = json.loads(value)
        except ValueError:
            RECIPE[key] = value
    protocols = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := set(protocols) - set(PROTOCOLS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PROTOCOLS)}")
    from deepfake_cli.data import scan

    original = extracted(args.data)
    out = original
    if args.degrade:
        scale, quality = args.degrade.split(",")
        out = degraded(original, float(scale), int(quality))
    samples = scan(out, 16)
    idle = common.wait_until_idle(False)
    seeds = [int(s) for s in args.seeds.split(",")]
    measured, rows, trained = {}, [], {}

    def report(name: str, protocol: str, scores: list[dict], seconds: list[float] | None = None,
               clips: list[dict] | None = None) -> None:
        if protocol == "lomo":  # each real video is scored once per method: one AUC per held-out method
            summary = lomo_summary(scores)
            means = {f"auc_mean{k[3:]}": float(np.mean([v[k] for v in summary.values()]))
                     for k in next(iter(summary.values()))
                     if (k.endswith("_head") or k in ("auc_fold_mean", "auc_raw", "auc_last", "auc_last_raw"))
                     and all(v[k] is not None for v in summary.values())}
            summary = {"per_held_out_method": summary, "auc_mean": float(np.mean([v["auc"] for v in summary.values()])),
                       **means}
            named = {"auc_mean_fold_mean": "per fold", "auc_mean_raw": "raw scores pooled",
                     "auc_mean_last": "last epoch's weights", "auc_mean_last_raw": "last epoch's raw scores"}
            figure = f"{summary['auc_mean']:.3f} (" + ", ".join(
                f"{m} {v['auc']:.3f}" for m, v in summary["per_held_out_method"].items()) + "".join(
                f"; {named.get(k) or k[9:-5] + ' head alone'} {v:.3f}" for k, v in means.items()) + ")"
        else:
            summary = summarise(scores)
            figure = (f"{summary['auc']:.3f} (per fold {summary['auc_fold_mean']:.3f}; "
                      + (f"raw scores pooled {summary['auc_raw']:.3f}; " if "auc_raw" in summary else "")
                      + (f"last epoch's weights {summary['auc_last']:.3f}, raw {summary['auc_last_raw']:.3f}; "
                         if "auc_last" in summary else "")
                      + f"AP {summary['ap']:.3f}; "
                      + ", ".join(f"{m} {a:.3f}" for m, a in summary["per_method"].items())
                      + f"; real called fake {summary['real_called_fake']}/{summary['real']}, fakes caught "
                        f"{summary['fakes_caught']}/{summary['fake']}; ECE {summary['ece']:.3f}, by chance alone "
                        f"below {summary['ece_if_calibrated']:.3f}"
                      + "".join(f"; {k[4:-5]} head alone {v:.3f}" for k, v in summary.items() if k.endswith("_head"))
                      + ")")
        measured[name] = {**summary, "train_seconds": seconds, "scores": scores}
        rows.append(common.row(f"{name}: video AUC", figure,
                               f"median training {common.median(seconds):.0f} s" if seconds else "ensemble, no training"))
        if clips:
            counted = count_verdicts(clips)
            measured[name]["verdicts"] = {**counted, "clips": clips}
            rows.append(common.row(f"{name}: predict's verdicts", "; ".join(
                f"{kind.replace('_', ' ')}: " + ", ".join(f"{v} {n}" for v, n in c.items()) for kind, c in counted.items())))

    verdicts_on = args.verdicts
    tests = {}
    for protocol in protocols:
        for seed in seeds:
            scores, seconds, clips, validated, on_original, best_epochs = [], [], [], {}, [], {}
            for label, train, test, self_blend in protocol_runs(protocol, samples, args.folds):
                where = common.scratch_dir(f"realworld-{protocol}-{seed}-{label}")
                shutil.rmtree(where, ignore_errors=True)
                fold = run_fold(out, where, train, test, seed, args.image_size, self_blend,
                                also=original if out != original else None)
                trained[protocol, seed, label], tests[label] = where, test
                scores += [{**s, "fold": label} for s in fold["scores"]]
                on_original += [{**s, "fold": label} for s in fold["also_scores"]]
                validated[label], best_epochs[label] = fold["val_raw"], fold["best_epoch"]
                if verdicts_on and protocol != "lomo":
                    clips += verdicts(out, [where / "run" / "best.pt"], test, label)
                seconds.append(fold["seconds"])
                print(f"{protocol} seed {seed} {label}: trained in {fold['seconds']} s, best.pt is epoch "
                      f"{fold['best_epoch']}", flush=True)
            report(f"{protocol}-seed{seed}", protocol, scores, seconds, clips)
            measured[f"{protocol}-seed{seed}"].update(val_raw=validated, best_epochs=best_epochs)
            if on_original:  # the same models, on the held-out videos' original (sharper) crops
                report(f"{protocol}-seed{seed}-on-original-crops", protocol, on_original, seconds)
    # Ensembles, through evaluate's --model given more than once: each fold's models of every seed, and
    # each seed's supervised and self-blend models of the same fold (they fail on different fakes).
    labels = {p: [label for label, *_ in protocol_runs(p, samples, args.folds)] for p in protocols}
    for protocol in protocols if len(seeds) > 1 else ():
        report(f"{protocol}-ensemble-of-seeds", protocol,
               [s for label in labels[protocol] for s in ensemble_scores(out, [trained[protocol, seed, label] for seed in seeds], label)])
    for seed in seeds if {"lpo", "self-blend"} <= set(protocols) else ():
        pairs = {label: [trained["lpo", seed, label], trained["self-blend", seed, label]] for label in labels["lpo"]}
        clips = [c for label, runs in pairs.items() for c in verdicts(out, [r / "run" / "best.pt" for r in runs],
                                                                       tests[label], label)] if verdicts_on else None
        report(f"lpo+self-blend-seed{seed}", "lpo",
               [s for label, runs in pairs.items() for s in ensemble_scores(out, runs, label)], clips=clips)
    settings = {"data": str(args.data), "extracted": str(out), "degrade": args.degrade, "seeds": args.seeds,
                "protocols": protocols,
                "image_size": args.image_size, "folds": args.folds, "recipe": RECIPE}
    common.save_results("bench_realworld" + (f"-{args.label}" if args.label else ""), False, idle, settings, measured, rows)
    common.remove_scratch()


if __name__ == "__main__":
    main()
