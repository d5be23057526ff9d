#!/usr/bin/env bash
# The committed benchmark results of this machine, from scratch:
#   exports (the trained raccoon nanodet-m and nanodet-plus-m; random weights for a model
#   without a checkpoint here: latency does not depend on them), every format and int8, bench
#   (every combination in its own process, mAP of every artifact on raccoon val), report
#   (Markdown, CSV, charts), and the isolation note. Run it on a quiet machine.
#
#   benchmarks/run_all.sh                 # full run: 20 warmup + 200 timed iterations
#   ITERS=10 WARMUP=2 benchmarks/run_all.sh   # smoke run
#
# Env: MODELS ("nanodet-m nanodet-plus-m"), SIZES ("320 416"), FORMATS,
# THREADS (1,2), ITERS (200), WARMUP (20), ISO_ITERS (200), EXPORTS (exports/bench, git-ignored),
# DEVICE_NAME (board / CPU model), RESULTS (benchmarks/results/<device>).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
if ! command -v nanodet-deploy >/dev/null && [ -f .venv/bin/activate ]; then
    . .venv/bin/activate    # the project's venv, when not already active
fi
MODELS="${MODELS:-nanodet-m nanodet-plus-m}"
SIZES="${SIZES:-320 416}"
THREADS="${THREADS:-1,2}"
ITERS="${ITERS:-200}"
WARMUP="${WARMUP:-20}"
EXPORTS="${EXPORTS:-$REPO/exports/bench}"
if [ -n "${DEVICE_NAME:-}" ]; then export NANODET_DEVICE_NAME="$DEVICE_NAME"; fi
DEVICE="$(python -c 'from nanodet_deploy.device import describe_device; print(describe_device()["name"])')"
SLUG="$(python -c 'import sys; from nanodet_deploy.report.charts import slug; print(slug(sys.argv[1]))' "$DEVICE")"
RESULTS="${RESULTS:-$REPO/benchmarks/results/$SLUG}"
mkdir -p "$RESULTS" "$EXPORTS"
echo "device: $DEVICE -> $RESULTS"

# Trained raccoon checkpoints, so every artifact also gets its val mAP (assets/ holds them; the
# NanoDet-Plus one comes from benchmarks/train_raccoon.sh plus_backbone).
CKPT_nanodet_m=assets/nanodet-m-raccoon-320.pth
DATA_nanodet_m=configs/raccoon_nanodet-m_320_finetune.yaml
CKPT_nanodet_plus_m=assets/nanodet-plus-m-raccoon-320.pth
DATA_nanodet_plus_m=configs/raccoon_nanodet-plus-m_320_backbone.yaml
IMAGES="${IMAGES:-$REPO/../shared/reference/images}"   # real images: realistic postprocess
FORMATS="${FORMATS:-onnx,ncnn,mnn,openvino}"
var() { local v="${1}_${2//[^a-zA-Z0-9]/_}"; echo "${!v:-}"; }

echo "== exports: every format + int8 (calibrated on the train split), NCNN fp16 and fp32 weights"
for model in $MODELS; do
    ckpt="$(var CKPT "$model")"
    data="$(var DATA "$model")"
    source_args=(--model "$model")             # random weights when no checkpoint is known
    [ -n "$ckpt" ] && source_args=("$ckpt")
    for size in $SIZES; do
        dir="$EXPORTS/${model}_${size}"
        [ -f "$dir/meta.json" ] || nanodet-export "${source_args[@]}" --size "$size" --out "$dir" \
            --formats "$FORMATS" --images "$IMAGES" ${data:+--int8 --calib "$data" --data "$data"}
        fp32="$EXPORTS/${model}_${size}_ncnn-fp32"   # ncnn with fp32 weights, fp16 options off (+ onnx: isolation.py)
        [ -f "$fp32/meta.json" ] || nanodet-export "${source_args[@]}" --size "$size" \
            --out "$fp32" --formats onnx,ncnn --fp32 --images "$IMAGES"
    done
done

echo "== bench ($WARMUP warmup + $ITERS iterations per combination, each in its own process)"
JSON="$RESULTS/bench.json"
rm -f "$JSON"
for size in $SIZES; do
    for model in $MODELS; do
        data="$(var DATA "$model")"
        common=(--size "$size" --threads "$THREADS" --warmup "$WARMUP" --iters "$ITERS"
                --images "$IMAGES" --json "$JSON" --append ${data:+--data "$data"})
        # every installed backend at every precision the export has files for (--backend auto
        # --precision auto); a failing combination is an error record and the run goes on
        nanodet-deploy bench "$EXPORTS/${model}_${size}" "${common[@]}" \
            || echo "failures: see the error records in $JSON"
        nanodet-deploy bench "$EXPORTS/${model}_${size}_ncnn-fp32" --backend ncnn \
            --precision fp32 "${common[@]}" || echo "failures: see the error records in $JSON"
    done
done

echo "== report"
nanodet-deploy report "$JSON" -o "$RESULTS" --title "nanodet-deploy benchmarks: $DEVICE"

echo "== isolation note"
python benchmarks/isolation.py "$EXPORTS/nanodet-m_320_ncnn-fp32" --warmup 20 --iters "${ISO_ITERS:-200}" \
    --out benchmarks/results/isolation.md

echo "== all devices side by side (every bench*.json under benchmarks/results)"
mapfile -t all < <(find benchmarks/results -name 'bench*.json' -not -path '*/all/*' | sort)
nanodet-deploy report "${all[@]}" -o benchmarks/results/all --title "nanodet-deploy benchmarks: all devices"
