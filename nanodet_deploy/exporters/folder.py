"""An export folder appears complete or not at all: built in a temp folder, renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from nanodet_deploy.exporters.errors import ExportError


def make_temp_dir(out_dir: Path, overwrite: bool) -> Path:
    """A fresh temp folder beside ``out_dir`` (same filesystem, so the final rename is atomic)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: exists and is not a folder")
    if out_dir.exists() and not overwrite:
        raise ExportError(f"--out {out_dir}: already exists; use --overwrite to replace it")
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a folder of the path should be
        raise ExportError(f"--out {out_dir}: {exc.filename or parent} is not a folder") from exc
    except OSError as exc:
        raise ExportError(
            f"--out {out_dir}: cannot create {parent} ({exc.strerror or exc})"
        ) from exc
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=parent))
    except OSError as exc:
        raise ExportError(
            f"--out {out_dir}: cannot write into {parent} ({exc.strerror or exc})"
        ) from exc


def publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished temp folder to ``out_dir`` (replacing it when ``overwrite``)."""
    old = None
    if out_dir.exists():
        if not overwrite:
            raise ExportError(f"--out {out_dir}: appeared during the export; not replaced")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=tmp.parent))
        old.rmdir()
        out_dir.rename(old)
    _open_permissions(tmp)
    tmp.rename(out_dir)
    if old is not None:
        remove_tree(old)


def remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _open_permissions(folder: Path) -> None:
    """mkdtemp / atomic writes create 0700 / 0600 entries: give them the usual umask modes."""
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
