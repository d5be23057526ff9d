"""QFL / DFL / GIoU against values computed by hand, plus reductions and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from nanodet_deploy.train.losses import (
    aligned_giou,
    aligned_iou,
    distribution_focal_loss,
    giou_loss,
    pairwise_iou,
    quality_focal_loss,
    weight_reduce_loss,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


# ------------------------------------------------------------------------------------ QFL


def test_qfl_one_positive_one_negative_by_hand() -> None:
    # 2 samples, 2 classes. Sample 0 positive for class 0 with quality 1.0; sample 1 negative
    # (label == num_classes). Logit ln3 -> sigmoid 0.75; logit 0 -> sigmoid 0.5.
    logits = torch.tensor([[LN3, 0.0], [0.0, LN3]])
    labels = torch.tensor([0, 2])
    scores = torch.tensor([1.0, 0.0])
    # sample 0, class 0 (positive, target 1): BCE = -ln 0.75, modulator |1 - 0.75|^2 = 1/16
    # sample 0, class 1 (negative): BCE(0, 0) = ln 2, modulator 0.5^2 = 1/4
    s0 = -math.log(0.75) / 16 + LN2 / 4
    # sample 1: class 0 negative ln2 * 1/4; class 1 negative BCE(ln3, 0) = -ln(0.25) = ln 4, * 0.75^2
    s1 = LN2 / 4 + math.log(4.0) * 9 / 16
    per_sample = quality_focal_loss(logits, labels, scores, reduction="none")
    torch.testing.assert_close(per_sample, torch.tensor([s0, s1]))
    torch.testing.assert_close(
        quality_focal_loss(logits, labels, scores), torch.tensor((s0 + s1) / 2)
    )
    # avg_factor replaces the element count: sum / avg_factor
    torch.testing.assert_close(
        quality_focal_loss(logits, labels, scores, avg_factor=1.0), torch.tensor(s0 + s1)
    )


def test_qfl_soft_target_and_beta() -> None:
    # positive with quality 0.5 at sigmoid 0.5: BCE(0, 0.5) = ln 2 but modulator |0.5-0.5| = 0
    logits = torch.zeros(1, 1)
    loss = quality_focal_loss(logits, torch.tensor([0]), torch.tensor([0.5]), reduction="sum")
    assert float(loss) == pytest.approx(0.0, abs=1e-7)
    # negative, beta = 1: BCE(0, 0) * 0.5 = ln2 / 2
    loss = quality_focal_loss(
        logits, torch.tensor([1]), torch.tensor([0.0]), beta=1.0, reduction="sum"
    )
    assert float(loss) == pytest.approx(LN2 / 2)


def test_qfl_no_positives_and_weight() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([2, -1])  # both outside [0, C): negatives
    loss = quality_focal_loss(logits, labels, torch.zeros(2), reduction="none")
    torch.testing.assert_close(loss, torch.full((2,), 2 * LN2 / 4))
    weighted = quality_focal_loss(
        logits, labels, torch.zeros(2), weight=torch.tensor([1.0, 0.0]), reduction="sum"
    )
    assert float(weighted) == pytest.approx(LN2 / 2)


def test_qfl_gradient_finite_and_pushes_scores() -> None:
    logits = torch.tensor([[-20.0, 0.3, 20.0], [5.0, -5.0, 0.0]], requires_grad=True)
    loss = quality_focal_loss(logits, torch.tensor([2, 3]), torch.tensor([0.8, 0.0]))
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[1, 0] > 0  # a confident negative is pushed down
    assert logits.grad[0, 2] > 0  # sigmoid(20) ~ 1 > quality 0.8: pushed down too


# ------------------------------------------------------------------------------------ DFL


def test_dfl_by_hand() -> None:
    # bins 0..3, logits [0, 0, ln2, 0]: softmax = [1, 1, 2, 1] / 5
    pred = torch.tensor([[0.0, 0.0, LN2, 0.0]])
    # target 2.3 -> 0.7 * CE(bin 2) + 0.3 * CE(bin 3) = 0.7 * -ln(2/5) + 0.3 * -ln(1/5)
    expected = 0.7 * -math.log(0.4) + 0.3 * -math.log(0.2)
    loss = distribution_focal_loss(pred, torch.tensor([2.3]), reduction="none")
    torch.testing.assert_close(loss, torch.tensor([expected]))


def test_dfl_uniform_bins_and_integer_targets() -> None:
    pred = torch.zeros(3, 8)  # uniform over 8 bins: CE = ln 8 whatever the target
    loss = distribution_focal_loss(pred, torch.tensor([0.0, 3.5, 6.9]), reduction="none")
    torch.testing.assert_close(loss, torch.full((3,), math.log(8.0)))
    # a target exactly on the last bin puts all weight there (no index past the end)
    peaked = torch.tensor([[0.0, 0.0, 10.0]])
    edge = distribution_focal_loss(peaked, torch.tensor([2.0]), reduction="none")
    torch.testing.assert_close(
        edge, torch.nn.functional.cross_entropy(peaked, torch.tensor([2]), reduction="none")
    )


def test_dfl_weight_avg_factor_and_gradient() -> None:
    pred = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    target = torch.tensor([0.5, 1.0, 6.0, 6.9])
    weight = torch.tensor([1.0, 2.0, 0.0, 0.5])
    per = distribution_focal_loss(pred, target, reduction="none")
    total = distribution_focal_loss(pred, target, weight=weight, avg_factor=4.0)
    torch.testing.assert_close(total, (per * weight).sum() / 4.0)
    total.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[2].abs().sum() == 0  # zero weight, zero gradient


# ----------------------------------------------------------------------------- IoU / GIoU


def test_giou_known_cases() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 5.0, 4.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [1.0, 1.0, 5.0, 4.0]])
    # overlapping: inter 1, union 4 + 4 - 1 = 7, enclosing 3x3 = 9 -> 1/7 - (9 - 7)/9
    # disjoint: inter 0, union 2, enclosing 3x1 = 3 -> 0 - (3 - 2)/3 = -1/3
    # identical: 1
    expected_giou = torch.tensor([1 / 7 - 2 / 9, -1 / 3, 1.0])
    torch.testing.assert_close(aligned_giou(pred, target), expected_giou)
    torch.testing.assert_close(aligned_iou(pred, target), torch.tensor([1 / 7, 0.0, 1.0]))
    loss = giou_loss(pred, target, reduction="none")
    torch.testing.assert_close(loss, 1 - expected_giou)
    assert float(loss[2]) == 0.0  # perfect box -> zero loss
    torch.testing.assert_close(giou_loss(pred, target), (1 - expected_giou).mean())


def test_giou_degenerate_boxes_and_gradient() -> None:
    pred = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 4.0, 4.0]], requires_grad=True)
    target = torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 3.0, 3.0]])
    loss = giou_loss(pred, target, weight=torch.tensor([1.0, 1.0]), avg_factor=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    same = pred[1:].detach()
    assert float(giou_loss(same, same, reduction="sum")) == 0.0


def test_pairwise_iou_matches_aligned() -> None:
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(5, 2, generator=g) * 50
    boxes1 = torch.cat([xy, xy + 1 + torch.rand(5, 2, generator=g) * 30], dim=1)
    xy = torch.rand(3, 2, generator=g) * 50
    boxes2 = torch.cat([xy, xy + 1 + torch.rand(3, 2, generator=g) * 30], dim=1)
    matrix = pairwise_iou(boxes1, boxes2)
    assert matrix.shape == (5, 3)
    for j in range(3):
        torch.testing.assert_close(matrix[:, j], aligned_iou(boxes1, boxes2[j].expand(5, 4)))
    # official example (mmdet/nanodet bbox_overlaps docstring)
    a = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42]])
    b = torch.tensor([[0.0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20]])
    expected = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(pairwise_iou(a, b), expected)
    assert pairwise_iou(a[:0], b).shape == (0, 3)


def test_weight_reduce_loss_modes() -> None:
    loss = torch.tensor([1.0, 2.0, 3.0])
    weight = torch.tensor([1.0, 0.0, 1.0])
    assert float(weight_reduce_loss(loss)) == 2.0
    assert float(weight_reduce_loss(loss, weight)) == pytest.approx(4 / 3)
    assert float(weight_reduce_loss(loss, weight, reduction="sum")) == 4.0
    assert float(weight_reduce_loss(loss, weight, avg_factor=2.0)) == 2.0
    torch.testing.assert_close(weight_reduce_loss(loss, weight, "none", 2.0), loss * weight)
    with pytest.raises(ValueError, match="avg_factor"):
        weight_reduce_loss(loss, reduction="sum", avg_factor=2.0)
