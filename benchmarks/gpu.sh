#!/usr/bin/env bash
# The GPU half of bench_train.py, for a GPU machine without the package index: the machine's own
# PyTorch (training imports neither MediaPipe nor PyAV), and data extracted beforehand on a CPU box:
# the examples (`python -c "import common; common.example_dataset(32)"` in benchmarks/) and, for the
# --self-blend figure, bench_quality.py's people B (extracted with landmark sidecars). Results land in $OUT.
set -uo pipefail  # a stage that fails leaves the later ones to run
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
OUT="${OUT:-/tmp}"
EXAMPLES=results/data/example-32-320x240-2s/extracted BLEND=results/data/quality-B-60-40-seed2/extracted
python3 bench_train.py --gpu-only "$EXAMPLES" "$BLEND" 2>&1 | tee "$OUT/bench_train-gpu.log"
cp results/bench_train-gpu.json "$OUT/"
# With BASELINE=DIR (a copy of an earlier deepfake_cli package under DIR), the same rows from that code, on this machine.
if [ -n "${BASELINE:-}" ]; then
    PYTHONPATH="$PWD/$BASELINE:$PWD/.." python3 bench_train.py --gpu-only "$EXAMPLES" --label=-baseline 2>&1 \
        | tee "$OUT/bench_train-gpu-baseline.log"
    cp results/bench_train-gpu-baseline.json "$OUT/"
fi
# A longer epoch (every video 16 times over: 1520 training videos) at batch 16: the loader's steady state.
python3 bench_train.py --gpu-only "$EXAMPLES" --copies 16 --batches 16 --label=-long 2>&1 | tee "$OUT/bench_train-gpu-long.log"
cp results/bench_train-gpu-long.json "$OUT/"
