"""`--report`: a 100-clip predict report's size and cost, and both reports rendered in a real browser.

    python benchmarks/bench_report.py [--quick] [--clips N] [--rounds R] [--baseline SRC]

Runs `deepfake predict FOLDER` without and with `--report` on the same clips (alternated rounds, one
model), and `deepfake evaluate --report` on the example set; reports the page's size against the
20 MB budget and what the report adds to predict's time. With `--baseline SRC` (another release's
source tree), also that release's predict on the same clips: a predict without --report must cost
what it did before. Where Chromium is installed (`apt install chromium`), renders each report
headless: the screenshot must not be blank, the page must log no console error, and its script
must have run (the sortable tables mark themselves ready). The check first proves it catches a page
that throws. The screenshots land in benchmarks/results/report-*.png.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

import common
from bench_predict import checkpoint, clip_folder, predict_child

FULL = dict(identities=8, image_size=256, clip_seconds=4, clip_size=(640, 360), clips=100, rounds=2)
QUICK = dict(identities=4, image_size=64, clip_seconds=2, clip_size=(640, 360), clips=4, rounds=1)
TARGET_MB = 20.0


def chromium() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)


def render(browser: str, page: Path, screenshot: Path, height: int = 1600) -> dict:
    """Open `page` headless: its screenshot, the console errors it logged, and whether its script ran."""
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--log-level=0", f"--window-size=1200,{height}"]
    with tempfile.TemporaryDirectory() as profile:
        shot = subprocess.run([*flags, f"--user-data-dir={profile}", f"--screenshot={screenshot}", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([*flags, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120)
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if "CONSOLE" in line]
    errors = [line for line in console if re.search(r"error|uncaught", line, re.I)]
    image = cv2.imread(str(screenshot))
    inked = float(np.mean(image.min(axis=2) < 200)) if image is not None else 0.0  # share of pixels that are not near white
    return {"console_errors": errors, "script_ran": 'data-ready="1"' in dom.stdout, "inked_share": round(inked, 3),
            "screenshot": str(screenshot)}


def self_check(browser: str) -> None:
    """The check must see a page that throws: else a clean result means nothing."""
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "broken.html"
        page.write_text("<!DOCTYPE html><p>text</p><script>undefinedFunction();</script>")
        seen = render(browser, page, Path(folder) / "broken.png")
    if not seen["console_errors"]:
        raise RuntimeError("the browser check did not see a page's console error; it cannot vouch for the reports")


def main() -> None:
    p, quick = common.settings(__doc__, FULL, QUICK, "a few small clips: a smoke check",
                               clips="clips in the predict report (default 100; 4 with --quick)",
                               rounds="alternated rounds of predict with and without --report (default 2)",
                               text={"baseline": ("", "another release's source tree: its predict, without --report")})
    clips = sorted(common.face_clips(6 if not quick else 2, seconds=p["clip_seconds"], size=p["clip_size"]).glob("clip_*.mp4"))
    data = common.example_dataset(p["identities"])
    ckpt = checkpoint(data, p["image_size"])
    folder = clip_folder(clips, p["clips"])
    out = common.scratch_dir("report")
    idle = common.wait_until_idle(quick)

    plain, reported, before = [], [], []
    page = out / "predict.html"
    for r in range(p["rounds"]):
        child, verdicts = predict_child([str(folder)], ckpt)
        plain.append(child.seconds)
        child, with_report = predict_child([str(folder), "--report", str(page)], ckpt)
        reported.append(child.seconds)
        assert [v["p_fake"] for v in verdicts] == [v["p_fake"] for v in with_report], "a report changed the scores"
        if p["baseline"]:
            child = common.run_child([common.PYTHON, "-m", "deepfake_cli", "predict", str(folder), "--model", str(ckpt),
                                      "--json"], **common.other_release(p["baseline"]))
            before.append(child.seconds)
        print(f"round {r + 1}: predict {plain[-1]:.1f} s, with --report {reported[-1]:.1f} s"
              + (f", the baseline release {before[-1]:.1f} s" if before else ""), flush=True)
    size_mb = page.stat().st_size / 1e6
    evaluated = out / "evaluate.html"
    common.check_child(common.run_child([common.PYTHON, "-m", "deepfake_cli", "evaluate", str(data), "--model", str(ckpt),
                                         "--split", "all", "--report", str(evaluated)]), "deepfake evaluate --report")

    browser = chromium()
    rendered = {}
    if browser:
        self_check(browser)
        for name, report in (("predict", page), ("evaluate", evaluated)):
            rendered[name] = render(browser, report, common.RESULTS / f"report-{name}.png")
            print(f"{name} report in {Path(browser).name}: {rendered[name]}", flush=True)
    else:
        print("note: no Chromium here (apt install chromium); the reports were not rendered", flush=True)

    ok = sum(v["status"] == "ok" for v in verdicts)
    plain_s, reported_s = common.median(plain), common.median(reported)
    rows = [
        common.row(f"predict report of {len(verdicts)} clips ({ok} scored)", f"{size_mb:.1f} MB", target=f"<= {TARGET_MB:g} MB",
                   met=size_mb <= TARGET_MB),
        common.row("predict --report against predict", f"{reported_s:.1f} s", f"{plain_s:.1f} s", f"{reported_s / plain_s:.2f}x"),
    ]
    if before:
        before_s = common.median(before)
        rows.append(common.row("predict without --report against the baseline release", f"{plain_s:.1f} s",
                               f"{before_s:.1f} s", f"{plain_s / before_s:.2f}x", "<= 1.05x", plain_s / before_s <= 1.05))
    for name, seen in rendered.items():
        clean = not seen["console_errors"] and seen["script_ran"] and seen["inked_share"] > 0.005
        rows.append(common.row(f"{name} report in headless Chromium: console errors, script ran, inked share",
                               f"{len(seen['console_errors'])}, {seen['script_ran']}, {seen['inked_share']:.3f}",
                               target="0, True, > 0.005", met=clean))
    measured = {"plain_s": plain, "report_s": reported, "baseline_s": before, "report_bytes": page.stat().st_size,
                "evaluate_report_bytes": evaluated.stat().st_size, "clips": len(verdicts), "scored": ok,
                "rendered": rendered, "browser": browser and os.path.basename(browser)}
    common.save_results("bench_report", quick, idle, p, measured, rows)
    common.remove_scratch()


if __name__ == "__main__":
    main()
