#!/usr/bin/env bash
# Build an emulated arm64 Debian 12 (bookworm, Python 3.11 like Raspberry Pi OS Bookworm) root
# outside the repository and pip-install the runtime side of nanodet-deploy into it.
#
#   sudo benchmarks/arm/setup_rootfs.sh [ROOT]      # ROOT defaults to /work/arm64-root
#
# Needs: apt-get install qemu-user-static debootstrap binfmt-support. Uses binfmt_misc when it
# can be registered (mounts /proc/sys/fs/binfmt_misc if needed); the run script falls back to
# calling qemu-aarch64-static explicitly otherwise. Never put ROOT inside the repository.
set -euo pipefail

ROOT="${1:-/work/arm64-root}"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PKGS="python3,python3-venv,python3-pip,ca-certificates,libgomp1"

case "$ROOT" in "$REPO"*) echo "refusing: ROOT must be outside the repository" >&2; exit 2;; esac

ensure_binfmt() {
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    fi
    if [ -e /proc/sys/fs/binfmt_misc/status ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 2>/dev/null || true
    fi
    if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        echo "binfmt_misc: qemu-aarch64 registered ($(grep flags /proc/sys/fs/binfmt_misc/qemu-aarch64))"
    else
        echo "binfmt_misc: not available; chroot commands go through qemu-aarch64-static"
    fi
}

bootstrap() {
    if [ -x "$ROOT/usr/bin/python3" ]; then
        echo "rootfs exists: $ROOT"
        return
    fi
    mkdir -p "$ROOT"
    # --foreign + second stage works with and without binfmt_misc (qemu copied into the root).
    debootstrap --arch=arm64 --variant=minbase --foreign --include="$PKGS" bookworm "$ROOT" "$MIRROR"
    install -D -m 0755 /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/qemu-aarch64-static"
    chroot "$ROOT" /usr/bin/qemu-aarch64-static /bin/sh /debootstrap/debootstrap --second-stage
}

pip_install() {
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    # A network that re-signs TLS (corporate proxy, sandbox) needs the host's CA bundle inside.
    local ca="${PIP_CERT:-${SSL_CERT_FILE:-}}" env_args=()
    if [ -n "$ca" ] && [ -f "$ca" ]; then
        cp "$ca" "$ROOT/opt/host-ca-bundle.crt"
        env_args=(PIP_CERT=/opt/host-ca-bundle.crt)
    fi
    chroot "$ROOT" /usr/bin/qemu-aarch64-static /usr/bin/python3 -m venv /opt/venv
    # The runtime side only, at the locked versions (requirements/runtime-linux-aarch64.txt:
    # detect, eval, bench, MNN, OpenVINO; no torch); --only-binary proves wheels exist.
    cp "$REPO/requirements/runtime-linux-aarch64.txt" "$ROOT/opt/runtime-lock.txt"
    chroot "$ROOT" /usr/bin/qemu-aarch64-static /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root \
        "${env_args[@]}" /opt/venv/bin/python -m pip install --only-binary=:all: \
        -r /opt/runtime-lock.txt
    chroot "$ROOT" /usr/bin/qemu-aarch64-static /opt/venv/bin/python -m pip freeze \
        > "$ROOT/opt/pip-freeze.txt"
    cat "$ROOT/opt/pip-freeze.txt"
}

ensure_binfmt
bootstrap
pip_install
echo "ready: $ROOT (python: /opt/venv/bin/python)"
