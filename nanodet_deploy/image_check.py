"""Verify that image files decode, in parallel, with the verdicts cached across runs.

:func:`check_images` reads and decodes every image once (a thread pool: reading files and
OpenCV's decoders release the GIL) and returns an :class:`ImageCheck` per path: the reason
the file cannot be used, or its decoded size. JPEG and PNG files must also reach their end
marker (the check of :func:`nanodet_deploy.preprocess.load_image`), because OpenCV decodes a
truncated file into a partly grey image with only a warning on stderr.

Verdicts are cached per file, keyed by the resolved path + size + mtime (ns): a second load
of the same data decodes nothing, and a file that is rewritten (new size or mtime) is checked
again. The cache lives in the user cache folder (:func:`cache_dir`), never in the dataset
folder (which may be read-only), one JSON file per image folder, written atomically (a
reader sees the old or the new file, never half of one; with concurrent writers the last
one wins). A corrupt or foreign cache file is ignored and rebuilt.

Progress goes to a ``(done, total)`` callback: given to :func:`check_images`, or installed
for a block of code with :func:`report_progress` (how the CLI draws its progress bar around
a whole training run). NumPy + OpenCV + stdlib only.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nanodet_deploy.fileio import write_text_atomic

# The end-marker walk of load_image: one definition of "truncated" for the whole toolkit.
from nanodet_deploy.preprocess import _truncation_problem

LOG = logging.getLogger(__name__)
CACHE_FORMAT = "nanodet-deploy image checks"
CACHE_VERSION = 1  # bump when the verdict of a file could change (new checks)
ProgressFn = Callable[[int, int], None]  # (images checked, images to check)
_PROGRESS: contextvars.ContextVar[ProgressFn | None] = contextvars.ContextVar(
    "nanodet_image_check_progress", default=None
)


@dataclass(frozen=True)
class ImageCheck:
    """Verdict on one file: ``problem`` is ``None`` when it decodes (then ``hw`` is its size)."""

    path: Path
    problem: str | None
    hw: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@contextmanager
def report_progress(callback: ProgressFn) -> Iterator[None]:
    """Send the progress of every :func:`check_images` inside the block to ``callback``."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def cache_dir() -> Path:
    """``$NANODET_CACHE_DIR``, else ``$XDG_CACHE_HOME/nanodet-deploy``, else ``~/.cache/nanodet-deploy``."""
    if os.environ.get("NANODET_CACHE_DIR"):
        return Path(os.environ["NANODET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nanodet-deploy"


def usable_cores() -> int:
    """CPU cores this process may run on (affinity / cgroup-pinned), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------- one file


def decode_image_bytes(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """``(BGR uint8 image, None)``, or ``(None, why it is not a usable image)``."""
    if not data:
        return None, "empty file (0 bytes)"
    problem = _truncation_problem(data)
    if problem:
        return None, problem
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None, "cannot decode image (not an image, corrupt, or a format OpenCV cannot read)"
    return image, None


def os_problem(exc: OSError) -> str:
    """A short reason for a failed read: not found, permission denied, ..."""
    if isinstance(exc, FileNotFoundError):
        return "image file not found"
    return f"cannot read image ({exc.strerror or exc})"


def check_image(path: Path) -> ImageCheck:
    """Read and decode one file (no cache)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageCheck(path, os_problem(exc))
    image, problem = decode_image_bytes(data)
    if image is None:
        return ImageCheck(path, problem)
    return ImageCheck(path, None, (int(image.shape[0]), int(image.shape[1])))


# ------------------------------------------------------------------------- many files


def check_images(
    paths: Sequence[Path],
    *,
    use_cache: bool = True,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> list[ImageCheck]:
    """One :class:`ImageCheck` per path (same order); decodes only what the cache lacks.

    ``workers``: decoding threads (default: the usable cores). ``progress(done, total)`` (or
    the callback of :func:`report_progress`) follows the files that are decoded.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return []
    keys = _file_keys(paths)
    resolved = [k.resolved for k in keys if isinstance(k, FileKey)]
    cache = VerdictCache.for_files(resolved) if use_cache else None
    results: list[ImageCheck | None] = [None] * len(paths)
    for i, key in enumerate(keys):
        if isinstance(key, str):  # stat failed: the reason
            results[i] = ImageCheck(paths[i], key)
        elif cache is not None:
            results[i] = cache.get(paths[i], key)
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        decoded = _decode_all([paths[i] for i in todo], workers, progress or _PROGRESS.get())
        for i, check in zip(todo, decoded, strict=True):
            results[i] = check
            if cache is not None and isinstance(keys[i], FileKey):
                cache.put(keys[i], check)
    if cache is not None:
        cache.save()
    return results  # type: ignore[return-value]


@dataclass(frozen=True)
class FileKey:
    """What identifies a file's content for the cache."""

    resolved: Path
    size: int
    mtime_ns: int


def _file_keys(paths: Sequence[Path]) -> list[FileKey | str]:
    """Resolved path + size + mtime of each file (stat'ed before it is read), or the reason
    it cannot be stat'ed. Folders are resolved once; a symlinked file is resolved itself."""
    folders: dict[Path, Path] = {}
    keys: list[FileKey | str] = []
    for path in paths:
        folder = folders.get(path.parent)
        if folder is None:
            folder = folders[path.parent] = path.parent.resolve()
        resolved = folder / path.name
        try:
            st = os.lstat(resolved)
            if stat.S_ISLNK(st.st_mode):
                resolved = resolved.resolve()
                st = os.stat(resolved)
        except OSError as exc:
            keys.append(os_problem(exc))
            continue
        if not stat.S_ISREG(st.st_mode):
            keys.append("not a regular file")
            continue
        keys.append(FileKey(resolved, st.st_size, st.st_mtime_ns))
    return keys


def _decode_all(
    paths: list[Path], workers: int | None, progress: ProgressFn | None
) -> list[ImageCheck]:
    """Check ``paths`` on a thread pool, reporting progress from this thread."""
    threads = max(1, min(workers or usable_cores(), len(paths)))
    LOG.info("checking that %d images decode (%d threads)", len(paths), threads)
    started, results, bad = time.perf_counter(), [None] * len(paths), 0
    with ThreadPoolExecutor(threads, thread_name_prefix="image-check") as pool:
        futures = {pool.submit(check_image, p): i for i, p in enumerate(paths)}
        for done, future in enumerate(as_completed(futures), start=1):
            check = results[futures[future]] = future.result()
            bad += not check.ok
            if progress is not None:
                progress(done, len(paths))
    LOG.info(
        "checked %d images in %.1f s: %d unusable", len(paths), time.perf_counter() - started, bad
    )
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------ cache


class VerdictCache:
    """Verdicts of the files under one folder, in ``cache_dir()/image-checks/<folder>-<hash>.json``.

    ``{"format", "version", "opencv", "folder", "files": {relative path: [size, mtime_ns,
    problem or null, height, width]}}``. The OpenCV version is part of the header because
    what decodes depends on the build.
    """

    def __init__(self, file: Path, folder: Path) -> None:
        self.file = file
        self.folder = folder
        self.entries = self._read()
        self.new: dict[str, list[Any]] = {}

    @classmethod
    def for_files(cls, resolved: Sequence[Path]) -> VerdictCache:
        folder = (
            Path(os.path.commonpath([str(p.parent) for p in resolved])) if resolved else Path("/")
        )
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        return cls(cache_dir() / "image-checks" / f"{folder.name or 'root'}-{digest}.json", folder)

    def get(self, path: Path, key: FileKey) -> ImageCheck | None:
        entry = self.entries.get(self._name(key))
        if not entry or entry[0] != key.size or entry[1] != key.mtime_ns:
            return None
        hw = (entry[3], entry[4]) if entry[2] is None else None
        return ImageCheck(path, entry[2], hw)

    def put(self, key: FileKey, check: ImageCheck) -> None:
        h, w = check.hw or (0, 0)
        self.new[self._name(key)] = [key.size, key.mtime_ns, check.problem, h, w]

    def save(self) -> None:
        """Merge the new verdicts into the file as it is now, then replace it atomically."""
        if not self.new:
            return
        merged = {**self._read(), **self.new}
        header = self._header()
        text = json.dumps({**header, "files": merged}, separators=(",", ":"))
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.file, text)
        except OSError as exc:
            LOG.warning(
                "cannot write the image check cache %s (%s); next load checks again", self.file, exc
            )
            return
        self.entries, self.new = merged, {}

    def _name(self, key: FileKey) -> str:
        path, prefix = str(key.resolved), os.path.join(str(self.folder), "")
        return path[len(prefix) :] if path.startswith(prefix) else path

    def _header(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "opencv": cv2.__version__,
                "folder": str(self.folder)}  # fmt: skip

    def _read(self) -> dict[str, list[Any]]:
        """The entries on disk; {} (with a warning) when the file is corrupt or foreign."""
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            LOG.warning("ignoring unreadable image check cache %s (%s)", self.file, exc)
            return {}
        header = self._header()
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            LOG.warning("ignoring image check cache %s (not such a cache file)", self.file)
            return {}
        if any(data.get(k) != v for k, v in header.items()):
            LOG.info("image check cache %s is from another version; checking again", self.file)
            return {}
        if not _valid_files(data.get("files")):
            LOG.warning("ignoring malformed image check cache %s", self.file)
            return {}
        return data["files"]


def _valid_files(files: Any) -> bool:
    return isinstance(files, dict) and all(_valid_entry(e) for e in files.values())


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 5
        and all(isinstance(v, int) for v in (entry[0], entry[1], entry[3], entry[4]))
        and (entry[2] is None or isinstance(entry[2], str))
    )
