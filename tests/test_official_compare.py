"""benchmarks/official/compare.py reads official NanoDet's training log into per-epoch records."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare", REPO / "benchmarks/official/compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

# Shaped like official NanoDet's logs.txt (util/logger.py): two epochs, one with a 0 mAP.
LOG = """\
[NanoDet][12-04 17:02:53]INFO: Weight Averaging is enabled
[NanoDet][12-04 17:02:58]INFO: Train|Epoch1/60|Iter0(1/10)| mem:0G| lr:1.00e-07| loss_qfl:0.8646|
[NanoDet][12-04 17:03:45]INFO: Val|Epoch1/60|Iter10(1/3)| mem:0G| lr:9.10e-05| loss_qfl:1.3|
[NanoDet][12-04 17:03:48]INFO: Val_metrics: {'mAP': 0, 'AP_50': 0, 'AP_75': 0, 'AP_small': 0}
[NanoDet][12-04 17:03:56]INFO: Train|Epoch2/60|Iter10(1/10)| mem:0G| lr:1.00e-04| loss_qfl:1.29|
[NanoDet][12-04 17:05:07]INFO: Val|Epoch2/60|Iter20(1/3)| mem:0G| lr:1.90e-04| loss_qfl:1.36|
[NanoDet][12-04 17:05:09]INFO:
 Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.299
[NanoDet][12-04 17:05:09]INFO: Val_metrics: {'mAP': 0.299, 'AP_50': 0.732, 'AP_75': 0.165, 'AP_small': -1.0}
"""


def test_parse_official_log_epochs_metrics_and_times(tmp_path: Path) -> None:
    path = tmp_path / "logs.txt"
    path.write_text(LOG)
    history = compare.parse_official_log(path)
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["map"] for r in history] == [0.0, 0.299]
    assert history[1]["ap50"] == 0.732 and history[1]["ap75"] == 0.165
    # epoch 1: 17:02:53 -> first Val| line 17:03:45 (52 s), then 3 s to its metrics
    assert (history[0]["train_time_s"], history[0]["eval_time_s"]) == (52.0, 3.0)
    # epoch 2 starts where epoch 1's metrics were written (17:03:48)
    assert (history[1]["train_time_s"], history[1]["eval_time_s"]) == (79.0, 2.0)
    summary = compare.summarize("official", "cpu", history, None)
    assert summary["best"] == {"epoch": 2, "map": 0.299, "ap50": 0.732}
    assert summary["minutes"] == round((52 + 3 + 79 + 2) / 60, 1)
    assert summary["train_images_per_s"] == round(160 * 2 / (52 + 79), 2)


def test_parse_rejects_a_log_without_evaluations(tmp_path: Path) -> None:
    path = tmp_path / "logs.txt"
    path.write_text(LOG.split("[NanoDet][12-04 17:03:48]")[0].replace("Val|", "Train|"))
    with pytest.raises(SystemExit, match="no Val_metrics"):
        compare.parse_official_log(path)
