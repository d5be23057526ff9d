#!/usr/bin/env bash
# The raccoon training runs: nanodet-m 320 fine-tuned from the official COCO weights and
# trained from scratch, each evaluated on val after every epoch; then the mAP curves (PNG) and
# the final numbers in benchmarks/results/raccoon_*.
#
#   benchmarks/train_raccoon.sh               # finetune + scratch
#   benchmarks/train_raccoon.sh finetune      # one of: finetune scratch plus
#   EPOCHS=5 benchmarks/train_raccoon.sh      # a smoke run (shorter schedule)
#
# Needs RACCOON_DIR / NANODET_COCO_WEIGHTS, or shared/ beside the repository. An interrupted
# run continues where its last epoch ended when the script is started again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs}
RESULTS=${RESULTS:-benchmarks/results}
DEVICE=${DEVICE:-cpu}
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(finetune scratch)

config_of() {
  case "$1" in
    finetune) echo configs/raccoon_nanodet-m_320_finetune.yaml ;;
    scratch) echo configs/raccoon_nanodet-m_320_scratch.yaml ;;
    plus) echo configs/raccoon_nanodet-plus-m_320_scratch.yaml ;;
    *) echo "unknown run '$1' (finetune, scratch, plus)" >&2; exit 2 ;;
  esac
}

dirs=()
for run in "${RUNS[@]}"; do
  config=$(config_of "$run")
  dir="$OUT/$(basename "$config" .yaml)"
  args=(--out "$dir" --device "$DEVICE")
  [ -f "$dir/last.pth" ] && args+=(--resume)
  [ -n "${EPOCHS:-}" ] && args+=(--epochs "$EPOCHS")
  echo "== $run: $config -> $dir"
  nanodet-deploy train "$config" "${args[@]}"
  nanodet-deploy eval "$dir/best.pth" --data "$config" --threads "$(nproc)" \
    --json "$RESULTS/$(basename "$config" .yaml)_eval.json"
  dirs+=("$dir")
done
python benchmarks/plot_raccoon.py "${dirs[@]}" --out "$RESULTS/raccoon"
