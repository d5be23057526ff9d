#!/usr/bin/env bash
# Regenerate the lock files under requirements/ from pyproject.toml with uv. Never edit them
# by hand. Existing pins are kept unless asked:
#
#   scripts/lock.sh              # re-resolve, keeping the locked versions where still allowed
#   scripts/lock.sh --upgrade    # move every package to the newest version the ranges allow
#
# Locks (CPython 3.11, glibc >= 2.36: Debian 12, Ubuntu 24.04, Raspberry Pi OS Bookworm):
#   dev-linux-x86_64.txt      every extra + CPU torch 2.13.0: what scripts/setup.sh and CI install
#   runtime-linux-x86_64.txt  the runtime side (no torch): detect, eval, bench, peer runtimes
#   runtime-linux-aarch64.txt the same for a Raspberry Pi / ARM board
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
if ! command -v uv >/dev/null; then
    python3 -m pip install -q --user "uv==$UV_VERSION"
    export PATH="$HOME/.local/bin:$PATH"
fi
# CPU torch: this machine keeps the wheel in /opt/wheels; elsewhere PyTorch's CPU index has it.
if [ -d /opt/wheels ]; then
    TORCH_SOURCE=(--find-links /opt/wheels)
else
    TORCH_SOURCE=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
COMMON=(-q --python-version 3.11 --annotation-style line --custom-compile-command "scripts/lock.sh" "$@")
uv pip compile pyproject.toml "${COMMON[@]}" --extra all -c requirements/torch-cpu.txt \
    "${TORCH_SOURCE[@]}" --python-platform x86_64-manylinux_2_36 -o requirements/dev-linux-x86_64.txt
for arch in x86_64 aarch64; do
    uv pip compile pyproject.toml "${COMMON[@]}" --extra eval --extra mnn --extra openvino \
        --python-platform "$arch-manylinux_2_36" -o "requirements/runtime-linux-$arch.txt"
done
echo "locked: $(ls requirements/*.txt | tr '\n' ' ')"
