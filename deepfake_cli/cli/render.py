"""How each command shows its work: rich progress bars and tables, on stderr (stdout stays for --json)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)  # progress and tables; stdout stays clean for --json
out_console = Console()


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False,
    )


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


# ---- extract --------------------------------------------------------------------------------


@contextlib.contextmanager
def extract_progress(out: Path) -> Iterator[dict]:
    """The `on_start` and `on_video` callbacks of `extract`, drawing one bar."""
    with progress() as bar:
        task = bar.add_task("extract", total=None, rate="")
        frames_done = [0]

        def on_start(todo: int, done: int) -> None:
            bar.update(task, total=todo)
            if done:
                console.print(f"resuming: {done} videos already done in {out}")

        def on_video(row: dict) -> None:
            frames_done[0] += row["frames"]
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, advance=1, rate=f"{frames_done[0] / elapsed:.1f} frames/s")
            if row["status"] != "ok":
                bar.console.print(f"[yellow]{row['status']}[/yellow] {row['source']}: {row['reason']}", highlight=False)

        yield {"on_start": on_start, "on_video": on_video}


def extract_summary(summary, out: Path) -> None:
    table = Table(title=f"extract ({summary.layout}) -> {out}")
    for column in ("folder", "ok", "skipped", "failed"):
        table.add_column(column, justify="left" if column == "folder" else "right")
    for folder, counts in summary.by_folder().items():
        table.add_row(folder, str(counts["ok"]), str(counts["skipped"]), f"[red]{counts['failed']}[/red]" if counts["failed"] else "0")
    console.print(table)
    if summary.already_done:
        console.print(f"{summary.already_done} videos were already done and kept.")
    if summary.interrupted:
        console.print("[yellow]interrupted[/yellow]: finished videos are kept; run the same command again to resume.")


# ---- train ----------------------------------------------------------------------------------


def _frozen(info: dict) -> str:
    stages = info["frozen_stages"]
    if info["freeze_backbone"]:
        return "frozen"
    return {0: "every stage trained", 1: "stem kept as is"}.get(stages, f"stem and {stages - 1} stages kept as they are")


# Under this many validation videos, the Platt fit does not hold on other people: with 24 and 48 its calibration
# error on 311 unseen ones was 0.13-0.17 and 0.10-0.13 (docs/experiments.md, "Calibration on 311 videos").
CALIBRATION_VIDEOS = 100


def _train_start(info: dict, cfg) -> None:
    split = info["split"]
    console.print(f"run {info['run']}: device {info['device']}, amp {info['amp']}, {info['world_size']} process(es); "
                  f"backbone {info['backbone']} ({info['weights']}, {_frozen(info)}); best.pt by validation {info['select']}",
                  highlight=False)
    console.print("split (identity-aware): " + ", ".join(f"{k} {v['real']} real / {v['fake']} fake" for k, v in split.items())
                  + f"; fake loss weight {info['pos_weight']:.3f}"
                  + (f"; each epoch goes over the training set {info['passes']} times (--epoch-size {cfg.data.epoch_size})"
                     if info["passes"] > 1 else ""), highlight=False)
    validating = sum(split.get("val", {}).values())
    if 0 < validating < CALIBRATION_VIDEOS:
        console.print(f"calibration: P(fake) is fitted on {validating} validation videos, too few for it to hold on "
                      "other people (off by 0.1-0.2 at this size; more videos calibrate it better, or a larger --val-fraction "
                      "at a cost in detection)", highlight=False)
    console.print(f"crops: {info['crop']} ({info['crop_source']}); frames: {info['sampling']}; predict will cut "
                  "and sample the same", highlight=False)
    if info["self_blend"]:
        masks = info["self_blend"]
        fallback = (f", from the crop's face ellipse for {masks['crop_ellipse']} (extracted without landmark "
                    "sidecars; extract again into a new folder to add them)") if masks["crop_ellipse"] else ""
        head = f"; a mask head learns where they were blended (weight {cfg.model.mask_loss:g})" if cfg.model.mask_loss else ""
        how = "its blend is one more fake" if cfg.data.blend_fakes else "is paired with its blend"
        console.print(f"self-blend: each real video {how}; masks from Face Mesh landmarks "
                      f"for {masks['landmarks']} videos{fallback}{head}", highlight=False)


@contextlib.contextmanager
def train_progress(cfg) -> Iterator:
    """`train`'s Callbacks: the run's facts at its start, a bar per epoch, a line and a table row after each."""
    from deepfake_cli.train import Callbacks

    table = Table(title="validation after each epoch")
    for column in ("epoch", "train loss", "val loss", "accuracy", "F1", "macro F1", "AUC", "clips/s", ""):
        table.add_column(column, justify="right")
    with progress() as bar:
        task = bar.add_task("train", total=None, rate="")

        def on_batch(epoch: int, done: int, total: int, loss: float) -> None:
            bar.update(task, description=f"epoch {epoch}/{cfg.optim.epochs}", total=total, completed=done, rate=f"loss {loss:.4f}")

        def on_epoch(row: dict) -> None:
            bar.reset(task)
            table.add_row(str(row["epoch"]), f"{row['train_loss']:.4f}", f"{row['val_loss']:.4f}", f"{row['accuracy']:.3f}",
                          f"{row['f1']:.3f}", f"{row['macro_f1']:.3f}", fmt(row["auc"]), f"{row['clips_per_s']:.1f}",
                          "[green]best[/green]" if row["best"] else "")
            unseen = row.get("unseen_methods")
            bar.console.print(f"epoch {row['epoch']}: val macro F1 {row['macro_f1']:.3f}, AUC {fmt(row['auc'])}"
                              + (" (best, saved)" if row["best"] else "")
                              + (f"; unseen fakes AUC {fmt(row['unseen_auc'])} ("
                                 + ", ".join(f"{m} {fmt(a)}" for m, a in unseen.items()) + ")" if unseen else ""),
                              highlight=False)

        yield Callbacks(lambda info: _train_start(info, cfg), on_batch, on_epoch)
    if table.rows:
        console.print(table)


def train_result(result, cfg) -> None:
    best = result.best
    console.print(f"best epoch {best['epoch']} by {cfg.run.select}: macro F1 {best['macro_f1']:.3f}, AUC {fmt(best['auc'])} "
                  f"-> {result.run / 'best.pt'}" + (" (stopped early)" if result.stopped_early else ""), highlight=False)


# ---- evaluate -------------------------------------------------------------------------------


def _report_table(m: dict) -> Table:
    report = m["report"]
    table = Table(title=f"classification report (threshold {m['threshold']:.3f})")
    for column in ("", "precision", "recall", "f1-score", "support"):
        table.add_column(column, justify="right")
    for name in ("real", "fake", "macro avg", "weighted avg"):
        r = report[name]
        table.add_row(name, fmt(r["precision"]), fmt(r["recall"]), fmt(r["f1-score"]), str(int(r["support"])))
    table.add_row("accuracy", "", "", fmt(report["accuracy"]), str(m["n"]))
    return table


def evaluation(result: dict, data: Path, to: Console) -> None:
    """The classification report, the metrics at both thresholds, per method, and each ensemble member."""
    at_t, at_half = result["at_threshold"], result["at_0.5"]
    console.print(f"{result['n']} videos ({result['split']} split of {data}) scored by {result['checkpoint']}", highlight=False)
    to.print(_report_table(at_t))
    summary = Table(title="metrics")
    for column in ("", f"threshold {at_t['threshold']:.3f}", "threshold 0.5"):
        summary.add_column(column, justify="right")
    for key in ("accuracy", "f1", "precision", "recall", "auc", "ap", "eer"):
        summary.add_row(key, fmt(at_t[key]), fmt(at_half[key]))
    (tn, fp), (fn, tp) = at_t["confusion"]
    summary.add_row("confusion [tn fp; fn tp]", f"[{tn} {fp}; {fn} {tp}]", "[{} {}; {} {}]".format(*sum(at_half["confusion"], [])))
    calibration = result["calibration"]
    summary.add_row("calibration: ECE, Brier", f"{calibration['ece']:.3f}, {calibration['brier']:.3f}", "")
    summary.add_row("  ECE by chance alone (9 in 10 below)", f"{calibration['ece_if_calibrated']:.3f}", "")
    to.print(summary)
    methods = Table(title="per method")
    for column in ("method", "label", "videos", "accuracy", "mean P(fake)", "AUC vs real"):
        methods.add_column(column, justify="left" if column in ("method", "label") else "right")
    for row in result["per_method"]:
        methods.add_row(row["method"], row["label"], str(row["n"]), fmt(row["accuracy"]), fmt(row["mean_p_fake"]),
                        fmt(row["auc_vs_real"]))
    to.print(methods)
    if len(result["members"]) > 1:
        members = Table(title="the ensemble's models, each alone")
        for column in ("model", "AUC", "accuracy at its threshold"):
            members.add_column(column, justify="left" if column == "model" else "right")
        for row in result["members"]:
            members.add_row(escape(row["model"]), fmt(row["auc"]), fmt(row["accuracy"]))
        members.add_row("ensemble", fmt(at_t["auc"]), fmt(at_t["accuracy"]))
        to.print(members)


# ---- predict --------------------------------------------------------------------------------


def verdicts(verdicts: list, model_info, to: Console) -> None:
    """One row per clip, then a line for each clip that could not be scored or was left uncertain."""
    table = Table(title=escape(f"predict ({model_info.description})"))
    table.add_column("video", overflow="fold")  # the file name; --json has the full path
    ensemble = not model_info.single
    for column in ("P(fake)", "verdict", "windows", "faces", "suspicious at", "people") + (("models",) if ensemble else ()):
        table.add_column(column, justify="left" if column == "verdict" else "right")
    for v in verdicts:
        if v.status == "ok":
            colour = {"fake": "red", "uncertain": "yellow"}.get(v.label, "green")
            people = " ".join(f"{p['p_fake']:.2f}" for p in v.people)
            models = (" ".join(f"{m['p_fake']:.2f}" for m in v.models),) if ensemble else ()
            table.add_row(Path(v.path).name, f"{v.p_fake:.3f}", f"[{colour}]{v.label}[/{colour}]", str(v.windows), str(v.faces),
                          "-" if v.suspicious_time is None else f"{v.suspicious_time}s", people, *models)
        else:
            table.add_row(Path(v.path).name, "-", f"[yellow]{v.status}[/yellow]", "-", "-", "-", "-", *(("-",) if ensemble else ()))
    to.print(table)
    for v in verdicts:
        if v.status != "ok":
            console.print(f"[yellow]{v.status}[/yellow] {escape(v.path)}: {escape(v.reason or '')}")
        elif v.reasons:
            console.print(f"[yellow]uncertain[/yellow] {escape(Path(v.path).name)}: {escape('; '.join(v.reasons))}")
