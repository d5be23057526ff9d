#!/usr/bin/env bash
# Which runtime-side packages have binary wheels for a Raspberry Pi's Python, checked with
# `pip download --only-binary=:all:` for a foreign platform (nothing is installed).
#
#   benchmarks/arm/check_wheels.sh [PYVER ...] > benchmarks/results/arm64-emulated/wheels.md
#
# PYVER defaults to 3.11 (Raspberry Pi OS Bookworm) and 3.13 (Raspberry Pi OS Trixie).
# Checks manylinux aarch64 (64-bit Pi OS) and armv7l (32-bit Pi OS) for each package.
set -uo pipefail

PACKAGES="numpy opencv-python-headless onnxruntime ncnn typer pyyaml rich"
PYVERS="${*:-3.11 3.13}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

platform_args() {
    case "$1" in
        aarch64) echo "--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_34_aarch64" ;;
        armv7l) echo "--platform manylinux2014_armv7l --platform manylinux_2_17_armv7l --platform manylinux_2_31_armv7l --platform linux_armv7l" ;;
    esac
}

echo "# Binary wheels for the runtime side (checked $(date -u +%Y-%m-%d) with pip $(python -m pip --version | cut -d' ' -f2))"
echo
echo "Command per cell: \`pip download --no-deps --only-binary=:all: --python-version PYVER"
echo "--implementation cp --abi cpXY --abi abi3 --abi none --platform <manylinux tags> PACKAGE\`."
echo
for arch in aarch64 armv7l; do
    for py in $PYVERS; do
        abi="cp${py/./}"
        echo "## $arch, CPython $py"
        echo
        echo "| package | wheel found |"
        echo "|---|---|"
        for pkg in $PACKAGES; do
            dest="$TMP/$arch-$py-$pkg"
            # shellcheck disable=SC2046
            if python -m pip download --quiet --no-deps --only-binary=:all: \
                --python-version "$py" --implementation cp --abi "$abi" --abi abi3 --abi none \
                $(platform_args "$arch") -d "$dest" "$pkg" >/dev/null 2>&1; then
                echo "| $pkg | \`$(ls "$dest")\` |"
            else
                echo "| $pkg | **none** |"
            fi
        done
        echo
    done
done
