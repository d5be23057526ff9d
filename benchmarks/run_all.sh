#!/usr/bin/env bash
# The committed benchmark results of this machine, from scratch:
#   exports (the bundled trained nanodet-m; random weights for models without trained weights
#   here: latency does not depend on them), bench (every combination in its own process, mAP
#   of every nanodet-m artifact on raccoon val), report (Markdown, CSV, charts), and the
#   isolation note. Run it on a quiet machine: nothing else busy, power settings fixed.
#
#   benchmarks/run_all.sh                 # full run: 20 warmup + 200 timed iterations
#   ITERS=10 WARMUP=2 benchmarks/run_all.sh   # smoke run
#
# Env: MODELS ("nanodet-m nanodet-plus-m nanodet-plus-m-1.5x"), SIZES ("320 416"),
# THREADS (1,2), ITERS (200), WARMUP (20), ISO_ITERS (200), EXPORTS (exports/bench, git-ignored),
# DEVICE_NAME (board / CPU model), RESULTS (benchmarks/results/<device>).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
if ! command -v nanodet-deploy >/dev/null && [ -f .venv/bin/activate ]; then
    . .venv/bin/activate    # the project's venv, when not already active
fi
MODELS="${MODELS:-nanodet-m nanodet-plus-m nanodet-plus-m-1.5x}"
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

# nanodet-m runs the bundled raccoon checkpoint (so every artifact also gets its val mAP);
# the others have no trained weights here: random weights (latency does not depend on them).
CKPT_nanodet_m=assets/nanodet-m-raccoon-320.pth
DATA_nanodet_m=configs/raccoon_nanodet-m_320_finetune.yaml
IMAGES="${IMAGES:-$REPO/../shared/reference/images}"   # real images: realistic postprocess
var() { local v="${1}_${2//[^a-zA-Z0-9]/_}"; echo "${!v:-}"; }

echo "== exports (NCNN weights in fp16 and, separately, in fp32)"
for model in $MODELS; do
    ckpt="$(var CKPT "$model")"
    for size in $SIZES; do
        for prec in fp16 fp32; do
            dir="$EXPORTS/${model}_${size}_$prec"
            [ -f "$dir/meta.json" ] && { echo "exists: $dir"; continue; }
            args=(--size "$size" --out "$dir")
            [ "$prec" = fp32 ] && args+=(--fp32)
            if [ -n "$ckpt" ]; then
                nanodet-export "$ckpt" "${args[@]}" --images "$IMAGES"
            else
                nanodet-export --model "$model" "${args[@]}"
            fi
        done
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
        # fp32: onnxruntime, ncnn (fp32 weights, fp16 options off) and torch on one export;
        # fp16: ncnn with fp16 weights and its fp16 options. A failing combination is recorded
        # as an error and the run goes on (bench exits 1 then).
        nanodet-deploy bench "$EXPORTS/${model}_${size}_fp32" --backend onnxruntime,ncnn,torch \
            --precision fp32 "${common[@]}" || echo "failures: see the error records in $JSON"
        nanodet-deploy bench "$EXPORTS/${model}_${size}_fp16" --backend ncnn --precision fp16 \
            "${common[@]}" || echo "failures: see the error records in $JSON"
    done
done

echo "== report"
nanodet-deploy report "$JSON" -o "$RESULTS" --title "nanodet-deploy benchmarks: $DEVICE"

echo "== isolation note"
python benchmarks/isolation.py "$EXPORTS/nanodet-m_320_fp32" --warmup 20 --iters "${ISO_ITERS:-200}" \
    --out benchmarks/results/isolation.md

echo "== all devices side by side (every bench*.json under benchmarks/results)"
mapfile -t all < <(find benchmarks/results -name 'bench*.json' -not -path '*/all/*' | sort)
nanodet-deploy report "${all[@]}" -o benchmarks/results/all --title "nanodet-deploy benchmarks: all devices"
