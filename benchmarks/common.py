"""Shared pieces of the benchmarks: test clips and datasets, timing, peak memory, results.

Every figure is a ratio against a baseline measured in the same process tree, on the same
machine and data, right beside ours: absolute times on a shared 2-core box mean little.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
PYTHON = sys.executable

# x264's default keyframe interval: one keyframe per 250 frames, as most encoders produce.
X264_GOP = 250
# How much slower than the example generator the benchmark clips' faces sway: periods of 12-32 s.
SLOWDOWN = 8

# Native libraries log to stderr (FFmpeg, absl, TFLite); silence them as the CLI does.
for _name, _level in (("OPENCV_FFMPEG_LOGLEVEL", "-8"), ("OPENCV_LOG_LEVEL", "ERROR"), ("GLOG_minloglevel", "2"),
                      ("TF_CPP_MIN_LOG_LEVEL", "3")):
    os.environ.setdefault(_name, _level)


class _FirstTime(logging.Filter):
    """Lets each distinct message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        new = message not in self.seen
        self.seen.add(message)
        return new


# Benchmarks train many models in one process, and each run would repeat why it trains the offline backbone.
logging.getLogger("deepfake_cli.backbones").addFilter(_FirstTime())


# ---- test clips -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def make_dataset_module():
    """examples/make_dataset.py, loaded by path: it is an example script, not an installed package."""
    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "examples" / "make_dataset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_dataset"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def write_h264(path: Path, frames, size: tuple[int, int], fps: int, gop: int = X264_GOP) -> Path:
    """Encode BGR frames to H.264 (libx264, default preset and CRF) with a fixed keyframe interval.

    OpenCV here only writes mp4v; real datasets (FF++ c23, Celeb-DF) are H.264, whose decode
    cost is what the extract figures are about. Written to a temp name, then renamed.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
    os.close(handle)
    try:
        with av.open(temporary, "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            # keyint=min-keyint: a keyframe exactly every `gop` frames, no scene-cut extras.
            stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
            for bgr in frames:
                frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def face_clip(path: Path, *, seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 25,
              identity: int = 0) -> Path:
    """An H.264 clip of one slowly swaying face that MediaPipe detects; made once, then cached.

    The example generator's own scene and renderer (its make_clip writes mp4v; we need H.264),
    with the sway slowed SLOWDOWN times: its faces cross the frame in about a second, far
    faster than the talking heads of FF++, and so fast that deepfake_cli's tracker splits one
    face into several tracks across sparse samples (see the benchmark report).
    """
    if path.is_file():
        return path
    md = make_dataset_module()
    background, people = md._scene(identity, 0, size)
    people = [replace(p, track=replace(p.track, omega=p.track.omega / SLOWDOWN)) for p in people]
    return write_h264(path, md._render(background, people, round(seconds * fps), fps), size, fps)


def face_clips(n: int, *, seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 25) -> Path:
    """A folder of exactly `n` clips, one identity each (links to cached clips); returns the folder."""
    name = f"{size[0]}x{size[1]}-{seconds:g}s-{fps}fps-slow{SLOWDOWN}"
    folder = RESULTS / "clips" / f"{name}-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n):
        clip = face_clip(RESULTS / "clips" / name / f"clip_{i:02d}.mp4", seconds=seconds, size=size, fps=fps, identity=i)
        (folder / clip.name).symlink_to(clip)
    return folder


def example_dataset(identities: int, *, size: tuple[int, int] = (320, 240), seconds: float = 2.0) -> Path:
    """examples/make_dataset.py videos, extracted by deepfake_cli (16 frames); cached. Returns the OUT folder."""
    root = RESULTS / "data" / f"example-{identities}-{size[0]}x{size[1]}-{seconds:g}s"
    videos, out, done = root / "videos", root / "extracted", root / "extracted.done"
    if done.is_file():
        return out
    if not (root / "videos.done").is_file():
        shutil.rmtree(videos, ignore_errors=True)
        make_dataset_module().make_dataset(videos, identities=identities, size=size, seconds=seconds)
        (root / "videos.done").touch()
    from deepfake_cli.extract import ExtractConfig, extract

    summary = extract(videos, out, ExtractConfig(frames=16))
    bad = [r for r in summary.rows if r["status"] != "ok"]
    if bad:
        print(f"note: {len(bad)} example videos not extracted: {[(r['video'], r['reason']) for r in bad]}")
    done.touch()
    return out


_scratch: list[Path] = []


def scratch_dir(name: str) -> Path:
    """A fresh, empty folder under results/tmp for one measurement's output."""
    path = RESULTS / "tmp" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    _scratch.append(path)
    return path


def remove_scratch() -> None:
    """Delete this run's scratch folders: training runs alone leave ~85 MB each."""
    for path in _scratch:
        shutil.rmtree(path, ignore_errors=True)
    _scratch.clear()


def settings(doc: str, full: dict, quick: dict, quick_help: str, text: dict[str, tuple[str, str]] | None = None,
             **overrides: str) -> tuple[dict, bool]:
    """A benchmark's command line: `--quick` picks the `quick` preset over `full`, each of
    `overrides` (name -> help) is an integer option that replaces that preset value, and each of
    `text` (name -> (default, help)) a string option. Returns (settings, quick)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    for name, help in overrides.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=help)
    for name, (default, help) in (text or {}).items():
        parser.add_argument(f"--{name.replace('_', '-')}", default=default, help=f"{help} (default: {default})")
    args = parser.parse_args()
    chosen = dict(quick if args.quick else full)
    chosen.update({name: getattr(args, name) for name in overrides if getattr(args, name)})
    chosen.update({name: getattr(args, name) for name in text or {}})
    return chosen, args.quick


# ---- timing and memory --------------------------------------------------------------------------


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


@dataclass
class Child:
    seconds: float
    peak_rss_mb: float  # the largest single process of the child's tree
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float = 0.0  # user + system time of the child and every process it waited for
    tree_pss_mb: float = 0.0  # the whole tree's proportional set size at its largest, sampled (see run_child)


# How often run_child sums the tree's memory: every PSS_INTERVAL_S at most, and never more than
# PSS_CPU_SHARE of one core. Reading a process's PSS walks its page tables: about 80 ms for a 6 GB
# training process, 40 ms for each of its loader workers, so a training run's tree is sampled every
# few seconds. A peak shorter than that can be missed; for short commands peak_rss_mb is the firmer figure.
PSS_INTERVAL_S = 0.5
PSS_CPU_SHARE = 0.05


def process_tree(root: int) -> list[int]:
    """root and every process descended from it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parent = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone between the listing and the read
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def tree_pss_mb(root: int) -> float:
    """The memory a process tree holds, each shared page counted once over the processes sharing it
    (PSS): a forked worker's copy-on-write pages count only as far as they were copied."""
    total_kb = 0
    for pid in process_tree(root):
        try:
            total_kb += sum(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                            if line.startswith("Pss:"))
        except OSError:
            continue
    return total_kb / 1024


def run_child(args: list[str], env: dict | None = None, cwd: Path = REPO) -> Child:
    """Run a command to completion under /usr/bin/time: its wall time, peak RSS and CPU time, and the
    largest PSS of its whole process tree (workers included), sampled as often as costs at most
    PSS_CPU_SHARE of a core (the sampler competes with the command for the CPU).

    Not wait4/RUSAGE_CHILDREN from here: Linux folds the memory a child had before exec (a
    copy of this process, which may be gigabytes after a training run) into its ru_maxrss.
    /usr/bin/time is a tiny parent, so what it reports is the command's own peak. It is also the
    largest single process only: a tree of workers can hold several times that (a forked worker keeps
    the pages its parent writes after the fork), which the tree's PSS shows.
    """
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        started = time.perf_counter()
        process = subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", str(peak_file), *args], cwd=cwd,
                                   env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        peak_pss = [0.0]
        done = threading.Event()

        def sample() -> None:
            interval = PSS_INTERVAL_S
            while not done.wait(interval):
                started_cpu = time.thread_time()
                peak_pss[0] = max(peak_pss[0], tree_pss_mb(process.pid))
                interval = max(PSS_INTERVAL_S, (time.thread_time() - started_cpu) / PSS_CPU_SHARE)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = process.communicate()
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        peak_kb, user, system = peak_file.read_text().split()[-3:]
    return Child(seconds, int(peak_kb) / 1024, process.returncode, stdout, stderr, float(user) + float(system),
                 peak_pss[0])


# glibc's own default for MALLOC_MMAP_MAX_: in a child's environment it changes nothing in glibc and turns
# memory.keep_freed_memory() off, the baseline of the benchmarks of that setting.
GLIBC_DEFAULT = {"MALLOC_MMAP_MAX_": "65536"}


def other_release(source: Path) -> dict:
    """`run_child`'s env and cwd for `python -m deepfake_cli` from another release's source tree. The
    cwd matters: `-m` puts it first on sys.path, so from this checkout its own package would win over
    PYTHONPATH and the "baseline" would be this code again."""
    source = Path(source).resolve()
    if not (source / "deepfake_cli" / "__init__.py").is_file():
        raise SystemExit(f"{source}: no deepfake_cli/ package in it")
    return {"env": {"PYTHONPATH": str(source)}, "cwd": source}


def check_child(child: Child, what: str) -> Child:
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
    return child


def median(values: list[float]) -> float:
    return float(np.median(values))


# ---- a quiet machine ---------------------------------------------------------------------------


def wait_until_idle(quick: bool, threshold: float = 0.5, max_wait: float = 600, step: float = 30) -> dict:
    """Wait (up to `max_wait` s) for the 1-minute load average to drop below `threshold`.

    Other work (test suites) shares these 2 cores; ratios survive some noise, absolute times
    do not. Quick smoke runs do not wait. Returns what was seen, for the results file.
    """
    waited = 0.0
    load = os.getloadavg()[0]
    while not quick and load > threshold and waited < max_wait:
        print(f"load average {load:.2f} > {threshold}: waiting {step:.0f} s ({waited:.0f} s so far)", flush=True)
        time.sleep(step)
        waited += step
        load = os.getloadavg()[0]
    if load > threshold and not quick:
        print(f"warning: still busy after {waited:.0f} s (load {load:.2f}); measuring anyway", flush=True)
    return {"load_1min_at_start": round(load, 2), "waited_s": waited, "idle": load <= threshold}


def machine() -> dict:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "deepfake_cli_sources": sources_digest()}


def sources_digest() -> str:
    """A digest of deepfake_cli's sources: which version of the code a result file measured."""
    digest = hashlib.sha1()
    for path in sorted((REPO / "deepfake_cli").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# ---- results -----------------------------------------------------------------------------------


def row(figure: str, value: str, baseline: str = "-", ratio: str = "-", target: str = "-", met: bool | None = None) -> dict:
    """One line of the results table; `met` is None where there is no target."""
    return {"figure": figure, "value": value, "baseline": baseline, "ratio": ratio, "target": target, "met": met}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| figure | ours | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['figure']} | {r['value']} | {r['baseline']} | {r['ratio']} | {r['target']} | {met} |")
    return "\n".join(lines)


def save_results(name: str, quick: bool, idle: dict, settings: dict, measured: dict, rows: list[dict]) -> Path:
    """Write results/<name>[-quick].json and print the markdown table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'-quick' if quick else ''}.json"
    payload = {"benchmark": name, "quick": quick, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(),
               "load": {**idle, "load_1min_at_end": round(os.getloadavg()[0], 2)}, "settings": settings,
               "measured": measured, "table": rows}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print()
    print(markdown_table(rows))
    print(f"\nload average {idle['load_1min_at_start']} at start, {payload['load']['load_1min_at_end']} at end; "
          f"results in {path.relative_to(REPO)}")
    return path
