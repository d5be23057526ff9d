"""cpp/nanodet_postprocess.hpp against nanodet_deploy.postprocess, bit for bit.

Design: the C++ header is compiled once per session with the system compiler (g++ or c++,
``-std=c++11 -Wall -Wextra -Werror -pedantic``) into a small driver, ``tests/cpp/
run_postprocess.cpp``. Each case is written to a binary file (raw float32 output, int32 sizes,
float64 thresholds and geometry: nothing is rounded on the way) and the driver writes the
detections back as raw float32/int32 bytes, so the comparison sees exactly what C++ computed.
All cases of a test go through one driver process. The Python side is the reference:
``postprocess()`` on the very same arrays; both must give the same detections in the same order,
labels equal, scores equal as float32 and boxes within 1e-3 px (in fact identical).

Cases: the official NanoDet-m COCO outputs of shared/reference (raw logits -> sigmoid +
decode_raw), random outputs (seeds, class counts, non-square inputs, legacy and Plus strides and
center offsets), no candidates, top_k binding (with the prefilter path of ``_candidates``),
exact score ties (across classes and points, at the top_k boundary), multi-label and best-class,
max_det binding, an IoU exactly at the threshold, and the plain/letterbox/pad geometries (resize
and warp samplers' ResizeInfo). The resize-sampler geometry helper is checked against
``preprocess()``; ``cpp/example_ncnn.cpp`` is syntax-checked against the ncnn API stub in
tests/cpp/ncnn_stub (or the real headers in ``$NCNN_INCLUDE_DIR``). A sanitizer build
(ASan + UBSan) reruns the cases when its runtime exists. A negative control (center offset 0
instead of 0.5 on the C++ side) shows the comparison catches a wrong box.

Without a C++ compiler the tests skip, except on CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, require_shared

from nanodet_deploy.postprocess import decode_raw, postprocess, sigmoid
from nanodet_deploy.preprocess import keep_ratio_hw, preprocess
from nanodet_deploy.structures import Detections, PreprocessSpec, ResizeInfo

HEADER_DIR = REPO / "cpp"
DRIVER_SOURCE = REPO / "tests" / "cpp" / "run_postprocess.cpp"
EXAMPLE_SOURCE = REPO / "cpp" / "example_ncnn.cpp"
NCNN_STUB_DIR = REPO / "tests" / "cpp" / "ncnn_stub"
CXX_FLAGS = ("-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic")
SANITIZE_FLAGS = ("-O0", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")
LEGACY_STRIDES = (8, 16, 32)
PLUS_STRIDES = (8, 16, 32, 64)
BOX_ATOL_PX = 1e-3
_DETECTION = np.dtype([("box", "<f4", 4), ("score", "<f4"), ("label", "<i4")])


# --------------------------------------------------------------------------- compiling
def _compiler() -> str:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        msg = "no C++ compiler (g++ or c++) on PATH: the C++ postprocessor is not tested"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return cxx


def _compile(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def _build_driver(out_dir: Path, extra_flags: tuple[str, ...]) -> tuple[Path, str]:
    exe = out_dir / "run_postprocess"
    args = [_compiler(), *CXX_FLAGS, *extra_flags, f"-I{HEADER_DIR}", str(DRIVER_SOURCE)]
    done = _compile([*args, "-o", str(exe)])
    return exe, "" if done.returncode == 0 else done.stderr


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """-O2 with FMA contraction where the CPU has FMA (-march=native; g++ contracts a * b + c by
    default): the header must stay bit-exact under it."""
    out_dir = tmp_path_factory.mktemp("cpp_o2")
    exe, errors = _build_driver(out_dir, ("-O2", "-march=native", "-ffp-contract=fast"))
    if "march" in errors:  # a compiler or target without -march=native
        exe, errors = _build_driver(out_dir, ("-O2",))
    assert not errors, f"the C++ driver does not compile:\n{errors}"
    return exe


@pytest.fixture(scope="session")
def sanitized_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe, errors = _build_driver(tmp_path_factory.mktemp("cpp_asan"), SANITIZE_FLAGS)
    if errors and any(word in errors for word in ("asan", "ubsan", "sanitize")):
        pytest.skip(f"no ASan/UBSan toolchain here: {errors.strip().splitlines()[-1]}")
    assert not errors, f"the sanitizer build does not compile:\n{errors}"
    probe = subprocess.run(
        [str(exe), "geometry"], input="pad 650 417 320 320 32\n", capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"the sanitizer runtime does not run here: {probe.stderr.strip()[-300:]}")
    return exe


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One postprocess call: the decoded output and every argument, NumPy and C++ alike."""

    name: str
    output: np.ndarray  # (P, C + 4) float32
    input_hw: tuple[int, int]
    strides: tuple[int, ...]
    center_offset: float
    resize_info: ResizeInfo
    score_thresh: float = 0.05
    iou_thresh: float = 0.6
    top_k: int | None = 1000
    max_det: int | None = 100
    multi_label: bool = True


def num_points(input_hw: tuple[int, int], strides: tuple[int, ...]) -> int:
    return sum(-(-input_hw[0] // s) * -(-input_hw[1] // s) for s in strides)


def identity(input_hw: tuple[int, int]) -> ResizeInfo:
    return ResizeInfo(src_hw=input_hw, input_hw=input_hw, scale_xy=(1.0, 1.0))


def write_case(path: Path, case: Case) -> None:
    out = np.ascontiguousarray(case.output, dtype="<f4")
    info = case.resize_info
    ints = [
        1, out.shape[0], out.shape[1], *case.input_hw, len(case.strides),
        -1 if case.top_k is None else case.top_k, -1 if case.max_det is None else case.max_det,
        int(case.multi_label), *info.src_hw, 0,
    ]  # fmt: skip
    doubles = [
        case.center_offset, case.score_thresh, case.iou_thresh, *info.scale_xy, *info.offset_xy,
    ]  # fmt: skip
    with path.open("wb") as f:
        f.write(b"NDPPCASE")
        f.write(np.asarray(ints + list(case.strides), "<i4").tobytes())
        f.write(np.asarray(doubles, "<f8").tobytes())
        f.write(out.tobytes())


def read_detections(path: Path) -> Detections:
    data = path.read_bytes()
    count = int(np.frombuffer(data[:4], "<i4")[0])
    records = np.frombuffer(data[4:], _DETECTION)
    assert len(records) == count, f"{path}: {len(records)} records, header says {count}"
    return Detections(
        records["box"].astype(np.float32),
        records["score"].copy(),
        records["label"].astype(np.int64),
    )


def run_cpp(exe: Path, cases: list[Case], work: Path) -> list[Detections]:
    """All cases through one driver process."""
    args = [str(exe), "postprocess"]
    for k, case in enumerate(cases):
        write_case(work / f"case{k}.bin", case)
        args += [str(work / f"case{k}.bin"), str(work / f"out{k}.bin")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"driver failed ({done.returncode}): {done.stderr}"
    return [read_detections(work / f"out{k}.bin") for k in range(len(cases))]


def run_numpy(case: Case) -> Detections:
    return postprocess(
        case.output,
        input_hw=case.input_hw,
        strides=case.strides,
        center_offset=case.center_offset,
        resize_info=case.resize_info,
        score_thresh=case.score_thresh,
        iou_thresh=case.iou_thresh,
        max_det=case.max_det,
        top_k=case.top_k,
        multi_label=case.multi_label,
    )


def assert_same(cpp: Detections, ref: Detections, name: str) -> None:
    """Same detections in the same order: labels and float32 scores equal, boxes within 1e-3 px
    (and, with IEEE arithmetic in the same order, identical)."""
    assert len(cpp) == len(ref), f"{name}: C++ gives {len(cpp)} detections, NumPy {len(ref)}"
    np.testing.assert_array_equal(cpp.labels, ref.labels, err_msg=f"{name}: labels")
    np.testing.assert_array_equal(cpp.scores, ref.scores, err_msg=f"{name}: scores")
    np.testing.assert_allclose(
        cpp.boxes_xyxy, ref.boxes_xyxy, rtol=0, atol=BOX_ATOL_PX, err_msg=f"{name}: boxes"
    )
    np.testing.assert_array_equal(cpp.boxes_xyxy, ref.boxes_xyxy, err_msg=f"{name}: exact boxes")


def check_cases(exe: Path, cases: list[Case], work: Path) -> list[Detections]:
    results = run_cpp(exe, cases, work)
    for case, cpp in zip(cases, results, strict=True):
        assert_same(cpp, run_numpy(case), case.name)
    return results


def candidate_scores(case: Case) -> np.ndarray:
    """Scores of the candidates before top_k, descending (to check what a case exercises)."""
    scores = case.output[:, : case.output.shape[1] - 4]
    if not case.multi_label:
        scores = scores.max(axis=1)
    return -np.sort(-scores[scores > np.float32(case.score_thresh)])


def random_case(
    seed: int,
    input_hw: tuple[int, int],
    strides: tuple[int, ...],
    center_offset: float,
    num_classes: int,
    *,
    resize_info: ResizeInfo | None = None,
    **options,
) -> Case:
    """Sparse sigmoid scores (a few % above 0.05) and distances of 0..7 strides: neighbouring
    boxes overlap, so NMS suppresses a lot."""
    rng = np.random.default_rng(seed)
    p = num_points(input_hw, strides)
    scores = sigmoid(rng.normal(-4.0, 2.0, (p, num_classes)).astype(np.float32))
    distances = rng.gamma(2.0, 1.0, (p, 4)).clip(0.0, 7.0).astype(np.float32)
    output = np.concatenate([scores, distances], axis=1)
    info = resize_info if resize_info is not None else identity(input_hw)
    name = f"random seed={seed} {input_hw} C={num_classes} strides={strides}"
    return Case(name, output, input_hw, strides, center_offset, info, **options)


def tied_case(seed: int, **options) -> Case:
    """Scores from 4 values and half-stride distances: exact ties of scores across points and
    classes, identical boxes (one point, several classes) and equal IoUs."""
    rng = np.random.default_rng(seed)
    input_hw, strides = (96, 160), LEGACY_STRIDES
    p, num_classes = num_points(input_hw, strides), 4
    levels = np.array([0.0, 0.25, 0.5, 0.75], np.float32)
    scores = rng.choice(levels, size=(p, num_classes), p=[0.7, 0.1, 0.1, 0.1])
    distances = rng.integers(0, 9, (p, 4)).astype(np.float32) * np.float32(0.5)
    output = np.concatenate([scores, distances], axis=1)
    return Case(f"ties seed={seed} {options}", output, input_hw, strides, 0.5, identity(input_hw),
                **options)  # fmt: skip


# --------------------------------------------------------------------------- official outputs
@pytest.fixture(scope="module")
def official_cases() -> list[Case]:
    """The 10 official NanoDet-m COCO runs (5 images x 320/416) as decoded outputs."""
    runs = json.loads(require_shared("reference", "nanodet-m_coco_detections.json").read_text())
    with np.load(require_shared("reference", "nanodet-m_coco_detections_io.npz")) as npz:
        arrays = dict(npz)
    cases = []
    for run in runs["runs"]:
        key = f"{Path(run['image']).stem}_{run['input_size_cfg_wh'][0]}"
        raw = arrays[f"{key}_raw_output"][0].copy()  # [P, 112] logits
        raw[:, :80] = sigmoid(raw[:, :80])
        decoded = decode_raw(raw, num_classes=80, reg_max=7)
        input_hw = tuple(int(v) for v in arrays[f"{key}_input"].shape[2:])
        info = ResizeInfo.from_matrix(
            arrays[f"{key}_warp_matrix"], tuple(run["original_hw"]), input_hw
        )
        cases.append(Case(f"official {key}", decoded, input_hw, LEGACY_STRIDES, 0.5, info))
    assert len(cases) == 10
    return sorted(cases, key=lambda c: c.name)


def test_official_outputs_match(driver, official_cases, tmp_path):
    results = check_cases(driver, official_cases, tmp_path)
    assert sum(len(r) for r in results) > 200  # real work: many detections, NMS and mapping


@pytest.mark.parametrize(
    "options",
    [
        {"multi_label": False},
        {"top_k": 50, "max_det": 20},
        {"score_thresh": 0.3, "iou_thresh": 0.3, "max_det": None, "top_k": None},
        {"iou_thresh": 0.9, "max_det": 7},
    ],
    ids=["best-class", "top_k-50-max_det-20", "thresholds-no-limits", "iou-0.9-max_det-7"],
)
def test_official_outputs_match_with_options(driver, official_cases, tmp_path, options):
    check_cases(driver, [replace(c, **options) for c in official_cases], tmp_path)


def test_negative_control_wrong_center_offset_is_caught(driver, official_cases, tmp_path):
    """C++ fed center offset 0 instead of the legacy 0.5: boxes move by half a stride, and the
    comparison fails."""
    case = official_cases[0]
    (cpp,) = run_cpp(driver, [replace(case, center_offset=0.0)], tmp_path)
    ref = run_numpy(case)
    assert len(ref) > 0
    with pytest.raises(AssertionError, match="boxes"):
        assert_same(cpp, ref, case.name)


# --------------------------------------------------------------------------- random outputs
@pytest.mark.parametrize("multi_label", [True, False], ids=["multi-label", "best-class"])
def test_random_outputs_match(driver, tmp_path, multi_label):
    cases = [
        random_case(0, (224, 320), LEGACY_STRIDES, 0.5, 3, multi_label=multi_label),
        random_case(1, (320, 224), LEGACY_STRIDES, 0.5, 1, multi_label=multi_label),
        random_case(2, (320, 320), PLUS_STRIDES, 0.0, 5, multi_label=multi_label),
        random_case(3, (224, 320), PLUS_STRIDES, 0.0, 80, multi_label=multi_label),
        random_case(4, (100, 150), (8, 16, 32), 0.5, 7, multi_label=multi_label),  # ceil()
        random_case(5, (416, 416), LEGACY_STRIDES, 0.5, 2, max_det=None, multi_label=multi_label),
        random_case(6, (64, 96), (8,), 0.25, 2, iou_thresh=0.3, multi_label=multi_label),
        # strides that are not powers of two and offset 0.1: centers computed in float32 would
        # differ from float64 -> float32 ones, and distance * stride is inexact
        random_case(7, (100, 150), (6, 12, 24), 0.1, 3, multi_label=multi_label),
    ]
    results = check_cases(driver, cases, tmp_path)
    assert all(len(r) > 0 for r in results)


def test_no_candidates(driver, tmp_path):
    input_hw = (224, 320)
    quiet = random_case(7, input_hw, LEGACY_STRIDES, 0.5, 4)
    at_threshold = quiet.output.copy()
    at_threshold[:, :4] = np.float32(0.05)  # strict >: a score equal to the threshold is out
    below = quiet.output.copy()
    below[:, :4] = np.nextafter(np.float32(0.05), np.float32(0))
    cases = [
        replace(quiet, name="at threshold", output=at_threshold),
        replace(quiet, name="below threshold", output=below),
        replace(quiet, name="threshold above 1", score_thresh=1.0),
        replace(quiet, name="max_det 0", max_det=0),
    ]
    results = check_cases(driver, cases, tmp_path)
    assert all(len(r) == 0 for r in results)


def test_many_candidates_top_k_binds(driver, tmp_path):
    """12750 candidates: top_k (1000) binds, NumPy takes its prefilter path (> 4 * top_k), and
    scores on a 1/256 grid put exact ties at the k-th place."""
    base = random_case(8, (320, 320), PLUS_STRIDES, 0.0, 6, max_det=None)
    rng = np.random.default_rng(8)
    output = base.output.copy()
    output[:, :6] = np.round(rng.uniform(0.06, 1.0, output[:, :6].shape) * 256) / 256
    dense = replace(base, name="dense", output=output)
    cases = [
        dense,
        replace(dense, name="dense top_k 37", top_k=37),
        replace(dense, name="dense top_k 1", top_k=1),
        replace(dense, name="dense best-class", multi_label=False),
        replace(dense, name="dense max_det 5", max_det=5),
        replace(dense, name="dense top_k 5000 iou 0.2", top_k=5000, iou_thresh=0.2),
    ]
    ranked = candidate_scores(dense)
    assert ranked.size > 4 * 1000 and ranked[999] == ranked[1000]  # prefilter path; k-th tied
    results = check_cases(driver, cases, tmp_path)
    assert len(results[0]) > 100 and len(results[4]) == 5


@pytest.mark.parametrize("multi_label", [True, False], ids=["multi-label", "best-class"])
def test_exact_score_ties(driver, tmp_path, multi_label):
    probe = tied_case(9)
    n_top = int(np.count_nonzero(probe.output[:, :4] == np.float32(0.75)))
    cases = [
        tied_case(9, multi_label=multi_label, max_det=None, top_k=None),
        tied_case(9, multi_label=multi_label, top_k=n_top + 5),  # k-th place inside a tie
        tied_case(10, multi_label=multi_label, max_det=3),
        tied_case(11, multi_label=multi_label, iou_thresh=0.5, max_det=None),
    ]
    ranked = candidate_scores(cases[1])
    k = n_top + 5
    assert ranked[k - 1] == ranked[k], "top_k should cut through a group of equal scores"
    results = check_cases(driver, cases, tmp_path)
    assert len(results[0]) > 10 and len(results[2]) == 3


def test_iou_exactly_at_threshold(driver, tmp_path):
    """Two 10x10 boxes shifted by 2.5 px: IoU 75/125, 0.6f = 0.6000000238 in float32. Compared
    in double with 0.6 it is above (suppressed, torchvision); with float32(0.6) it is not."""
    input_hw, strides = (64, 64), (8,)
    output = np.zeros((num_points(input_hw, strides), 5), np.float32)
    a, b = 4 * 8 + 4, 4 * 8 + 5  # row 4, cols 4 and 5: centers (32, 32) and (40, 32)
    output[a] = [0.9, 5 / 8, 5 / 8, 5 / 8, 5 / 8]  # [27, 27, 37, 37]
    output[b] = [0.8, 10.5 / 8, 5 / 8, -0.5 / 8, 5 / 8]  # [29.5, 27, 39.5, 37]
    case = Case("iou at 0.6", output, input_hw, strides, 0.0, identity(input_hw))
    loose = replace(case, name="iou float32(0.6)", iou_thresh=float(np.float32(0.6)))
    strict, kept = check_cases(driver, [case, loose], tmp_path)
    assert len(strict) == 1 and len(kept) == 2


def test_iou_rounding_order(driver, tmp_path):
    """The union is (area_a + area_b) - inter in float32, as NumPy computes it. For two boxes
    where (area_a - inter) + area_b rounds to another IoU, a threshold between the two IoUs
    makes any other order of operations disagree with NumPy."""
    input_hw, strides, f = (64, 64), (8,), np.float32
    rng = np.random.default_rng(12)
    dist = rng.uniform(0.5, 2.5, (2000, 2, 4)).astype(f)  # boxes around (28, 28) and (36, 28)
    px = dist * f(8)
    cx = np.array([28, 36], f)
    x1, y1, x2, y2 = cx - px[..., 0], f(28) - px[..., 1], cx + px[..., 2], f(28) + px[..., 3]
    areas = (x2 - x1) * (y2 - y1)
    inter = np.maximum(np.minimum(x2[:, 0], x2[:, 1]) - np.maximum(x1[:, 0], x1[:, 1]), f(0))
    inter *= np.maximum(np.minimum(y2[:, 0], y2[:, 1]) - np.maximum(y1[:, 0], y1[:, 1]), f(0))
    iou_numpy_order = inter / ((areas[:, 0] + areas[:, 1]) - inter)
    iou_other_order = inter / ((areas[:, 0] - inter) + areas[:, 1])
    t = int(np.flatnonzero((iou_numpy_order != iou_other_order) & (iou_numpy_order > 0.1))[0])
    output = np.zeros((num_points(input_hw, strides), 5), np.float32)
    a, b = 3 * 8 + 3, 3 * 8 + 4  # row 3, cols 3 and 4 (center offset 0.5)
    output[a] = [0.9, *dist[t, 0]]
    output[b] = [0.8, *dist[t, 1]]
    thresh = float(min(iou_numpy_order[t], iou_other_order[t]))
    case = Case(
        "iou rounding", output, input_hw, strides, 0.5, identity(input_hw), iou_thresh=thresh
    )
    (cpp,) = check_cases(driver, [case], tmp_path)
    assert len(cpp) == (1 if iou_numpy_order[t] > thresh else 2)


# --------------------------------------------------------------------------- geometry
SOURCE_HW = [(417, 650), (480, 720), (720, 480), (375, 500), (1080, 1920), (320, 320), (1, 1),
             (3, 1000), (999, 7), (333, 333)]  # fmt: skip
TARGET_HW = [(320, 320), (416, 416), (320, 416), (224, 320)]
GEOMETRIES = ("plain", "letterbox", "pad")


def cpp_geometry(exe: Path, requests: list[tuple[str, tuple[int, int], tuple[int, int]]]) -> list:
    lines = "".join(f"{g} {s[1]} {s[0]} {t[1]} {t[0]} 32\n" for g, s, t in requests)
    done = subprocess.run(
        [str(exe), "geometry"], input=lines, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = []
    for line in done.stdout.splitlines():
        f = line.split()
        rows.append({
            "content_hw": (int(f[1]), int(f[0])),
            "input_hw": (int(f[3]), int(f[2])),
            "pad_ltrb": tuple(int(v) for v in f[4:8]),
            "scale_xy": (float.fromhex(f[8]), float.fromhex(f[9])),
            "offset_xy": (float.fromhex(f[10]), float.fromhex(f[11])),
            "src_hw": (int(f[13]), int(f[12])),
        })  # fmt: skip
    assert len(rows) == len(requests)
    return rows


def test_resize_geometry_matches_preprocess(driver):
    """resize_geometry() == preprocess(..., sampler="resize")'s ResizeInfo, exactly."""
    requests = [(g, s, t) for g in GEOMETRIES for s in SOURCE_HW for t in TARGET_HW]
    for (geometry, src_hw, target_hw), got in zip(
        requests, cpp_geometry(driver, requests), strict=True
    ):
        where = f"{geometry} {src_hw} -> {target_hw}"
        spec = PreprocessSpec(target_hw, geometry=geometry, sampler="resize")
        tensor, info = preprocess(np.zeros((*src_hw, 3), np.uint8), spec)
        assert got["content_hw"] == info.content_hw, where
        if geometry != "plain":
            assert got["content_hw"] == keep_ratio_hw(src_hw, target_hw), where
        assert got["input_hw"] == info.input_hw == tensor.shape[2:], where
        assert got["scale_xy"] == info.scale_xy, where  # bit-equal doubles
        assert got["offset_xy"] == info.offset_xy, where
        assert got["src_hw"] == info.src_hw, where
        left, top, right, bottom = got["pad_ltrb"]
        (ch, cw), (h, w) = info.content_hw, info.input_hw
        assert (left, top) == info.offset_xy and (left + cw + right, top + ch + bottom) == (w, h)


def test_official_truncated_keep_ratio_size(driver):
    """720x480 at 416 is 415x277 (416/720*720 = 415.99...), as official NanoDet truncates."""
    (row,) = cpp_geometry(driver, [("letterbox", (480, 720), (416, 416))])
    assert row["content_hw"] == (277, 415) and row["pad_ltrb"] == (0, 69, 1, 70)


@pytest.mark.parametrize("sampler", ["resize", "warp"])
def test_geometry_mapping_matches(driver, tmp_path, sampler):
    """Detections mapped back through each geometry's ResizeInfo (both samplers: the C++ mapping
    is generic scale + offset), including boxes clipped at the image border."""
    cases = []
    for k, (geometry, src_hw) in enumerate(
        [(g, s) for g in GEOMETRIES for s in [(417, 650), (480, 720), (700, 300)]]
    ):
        spec = PreprocessSpec((320, 320), geometry=geometry, sampler=sampler)
        _, info = preprocess(np.zeros((*src_hw, 3), np.uint8), spec)
        case = random_case(20 + k, info.input_hw, LEGACY_STRIDES, 0.5, 3, resize_info=info)
        cases.append(replace(case, name=f"{geometry} {sampler} {src_hw}"))
    results = check_cases(driver, cases, tmp_path)
    assert all(len(r) > 0 for r in results)


# --------------------------------------------------------------------------- errors, sanitizers
def test_wrong_point_count_is_rejected(driver, tmp_path):
    case = random_case(30, (224, 320), LEGACY_STRIDES, 0.5, 2)
    write_case(tmp_path / "case.bin", replace(case, input_hw=(320, 320)))
    done = subprocess.run(
        [str(driver), "postprocess", str(tmp_path / "case.bin"), str(tmp_path / "out.bin")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3 and "1470 points" in done.stderr and "2100" in done.stderr


def test_sanitized_build_matches(sanitized_driver, official_cases, tmp_path):
    """ASan + UBSan build on official, random, dense and tied cases (no memory or UB errors)."""
    cases = [
        *official_cases[:2],
        random_case(2, (320, 320), PLUS_STRIDES, 0.0, 5, multi_label=False),
        random_case(4, (100, 150), LEGACY_STRIDES, 0.5, 7, top_k=20, max_det=None),
        tied_case(9, top_k=17),
    ]
    check_cases(sanitized_driver, cases, tmp_path)


def test_example_app_compiles_against_ncnn_api(tmp_path):
    """cpp/example_ncnn.cpp, syntax only: against $NCNN_INCLUDE_DIR (the directory holding
    ncnn's net.h) when set, else against the API stub (real ncnn signatures, no bodies)."""
    real = os.environ.get("NCNN_INCLUDE_DIR")
    include = ["-isystem", real] if real else [f"-I{NCNN_STUB_DIR}"]  # ncnn's own warnings: off
    args = [_compiler(), *CXX_FLAGS, "-fsyntax-only", *include, f"-I{HEADER_DIR}"]
    done = _compile([*args, str(EXAMPLE_SOURCE)])
    assert done.returncode == 0, f"example_ncnn.cpp against {include[-1]}:\n{done.stderr}"
