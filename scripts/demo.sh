#!/usr/bin/env bash
# The main job, end to end, from nothing: set up .venv (the locked versions), export the bundled
# raccoon NanoDet-m to ONNX and NCNN with parity verification, detect on a folder of images
# (default: the three sample images shipped in the package) and write annotated copies,
# benchmark every backend and precision the export has, and write the FPS report.
#
#   scripts/demo.sh [IMAGES_DIR]        # results in runs/demo/ (OUT=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-nanodet_deploy/assets/samples}
OUT=${OUT:-runs/demo}
CKPT=assets/nanodet-m-raccoon-320.pth

scripts/setup.sh
. .venv/bin/activate
rm -rf "$OUT/export" "$OUT/detections"
mkdir -p "$OUT"

echo "== export $CKPT -> $OUT/export (ONNX + NCNN fp16, verified on $IMAGES)"
nanodet-export "$CKPT" --size 320 --out "$OUT/export" --images "$IMAGES"

echo "== detect $IMAGES -> $OUT/detections (annotated images) + $OUT/detections.json"
nanodet-deploy detect "$OUT/export" "$IMAGES" --save-dir "$OUT/detections" \
    --json "$OUT/detections.json"

echo "== bench: every backend and precision the export has (each in its own process)"
rm -f "$OUT/bench.json"
nanodet-deploy bench "$OUT/export" --threads 1,2 --size 320 --warmup 10 --iters 100 \
    --images "$IMAGES" --json "$OUT/bench.json"

echo "== report -> $OUT/report"
nanodet-deploy report "$OUT/bench.json" -o "$OUT/report"
echo "done: $OUT/detections/ and $OUT/report/report.md"
