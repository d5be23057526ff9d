#!/usr/bin/env bash
# The raccoon training runs, each evaluated on val after every epoch: nanodet-m 320 fine-tuned
# from the official COCO weights (finetune) and from scratch (scratch); NanoDet-Plus-m 320 with
# the COCO NanoDet-m backbone (plus_backbone) and from scratch (plus). Each run's log is copied
# to benchmarks/results/training/<config>/ (committed); then the mAP curves (PNG) and the final
# numbers of every committed log in benchmarks/results/raccoon_*.
#
#   benchmarks/train_raccoon.sh               # finetune + scratch + plus_backbone + plus
#   benchmarks/train_raccoon.sh plus_backbone # one of: finetune scratch plus_backbone plus
#   DEVICE=cuda LOGS=benchmarks/results/training_gpu benchmarks/train_raccoon.sh plus_backbone_300e
#                                             # 300 epochs on a GPU machine, plotted apart
#   EPOCHS=5 benchmarks/train_raccoon.sh      # a smoke run (shorter schedule)
#
# Needs RACCOON_DIR / NANODET_COCO_WEIGHTS, or shared/ beside the repository. An interrupted
# run continues where its last epoch ended when the script is started again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs}
RESULTS=${RESULTS:-benchmarks/results}
LOGS=${LOGS:-$RESULTS/training}  # committed logs; GPU runs: LOGS=benchmarks/results/training_gpu
DEVICE=${DEVICE:-cpu}
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(finetune scratch plus_backbone plus)

config_of() {
  case "$1" in
    finetune) echo configs/raccoon_nanodet-m_320_finetune.yaml ;;
    scratch) echo configs/raccoon_nanodet-m_320_scratch.yaml ;;
    plus_backbone) echo configs/raccoon_nanodet-plus-m_320_backbone.yaml ;;
    plus) echo configs/raccoon_nanodet-plus-m_320_scratch.yaml ;;
    plus_backbone_300e) echo configs/raccoon_nanodet-plus-m_320_backbone_300e.yaml ;;
    *) echo "unknown run '$1' (finetune, scratch, plus_backbone, plus, plus_backbone_300e)" >&2; exit 2 ;;
  esac
}

for run in "${RUNS[@]}"; do
  config=$(config_of "$run")
  dir="$OUT/$(basename "$config" .yaml)"
  args=(--out "$dir" --device "$DEVICE")
  [ -f "$dir/last.pth" ] && args+=(--resume)
  [ -n "${EPOCHS:-}" ] && args+=(--epochs "$EPOCHS")
  echo "== $run: $config -> $dir"
  nanodet-deploy train "$config" "${args[@]}"
  nanodet-deploy eval "$dir/last.pth" --data "$config" --threads "$(nproc)" \
    --json "$RESULTS/$(basename "$config" .yaml)_eval.json"
  mkdir -p "$LOGS/$(basename "$dir")"
  cp "$dir/log.json" "$LOGS/$(basename "$dir")/log.json"
done
mapfile -t logs < <(find "$LOGS" -mindepth 1 -maxdepth 1 -type d | sort)
plot="$RESULTS/raccoon"   # curves + summary; logs kept elsewhere get their own
[ "$LOGS" = "$RESULTS/training" ] || plot="$RESULTS/raccoon_$(basename "$LOGS")"
python benchmarks/plot_raccoon.py "${logs[@]}" --out "$plot"
