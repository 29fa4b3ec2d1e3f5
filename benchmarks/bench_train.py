"""Training speed and memory: deepfake_cli.train against the reference notebook's training loop.

    python benchmarks/bench_train.py [--quick] [--steps K]
    python benchmarks/bench_train.py --gpu-only DATA [BLEND_DATA] [--copies 4] [--batches 4,16] [--label NAME]
                                                       # the GPU half alone, on extracted DATA
    python benchmarks/bench_train.py --self-blend      # a --self-blend epoch against a plain one
    python benchmarks/bench_train.py --freeze-stages   # the default's frozen stem and stages against none
    python benchmarks/bench_train.py --keep-memory [DATA] [--epochs 6] [--amp auto,off] [--rounds 1] [--self-blend]
                                                       # the acceptance command, freed memory kept vs glibc's default

Both sides train EfficientNet-B0 + BiLSTM on the same extracted example videos, 16 frames,
batch 4, and are timed over K steps after one warm-up step; ours also trains the Lite0 backbone
on the same steps (Lite0 against B0: the backbone the offline default picks). The reference is the notebook's
loop (per-sample imread + resize + ToTensor, num_workers=0, Sigmoid + BCELoss, Adam, fp32);
ours is `deepfake_cli.train.train` itself, its step times read from its per-batch callback.
A split file fixes ours to exactly K + 1 training steps and a two-video validation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from deepfake_cli.checkpoint import read_checkpoint
from deepfake_cli.data import scan

import common
from reference import ReferenceDataset, reference_train_steps

FULL = dict(identities=8, image_size=256, steps=2, memory_identities=(8, 16), memory_image_size=64)
QUICK = dict(identities=4, image_size=32, steps=1, memory_identities=(4, 8), memory_image_size=32)
BATCH = 4
SEQ_LEN = 16


def real_fake_val(data: Path) -> tuple[list[str], list[str], list[str]]:
    """DATA's real and fake video keys, less the last of each, which validate (the third list)."""
    samples = scan(data, SEQ_LEN)
    real = [s.key for s in samples if s.label == 0]
    fake = [s.key for s in samples if s.label == 1]
    return real, fake, [real.pop(), fake.pop()]


def write_split(data: Path, train_videos: int, path: Path) -> list[str]:
    """A split file: `train_videos` videos alternating real and fake, and one real + one fake to validate.

    Returns the training keys.
    """
    real, fake, val = real_fake_val(data)
    mixed = [key for pair in zip(real, fake) for key in pair] + real[len(fake):] + fake[len(real):]
    if len(mixed) < train_videos:
        raise SystemExit(f"{data} has {len(mixed) + 2} videos; {train_videos + 2} needed")
    train = mixed[:train_videos]
    path.write_text(json.dumps({"train": train, "val": val}))
    return train


def ours_train(data: Path, split_file: Path, name: str, image_size: int, device: str = "cpu", amp: str = "off",
               freeze: bool = False, epochs: int = 1, backbone: str = "efficientnet_b0", batch: int = BATCH,
               self_blend: bool = False, workers: int = -1, pretrained: bool | None = False,
               freeze_stages: int | None = None) -> dict:
    """`deepfake_cli.train.train` with its defaults (augmentation, DataLoader workers, channels_last).

    Clips/s of the first epoch's steps after the first (the warm-up), from on_batch time stamps.
    """
    from deepfake_cli.train import Callbacks, TrainConfig, train

    stamps: list[tuple[int, int, float]] = []  # (epoch, step, time at the end of the step)
    cfg = TrainConfig(data=data, run=common.scratch_dir(f"train-{name}") / "run", epochs=epochs, batch_size=batch,
                      seq_len=SEQ_LEN, image_size=image_size, split_file=split_file, backbone=backbone, pretrained=pretrained,
                      device=device, amp=amp, freeze_backbone=freeze, self_blend=self_blend, workers=workers,
                      freeze_stages=freeze_stages)
    seconds, result = common.timed(
        train, cfg, Callbacks(on_batch=lambda epoch, step, total, loss: stamps.append((epoch, step, time.perf_counter()))))
    first = [t for epoch, _, t in stamps if epoch == 1]
    n_train = len(json.loads(split_file.read_text())["train"]) * (2 if self_blend else 1)  # a real and its blend
    timed_clips = n_train - batch  # every step but the first, whose batch is full
    return {"clips_per_s": timed_clips / (first[-1] - first[0]), "timed_steps": len(first) - 1,
            "timed_clips": timed_clips, "total_seconds": round(seconds, 2),
            "history": [{k: row[k] for k in ("epoch", "clips_per_s", "seconds")} for row in result.history]}


def after_first_epoch(ours: dict) -> float:
    """Clips/s over the epochs after the first of an `ours_train` run: the loader past its start."""
    later = ours["history"][1:]
    return sum(row["clips_per_s"] for row in later) / len(later)


def train_memory(data: Path, image_size: int, freeze: bool = False) -> common.Child:
    """One epoch of `train` (its defaults, its own identity split) in a child process: peak RSS.

    Through the Python API rather than the CLI, whose flags are still moving.
    """
    run = common.scratch_dir(f"train-memory-{data.parent.name}-{image_size}{'-frozen' * freeze}") / "run"
    code = ("from deepfake_cli.train import TrainConfig, train; "
            f"train(TrainConfig(data={str(data)!r}, run={str(run)!r}, epochs=1, image_size={image_size}, "
            f"pretrained=False, freeze_backbone={freeze}))")
    child = common.run_child([common.PYTHON, "-c", code])
    return common.check_child(child, f"train on {data}")


def resident_steps(device: torch.device, image_size: int, steps: int, amp: torch.dtype | None = None,
                   backbone: str = "efficientnet_b0", batch: int = BATCH) -> dict:
    """train()'s own step (`train_epoch`: the frame head's loss, AdamW, clipping, the weight average) fed one
    batch already in device memory, `steps` + 1 times.

    No decoding, augmentation or transfer: the compute-bound ceiling that train() can reach.
    """
    from deepfake_cli.inputs import InputSpec
    from deepfake_cli.model import DeepfakeDetector
    from deepfake_cli.train import TrainConfig
    from deepfake_cli.train.average import WeightAverage
    from deepfake_cli.train.step import Step, train_epoch

    cfg = TrainConfig(data=Path("."), batch_size=batch, image_size=image_size, seq_len=SEQ_LEN)
    inputs = InputSpec(image_size=image_size, seq_len=SEQ_LEN)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train() sets it
    model = DeepfakeDetector(readout="final", backbone=backbone, frame_head=True).to(device)
    model.cnn.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    frames = torch.randint(0, 256, (batch, SEQ_LEN, 3, image_size, image_size), dtype=torch.uint8, device=device)
    vectors, labels = torch.rand(batch, SEQ_LEN, 5, device=device) * 100, torch.ones(batch, device=device)
    stamps: list[float] = []  # the end of each step: loss.item() in the step has synchronised the device
    step = Step(model, inputs, cfg, device, amp, optimizer, torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
                torch.nn.BCEWithLogitsLoss(), Path("."), from_features=False, frame_loss=cfg.model.frame_loss,
                average=WeightAverage(model, cfg.optim.ema))
    train_epoch(step, [(frames, vectors, labels)] * (steps + 1), 1, lambda *_: stamps.append(time.perf_counter()))
    seconds = stamps[-1] - stamps[0]  # after the first (warm-up) step
    return {"steps": steps, "seconds": seconds, "clips_per_s": steps * batch / seconds}


BACKBONES = ("efficientnet_b0", "efficientnet_lite0")
GPU_BATCHES = (BATCH, 16)  # the reference's batch, and one that gives a GPU enough work per step


def gpu_figures(data: Path, split_file: Path, train_keys: list[str], image_size: int, name: str = "cuda",
                batches: tuple[int, ...] = GPU_BATCHES) -> dict:
    """On a GPU, per backbone: ours vs the reference loop (B0, the notebook's), and ours vs the same
    model fed from tensors already on the GPU.

    The last ratio is the data pipeline's efficiency: 1.0 means the GPU never waits for data.
    GPU steps are fast, so ours runs 3 epochs and is read from epochs 2-3 (the loader's steady state); the
    reference loop and the resident steps, which have no start-up to hide, run 400 clips' steps.
    """
    from deepfake_cli.device import resolve_amp

    device = torch.device(name)  # `name` is only ever "cpu" to smoke-test this code without a GPU
    clips = 400
    reference = reference_train_steps(ReferenceDataset.from_folder(data, set(train_keys), size=image_size), device,
                                      clips // BATCH)
    figures = {"measured": True, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else name,
               "reference_clips_per_s": reference["clips_per_s"]}
    for backbone in BACKBONES:
        for batch in batches:
            ours = ours_train(data, split_file, f"gpu-{backbone}-{batch}", image_size, device=name, amp="auto", epochs=3,
                              backbone=backbone, batch=batch)
            ours_cps = after_first_epoch(ours)
            resident = resident_steps(device, image_size, clips // batch, resolve_amp("auto", device),
                                      backbone, batch)["clips_per_s"]
            figures[f"{backbone}-batch{batch}"] = {
                "backbone": backbone, "batch": batch, "ours_clips_per_s": ours_cps, "resident_clips_per_s": resident,
                "run_seconds": ours["total_seconds"],
                "speedup_vs_reference": ours_cps / reference["clips_per_s"], "ours_vs_resident": ours_cps / resident}
            print(f"GPU {backbone} batch {batch}: {ours_cps:.1f} clips/s, reference {reference['clips_per_s']:.1f}, "
                  f"resident {resident:.1f}", flush=True)
    # train() stops at 8 loader workers: would every core feed the GPU better? (In the full set of rows only.)
    if (os.cpu_count() or 1) > 8 and batches == GPU_BATCHES:
        ours = ours_train(data, split_file, "gpu-all-cores", image_size, device=name, amp="auto", epochs=3,
                          batch=max(GPU_BATCHES), workers=os.cpu_count())
        figures["all_cores"] = {"workers": os.cpu_count(), "backbone": "efficientnet_b0", "batch": max(GPU_BATCHES),
                                "ours_clips_per_s": after_first_epoch(ours)}
        print(f"GPU efficientnet_b0 batch {max(GPU_BATCHES)}, {os.cpu_count()} workers: "
              f"{figures['all_cores']['ours_clips_per_s']:.1f} clips/s", flush=True)
    return figures


def gpu_rows(g: dict) -> list[dict]:
    rows = []
    for key, b in g.items():
        if not isinstance(b, dict) or key == "all_cores":
            continue
        backbone = f"{b['backbone']}, batch {b['batch']}"
        rows += [common.row(f"GPU ({g['device']}): train {backbone} vs reference loop (B0, batch {BATCH})",
                            f"{b['ours_clips_per_s']:.1f} clips/s", f"reference {g['reference_clips_per_s']:.1f} clips/s",
                            f"{b['speedup_vs_reference']:.2f}x", ">= 5x", b["speedup_vs_reference"] >= 5),
                 common.row(f"GPU: train {backbone} vs tensors already on the GPU", f"{b['ours_clips_per_s']:.1f} clips/s",
                            f"resident {b['resident_clips_per_s']:.1f} clips/s", f"{b['ours_vs_resident']:.2f}x", ">= 0.85x",
                            b["ours_vs_resident"] >= 0.85)]
    if "all_cores" in g:
        a, eight = g["all_cores"], g[f"efficientnet_b0-batch{g['all_cores']['batch']}"]
        rows.append(common.row(f"GPU: train efficientnet_b0, batch {a['batch']}, {a['workers']} loader workers vs 8",
                               f"{a['ours_clips_per_s']:.1f} clips/s", f"8 workers {eight['ours_clips_per_s']:.1f} clips/s",
                               f"{a['ours_clips_per_s'] / eight['ours_clips_per_s']:.2f}x"))
    return rows


def replicate(data: Path, copies: int) -> Path:
    """DATA with every video `copies` times over (hard links, video ids suffixed `r1`, `r2`, ...), so that a GPU
    epoch is long enough to time the loader's steady state rather than its start-up. Landmark sidecars and
    extract.json come along."""
    out = common.RESULTS / "tmp" / f"{data.parent.name}-x{copies}"
    if out.exists():
        return out
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for path in data.rglob("*"):
        rel = path.relative_to(data)
        if not path.is_file():
            continue
        if rel.parts[0] == ".deepfake" and path.suffix != ".npy":  # extract.json, manifest.jsonl: as they are
            names = [path.name]
        elif rel.parts[0] == ".deepfake":  # landmarks/<folder>/<video>.npy
            names = [f"{path.stem}r{c}{path.suffix}" for c in range(copies)]
        else:  # <folder>/<video>_<i>.jpg and .npy
            video, sep, index = path.stem.rpartition("_")
            names = [f"{video}r{c}{sep}{index}{path.suffix}" for c in range(copies)]
        for name in names:
            target = staging / rel.parent / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    staging.rename(out)
    return out


def gpu_only(data: Path, blend_data: Path | None = None, copies: int = 4, batches: tuple[int, ...] = GPU_BATCHES,
             label: str = "") -> None:
    """The GPU half alone, on already extracted DATA (a GPU machine needs no MediaPipe for it), each video
    `copies` times over; with BLEND_DATA (extracted with landmark sidecars), the --self-blend epoch's cost too."""
    data = replicate(data, copies)
    split_file = common.RESULTS / "tmp" / "train-split-gpu.json"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    videos = len(scan(data, SEQ_LEN)) - 2
    train_keys = write_split(data, videos - videos % max(batches), split_file)
    measured = {"gpu": gpu_figures(data, split_file, train_keys, FULL["image_size"], batches=batches)}
    rows = gpu_rows(measured["gpu"])
    if blend_data is not None:
        measured["gpu_self_blend"] = gpu_self_blend(replicate(blend_data, copies))
        rows += gpu_blend_rows(measured["gpu_self_blend"], measured["gpu"]["device"])
    common.save_results(f"bench_train-gpu{label}", False, {"load_1min_at_start": 0, "waited_s": 0, "idle": True},
                        {"image_size": FULL["image_size"], "batch": BATCH, "seq_len": SEQ_LEN, "copies": copies,
                         "train_videos": len(train_keys), "data": str(data), "blend_data": str(blend_data)}, measured, rows)


def blend_splits(data: Path, k: int | None = None) -> tuple[Path, Path, int]:
    """Split files over as many sequences: k real + k fake videos (plain), and the same k real videos (--self-blend,
    each with its blend); k = None: as many as both classes have. One real and one fake video validate both.
    Returns the two files and k."""
    real, fake, val = real_fake_val(data)
    k = min(len(real), len(fake)) if k is None else k
    plain, blend = common.RESULTS / "tmp" / "train-split-plain.json", common.RESULTS / "tmp" / "train-split-blend.json"
    plain.parent.mkdir(parents=True, exist_ok=True)
    plain.write_text(json.dumps({"train": real[:k] + fake[:k], "val": val}))
    blend.write_text(json.dumps({"train": real[:k], "val": val}))
    return plain, blend, k


def interleaved(data: Path, image_size: int, rounds: int, variants: dict[str, tuple[Path, dict]]) -> dict[str, list[float]]:
    """Clips/s of each variant's `ours_train` (name -> its split file and options), one of each per round."""
    measured: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (split, options) in variants.items():
            result = ours_train(data, split, name, image_size, **options)
            measured[name].append(result["clips_per_s"])
            print(f"{name}: {result['clips_per_s']:.3f} clips/s", flush=True)
    return measured


def self_blend_cost(quick: bool) -> None:
    """A --self-blend epoch against a plain one over as many sequences: the quality recipe's settings (Lite0,
    128 px, batch 8, 16 frames), 2k plain videos (k real, k fake) against k real videos and their k blends,
    three rounds interleaved. Blends are made in the DataLoader workers, so they should hide behind the step."""
    image_size, batch, k, rounds = (32, 4, 4, 1) if quick else (128, 8, 14, 3)
    data = common.example_dataset(16)
    plain_split, blend_split, _ = blend_splits(data, k)
    idle = common.wait_until_idle(quick)
    measured = interleaved(data, image_size, rounds, {
        "plain": (plain_split, dict(backbone="efficientnet_lite0", batch=batch)),
        "self_blend": (blend_split, dict(backbone="efficientnet_lite0", batch=batch, self_blend=True))})
    plain, blend = (float(np.median(measured[k])) for k in ("plain", "self_blend"))
    rows = [common.row(f"train --self-blend epoch cost vs a plain epoch ({2 * k} sequences, {image_size} px, Lite0, "
                       f"batch {batch}; median of {rounds})", f"{blend:.3f} clips/s", f"plain {plain:.3f} clips/s",
                       f"{plain / blend:.2f}x the time", "<= 1.2x", plain / blend <= 1.2)]
    common.save_results("bench_train-self-blend", quick, idle, {"image_size": image_size, "batch": batch,
                        "sequences": 2 * k, "seq_len": SEQ_LEN, "rounds": rounds}, measured, rows)
    common.remove_scratch()


def frozen_stages_cost(quick: bool) -> None:
    """The default's frozen stem and first two stages (`--freeze-stages 3`) against every stage trained (0):
    the offline default backbone (Lite0 on its ImageNet weights) at the default 256 px, batch 8, 16 frames,
    the same videos, rounds interleaved. Frozen stages skip their backward pass."""
    image_size, batch, k, rounds = (32, 4, 4, 1) if quick else (256, 8, 8, 2)
    data = common.example_dataset(8)
    plain_split, _, _ = blend_splits(data, k)
    idle = common.wait_until_idle(quick)
    measured = interleaved(data, image_size, rounds, {
        f"frozen_{stages}": (plain_split, dict(backbone="efficientnet_lite0", batch=batch, pretrained=None,
                                               freeze_stages=stages)) for stages in (3, 0)})
    frozen, every = (float(np.median(measured[k])) for k in ("frozen_3", "frozen_0"))
    rows = [common.row(f"train step time, --freeze-stages 3 (default) vs 0 ({2 * k} videos, {image_size} px, Lite0 "
                       f"ImageNet, batch {batch}; median of {rounds})", f"{frozen:.3f} clips/s", f"0: {every:.3f} clips/s",
                       f"{every / frozen:.2f}x the time")]
    common.save_results("bench_train-freeze-stages", quick, idle, {"image_size": image_size, "batch": batch,
                        "videos": 2 * k, "seq_len": SEQ_LEN, "rounds": rounds}, measured, rows)
    common.remove_scratch()


def kept_memory_cost(argv: list[str]) -> None:
    """`deepfake train DATA --epochs 6 --batch-size 8 --lr 5e-4` (the acceptance command; 256 px) as a whole
    command in a child process, with the memory a step frees kept for the next (the default on glibc,
    `memory.keep_freed_memory`) against glibc's own behaviour, for each --amp given (`off` is what a CPU
    without native bf16 runs), rounds interleaved: wall time and peak RSS; with `--self-blend`, the acceptance's
    other command. DATA: an `extract` OUT folder (the FaceForensics++ sample's); without it, generated videos."""
    p = argparse.ArgumentParser(prog="bench_train.py --keep-memory")
    p.add_argument("data", type=Path, nargs="?")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--amp", default="auto,off", help="--amp values, comma-separated")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--self-blend", action="store_true", help="the --self-blend acceptance command: DATA's real videos")
    p.add_argument("--quick", action="store_true", help="generated videos, 32 px, one epoch: a smoke check")
    a = p.parse_args(argv)
    data = (a.data or common.example_dataset(4 if a.quick else 16)).resolve()  # the commands run from the repository
    size = ["--image-size", "32"] if a.quick else []
    epochs = 1 if a.quick else a.epochs
    flags = ["--epochs", str(epochs), "--batch-size", "8", "--lr", "5e-4", *(["--self-blend"] if a.self_blend else [])]
    idle = common.wait_until_idle(a.quick)
    measured: dict = {}
    for _ in range(a.rounds):
        for amp in a.amp.split(","):
            for name, env in (("kept", {}), ("glibc", common.GLIBC_DEFAULT)):
                run = common.scratch_dir(f"train-keep-{amp}-{name}") / "run"
                child = common.check_child(common.run_child(
                    [common.PYTHON, "-m", "deepfake_cli", "train", str(data), *flags, "--amp", amp, "--run-dir", str(run),
                     *size], env=env), f"train --amp {amp} ({name})")
                losses = [row["train_loss"] for row in read_checkpoint(run / "last.pt")["history"]]  # exact floats
                measured.setdefault(f"{amp}_{name}", []).append({"seconds": round(child.seconds, 1),
                                                                 "peak_rss_mb": round(child.peak_rss_mb),
                                                                 "tree_pss_mb": round(child.tree_pss_mb), "train_loss": losses})
                print(f"--amp {amp}, {name}: {child.seconds:.0f} s, peak {child.peak_rss_mb:.0f} MB, "
                      f"tree {child.tree_pss_mb:.0f} MB", flush=True)
    rows = []
    for amp in a.amp.split(","):
        kept, glibc = (measured[f"{amp}_{name}"] for name in ("kept", "glibc"))
        t_kept, t_glibc = (common.median([r["seconds"] for r in runs]) for runs in (kept, glibc))
        m_kept, m_glibc = (common.median([r["peak_rss_mb"] for r in runs]) for runs in (kept, glibc))
        pss_kept, pss_glibc = (common.median([r["tree_pss_mb"] for r in runs]) for runs in (kept, glibc))
        rows += [common.row(f"train {' '.join(flags)} --amp {amp}, freed memory kept",
                            f"{t_kept:.0f} s", f"glibc's default {t_glibc:.0f} s", f"{t_kept / t_glibc:.2f}x the time"),
                 common.row(f"  peak RSS, --amp {amp}", f"{m_kept:.0f} MB", f"glibc's default {m_glibc:.0f} MB",
                            f"{m_kept / m_glibc:.2f}x"),
                 common.row(f"  peak PSS of the process tree (loader workers included), --amp {amp}",
                            f"{pss_kept:.0f} MB", f"glibc's default {pss_glibc:.0f} MB",
                            f"{pss_kept / pss_glibc:.2f}x"),
                 common.row(f"  the same training losses, every epoch, --amp {amp}",
                            "yes" if all(r["train_loss"] == kept[0]["train_loss"] for r in kept + glibc) else "no")]
    common.save_results("bench_train-keep-memory" + "-self-blend" * a.self_blend, a.quick, idle,
                        {"data": str(data), "epochs": epochs, "amp": a.amp, "rounds": a.rounds, "flags": flags},
                        measured, rows)
    common.remove_scratch()


def gpu_self_blend(data: Path, name: str = "cuda", image_size: int = 128, batch: int = 8, rounds: int = 2) -> dict:
    """On a GPU, the quality recipe's settings (Lite0, 128 px, batch 8): a --self-blend epoch against a plain one
    over as many sequences, rounds interleaved, each read from epochs 2-3 of a 3-epoch run; and the same step fed
    from tensors already on the GPU. DATA should carry landmark sidecars, so the masks are the hull's."""
    from deepfake_cli.device import resolve_amp

    plain_split, blend_split, k = blend_splits(data)
    measured: dict = {"plain": [], "self_blend": [], "sequences": 2 * k, "image_size": image_size, "batch": batch}
    for _ in range(rounds):
        for key, split, blend in (("plain", plain_split, False), ("self_blend", blend_split, True)):
            ours = ours_train(data, split, f"gpu-{key}", image_size, device=name, amp="auto", epochs=3,
                              backbone="efficientnet_lite0", batch=batch, self_blend=blend)
            measured[key].append(after_first_epoch(ours))
            print(f"GPU {key}: {measured[key][-1]:.1f} clips/s", flush=True)
    device = torch.device(name)
    measured["resident_clips_per_s"] = resident_steps(device, image_size, 20, resolve_amp("auto", device),
                                                      "efficientnet_lite0", batch)["clips_per_s"]
    measured["plain_clips_per_s"], measured["self_blend_clips_per_s"] = (
        float(np.median(measured[key])) for key in ("plain", "self_blend"))
    print(f"GPU resident: {measured['resident_clips_per_s']:.1f} clips/s", flush=True)
    return measured


def gpu_blend_rows(b: dict, device: str) -> list[dict]:
    plain, blend, resident = b["plain_clips_per_s"], b["self_blend_clips_per_s"], b["resident_clips_per_s"]
    setting = f"{b['sequences']} sequences, {b['image_size']} px, Lite0, batch {b['batch']}"
    return [common.row(f"GPU ({device}): train --self-blend epoch vs a plain epoch ({setting})", f"{blend:.1f} clips/s",
                       f"plain {plain:.1f} clips/s", f"{plain / blend:.2f}x the time", "hidden (~1x)", plain / blend <= 1.1),
            common.row(f"GPU: train, plain epoch, vs tensors already on the GPU ({setting})", f"{plain:.1f} clips/s",
                       f"resident {resident:.1f} clips/s", f"{plain / resident:.2f}x")]


def main() -> None:
    if "--gpu-only" in sys.argv:
        p = argparse.ArgumentParser(prog="bench_train.py --gpu-only")
        p.add_argument("data", type=Path)
        p.add_argument("blend_data", type=Path, nargs="?")
        p.add_argument("--copies", type=int, default=4, help="each video this many times over (a longer epoch)")
        p.add_argument("--batches", default=",".join(map(str, GPU_BATCHES)), help="batch sizes, comma-separated")
        p.add_argument("--label", default="", help="appended to the results' name: bench_train-gpu<LABEL>.json")
        a = p.parse_args(sys.argv[sys.argv.index("--gpu-only") + 1:])
        return gpu_only(a.data, a.blend_data, a.copies, tuple(int(b) for b in a.batches.split(",")), a.label)
    if "--keep-memory" in sys.argv:  # before --self-blend, which it takes as an option of its own
        return kept_memory_cost([a for a in sys.argv[1:] if a != "--keep-memory"])
    if "--self-blend" in sys.argv:
        return self_blend_cost("--quick" in sys.argv)
    if "--freeze-stages" in sys.argv:
        return frozen_stages_cost("--quick" in sys.argv)
    p, quick = common.settings(__doc__, FULL, QUICK, "tiny images, one timed step: a smoke check",
                               steps="timed steps after the warm-up (default 2; 1 with --quick)")
    size, steps = p["image_size"], p["steps"]

    data = common.example_dataset(p["identities"])
    memory_data = [common.example_dataset(n) for n in p["memory_identities"]]
    split_file = common.RESULTS / "tmp" / f"train-split-{p['identities']}-{steps}.json"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    train_keys = write_split(data, BATCH * (steps + 1), split_file)
    reference_data = ReferenceDataset.from_folder(data, set(train_keys), size=size)
    torch.set_num_threads(torch.get_num_threads())  # the default, one per core: stated, not changed
    idle = common.wait_until_idle(quick)
    print(f"{len(train_keys)} training videos, {size} px, {SEQ_LEN} frames, batch {BATCH}: "
          f"1 warm-up + {steps} timed steps each", flush=True)

    # One round, interleaved: a round of the full-size steps already takes minutes on 2 cores.
    measured: dict = {}
    measured["ours_fp32"] = ours_train(data, split_file, "fp32", size)
    print(f"ours fp32: {measured['ours_fp32']['clips_per_s']:.3f} clips/s", flush=True)
    measured["ours_lite0_fp32"] = ours_train(data, split_file, "lite0", size, backbone="efficientnet_lite0")
    print(f"ours Lite0 fp32: {measured['ours_lite0_fp32']['clips_per_s']:.3f} clips/s", flush=True)
    measured["reference"] = reference_train_steps(reference_data, torch.device("cpu"), steps)
    print(f"reference: {measured['reference']['clips_per_s']:.3f} clips/s", flush=True)
    measured["resident_fp32"] = resident_steps(torch.device("cpu"), size, steps)
    print(f"same step, tensors in memory: {measured['resident_fp32']['clips_per_s']:.3f} clips/s", flush=True)
    measured["ours_bf16"] = ours_train(data, split_file, "bf16", size, amp="bf16")
    print(f"ours bf16: {measured['ours_bf16']['clips_per_s']:.3f} clips/s", flush=True)
    measured["ours_frozen"] = ours_train(data, split_file, "frozen", size, freeze=True, epochs=3)
    frozen_cps = after_first_epoch(measured["ours_frozen"])
    print(f"ours --freeze-backbone, cached epochs: {frozen_cps:.1f} clips/s", flush=True)
    memory = {data.parent.name: train_memory(data, p["memory_image_size"]) for data in memory_data}
    # --freeze-backbone runs the backbone over every video before training: its peak, at full size.
    frozen_memory = train_memory(memory_data[-1], size, freeze=True)
    measured["memory"] = {name: {"peak_rss_mb": round(c.peak_rss_mb, 1), "tree_pss_mb": round(c.tree_pss_mb, 1),
                                 "seconds": round(c.seconds, 1)} for name, c in memory.items()}
    measured["memory"]["frozen_" + memory_data[-1].parent.name] = {"peak_rss_mb": round(frozen_memory.peak_rss_mb, 1),
                                                                  "seconds": round(frozen_memory.seconds, 1)}
    if torch.cuda.is_available():
        measured["gpu"] = gpu_figures(data, split_file, train_keys, size)
    else:
        measured["gpu"] = {"measured": False, "reason": "torch.cuda.is_available() is False: no GPU on this machine"}
        print("GPU figures not measured: torch.cuda.is_available() is False", flush=True)

    ref_cps = measured["reference"]["clips_per_s"]
    fp32, bf16 = measured["ours_fp32"]["clips_per_s"], measured["ours_bf16"]["clips_per_s"]
    lite0 = measured["ours_lite0_fp32"]["clips_per_s"]
    resident = measured["resident_fp32"]["clips_per_s"]
    reference = f"reference {ref_cps:.3f} clips/s"
    (small_name, small), (large_name, large) = memory.items()
    n_small, n_large = (len(scan(d, SEQ_LEN)) for d in memory_data)
    rows = [
        common.row(f"reference loop ({size} px, fp32)", f"{ref_cps:.3f} clips/s"),
        common.row("train, full fine-tuning, fp32", f"{fp32:.3f} clips/s", reference, f"{fp32 / ref_cps:.2f}x", ">= 2x",
                   fp32 / ref_cps >= 2),
        common.row("train, Lite0 backbone vs B0 (fp32, full fine-tuning)", f"{lite0:.3f} clips/s", f"B0 {fp32:.3f} clips/s",
                   f"{lite0 / fp32:.2f}x"),
        common.row("  train()'s step fed from tensors in memory (compute ceiling)", f"{resident:.3f} clips/s",
                   f"train fp32 {fp32:.3f} clips/s", f"{fp32 / resident:.2f}x of ceiling"),
        common.row("train, full fine-tuning, --amp bf16", f"{bf16:.3f} clips/s", reference, f"{bf16 / ref_cps:.2f}x"),
        common.row("bf16 vs fp32 (ours)", f"{bf16:.3f} clips/s", f"fp32 {fp32:.3f} clips/s", f"{bf16 / fp32:.2f}x",
                   "> 1x pays", bf16 > fp32),
        common.row("train --freeze-backbone, cached epochs 2-3", f"{frozen_cps:.1f} clips/s", reference,
                   f"{frozen_cps / ref_cps:.0f}x", ">= 20x", frozen_cps / ref_cps >= 20),
        common.row("train --freeze-backbone, whole run (feature pass, 3 epochs, validation)",
                   f"{measured['ours_frozen']['total_seconds']:.1f} s"),
        common.row(f"peak RSS, train 1 epoch ({p['memory_image_size']} px), {n_large} videos",
                   f"{large.peak_rss_mb:.0f} MB", f"{n_small} videos {small.peak_rss_mb:.0f} MB",
                   f"{large.peak_rss_mb / small.peak_rss_mb:.2f}x", "flat (~1.0x)",
                   large.peak_rss_mb <= 1.1 * small.peak_rss_mb),
        common.row("  peak PSS of the process tree (loader workers included)", f"{large.tree_pss_mb:.0f} MB",
                   f"{n_small} videos {small.tree_pss_mb:.0f} MB", f"{large.tree_pss_mb / small.tree_pss_mb:.2f}x",
                   "flat (~1.0x)", large.tree_pss_mb <= 1.1 * small.tree_pss_mb),
        common.row(f"peak RSS, train --freeze-backbone 1 epoch ({size} px), {n_large} videos",
                   f"{frozen_memory.peak_rss_mb:.0f} MB", f"full fine-tuning ({p['memory_image_size']} px) "
                   f"{large.peak_rss_mb:.0f} MB"),
    ]
    if measured["gpu"]["measured"]:
        rows += gpu_rows(measured["gpu"])
    else:
        rows.append(common.row("GPU figures", "not measured (no GPU)"))
    settings = {**p, "batch": BATCH, "seq_len": SEQ_LEN, "train_videos": len(train_keys), "data": str(data)}
    common.save_results("bench_train", quick, idle, settings, measured, rows)
    common.remove_scratch()


if __name__ == "__main__":
    main()
