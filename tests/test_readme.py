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
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "requirements/dev-linux-x86_64.txt" in setup and '-r "$LOCK"' in setup


def test_lock_files_pin_every_dependency_of_pyproject():
    """The locks cover pyproject.toml (regenerate with scripts/lock.sh after editing it)."""
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        found = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}
        return {n.replace("_", "-") for n in found if n != "nanodet-deploy"}

    def pinned(lock: str) -> dict[str, str]:
        lines = (REPO / "requirements" / lock).read_text().splitlines()
        pins = [line.split()[0] for line in lines if line and not line.startswith((" ", "#"))]
        return dict(p.lower().split("==") for p in pins)

    extras = project["optional-dependencies"]
    dev = pinned("dev-linux-x86_64.txt")
    every = names(project["dependencies"]) | set().union(*(names(v) for v in extras.values()))
    assert every <= set(dev), f"not in the dev lock: {sorted(every - set(dev))}"
    assert dev["torch"] == "2.13.0+cpu"  # the CPU build, never the CUDA one
    runtime_side = names(project["dependencies"]) | names(extras["mnn"]) | names(extras["eval"])
    for lock in ("runtime-linux-x86_64.txt", "runtime-linux-aarch64.txt"):
        pins = pinned(lock)
        assert runtime_side <= set(pins) and "torch" not in pins, lock
        assert all(pins[n] == dev[n] for n in runtime_side if n in dev), lock  # same versions


def test_bundled_checkpoint_is_what_the_readme_says():
    import torch

    ckpt = torch.load(REPO / "assets" / "nanodet-m-raccoon-320.pth", weights_only=True)
    assert ckpt["config"]["name"] == "nanodet-m" and ckpt["config"]["class_names"] == ["raccoon"]
    assert ckpt["epoch"] == 33 and abs(ckpt["metrics"]["map"] - 0.638) < 5e-4
    assert (REPO / "assets" / "nanodet-m-raccoon-320.pth").stat().st_size < 5_000_000
    plus = torch.load(REPO / "assets" / "nanodet-plus-m-raccoon-320.pth", weights_only=True)
    assert plus["config"]["name"] == "nanodet-plus-m" and plus["config"]["class_names"] == [
        "raccoon"
    ]
    assert plus["epoch"] == 60 and abs(plus["metrics"]["map"] - 0.625) < 5e-4  # the final epoch
    assert not any(k.startswith(("aux_fpn.", "aux_head.")) for k in plus["model"])
