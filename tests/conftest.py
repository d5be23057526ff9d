"""Shared test fixtures.

Reference data lives in ``../shared`` beside the checkout (never copied into the repo).
Tests that need it skip with a clear reason when it is absent, and fail when ``CI`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NANODET_SHARED", REPO.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path under ../shared; skip (or fail on CI) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = (
            f"reference data not found: {path} (set NANODET_SHARED or put shared/ beside the repo)"
        )
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require_shared("reference")


@pytest.fixture(scope="session")
def raccoon_dir() -> Path:
    return require_shared("datasets", "raccoon")


@pytest.fixture(autouse=True)
def _user_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Caches (image verdicts) go to this session's temp folder, not the user's ~/.cache."""
    monkeypatch.setenv("NANODET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "user-cache"))
