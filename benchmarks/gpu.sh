#!/usr/bin/env bash
# The GPU half of bench_train.py, for a GPU machine without the package index: the machine's own
# PyTorch (training imports neither MediaPipe nor PyAV), and data extracted beforehand on a CPU box:
# the examples (`python -c "import common; common.example_dataset(32)"` in benchmarks/) and, for the
# --self-blend figure, bench_quality.py's people B (extracted with landmark sidecars). Results land in $OUT.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/.." PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "$(nproc) CPU cores"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
# One loader worker's cost per training video (decode + augment), as a check on the data pipeline.
python3 -c "
import time, cv2; from pathlib import Path; from deepfake_cli import data as D; from deepfake_cli.inputs import InputSpec
root = Path('results/data/example-32-320x240-2s/extracted'); samples = D.scan(root, 16)
for threads in (cv2.getNumThreads(), 1):
    cv2.setNumThreads(threads); ds = D.SequenceDataset(root, samples, InputSpec(), augment=True); ds[(0, 1, 1)]
    t = time.perf_counter(); [ds[(i, 1, 1)] for i in range(20)]
    print(f'cv2 threads {threads}: {(time.perf_counter() - t) / 20 * 1000:.1f} ms per video')"
python3 bench_train.py --gpu-only results/data/example-32-320x240-2s/extracted \
    results/data/quality-B-60-40-seed2/extracted 2>&1 | tee "${OUT:-/tmp}/bench_train-gpu.log"
cp results/bench_train-gpu.json "${OUT:-/tmp}/"
