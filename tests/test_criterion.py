"""Loss glue per head: terms, positives and zero-gt images on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from nanodet_deploy.config import zoo_config
from nanodet_deploy.models import build_model
from nanodet_deploy.models.decode import Integral, center_priors, distance2bbox
from nanodet_deploy.train.assigners import atss_assign, dynamic_soft_label_assign
from nanodet_deploy.train.criterion import LossWeights, build_criterion

INPUT_HW = (128, 128)
BOXES = [torch.tensor([[10.0, 20.0, 80.0, 100.0], [60.0, 60.0, 120.0, 126.0]]), torch.zeros(0, 4)]
LABELS = [torch.tensor([0, 1]), torch.zeros(0, dtype=torch.long)]


@pytest.fixture(scope="module")
def legacy():
    torch.manual_seed(0)
    cfg = zoo_config("nanodet-m-0.5x", num_classes=2)
    return cfg, build_model(cfg)


def test_legacy_terms_and_positives_match_atss(legacy):
    cfg, model = legacy
    head, aux = model.forward_train(torch.randn(2, 3, *INPUT_HW))
    assert aux is None
    out = build_criterion(cfg)(head, aux, BOXES, LABELS, INPUT_HW)
    assert set(out.terms) == {"loss_qfl", "loss_bbox", "loss_dfl"}
    assert all(torch.isfinite(v) and v > 0 for v in out.terms.values())
    priors = center_priors(INPUT_HW, cfg.strides, 0.5)
    expected = sum(atss_assign(priors, b).num_positives for b in BOXES)
    assert out.num_pos == expected > 0
    torch.testing.assert_close(out.total, sum(out.terms.values()))
    out.total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_legacy_loss_weights_scale_terms(legacy):
    cfg, model = legacy
    with torch.no_grad():
        head, _ = model.forward_train(torch.randn(2, 3, *INPUT_HW))
    base = build_criterion(cfg)(head, None, BOXES, LABELS, INPUT_HW).terms
    doubled = build_criterion(cfg, LossWeights(qfl=2.0, dfl=0.5, bbox=4.0))(
        head, None, BOXES, LABELS, INPUT_HW
    ).terms
    for k in base:
        torch.testing.assert_close(doubled[k], 2 * base[k])


def test_legacy_perfect_boxes_give_zero_giou(legacy):
    """Regression bins that decode exactly to the gt distances: GIoU term 0, QFL target 1."""
    cfg, _ = legacy
    priors = center_priors(INPUT_HW, cfg.strides, 0.5)
    num_points = priors.shape[0]
    box = torch.tensor([[24.0, 24.0, 72.0, 88.0]])
    assign = atss_assign(priors, box)
    pos = assign.positive_mask
    # Two-bin distributions: a distance d in stride units = softmax mass split between bins.
    dist = (
        torch.stack([priors[:, 0] - 24, priors[:, 1] - 24, 72 - priors[:, 0], 88 - priors[:, 1]], 1)
        / priors[:, 2:3]
    )
    head = torch.full((1, num_points, 2 + 32), -20.0)
    head[0, :, :2] = -5.0
    head[0, pos, 0] = 5.0
    bins = torch.full((num_points, 4, 8), -1e4)
    d = dist.clamp(0, 6.9)
    lo = d.floor().long()
    frac = d - lo
    bins.scatter_(2, lo[..., None], torch.log1p(-frac).clamp(min=-1e4)[..., None])
    bins.scatter_(2, (lo + 1)[..., None], torch.log(frac).clamp(min=-1e4)[..., None])
    head[0, :, 2:] = bins.reshape(num_points, 32)
    decoded = distance2bbox(priors[pos, :2] / priors[pos, 2:3], Integral(7)(head[0, pos, 2:]))
    torch.testing.assert_close(decoded, (box / priors[pos, 2:3]).expand_as(decoded))
    out = build_criterion(cfg)(head, None, [box], [torch.tensor([0])], INPUT_HW)
    assert out.terms["loss_bbox"].abs() < 1e-5
    assert out.num_pos == assign.num_positives


def test_zero_gt_batch_trains_negatives_only(legacy):
    cfg, model = legacy
    model.zero_grad()
    head, _ = model.forward_train(torch.randn(2, 3, *INPUT_HW))
    empty = [torch.zeros(0, 4)] * 2
    out = build_criterion(cfg)(head, None, empty, [torch.zeros(0, dtype=torch.long)] * 2, INPUT_HW)
    assert out.num_pos == 0 and out.terms["loss_qfl"] > 0
    assert out.terms["loss_bbox"] == 0 and out.terms["loss_dfl"] == 0
    out.total.backward()  # every trainable parameter gets a gradient (DDP needs that)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_plus_aux_guides_assignment_and_adds_terms():
    torch.manual_seed(0)
    cfg = zoo_config("nanodet-plus-m", num_classes=2)
    model = build_model(cfg)
    head, aux = model.forward_train(torch.randn(2, 3, *INPUT_HW), detach_aux_input=True)
    out = build_criterion(cfg)(head, aux, BOXES, LABELS, INPUT_HW)
    names = {"loss_qfl", "loss_bbox", "loss_dfl"}
    assert set(out.terms) == names | {f"aux_{k}" for k in names}
    assert all(torch.isfinite(v) and v > 0 for v in out.terms.values())
    priors = center_priors(INPUT_HW, cfg.strides, 0.0)
    integral = Integral(cfg.reg_max)
    expected = 0
    for b in range(2):
        cls, reg = aux[b].detach().split([2, 32], dim=-1)
        boxes = distance2bbox(priors[:, :2], integral(reg) * priors[:, 2:3])
        expected += dynamic_soft_label_assign(cls, priors, boxes, BOXES[b], LABELS[b]).num_positives
    assert out.num_pos == expected > 0
    out.total.backward()
    assert model.aux_head.gfl_cls.weight.grad is not None
    # without aux output (e.g. a model without the aux modules) the head assigns for itself
    alone = build_criterion(cfg)(head.detach(), None, BOXES, LABELS, INPUT_HW)
    assert set(alone.terms) == names
