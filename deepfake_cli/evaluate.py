"""`evaluate`: the metrics the field reports, from the same loader and inference routine as training.

torch is imported only for a torch model (`_load`): with exported .onnx models alone, evaluate runs
on ONNX Runtime where torch is not installed."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake_cli import data as D
from deepfake_cli.calibration import brier, ece_if_calibrated, expected_calibration_error, reliability
from deepfake_cli.choices import LOADER_MOST, worker_count
from deepfake_cli.ensemble import Member, ModelInfo, check_inputs, mean_heatmaps
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.inputs import InputSpec
from deepfake_cli.layout import REAL_FOLDERS
from deepfake_cli.metrics import auc_per_method, classification_metrics
from deepfake_cli.onnxfile import is_onnx, read_description
from deepfake_cli.scorer import load_onnx

log = logging.getLogger(__name__)


def select_samples(data: Path, checkpoints: list[Path], split: str, samples: list[D.Sample]) -> tuple[str, list[D.Sample]]:
    """`auto`: the run's validation split when the checkpoint sits in a run folder, else everything.
    An ensemble's members must agree on it: each member's split.json names the same videos."""
    checkpoint = checkpoints[0]
    split_json = checkpoint.parent / "split.json"
    if split in ("auto", "train", "val", "test") and len(checkpoints) > 1:
        splits = {c.parent / "split.json" for c in checkpoints}
        texts = {json.dumps(json.loads(f.read_text()).get("val" if split == "auto" else split)) if f.is_file() else None
                 for f in splits}
        if len(texts) > 1:
            raise DeepfakeError(f"--split {split}: the models were trained and validated on different videos "
                                "(their split.json differ); pass --split all or a split file")
    if split == "auto":
        split = "val" if split_json.is_file() else "all"
    if split == "all":
        return "all", samples
    if split in ("train", "val", "test"):
        if not split_json.is_file():
            raise DeepfakeError(f"--split {split}: {checkpoint.parent} has no split.json; use --split all or a split file")
        keys = set(json.loads(split_json.read_text()).get(split, []))
        chosen = [s for s in samples if s.key in keys]
    else:
        path = Path(split)
        if not path.is_file():
            raise DeepfakeError(f"--split {split}: not all|val|test|train and not a file")
        spec = D.read_split_file(path, samples, flag="--split")
        chosen = spec.get("test") or spec.get("val") or []
    if not chosen:
        raise DeepfakeError(f"--split {split}: none of its videos are in {data}; check DATA or use --split all")
    return split, chosen


def evaluate(data: Path, checkpoints: Path | list[Path], split: str = "auto", batch_size: int = 8, workers: int = -1,
             device: str = "auto", skip_bad: bool = False, report: Path | None = None) -> dict:
    """Score every selected video with one model or an ensemble's members (`ensemble.py`); metrics at the
    threshold and at 0.5, per method, and each member's own figures beside the ensemble's. With `report`,
    also that HTML page (`report.py`), from the models and videos already loaded."""
    checkpoints = [checkpoints] if isinstance(checkpoints, Path) else list(checkpoints)
    models = [_load(path, device) for path in checkpoints]
    check_inputs([(path, m.inputs) for path, m in zip(checkpoints, models)])
    inputs, trained_real = models[0].inputs, models[0].real_folders
    # Labels as extract read the data's layout; for data without them, the folders the model was trained to call real.
    real_folders = tuple(trained_real or REAL_FOLDERS)
    split, samples = select_samples(data, checkpoints, split, D.scan(data, inputs.seq_len, fallback=real_folders))
    samples = D.check_samples(data, samples, inputs.seq_len, skip_bad)  # only the files we will read
    crop, _ = D.data_crop(data, {s.folder for s in samples})
    if crop != inputs.crop:
        log.warning("%s was cut %s, but the model was trained on crops cut %s; its scores here are not what it "
                    "would give on its own preprocessing (extract again with the model's crop)", data, crop.describe(),
                    inputs.crop.describe())
    sampling = D.data_sampling(data, {s.folder for s in samples})
    if not sampling.matches(inputs.sampling, inputs.seq_len):
        log.warning("%s holds %s, but the model was trained on %s; extract again with the model's --frames for the "
                    "scores predict would give", data, sampling.describe(inputs.seq_len), inputs.sampling.describe(inputs.seq_len))
    labels = np.array([s.label for s in samples], dtype=int)
    info = ModelInfo(tuple(m.member for m in models), inputs)
    scores = info.combine(np.stack([m.score(data, samples, batch_size, workers) for m in models]))
    probs, threshold = scores.p_fake, info.threshold
    fitted = [m.calibration.to_dict() if m.calibration is not None else None for m in info.members]
    result = {
        "checkpoint": " + ".join(str(c) for c in checkpoints), "data": str(data), "split": split, "n": len(samples),
        "at_threshold": classification_metrics(labels, probs, threshold, scores.ranking),
        "at_0.5": classification_metrics(labels, probs, 0.5, scores.ranking),
        "per_method": per_method(samples, labels, probs, threshold, scores.ranking),
        "calibration": {"fitted": fitted[0] if info.single else fitted, "ece": expected_calibration_error(labels, probs), "brier": brier(labels, probs),
                        # the ECE a calibrated model giving these P(fake) stays under 9 times in 10: chance alone
                        "ece_if_calibrated": ece_if_calibrated(probs), "reliability": reliability(labels, probs)},
        "members": [{"model": m.path, "threshold": m.threshold, "auc": _auc(labels, ranked),
                     "accuracy": float(np.mean((member >= m.threshold) == (labels == 1)))}
                    for m, member, ranked in zip(info.members, scores.members, scores.member_ranking)],
        # `rank`: the distance from the decision in logits, in the order of p_fake without its saturation
        # at 0 and 1 (rank by it to pool or compare scores; see classification_metrics)
        "scores": [{"video": s.key, "label": int(y), "p_fake": float(p), "raw_p_fake": float(r), "rank": float(k)}
                   for s, y, p, r, k in zip(samples, labels, probs, scores.raw_p_fake, scores.ranking)],
    }
    if not info.single:
        for row, member in zip(result["scores"], scores.members.T):
            row["model_p_fake"] = [float(p) for p in member]
    if report is not None:
        _write_report(data, models, samples, result, report)
    return result


@dataclass
class _Loaded:
    """One model as evaluate scores with it: torch's in-process model, or an exported one on ONNX Runtime."""

    member: Member
    inputs: InputSpec
    real_folders: list[str] | None
    model: object  # a Detector, or the ONNX scoring function
    device: object  # torch's device for a Detector; None for an .onnx model

    def score(self, data: Path, samples: list[D.Sample], batch_size: int, workers: int) -> np.ndarray:
        """Raw P(fake) of each sample."""
        if callable(self.model):
            chunks = (samples[i:i + batch_size] for i in range(0, len(samples), batch_size))
            return np.concatenate([self.model(np.stack([D.load_frames(data, s, self.inputs) for s in chunk]),
                                              np.stack([D.load_vectors(data, s, self.inputs.seq_len) for s in chunk]))[0]
                                   for chunk in chunks])
        from deepfake_cli.device import resolve_amp
        from deepfake_cli.inference import predict_batches

        loader = D.loader(D.SequenceDataset(data, samples, self.inputs), batch_size, worker_count(workers, LOADER_MOST),
                          self.device)
        return predict_batches(self.model.model, loader, self.inputs, self.device, resolve_amp("auto", self.device))[0]


def _load(checkpoint: Path, device: str) -> _Loaded:
    if is_onnx(checkpoint):
        model = load_onnx(checkpoint, device)
        return _Loaded(model.member, model.inputs, read_description(checkpoint).get("real_folders"), model.score, None)
    from deepfake_cli.checkpoint import load_detector
    from deepfake_cli.device import resolve_device

    device_ = resolve_device(device)
    detector = load_detector(checkpoint, device_)
    member = Member(str(checkpoint), detector.describe(), detector.threshold, detector.calibration)
    return _Loaded(member, detector.inputs, detector.meta.get("real_folders"), detector, device_)


def _auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score  # about 1 s to import: not before the arguments are checked

    return float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else None


def per_method(samples: list[D.Sample], labels: np.ndarray, probs: np.ndarray, threshold: float,
               ranking: np.ndarray | None = None) -> list[dict]:
    """One row per folder, as FaceForensics++ tables report: accuracy on it, and AUC of it against the real
    videos (of `ranking` where given: see `classification_metrics`)."""
    folders = np.array([s.folder for s in samples])
    aucs = auc_per_method(folders, labels, probs if ranking is None else ranking)
    rows = []
    for folder in sorted(set(folders)):
        mine = folders == folder
        label = int(labels[mine][0])
        correct = (probs[mine] >= threshold) == (labels[mine] == 1)
        rows.append({"method": folder, "label": "fake" if label else "real", "n": int(mine.sum()),
                     "accuracy": float(correct.mean()), "mean_p_fake": float(probs[mine].mean()),
                     "auc_vs_real": aucs.get(folder)})
    return rows


def write_plots(result: dict, out: Path) -> list[Path]:
    from deepfake_cli.plots import evaluation_plots

    labels = np.array([s["label"] for s in result["scores"]])
    probs = np.array([s["p_fake"] for s in result["scores"]])
    return evaluation_plots(labels, probs, result["at_threshold"]["threshold"], out)


def confident_mistakes(data: Path, models: list[_Loaded], samples: list[D.Sample], result: dict,
                       n: int) -> dict[str, list[dict]]:
    """The `n` real videos `result` scored most fake and the `n` fakes it scored most real (wrong at its
    threshold), each with its crops and the models' mean heatmaps (none from an .onnx member: it has
    no gradients)."""
    threshold = result["at_threshold"]["threshold"]
    scores = result["scores"]
    chosen = {
        "real videos called fake": sorted((s for s in scores if s["label"] == 0 and s["p_fake"] >= threshold),
                                          key=lambda s: -s["p_fake"])[:n],
        "fakes called real": sorted((s for s in scores if s["label"] == 1 and s["p_fake"] < threshold),
                                    key=lambda s: s["p_fake"])[:n],
    }
    inputs = models[0].inputs
    by_key = {s.key: s for s in samples}
    gallery = {}
    for kind, picked in chosen.items():
        gallery[kind] = []
        for s in picked:
            sample = by_key[s["video"]]
            crops, vectors = np.asarray(D.load_frames(data, sample, inputs)), D.load_vectors(data, sample, inputs.seq_len)
            explained = [_explain(m, crops, vectors) for m in models if not callable(m.model)]
            gallery[kind].append({"video": s["video"], "p_fake": s["p_fake"], "faces": list(crops),
                                  "heatmaps": mean_heatmaps(explained)})
    return gallery


def _explain(model: _Loaded, crops: np.ndarray, vectors: np.ndarray) -> dict:
    from deepfake_cli.heatmap import explain_window

    return explain_window(model.model, crops, vectors, model.device)


def _write_report(data: Path, models: list[_Loaded], samples: list[D.Sample], result: dict, path: Path) -> None:
    """`evaluate --report`: `result`'s metrics and plots, and its most confident mistakes, as one HTML page."""
    import tempfile

    from deepfake_cli.report import GALLERY, evaluate_report

    with tempfile.TemporaryDirectory() as folder:
        plots = {p.stem: p.read_bytes() for p in write_plots(result, Path(folder))}
    evaluate_report(result, data, plots, confident_mistakes(data, models, samples, result, GALLERY), path)
