"""The README tells the truth: its tables come from the committed results, its commands exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_tables_are_rendered_from_committed_results():
    result = subprocess.run(
        [sys.executable, "benchmarks/readme_tables.py", "--check"], cwd=REPO, capture_output=True
    )
    assert result.returncode == 0, "README.md is stale: run python benchmarks/readme_tables.py"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test.sh" in readme and "scripts/demo.sh" in readme
    assert "scripts/test.sh" in ci.splitlines()[-1]
    for script in ("scripts/test.sh", "scripts/demo.sh", "scripts/setup.sh", ".ci/run"):
        assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert "pip install -q torch==2.13.0" in (REPO / "scripts" / "setup.sh").read_text()


def test_bundled_checkpoint_is_what_the_readme_says():
    import torch

    ckpt = torch.load(REPO / "assets" / "nanodet-m-raccoon-320.pth", weights_only=True)
    assert ckpt["config"]["name"] == "nanodet-m" and ckpt["config"]["class_names"] == ["raccoon"]
    assert ckpt["epoch"] == 33 and abs(ckpt["metrics"]["map"] - 0.638) < 5e-4
    assert (REPO / "assets" / "nanodet-m-raccoon-320.pth").stat().st_size < 5_000_000
