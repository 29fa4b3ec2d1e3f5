"""PNG figures: training curves, ROC/PR curves, confusion matrix, score histograms, contact sheets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from deepfake_cli.files import atomic_write_bytes


def _figure(*shape, size=(10, 4)):
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(*shape, figsize=size)


def _save(plt, fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def training_curves(history: list[dict], path: Path) -> None:
    plt, fig, (left, right) = _figure(1, 2)
    epochs = [r["epoch"] for r in history]
    left.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    left.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation loss")
    left.set_xlabel("epoch"), left.legend(), left.set_title("loss")
    for key in ("macro_f1", "f1", "auc", "accuracy"):
        right.plot(epochs, [np.nan if r.get(key) is None else r[key] for r in history], "o-", label=f"validation {key}")
    best = [r["epoch"] for r in history if r.get("best")]
    if best:  # the epoch best.pt holds
        right.axvline(best[-1], color="grey", linestyle=":", label=f"best.pt ({history[-1].get('select', 'f1')})")
    right.set_ylim(0, 1.02), right.set_xlabel("epoch"), right.legend(), right.set_title("validation")
    _save(plt, fig, path)


def evaluation_plots(labels: np.ndarray, probs: np.ndarray, threshold: float, out: Path) -> list[Path]:
    """roc.png, pr.png, confusion.png, scores.png and reliability.png in `out`."""
    from sklearn import metrics as skm

    out.mkdir(parents=True, exist_ok=True)
    written = []
    both = labels.min() != labels.max()
    if both:
        plt, fig, ax = _figure(size=(5, 5))
        fpr, tpr, _ = skm.roc_curve(labels, probs)
        ax.plot(fpr, tpr, label=f"AUC {skm.auc(fpr, tpr):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set_xlabel("false positive rate (real called fake)"), ax.set_ylabel("true positive rate"), ax.legend()
        ax.set_title("ROC")
        _save(plt, fig, out / "roc.png")
        plt, fig, ax = _figure(size=(5, 5))
        precision, recall, _ = skm.precision_recall_curve(labels, probs)
        ax.plot(recall, precision, label=f"AP {skm.average_precision_score(labels, probs):.3f}")
        ax.set_xlabel("recall (fakes caught)"), ax.set_ylabel("precision"), ax.legend(), ax.set_title("precision-recall")
        _save(plt, fig, out / "pr.png")
        written += [out / "roc.png", out / "pr.png"]
    plt, fig, ax = _figure(size=(4.5, 4))
    matrix = skm.confusion_matrix(labels, probs >= threshold, labels=[0, 1])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="black", fontsize=14)
    ax.set_xticks([0, 1], ["real", "fake"]), ax.set_yticks([0, 1], ["real", "fake"])
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(f"confusion at threshold {threshold:.3f}")
    _save(plt, fig, out / "confusion.png")
    plt, fig, ax = _figure(size=(6, 4))
    bins = np.linspace(0, 1, 26)
    for label, name in ((0, "real"), (1, "fake")):
        if (labels == label).any():
            ax.hist(probs[labels == label], bins=bins, alpha=0.6, label=name)
    ax.axvline(threshold, color="black", linestyle="--", label="threshold")
    ax.set_xlabel("P(fake)"), ax.set_ylabel("videos"), ax.legend(), ax.set_title("scores per class")
    _save(plt, fig, out / "scores.png")
    from deepfake_cli.calibration import ece_if_calibrated, expected_calibration_error, reliability

    plt, fig, ax = _figure(size=(5, 5))
    rows = reliability(labels, probs)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.plot([r["mean_p_fake"] for r in rows], [r["share_fake"] for r in rows], "o-",
            label=f"this data (ECE {expected_calibration_error(labels, probs):.3f}; "
                  f"by chance alone below {ece_if_calibrated(probs):.3f} 9 in 10)")
    for r in rows:
        ax.annotate(str(r["videos"]), (r["mean_p_fake"], r["share_fake"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=8)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("mean P(fake) in the bin (videos beside each point)"), ax.set_ylabel("share of fakes in the bin")
    ax.legend(), ax.set_title("reliability")
    _save(plt, fig, out / "reliability.png")
    return written + [out / "confusion.png", out / "scores.png", out / "reliability.png"]


def contact_sheet(rows, top_window: int, fps: float, verdict, path: Path, thumb: int = 72) -> None:
    """One row per window (window, P(fake), its faces, each face's P(fake) or None): the faces with their
    times, the most suspicious window framed in red and, in it, the frame the frame head scores highest."""
    import cv2

    label_width = 170
    seq_len = len(rows[0][2])
    width = label_width + thumb * seq_len
    header = np.full((40, width, 3), 255, np.uint8)
    title = f"{Path(verdict.path).name}: P(fake) {verdict.p_fake:.3f} -> {verdict.label}"
    if len(verdict.models) > 1:
        title += f" ({len(verdict.models)} models: " + ", ".join(f"{m['p_fake']:.2f}" for m in verdict.models) + ")"
    cv2.putText(header, title, (8, 26),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    blocks = [header]
    for window, score, frames, frame_scores in rows:
        row = np.full((thumb + 22, width, 3), 255, np.uint8)
        top = window == top_window
        color = (0, 0, 220) if top else (0, 0, 0)
        worst = int(np.argmax(frame_scores)) if frame_scores is not None else None
        for i, f in enumerate(frames):
            x = label_width + i * thumb
            row[4:4 + thumb, x:x + thumb] = cv2.resize(f.crop, (thumb, thumb))
            if top and i == worst:
                cv2.rectangle(row, (x, 4), (x + thumb - 1, 3 + thumb), color, 2)
            when = f"{f.index / fps:.1f}s" if fps else str(f.index)
            cv2.putText(row, when, (x + 4, thumb + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(row, f"window {window + 1}", (6, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
        cv2.putText(row, f"P(fake) {score:.3f}", (6, 55), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
        if top:
            cv2.rectangle(row, (0, 0), (width - 1, thumb + 21), color, 3)
        blocks.append(row)
    ok, png = cv2.imencode(".png", np.vstack(blocks))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png.tobytes())
