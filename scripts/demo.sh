#!/usr/bin/env bash
# The main job, end to end, from nothing: set up .venv (pinned CPU torch), export the bundled
# raccoon NanoDet-m to ONNX and NCNN with parity verification, detect on a folder of images
# (when one is given), benchmark the backends and write the FPS report.
#
#   scripts/demo.sh [IMAGES_DIR]        # results in runs/demo/ (OUT=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-}
OUT=${OUT:-runs/demo}
CKPT=assets/nanodet-m-raccoon-320.pth

scripts/setup.sh
. .venv/bin/activate
rm -rf "$OUT/export"
mkdir -p "$OUT"

echo "== export $CKPT -> $OUT/export (ONNX + NCNN fp16, verified)"
nanodet-export "$CKPT" --size 320 --out "$OUT/export" ${IMAGES:+--images "$IMAGES"}

if [ -n "$IMAGES" ]; then
    echo "== detect $IMAGES -> $OUT/detections"
    nanodet-deploy detect "$OUT/export" "$IMAGES" --save-dir "$OUT/detections" \
        --json "$OUT/detections.json"
fi

echo "== bench (each combination in its own process)"
rm -f "$OUT/bench.json"
nanodet-deploy bench "$OUT/export" --backend onnxruntime,ncnn,torch --precision fp32,fp16 \
    --threads 1,2 --size 320 --warmup 10 --iters 100 --json "$OUT/bench.json"

echo "== report -> $OUT/report"
nanodet-deploy report "$OUT/bench.json" -o "$OUT/report"
echo "done: $OUT/report/report.md"
