"""`extract`: videos -> per-frame face crops (.jpg) and landmark vectors (.npy), the reference format.

Layout written (the contract with `train` and with the reference notebook's reader):
    OUT/<folder>/<video>_<i>.jpg   256x256 BGR face crop, i = 0..frames-1
    OUT/<folder>/<video>_<i>.npy   float64 (5,) landmark distances in source-frame pixels
    OUT/.deepfake/manifest*.jsonl  one row per input video (OUT's top level holds folders only,
                                   as the reference reader lists every entry there as a label folder)
    OUT/.deepfake/landmarks/<folder>/<video>.npy
                                   float16 (frames, 468, 2): each crop's Face Mesh landmarks in crop
                                   pixels, for `train --self-blend`'s masks
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import signal
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from deepfake_cli import datasets
from deepfake_cli.choices import worker_count
from deepfake_cli.crop import CropSpec
from deepfake_cli.datasets import VideoJob
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.faces import FaceAnalyzer
from deepfake_cli.files import atomic_write_bytes, atomic_write_json
from deepfake_cli.layout import META_DIR, REAL_FOLDERS, labels_path, landmarks_path
from deepfake_cli.memory import reuse_frame_memory
from deepfake_cli.sampling import SkipVideo, sample_faces
from deepfake_cli.video import Video

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ExtractConfig:
    frames: int = 16
    crop: CropSpec = field(default_factory=CropSpec)
    workers: int = -1  # -1: one process per CPU core; 0: in this process
    shard: tuple[int, int] = (1, 1)  # (K, N): this run does the K-th of N deterministic parts
    overwrite: bool = False
    compression: str | None = None  # FaceForensics++: raw, c23 or c40 where several were downloaded

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise DeepfakeError(f"--frames must be at least 1, got {self.frames}")
        if self.workers < -1:
            raise DeepfakeError(f"--workers must be -1 (one per core), 0 (none: in this process) or more, got {self.workers}")
        k, n = self.shard
        if not 1 <= k <= n:
            raise DeepfakeError(f"--shard must be K/N with 1 <= K <= N, got {k}/{n}")

    @property
    def n_workers(self) -> int:
        return worker_count(self.workers)

    def settings(self) -> dict:
        """What must match for a re-run to reuse earlier output."""
        return {"frames": self.frames, "crop": self.crop.to_dict()}


@dataclass
class Summary:
    rows: list[dict] = field(default_factory=list)  # this run's manifest rows
    already_done: int = 0
    interrupted: bool = False
    layout: str = ""  # how VIDEOS was read (`datasets`)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    def by_folder(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for r in self.rows:
            table.setdefault(r["folder"], {"ok": 0, "skipped": 0, "failed": 0})[r["status"]] += 1
        return dict(sorted(table.items()))


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise DeepfakeError(f"--shard must look like K/N (e.g. 2/8), got {text!r}") from None
    return k, n


def find_videos(videos: Path, compression: str | None = None) -> list[VideoJob]:
    """Videos under `videos`: a file, a folder of videos, a folder of label folders, or a dataset as it
    downloads (`datasets`: FaceForensics++, Celeb-DF, DFDC)."""
    return datasets.find_videos(videos, compression)[1]


def in_shard(job: VideoJob, shard: tuple[int, int]) -> bool:
    """Stable across machines and runs (crc32, not Python's salted hash); adding videos moves none."""
    k, n = shard
    return zlib.crc32(job.key.encode()) % n == k - 1


# ---- one video ------------------------------------------------------------------------------


def extract_video(job: VideoJob, out: Path, cfg: ExtractConfig, analyzer: FaceAnalyzer, threads: int = 0) -> dict:
    """Write one video's crops and vectors; return its manifest row. Never raises for bad input."""
    started = time.perf_counter()
    label = job.label if job.label is not None else int(job.folder not in REAL_FOLDERS)
    row = {"source": str(job.source), "folder": job.folder, "video": job.video, "label": label,
           "made_on": job.made_on, "status": "ok", "reason": None,
           "frames": 0, "frame_indices": [], "fps": None, "width": None, "height": None, "rotation": None,
           "borrowed": 0, "face_confidence": None}
    try:
        with Video(job.source, threads) as video:
            info = video.info
            row.update(fps=round(info.fps, 3), width=info.width, height=info.height)
            sampled = sample_faces(video, analyzer, cfg.frames, cfg.crop, borrow=True)
            person = sampled.people[0][0]
            width, height = video.display_size
            row.update(width=width, height=height, rotation=video.rotation)  # as displayed: frames are read upright
        have = [f for f in person if f is not None]
        if len(have) < cfg.frames:
            raise SkipVideo(f"a face in only {len(have)} of {cfg.frames} frame segments, and too few other frames "
                            "with it to borrow from")
        for i, frame in enumerate(have):
            stem = out / job.folder / f"{job.video}_{i}"
            ok, jpg = cv2.imencode(".jpg", frame.crop)  # OpenCV's default quality 95, as the reference
            atomic_write_bytes(stem.with_suffix(".jpg"), jpg.tobytes())
            atomic_write_bytes(stem.with_suffix(".npy"), _npy_bytes(frame.vector))
        landmarks = np.stack([f.landmarks for f in have]).astype(np.float16)  # (frames, 468, 2)
        atomic_write_bytes(landmarks_path(out, job.folder, job.video), _npy_bytes(landmarks))
        row.update(frames=len(have), frame_indices=[f.index for f in have], borrowed=sampled.borrowed,
                   face_confidence=round(float(np.mean([f.score for f in have])), 4))
    except SkipVideo as e:
        row.update(status="skipped", reason=str(e))
    except DeepfakeError as e:
        row.update(status="failed", reason=str(e).removeprefix(f"{job.source}: "))
    except Exception as e:  # one broken video must never stop the others; the row keeps the error
        log.exception("unexpected error on %s", job.source)
        row.update(status="failed", reason=f"{type(e).__name__}: {e}")
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ---- the manifest ---------------------------------------------------------------------------


def manifest_path(out: Path, shard: tuple[int, int]) -> Path:
    k, n = shard
    return out / META_DIR / ("manifest.jsonl" if n == 1 else f"manifest-{k}-of-{n}.jsonl")


def read_manifest(out: Path) -> dict[str, dict]:
    """Latest row per video over every shard's manifest."""
    rows = {}
    for path in sorted((out / META_DIR).glob("manifest*.jsonl")):
        rows.update(_manifest_rows(path))
    return rows


def _manifest_rows(path: Path) -> dict[str, dict]:
    """Latest row per video in one manifest; a torn last line (a kill mid-write) is ignored."""
    rows = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[f"{row['folder']}/{row['video']}"] = row
    return rows


def is_done(row: dict | None, out: Path) -> bool:
    """Done means a final row and, for ok videos, every file still on disk. Failures are retried."""
    if row is None or row["status"] == "failed":
        return False
    stem = out / row["folder"] / row["video"]
    return all(Path(f"{stem}_{i}{ext}").is_file() for i in range(row["frames"]) for ext in (".jpg", ".npy"))


def _check_settings(out: Path, cfg: ExtractConfig) -> None:
    path = out / META_DIR / "extract.json"
    if path.is_file() and not cfg.overwrite:
        before = json.loads(path.read_text())
        if before != cfg.settings():
            raise DeepfakeError(
                f"{out} was extracted with other settings ({before}); "
                "re-run with the same --frames/--margin/--size, or pass --overwrite"
            )
    atomic_write_json(path, cfg.settings())


def record_labels(out: Path, jobs: list[VideoJob]) -> None:
    """OUT/.deepfake/labels.json: each label folder's label where the dataset's layout says it, and the
    real video each fake was made on where the dataset records it, for `train` and `evaluate` to read
    without --real-folders. Folders of the plain layout are left to their names (`original` is real)."""
    path = labels_path(out)
    before = json.loads(path.read_text()) if path.is_file() else {"labels": {}, "made_on": {}}
    labels = {job.folder: job.label for job in jobs if job.label is not None}  # a plain layout's folders: none
    clash = [f for f, label in labels.items() if before["labels"].get(f, label) != label]
    if clash:
        raise DeepfakeError(f"{out}: an earlier extract labelled {clash[0]}/ {'fake' if labels[clash[0]] == 0 else 'real'}; "
                            "extract this dataset into another OUT folder")
    made_on = {job.key: job.made_on for job in jobs if job.made_on}
    if not labels and not made_on and not path.is_file():
        return
    atomic_write_json(path, {"labels": {**before["labels"], **labels}, "made_on": {**before["made_on"], **made_on}})


# ---- the run --------------------------------------------------------------------------------


def extract(
    videos: Path,
    out: Path,
    cfg: ExtractConfig,
    on_start: Callable[[int, int], None] | None = None,
    on_video: Callable[[dict], None] | None = None,
) -> Summary:
    """Extract every video under `videos` (this shard's part) into `out`, resuming earlier work.

    `on_start(to_do, already_done)` is called once the plan is known, `on_video(row)` after
    each video. Ctrl-C stops cleanly: finished videos are kept, the summary says interrupted.
    """
    summary = Summary()
    layout, found = datasets.find_videos(videos, cfg.compression)
    jobs = [j for j in found if in_shard(j, cfg.shard)]
    _prepare_out(out)
    _check_settings(out, cfg)
    record_labels(out, found)
    summary.layout = layout
    manifest = manifest_path(out, cfg.shard)
    try:
        # The workers start (imports: most of a second each) while earlier output is checked.
        with _workers(min(cfg.n_workers, len(jobs)), out, cfg) as run:
            done = {} if cfg.overwrite else read_manifest(out)
            todo = [j for j in jobs if not is_done(done.get(j.key), out)]
            summary.already_done = len(jobs) - len(todo)
            if on_start:
                on_start(len(todo), summary.already_done)
            with open(manifest, "a" if not cfg.overwrite else "w") as log_file:
                for row in run(todo):
                    # Appended and synced one row at a time: a row only exists once its files do.
                    log_file.write(json.dumps(row) + "\n")
                    log_file.flush()
                    os.fsync(log_file.fileno())
                    summary.rows.append(row)
                    if on_video:
                        on_video(row)
    except KeyboardInterrupt:
        summary.interrupted = True
    _compact_manifest(manifest)
    return summary


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DeepfakeError(f"{out} is a file; OUT must be a folder (new or from an earlier extract)")
    try:
        (out / META_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeepfakeError(f"cannot write to {out} ({e.strerror}); choose a folder you can write to") from None
    if not os.access(out / META_DIR, os.W_OK):
        raise DeepfakeError(f"cannot write to {out} (permission denied); choose a folder you can write to")


def _compact_manifest(path: Path) -> None:
    """One row per video, latest wins; rewritten atomically."""
    rows = _manifest_rows(path).values()
    atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in rows).encode())


@contextlib.contextmanager
def _workers(n: int, out: Path, cfg: ExtractConfig) -> Iterator[Callable[[list[VideoJob]], Iterator[dict]]]:
    """A function from jobs to their manifest rows (in completion order), run by `n` processes."""
    if n <= 1:
        with FaceAnalyzer() as analyzer:
            yield lambda jobs: (extract_video(job, out, cfg, analyzer) for job in jobs)
        return
    # spawn, not fork: the parent may hold torch/OpenMP threads, which do not survive a fork.
    ctx = multiprocessing.get_context("spawn")
    # Several processes each decoding with all cores would oversubscribe them.
    threads = max(1, (os.cpu_count() or 1) // n)
    pool = ctx.Pool(n, initializer=_init_worker, initargs=(out, cfg, threads))
    try:
        yield lambda jobs: pool.imap_unordered(_work, jobs, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


_worker: dict = {}


def _init_worker(out: Path, cfg: ExtractConfig, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    cv2.setNumThreads(1)
    reuse_frame_memory()
    _worker.update(out=out, cfg=cfg, threads=threads, analyzer=FaceAnalyzer())


def _work(job: VideoJob) -> dict:
    return extract_video(job, _worker["out"], _worker["cfg"], _worker["analyzer"], _worker["threads"])


def summary_dict(summary: Summary) -> dict:
    return {"ok": summary.count("ok"), "skipped": summary.count("skipped"), "failed": summary.count("failed"),
            "already_done": summary.already_done, "interrupted": summary.interrupted, "layout": summary.layout,
            "by_folder": summary.by_folder(), "videos": summary.rows}


