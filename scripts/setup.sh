#!/usr/bin/env bash
# Create .venv and install exactly the locked versions (requirements/dev-linux-x86_64.txt: every
# extra, CPU torch 2.13.0), then nanodet-deploy itself in editable mode. Safe to re-run.
# Other platforms: see the README ("Install"). Refresh the lock: scripts/lock.sh --upgrade.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCK=requirements/dev-linux-x86_64.txt
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "scripts/setup.sh installs $LOCK (Linux x86_64); on $(uname -s) $(uname -m) see the README" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The CPU build of torch (torch==2.13.0+cpu): this machine keeps it in /opt/wheels (pip.conf
# find-links); elsewhere it comes from PyTorch's CPU index.
TORCH_SOURCE=()
[ -d /opt/wheels ] || TORCH_SOURCE=(--extra-index-url https://download.pytorch.org/whl/cpu)
.venv/bin/python -m pip install -q --disable-pip-version-check -r "$LOCK" "${TORCH_SOURCE[@]}"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
