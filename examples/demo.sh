#!/usr/bin/env bash
# The main job end to end on generated example videos: generate -> extract -> train ->
# evaluate -> predict. About 3 minutes on 2 CPU cores; everything lands in OUT (default demo/).
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

# Offline there are no ImageNet weights: a frozen from-scratch backbone (features computed once)
# and the LSTM + head trained on them keep this to a minute on a laptop CPU. It shows the
# pipeline, not a good detector: see the README.
echo "== 3/5 train (frozen backbone, 128 px crops)"
deepfake train "$OUT/faces" --run-dir "$OUT/run" --freeze-backbone --image-size 128 --epochs 30 --batch-size 8 --lr 1e-3 --no-pretrained

echo "== 4/5 evaluate on the run's validation split (people never seen in training)"
deepfake evaluate "$OUT/faces" --model "$OUT/run/best.pt" --plots "$OUT/plots" --json "$OUT/metrics.json"

echo "== 5/5 predict on two unseen clips"
deepfake predict "$OUT/unseen" --model "$OUT/run/best.pt" --evidence "$OUT/evidence"
