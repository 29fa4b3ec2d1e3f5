#!/usr/bin/env bash
# The main job end to end on generated example videos: generate -> extract -> train ->
# evaluate -> predict. About 4 minutes on 2 CPU cores; everything lands in OUT (default demo/).
set -euo pipefail
OUT=${1:-demo}
HERE=$(dirname "$0")

echo "== 1/5 generate example videos (FaceForensics++ layout) into $OUT/videos"
python "$HERE/make_dataset.py" "$OUT/videos" --identities 60 --seed 0
# Two clips of people the detector never sees in training: one real, one face-swapped.
UNSEEN=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")/unseen
(cd "$HERE" && python -c "
from make_dataset import make_clip
make_clip('$UNSEEN/real_person_60.mp4', identity=60, seed=7, seconds=3)
make_clip('$UNSEEN/faceswap_person_60.mp4', identity=60, seed=7, seconds=3, manipulation='FaceSwap')
")

echo "== 2/5 extract face crops and landmark vectors"
deepfake extract "$OUT/videos" "$OUT/faces"

# EfficientNet-Lite0 fine-tuned whole from the ImageNet weights installed with the package (the
# offline default; named here so the demo is the same online), on 128 px crops: 4-6 minutes on 2 cores.
echo "== 3/5 train (EfficientNet-Lite0 from ImageNet weights, full fine-tuning, 128 px crops)"
if [ -f "$OUT/run/last.pt" ]; then  # a second `make demo`, or one that was interrupted: continue that run
  deepfake train --run-dir "$OUT/run" --resume
else
  deepfake train "$OUT/faces" --run-dir "$OUT/run" --backbone efficientnet_lite0 --image-size 128 --epochs 6 --batch-size 8 --lr 5e-4
fi

echo "== 4/5 evaluate on the run's validation split (people never seen in training)"
deepfake evaluate "$OUT/faces" --model "$OUT/run/best.pt" --plots "$OUT/plots" --out "$OUT/metrics.json" \
  --report "$OUT/evaluate.html"

echo "== 5/5 predict on two unseen clips"
deepfake predict "$OUT/unseen" --model "$OUT/run/best.pt" --evidence "$OUT/evidence" --report "$OUT/predict.html"
