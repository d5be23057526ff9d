#!/usr/bin/env bash
# Run `nanodet-deploy bench` on an export inside the emulated arm64 root (setup_rootfs.sh),
# then render its report. Proves the aarch64 runtime path (wheels, ncnn + onnxruntime,
# preprocess/postprocess, the isolated workers) without torch. Timings are EMULATED:
# records carry device.emulated = true and reports put them in a separate section.
#
#   sudo benchmarks/arm/run_bench.sh EXPORT_DIR [OUT_DIR]
#
# EXPORT_DIR: a host export (nanodet-export ... --out DIR), e.g. nanodet-m at 320.
# OUT_DIR defaults to benchmarks/results/arm64-emulated. Env: ROOT (/work/arm64-root),
# ITERS (10), WARMUP (2), THREADS (1), ROUNDS (1 process per combination), BACKENDS (auto: every installed backend the export has
# files for: ncnn, onnxruntime, MNN, OpenVINO), PRECISION (auto: fp16/fp32 and int8 files).
# Needs binfmt_misc with qemu-aarch64 registered: the harness starts worker processes, and
# only binfmt_misc makes an emulated process able to exec another arm64 binary.
set -euo pipefail

EXPORT="$(cd "${1:?usage: run_bench.sh EXPORT_DIR [OUT_DIR]}" && pwd)"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$(mkdir -p "${2:-$REPO/benchmarks/results/arm64-emulated}" && cd "${2:-$REPO/benchmarks/results/arm64-emulated}" && pwd)"
ROOT="${ROOT:-/work/arm64-root}"
ITERS="${ITERS:-10}"
WARMUP="${WARMUP:-2}"
THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-1}"
BACKENDS="${BACKENDS:-auto}"
PRECISION="${PRECISION:-auto}"
NAME="$(basename "$EXPORT")"

[ -x "$ROOT/opt/venv/bin/python" ] || { echo "no venv in $ROOT: run setup_rootfs.sh first" >&2; exit 2; }
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo "binfmt_misc has no qemu-aarch64 entry: the bench workers cannot start (see README)" >&2
    exit 2
fi

cleanup() {
    umount "$ROOT/proc" 2>/dev/null || true
    umount "$ROOT/opt/export" 2>/dev/null || true
}
trap cleanup EXIT

# The package (not the repo: no build files land in the tree) and the export, into the root.
rm -rf "$ROOT/opt/src" && mkdir -p "$ROOT/opt/src" "$ROOT/opt/export" "$ROOT/opt/out"
cp -r "$REPO/nanodet_deploy" "$REPO/pyproject.toml" "$ROOT/opt/src/"
[ -f "$REPO/README.md" ] && cp "$REPO/README.md" "$ROOT/opt/src/"
find "$ROOT/opt/src" -name __pycache__ -prune -exec rm -rf {} +
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mount --bind -o ro "$EXPORT" "$ROOT/opt/export"
rm -rf "$ROOT/opt/out" && mkdir -p "$ROOT/opt/out"

QEMU_VERSION="$(qemu-aarch64-static --version | head -1)"
HOST_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
in_root() {
    local ca_env=()
    [ -f "$ROOT/opt/host-ca-bundle.crt" ] && ca_env=(PIP_CERT=/opt/host-ca-bundle.crt)
    chroot "$ROOT" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        COLUMNS=120 "${ca_env[@]}" NANODET_EMULATED=1 NANODET_EMULATOR="$QEMU_VERSION (binfmt_misc)" \
        NANODET_DEVICE_NAME="arm64 Debian 12, qemu-user on $HOST_CPU" "$@"
}

echo "== install nanodet-deploy (runtime side, no torch) into the arm64 venv"
in_root python -m pip install --quiet --no-deps /opt/src
in_root python -c "import platform, sys; print(platform.machine(), sys.version.split()[0])"
in_root python -c "import importlib.util as u; assert u.find_spec('torch') is None; print('torch: not installed')"

echo "== bench (emulated: few iterations; these numbers are not device speed)"
start=$(date +%s)
in_root nanodet-deploy bench /opt/export --backend "$BACKENDS" --precision "$PRECISION" \
    --threads "$THREADS" --warmup "$WARMUP" --iters "$ITERS" --rounds "$ROUNDS" --timeout 3600 \
    --json "/opt/out/bench-$NAME.json" \
    || echo "some combinations failed: see the error records (the run goes on)"
echo "bench wall time: $(( $(date +%s) - start )) s"

echo "== report inside the root (no matplotlib there: tables only)"
in_root nanodet-deploy report "/opt/out/bench-$NAME.json" -o /opt/out/report-check --no-charts

cp "$ROOT/opt/out/bench-$NAME.json" "$OUT/"

echo "== detections on arm64 vs the host, same export and images (score > 0.1)"
SAMPLES="$REPO/nanodet_deploy/assets/samples"
rm -rf "$ROOT/opt/samples" "$ROOT/opt/out/dets" && cp -r "$SAMPLES" "$ROOT/opt/samples"
HOST_DETS="$(mktemp -d)"
HOST_BIN="$REPO/.venv/bin"; [ -x "$HOST_BIN/python" ] || HOST_BIN="$(dirname "$(command -v python)")"
mkdir -p "$ROOT/opt/out/dets"
for combo in ncnn:fp16 ncnn:int8 onnxruntime:fp32 onnxruntime:int8 mnn:fp32 mnn:int8; do
    backend="${combo%%:*}" precision="${combo##*:}"
    "$HOST_BIN/python" -c "import sys; from nanodet_deploy.runtimes.registry import export_has
sys.exit(0 if export_has(sys.argv[1], sys.argv[2], sys.argv[3]) else 1)" "$EXPORT" "$backend" "$precision" \
        || continue
    args=(--backend "$backend" --precision "$precision" --threads 1 --score-thresh 0.1)
    "$HOST_BIN/nanodet-deploy" detect "$EXPORT" "$SAMPLES" "${args[@]}" --json "$HOST_DETS/${backend}_$precision.json" >/dev/null
    in_root nanodet-deploy detect /opt/export /opt/samples "${args[@]}" \
        --json "/opt/out/dets/${backend}_$precision.json" >/dev/null \
        || echo "arm64 detect failed: $backend $precision"
done
"$HOST_BIN/python" "$REPO/benchmarks/arm/compare_detections.py" "$HOST_DETS" "$ROOT/opt/out/dets" \
    --out "$OUT/detections-$NAME.md"
echo "== records: $OUT/bench-$NAME.json (render with: nanodet-deploy report $OUT/*.json -o $OUT)"
