"""ATSS and dynamic soft-label assignment: hand-made cases and slow loop references."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from nanodet_deploy.train.assigners import (
    atss_assign,
    dynamic_soft_label_assign,
    grid_cells,
    level_sizes,
    soft_label_cls_cost,
)


def make_priors(
    input_hw: tuple[int, int], strides: tuple[int, ...], offset: float, dtype=torch.float32
) -> torch.Tensor:
    """(P, 4) (cx, cy, s, s), level by level, row-major: the models.decode layout."""
    out = []
    for s in strides:
        h, w = math.ceil(input_hw[0] / s), math.ceil(input_hw[1] / s)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx = (xs.flatten().to(dtype) + offset) * s
        cy = (ys.flatten().to(dtype) + offset) * s
        out.append(torch.stack([cx, cy, torch.full_like(cx, s), torch.full_like(cx, s)], -1))
    return torch.cat(out)


def test_make_priors_matches_models_decode() -> None:
    from nanodet_deploy.models.decode import center_priors

    for offset in (0.0, 0.5):
        expected = center_priors((40, 72), (8, 16, 32, 64), offset)
        torch.testing.assert_close(make_priors((40, 72), (8, 16, 32, 64), offset), expected)


def index_of(priors: torch.Tensor, cx: float, cy: float) -> int:
    hits = torch.nonzero((priors[:, 0] == cx) & (priors[:, 1] == cy)).flatten()
    assert len(hits) == 1
    return int(hits[0])


# ----------------------------------------------------------------------------------- ATSS


def test_grid_cells_and_levels() -> None:
    priors = make_priors((32, 64), (8, 16, 32), 0.5)
    assert level_sizes(priors) == [4 * 8, 2 * 4, 1 * 2]
    cells = grid_cells(priors[:1], octave_base_scale=5.0)  # center (4, 4), side 40
    torch.testing.assert_close(cells, torch.tensor([[-16.0, -16.0, 24.0, 24.0]]))


# Single level, 4x4 grid of stride 8 (centers 4, 12, 20, 28), octave scale 1 so each grid
# cell is its own 8x8 square. gt (8, 9, 20, 16): center (14, 12.5), area 12 * 7 = 84.
# Its 4 nearest centers: (12,12) d=2.06, (20,12) d=6.02, (12,20) d=7.76, (12,4) d=8.73.
# Cell IoUs: (8,8,16,16): inter 8*7=56, union 64+84-56=92; (16,8,24,16): inter 4*7=28,
# union 120; (8,16,16,24) and (8,0,16,8): 0.
GT1 = (8.0, 9.0, 20.0, 16.0)
GT1_IOUS = [56 / 92, 28 / 120, 0.0, 0.0]


def test_atss_single_gt_by_hand() -> None:
    priors = make_priors((32, 32), (8,), 0.5)
    threshold = statistics.mean(GT1_IOUS) + statistics.stdev(GT1_IOUS)  # unbiased std
    assert [v >= threshold for v in GT1_IOUS] == [True, False, False, False]  # 0.609 vs 0.498
    result = atss_assign(priors, torch.tensor([GT1]), topk=4, octave_base_scale=1.0)
    expected = torch.full((16,), -1)
    winner = index_of(priors, 12.0, 12.0)
    expected[winner] = 0
    torch.testing.assert_close(result.gt_index, expected)
    assert result.iou[winner].item() == pytest.approx(56 / 92)
    assert result.iou.sum().item() == pytest.approx(56 / 92)
    assert result.num_positives == 1
    labels = result.labels(torch.tensor([3]), background_label=80)
    assert labels[winner] == 3 and (labels != 3).sum() == 15 and labels.max() == 80


def test_atss_two_gts_competing_take_max_iou() -> None:
    # gt2 (8.5, 8, 16, 17.5): its top-4 cells give IoUs [60/75.25, 11.25/124, 0, 0]; the
    # threshold is 0.608, so cell (8,8,16,16) is positive for gt2 (IoU 0.797) and for GT1
    # (0.609): it takes gt2, the higher IoU.
    gt2 = (8.5, 8.0, 16.0, 17.5)
    ious2 = [60 / 75.25, 11.25 / 124, 0.0, 0.0]
    assert ious2[0] >= statistics.mean(ious2) + statistics.stdev(ious2)
    priors = make_priors((32, 32), (8,), 0.5)
    result = atss_assign(priors, torch.tensor([GT1, gt2]), topk=4, octave_base_scale=1.0)
    shared = index_of(priors, 12.0, 12.0)
    assert result.gt_index[shared] == 1
    assert result.iou[shared].item() == pytest.approx(60 / 75.25)
    assert result.num_positives == 1  # GT1 lost its only positive


def test_atss_no_center_inside_and_empty() -> None:
    priors = make_priors((32, 32), (8,), 0.5)
    between = torch.tensor([[13.0, 13.0, 19.0, 19.0]])  # centers are at 12 and 20
    result = atss_assign(priors, between, topk=9)
    assert result.num_positives == 0 and (result.iou == 0).all()
    empty = atss_assign(priors, torch.zeros((0, 4)))
    assert (empty.gt_index == -1).all() and empty.iou.shape == (16,)


def atss_reference(priors: np.ndarray, gts: np.ndarray, topk: int, scale: float):
    """Slow, loop-based ATSS in float64 (the official algorithm step by step)."""
    half = 0.5 * scale * priors[:, 2]
    cells = np.stack(
        [priors[:, 0] - half, priors[:, 1] - half, priors[:, 0] + half, priors[:, 1] + half], 1
    )
    num_p = len(priors)
    best_iou = np.full(num_p, -np.inf)
    best_gt = np.full(num_p, -1)
    _, first, counts = np.unique(priors[:, 2], return_index=True, return_counts=True)
    for g, gt in enumerate(gts):
        ious = np.array([_iou(c, gt) for c in cells])
        gc = (gt[:2] + gt[2:]) / 2
        cands = []
        for start, n in zip(first, counts, strict=True):
            d = [math.dist(priors[i, :2], gc) for i in range(start, start + n)]
            cands += [start + int(i) for i in np.argsort(d, kind="stable")[: min(topk, n)]]
        vals = ious[cands]
        thr = vals.mean() + vals.std(ddof=1)
        for i in cands:
            cx, cy = priors[i, :2]
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if ious[i] >= thr and inside and ious[i] > best_iou[i]:
                best_iou[i], best_gt[i] = ious[i], g
    return best_gt, np.where(best_gt >= 0, best_iou, 0.0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-6)


def random_gts(rng: np.random.Generator, n: int, hw: tuple[int, int]) -> np.ndarray:
    xy = rng.uniform(0, [hw[1] * 0.8, hw[0] * 0.8], size=(n, 2))
    wh = rng.uniform(4, [hw[1] * 0.6, hw[0] * 0.6], size=(n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [hw[1], hw[0]])], 1)


@pytest.mark.parametrize("seed", range(6))
def test_atss_matches_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    hw = (96, 128)
    priors = make_priors(hw, (8, 16, 32), 0.5, dtype=torch.float64)
    gts = random_gts(rng, int(rng.integers(1, 6)), hw)
    result = atss_assign(priors, torch.from_numpy(gts), topk=9, octave_base_scale=5.0)
    ref_gt, ref_iou = atss_reference(priors.numpy(), gts, 9, 5.0)
    np.testing.assert_array_equal(result.gt_index.numpy(), ref_gt)
    np.testing.assert_allclose(result.iou.numpy(), ref_iou, rtol=1e-12, atol=1e-12)
    assert result.num_positives > 0


# ------------------------------------------------------------------------ dynamic soft label


def test_soft_label_cls_cost_by_hand() -> None:
    # one class, logit 0 (sigmoid 0.5): soft label = IoU
    # IoU 0.5: BCE = ln 2, modulator |0.5 - 0.5|^2 = 0 -> 0
    # IoU 1.0: BCE = ln 2, modulator 0.25 -> ln2 / 4;  IoU 0: ln 2 * 0.25 as well
    cost = soft_label_cls_cost(
        torch.zeros(3, 1), torch.tensor([0]), torch.tensor([[0.5], [1.0], [0.0]])
    )
    torch.testing.assert_close(cost, torch.tensor([[0.0], [math.log(2) / 4], [math.log(2) / 4]]))
    # a second class only sees its negative part: BCE(0, 0) * 0.5^2
    cost2 = soft_label_cls_cost(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[0.5]]))
    torch.testing.assert_close(cost2, torch.tensor([[math.log(2) / 4]]))


def test_dsl_single_gt_dynamic_k_by_hand() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    priors = torch.tensor(
        [[2.0, 2.0, 8, 8], [5.0, 5.0, 8, 8], [8.0, 8.0, 8, 8], [20.0, 20.0, 8, 8]]
    )
    # predicted boxes with IoU 0.9, 0.8, 0.5 against the gt; the last prior's box is perfect
    # but its center (20, 20) lies outside the gt, so it is not a candidate.
    decoded = torch.tensor([[0.0, 0, 10, 9], [0.0, 0, 10, 8], [0.0, 0, 10, 5], [0.0, 0, 10, 10]])
    # dynamic k = int(0.9 + 0.8 + 0.5) = 2; the IoU cost -3 ln(IoU) (0.32, 0.67, 2.08)
    # decides between equal logits: priors 0 and 1.
    result = dynamic_soft_label_assign(torch.zeros(4, 2), priors, decoded, gt, torch.tensor([1]))
    torch.testing.assert_close(result.gt_index, torch.tensor([0, 0, -1, -1]))
    torch.testing.assert_close(result.iou, torch.tensor([0.9, 0.8, 0.0, 0.0]))


def test_dsl_two_gts_competing_for_one_prior() -> None:
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 12.0, 12.0]])
    priors = torch.tensor([[6.0, 6.0, 8, 8], [1.0, 1.0, 8, 8], [11.0, 11.0, 8, 8]])
    decoded = torch.tensor([[0.5, 0.5, 10.5, 10.5], [5.0, 5, 7, 7], [10.0, 10, 12, 12]])
    # prior 0 sits in both gts: IoU 90.25/109.75 = 0.822 with gt 0 and 72.25/127.75 = 0.566
    # with gt 1. Both gts have k = 1 (IoU sums 0.86 and 0.65 -> 0 -> clamped to 1) and both
    # pick prior 0 (the others have IoU 0.04); it keeps gt 0, the lower cost.
    result = dynamic_soft_label_assign(
        torch.zeros(3, 2), priors, decoded, gts, torch.tensor([0, 1])
    )
    torch.testing.assert_close(result.gt_index, torch.tensor([0, -1, -1]))
    assert result.iou[0].item() == pytest.approx(90.25 / 109.75)


def test_dsl_no_center_inside_and_empty() -> None:
    priors = make_priors((32, 32), (8,), 0.0)  # centers at 0, 8, 16, 24
    decoded = torch.tensor([[0.0, 0.0, 8.0, 8.0]]).expand(16, 4)
    logits = torch.zeros(16, 3)
    between = torch.tensor([[1.0, 1.0, 7.0, 7.0]])
    result = dynamic_soft_label_assign(logits, priors, decoded, between, torch.tensor([0]))
    assert result.num_positives == 0 and (result.iou == 0).all()
    empty = dynamic_soft_label_assign(logits, priors, decoded, torch.zeros((0, 4)), torch.zeros(0))
    assert (empty.gt_index == -1).all() and empty.gt_index.shape == (16,)


def dsl_reference(logits, priors, decoded, gts, labels, topk, iou_factor, double_sigmoid):
    """Loop-based dynamic soft-label assignment in float64 (official algorithm)."""
    num_p, num_c = logits.shape
    s = 1 / (1 + np.exp(-logits)) if double_sigmoid else logits
    valid = [i for i in range(num_p) if any(
        min(priors[i, 0] - g[0], priors[i, 1] - g[1], g[2] - priors[i, 0], g[3] - priors[i, 1]) > 0
        for g in gts)]  # fmt: skip
    ious = np.array([[_iou(decoded[i], g) for g in gts] for i in valid])
    cost = np.zeros_like(ious)
    for a, i in enumerate(valid):
        for g in range(len(gts)):
            for c in range(num_c):
                soft = ious[a, g] if c == labels[g] else 0.0
                x = s[i, c]
                bce = max(x, 0) - x * soft + math.log1p(math.exp(-abs(x)))
                cost[a, g] += bce * abs(soft - 1 / (1 + math.exp(-x))) ** 2
            cost[a, g] += iou_factor * -math.log(ious[a, g] + 1e-7)
    match = np.zeros_like(cost, dtype=bool)
    for g in range(len(gts)):
        k = max(1, int(np.sort(ious[:, g])[::-1][:topk].sum()))
        match[np.argsort(cost[:, g], kind="stable")[:k], g] = True
    gt_index, out_iou = np.full(num_p, -1), np.zeros(num_p)
    for a, i in enumerate(valid):
        if match[a].sum() > 1:
            match[a] = False
            match[a, np.argmin(cost[a])] = True
        if match[a].any():
            gt_index[i] = int(np.argmax(match[a]))
            out_iou[i] = ious[a, gt_index[i]]
    return gt_index, out_iou


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("double_sigmoid", [True, False])
def test_dsl_matches_loop_reference(seed: int, double_sigmoid: bool) -> None:
    rng = np.random.default_rng(100 + seed)
    hw, num_classes = (64, 96), 3
    priors = make_priors(hw, (8, 16, 32), 0.0, dtype=torch.float64)
    num_p = len(priors)
    gts = random_gts(rng, int(rng.integers(3, 8)), hw)  # crowded: priors shared by gts
    labels = rng.integers(0, num_classes, len(gts))
    centers = priors[:, :2].numpy()
    ltrb = rng.uniform(2, 30, size=(num_p, 4))
    decoded = np.concatenate([centers - ltrb[:, :2], centers + ltrb[:, 2:]], 1)
    logits = rng.normal(0, 2, size=(num_p, num_classes))
    result = dynamic_soft_label_assign(
        torch.from_numpy(logits), priors, torch.from_numpy(decoded), torch.from_numpy(gts),
        torch.from_numpy(labels), official_double_sigmoid=double_sigmoid,
    )  # fmt: skip
    ref_gt, ref_iou = dsl_reference(
        logits, priors.numpy(), decoded, gts, labels, 13, 3.0, double_sigmoid
    )
    np.testing.assert_array_equal(result.gt_index.numpy(), ref_gt)
    np.testing.assert_allclose(result.iou.numpy(), ref_iou, rtol=1e-12, atol=1e-12)
    assert result.num_positives > 0


def test_dsl_soft_center_prior_changes_choice() -> None:
    gt = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    priors = torch.tensor([[32.0, 32.0, 8, 8], [4.0, 4.0, 8, 8]])
    # equal predicted boxes: only the center prior can tell the two priors apart
    decoded = torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 32.0, 32.0]])
    # soft label 0.25 < sigmoid(sigmoid(x)): the lower logit of the corner prior is cheaper
    logits = torch.tensor([[0.0], [-0.5]])
    plain = dynamic_soft_label_assign(logits, priors, decoded, gt, torch.tensor([0]))
    assert plain.gt_index.tolist() == [-1, 0]
    centered = dynamic_soft_label_assign(
        logits, priors, decoded, gt, torch.tensor([0]), soft_center_radius=3.0
    )
    assert centered.gt_index.tolist() == [0, -1]
