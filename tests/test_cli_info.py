from __future__ import annotations

import json

from typer.testing import CliRunner

from nanodet_deploy.cli.main import app

runner = CliRunner()


def test_info_json_exact_numbers():
    result = runner.invoke(app, ["info", "nanodet-plus-m", "--size", "416", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["params_total"] == 4330904 and data["params_without_aux"] == 1197924
    assert data["macs"] == 762090840
    assert data["points_per_level"] == {"8": 2704, "16": 676, "32": 169, "64": 49}
    assert data["num_points"] == 3598


def test_info_table_non_square_official_checkpoint(reference_dir):
    result = runner.invoke(
        app, ["info", str(reference_dir / "nanodet-m_coco.pth"), "--size", "288,416"]
    )
    assert result.exit_code == 0, result.output
    assert "288 x 416" in result.output and "959,348" in result.output
    assert "2457" in result.output  # 36*52 + 18*26 + 9*13 points


def test_info_errors_are_one_line_messages():
    result = runner.invoke(app, ["info", "nanodet-xl"])
    assert result.exit_code == 2 and "known models" in result.output
    result = runner.invoke(app, ["info", "nanodet-m", "--size", "300"])
    assert result.exit_code == 2 and "multiples of 32" in result.output
