// nanodet_postprocess.hpp: header-only C++11 reference postprocessor for nanodet-deploy exports.
//
// It reproduces nanodet_deploy/postprocess.py's postprocess() exactly (same detections, same
// order, same float32 scores, same boxes; tests/test_cpp_postprocess.py checks it bit for bit)
// and computes the preprocess geometry of the `resize` sampler, so an NCNN/ONNX app needs no
// other code between the network output and boxes in image pixels. Standard library only.
//
// INPUT: the exported model output `output` of one image, float32, row-major (P, C + 4):
//   columns 0..C-1  class scores AFTER sigmoid,
//   columns C..C+3  distances l, t, r, b IN UNITS OF THE LEVEL'S STRIDE (not pixels).
//   Points go level by level (strides ascending), row-major inside a level; a level of stride
//   s has ceil(H / s) * ceil(W / s) points, where (H, W) is the NETWORK INPUT TENSOR (with its
//   padding, e.g. 224x320 for a 650x417 photo with the `pad` geometry at 320).
//   NCNN: ex.extract(output_name, out) gives out.h == P, out.w == C + 4; pass out.row(0).
//
// STEPS (as postprocess.py): center of cell (row i, col j) = ((j + o) * s, (i + o) * s);
//   box = center -/+ distance * s, clamped to [0, W] x [0, H]; candidates = (point, class) with
//   score > score_thresh (strict, float32), or only each point's best class (multi_label=false);
//   the top_k best candidates (ties: lower candidate index, i.e. point then class) enter a
//   class-aware greedy NMS with torchvision semantics (float32 IoU without +1, compared with
//   iou_thresh in double, suppressed when IoU > iou_thresh); the first max_det kept boxes, in
//   descending score (ties: candidate order), are mapped back to original-image pixels:
//   x_image = (x_input - offset_x) / scale_x (double), clipped to [0, src_w], cast to float.
//
// WHAT TO READ FROM meta.json:
//   "strides"                    -> strides (e.g. [8, 16, 32] or [8, 16, 32, 64])
//   "center_offset"              -> center_offset (0.5 legacy NanoDet, 0.0 NanoDet-Plus)
//   "class_names"                -> C = its length (= num_channels - 4); labels index it
//   "output_layout"              -> must be "decoded" (a "raw" export needs the softmax decode)
//   "preprocess"."input_hw"      -> [H, W] the target size; "preprocess"."geometry" (plain /
//      letterbox / pad), "sampler", "size_multiple", "mean_bgr", "std_bgr", "color_order",
//      "normalize_folded", "pad_value": how the tensor is built (see cpp/example_ncnn.cpp)
//   "ncnn_input_name" / "ncnn_output_name" -> blob names (default "in0" / "out0")
//   The app's own resize gives ResizeInfo: resize_geometry() for sampler "resize"
//   (ncnn::Mat::from_pixels_resize of the content box); any other mapping (e.g. the `warp`
//   sampler's single scale + sub-pixel shift) is just another scale_x/y, offset_x/y.
//
// UNITS: every box is x1, y1, x2, y2 in pixels; input boxes in network-tensor pixels, output
//   boxes in original-image pixels. Sizes are given as separate _w / _h values.
//
// EXACTNESS: results are bit-identical to NumPy with IEEE float/double arithmetic, whatever
//   the FMA contraction setting (g++ fuses a * b + c into one FMA by default on FMA-capable
//   targets, even with -std=c++11): every product that feeds an add is rounded to float first
//   (detail::product). Do not compile this with -ffast-math (it reorders float arithmetic).
//   Differences from postprocess.py only for broken outputs: NaN scores never become
//   candidates here; top_k == 0 gives no detections (postprocess.py raises ValueError).
#ifndef NANODET_POSTPROCESS_HPP
#define NANODET_POSTPROCESS_HPP

#include <algorithm>
#include <cstddef>
#include <sstream>
#include <string>
#include <vector>

namespace nanodet {

// One detection; box in original-image pixels (after postprocess) or tensor pixels (before).
struct Detection {
    float x1, y1, x2, y2;
    float score;  // class score after sigmoid
    int label;    // 0-based index into meta.json "class_names"
};

// How the original image was mapped onto the network input tensor (Python: ResizeInfo):
// an image point (x, y) lands at (x * scale_x + offset_x, y * scale_y + offset_y).
struct ResizeInfo {
    int src_w = 0;  // original image size (boxes are clipped to it)
    int src_h = 0;
    double scale_x = 1.0;
    double scale_y = 1.0;
    double offset_x = 0.0;
    double offset_y = 0.0;
};

enum GeometryKind { GEOMETRY_PLAIN, GEOMETRY_LETTERBOX, GEOMETRY_PAD };

// Where the resized image goes in the tensor (sampler "resize"): resize the whole image to
// content_w x content_h (ncnn::Mat::from_pixels_resize), then pad by pad_* to input_w x input_h
// (ncnn::copy_make_border). resize_info maps boxes back.
struct Geometry {
    int content_w = 0;
    int content_h = 0;
    int input_w = 0;  // the network input tensor (pass input_w / input_h to postprocess)
    int input_h = 0;
    int pad_left = 0;
    int pad_top = 0;
    int pad_right = 0;
    int pad_bottom = 0;
    ResizeInfo resize_info;
};

struct PostprocessOptions {
    float score_thresh = 0.05f;  // strict >, compared in float32 (like torch)
    double iou_thresh = 0.6;     // double on purpose: float IoU 0.6f = 0.6000000238 > 0.6
    int top_k = 1000;            // candidates entering NMS; < 0: no limit
    int max_det = 100;           // detections returned; < 0: no limit
    bool multi_label = true;     // false: only the best class of each point is a candidate
};

// "plain" / "letterbox" / "pad" (meta.json "preprocess"."geometry") -> kind; false if unknown.
inline bool parse_geometry(const std::string& name, GeometryKind* kind) {
    if (name == "plain") {
        *kind = GEOMETRY_PLAIN;
    } else if (name == "letterbox") {
        *kind = GEOMETRY_LETTERBOX;
    } else if (name == "pad") {
        *kind = GEOMETRY_PAD;
    } else {
        return false;
    }
    return true;
}

// Largest keep-ratio size inside target_w x target_h, truncated (official NanoDet's
// get_minimum_dst_shape, preprocess.py keep_ratio_hw): 720x480 at 416 gives 415x277.
inline void keep_ratio_size(int src_w, int src_h, int target_w, int target_h, int* content_w,
                            int* content_h) {
    const double src_ratio = static_cast<double>(src_w) / static_cast<double>(src_h);
    const double target_ratio = static_cast<double>(target_w) / static_cast<double>(target_h);
    const double ratio = src_ratio < target_ratio
                             ? static_cast<double>(target_h) / static_cast<double>(src_h)
                             : static_cast<double>(target_w) / static_cast<double>(src_w);
    const int h = static_cast<int>(ratio * static_cast<double>(src_h));
    const int w = static_cast<int>(ratio * static_cast<double>(src_w));
    *content_h = std::max(1, std::min(target_h, h));
    *content_w = std::max(1, std::min(target_w, w));
}

// Geometry of the "resize" sampler for a src_w x src_h image and the target size
// target_w x target_h (meta.json "preprocess"."input_hw" = [target_h, target_w]):
//   plain     content = target, no padding, per-axis scales;
//   letterbox keep ratio, centred (odd pixel right/bottom), tensor = target;
//   pad       keep ratio, top-left, tensor = content rounded up to size_multiple.
// scale = content / src per axis, offset = the left/top padding (preprocess.py _layout).
inline Geometry resize_geometry(int src_w, int src_h, int target_w, int target_h,
                                GeometryKind kind, int size_multiple = 32) {
    Geometry g;
    if (kind == GEOMETRY_PLAIN) {
        g.content_w = target_w;
        g.content_h = target_h;
    } else {
        keep_ratio_size(src_w, src_h, target_w, target_h, &g.content_w, &g.content_h);
    }
    if (kind == GEOMETRY_PAD) {
        const int m = std::max(1, size_multiple);
        g.input_w = (g.content_w + m - 1) / m * m;
        g.input_h = (g.content_h + m - 1) / m * m;
    } else {
        g.input_w = target_w;
        g.input_h = target_h;
    }
    if (kind == GEOMETRY_LETTERBOX) {
        g.pad_left = (target_w - g.content_w) / 2;
        g.pad_top = (target_h - g.content_h) / 2;
    }
    g.pad_right = g.input_w - g.content_w - g.pad_left;
    g.pad_bottom = g.input_h - g.content_h - g.pad_top;
    g.resize_info.src_w = src_w;
    g.resize_info.src_h = src_h;
    g.resize_info.scale_x = static_cast<double>(g.content_w) / static_cast<double>(src_w);
    g.resize_info.scale_y = static_cast<double>(g.content_h) / static_cast<double>(src_h);
    g.resize_info.offset_x = static_cast<double>(g.pad_left);
    g.resize_info.offset_y = static_cast<double>(g.pad_top);
    return g;
}

// Number of output rows for an input tensor of input_w x input_h: sum of ceil(H/s)*ceil(W/s).
inline int count_points(int input_w, int input_h, const std::vector<int>& strides) {
    int total = 0;
    for (std::size_t k = 0; k < strides.size(); ++k) {
        const int s = strides[k];
        total += ((input_h + s - 1) / s) * ((input_w + s - 1) / s);
    }
    return total;
}

// Maps one coordinate back to the original image: (v - offset) / scale in double, clipped to
// [0, limit], then rounded to float (ResizeInfo.to_original).
inline float unresize(float v, double offset, double scale, int limit) {
    const double mapped = (static_cast<double>(v) - offset) / scale;
    return static_cast<float>(std::min(std::max(mapped, 0.0), static_cast<double>(limit)));
}

// A box in network-tensor pixels -> original-image pixels, clipped to the image.
inline Detection to_original(const Detection& d, const ResizeInfo& info) {
    Detection out = d;
    out.x1 = unresize(d.x1, info.offset_x, info.scale_x, info.src_w);
    out.y1 = unresize(d.y1, info.offset_y, info.scale_y, info.src_h);
    out.x2 = unresize(d.x2, info.offset_x, info.scale_x, info.src_w);
    out.y2 = unresize(d.y2, info.offset_y, info.scale_y, info.src_h);
    return out;
}

namespace detail {

struct Candidate {
    int point;
    int label;
    float score;
};

struct Level {
    int first_point;  // index of the level's first output row
    int cols;         // ceil(W / stride)
    int stride;
};

inline std::vector<Level> make_levels(int input_w, int input_h, const std::vector<int>& strides) {
    std::vector<Level> levels;
    int first = 0;
    for (std::size_t k = 0; k < strides.size(); ++k) {
        Level level;
        level.first_point = first;
        level.stride = strides[k];
        level.cols = (input_w + strides[k] - 1) / strides[k];
        first += level.cols * ((input_h + strides[k] - 1) / strides[k]);
        levels.push_back(level);
    }
    return levels;
}

// Descending score, ties by ascending candidate index (NumPy's stable argsort of -scores).
struct ScoreThenIndex {
    const std::vector<Candidate>* candidates;
    bool operator()(int a, int b) const {
        const float sa = (*candidates)[a].score;
        const float sb = (*candidates)[b].score;
        if (sa != sb) {
            return sa > sb;
        }
        return a < b;
    }
};

// Every (point, class) with score > thresh in row-major order, or each point's best class
// (first maximum, like argmax) when !multi_label.
inline std::vector<Candidate> collect_candidates(const float* output, int num_points,
                                                 int num_channels, float score_thresh,
                                                 bool multi_label) {
    const int num_classes = num_channels - 4;
    std::vector<Candidate> candidates;
    for (int p = 0; p < num_points; ++p) {
        const float* scores = output + static_cast<std::size_t>(p) * num_channels;
        if (multi_label) {
            for (int c = 0; c < num_classes; ++c) {
                if (scores[c] > score_thresh) {
                    Candidate cand = {p, c, scores[c]};
                    candidates.push_back(cand);
                }
            }
            continue;
        }
        int best = 0;
        for (int c = 1; c < num_classes; ++c) {
            if (scores[c] > scores[best]) {
                best = c;
            }
        }
        if (scores[best] > score_thresh) {
            Candidate cand = {p, best, scores[best]};
            candidates.push_back(cand);
        }
    }
    return candidates;
}

// The top_k best candidates (ScoreThenIndex), kept in candidate order; top_k < 0: all.
inline std::vector<Candidate> keep_top_k(const std::vector<Candidate>& candidates, int top_k) {
    if (top_k < 0 || candidates.size() <= static_cast<std::size_t>(top_k)) {
        return candidates;
    }
    std::vector<int> index(candidates.size());
    for (std::size_t i = 0; i < index.size(); ++i) {
        index[i] = static_cast<int>(i);
    }
    ScoreThenIndex better = {&candidates};
    std::nth_element(index.begin(), index.begin() + top_k, index.end(), better);
    index.resize(static_cast<std::size_t>(top_k));
    std::sort(index.begin(), index.end());
    std::vector<Candidate> kept;
    kept.reserve(index.size());
    for (std::size_t i = 0; i < index.size(); ++i) {
        kept.push_back(candidates[index[i]]);
    }
    return kept;
}

inline float clamp_to(float v, float hi) { return std::min(std::max(v, 0.0f), hi); }

// a * b rounded to float before it is used: the volatile store keeps the compiler from fusing
// it into the following add/sub (an FMA skips that rounding: 1 ulp away from NumPy).
inline float product(float a, float b) {
    volatile float p = a * b;
    return p;
}

// Box of one candidate in tensor pixels: float32 center - / + float32(distance * stride).
inline Detection decode_box(const float* output, int num_channels, const Candidate& cand,
                            const std::vector<Level>& levels, double center_offset, int input_w,
                            int input_h) {
    std::size_t k = levels.size() - 1;
    while (k > 0 && cand.point < levels[k].first_point) {
        --k;
    }
    const Level& level = levels[k];
    const int local = cand.point - level.first_point;
    const double s = static_cast<double>(level.stride);
    const double col = static_cast<double>(local % level.cols);
    const double row = static_cast<double>(local / level.cols);
    const float cx = static_cast<float>((col + center_offset) * s);  // float64, then float32
    const float cy = static_cast<float>((row + center_offset) * s);
    const float stride = static_cast<float>(level.stride);
    const float* dist = output + static_cast<std::size_t>(cand.point) * num_channels +
                        (num_channels - 4);
    const float left = product(dist[0], stride);
    const float top = product(dist[1], stride);
    const float right = product(dist[2], stride);
    const float bottom = product(dist[3], stride);
    Detection box;
    box.x1 = clamp_to(cx - left, static_cast<float>(input_w));
    box.y1 = clamp_to(cy - top, static_cast<float>(input_h));
    box.x2 = clamp_to(cx + right, static_cast<float>(input_w));
    box.y2 = clamp_to(cy + bottom, static_cast<float>(input_h));
    box.score = cand.score;
    box.label = cand.label;
    return box;
}

inline float area(const Detection& b) {
    return product(b.x2 - b.x1, b.y2 - b.y1);
}

// torchvision's IoU test: float32 inter / (area_a + area_b - inter), compared in double.
// (0 / 0 is NaN and never suppresses, as in NumPy; IEEE division, no trap.)
inline bool iou_above(const Detection& a, float area_a, const Detection& b, float area_b,
                      double thresh) {
    float inter_w = std::min(a.x2, b.x2) - std::max(a.x1, b.x1);
    inter_w = std::max(inter_w, 0.0f);
    float inter_h = std::min(a.y2, b.y2) - std::max(a.y1, b.y1);
    inter_h = std::max(inter_h, 0.0f);
    const float inter = product(inter_w, inter_h);
    float uni = area_a + area_b;
    uni = uni - inter;
    const float iou = inter / uni;
    return static_cast<double>(iou) > thresh;
}

// Class-aware greedy NMS; indices into boxes of the kept ones, descending score (ties: index),
// at most max_det (< 0: no limit).
inline std::vector<int> nms(const std::vector<Detection>& boxes, double iou_thresh, int max_det,
                            int num_classes) {
    const int n = static_cast<int>(boxes.size());
    const std::size_t limit =
        max_det < 0 ? boxes.size() : std::min(boxes.size(), static_cast<std::size_t>(max_det));
    std::vector<Candidate> by_score(boxes.size());
    std::vector<int> order(boxes.size());
    std::vector<float> areas(boxes.size());
    for (int i = 0; i < n; ++i) {
        Candidate c = {i, boxes[i].label, boxes[i].score};
        by_score[i] = c;
        order[i] = i;
        areas[i] = area(boxes[i]);
    }
    ScoreThenIndex better = {&by_score};
    std::sort(order.begin(), order.end(), better);
    // next_same[a]: the next position after a (in score order) with the same label, or -1.
    std::vector<int> next_same(boxes.size(), -1);
    std::vector<int> last_of_label(static_cast<std::size_t>(std::max(num_classes, 0)), -1);
    for (int a = n - 1; a >= 0; --a) {
        const int label = boxes[order[a]].label;
        next_same[a] = last_of_label[label];
        last_of_label[label] = a;
    }
    std::vector<char> suppressed(boxes.size(), 0);
    std::vector<int> kept;
    for (int a = 0; a < n && kept.size() < limit; ++a) {
        if (suppressed[a]) {
            continue;
        }
        const int i = order[a];
        kept.push_back(i);
        for (int b = next_same[a]; b >= 0 && kept.size() < limit; b = next_same[b]) {
            const int j = order[b];
            if (!suppressed[b] && iou_above(boxes[i], areas[i], boxes[j], areas[j], iou_thresh)) {
                suppressed[b] = 1;
            }
        }
    }
    return kept;
}

inline bool fail(std::string* error, const std::string& message) {
    if (error) {
        *error = message;
    }
    return false;
}

inline bool check_arguments(const float* output, int num_points, int num_channels, int input_w,
                            int input_h, const std::vector<int>& strides,
                            const ResizeInfo& info, std::string* error) {
    std::ostringstream why;
    if (input_w <= 0 || input_h <= 0 || strides.empty() ||
        *std::min_element(strides.begin(), strides.end()) <= 0) {
        why << "bad input size " << input_w << "x" << input_h << " (WxH) or strides";
        return fail(error, why.str());
    }
    if (num_channels <= 4) {
        why << "output needs C + 4 channels with C >= 1, got " << num_channels;
        return fail(error, why.str());
    }
    const int expected = count_points(input_w, input_h, strides);
    if (num_points != expected) {
        why << "output has " << num_points << " points, but a " << input_w << "x" << input_h
            << " (WxH) input with these strides gives " << expected
            << ": wrong input size or strides";
        return fail(error, why.str());
    }
    if (!output) {
        return fail(error, "output is null");
    }
    if (info.src_w <= 0 || info.src_h <= 0 || info.scale_x == 0.0 || info.scale_y == 0.0) {
        return fail(error, "resize_info needs the source image size and non-zero scales");
    }
    return true;
}

}  // namespace detail

// Decoded output (P, C + 4) of one image -> detections in original-image pixels (see top).
// input_w / input_h: the network input tensor. Returns false (and sets *error when given)
// when the arguments do not fit together; detections is then empty.
inline bool postprocess(const float* output, int num_points, int num_channels, int input_w,
                        int input_h, const std::vector<int>& strides, double center_offset,
                        const ResizeInfo& resize_info, const PostprocessOptions& options,
                        std::vector<Detection>* detections, std::string* error = nullptr) {
    detections->clear();
    if (!detail::check_arguments(output, num_points, num_channels, input_w, input_h, strides,
                                 resize_info, error)) {
        return false;
    }
    const std::vector<detail::Candidate> candidates = detail::keep_top_k(
        detail::collect_candidates(output, num_points, num_channels, options.score_thresh,
                                   options.multi_label),
        options.top_k);
    const std::vector<detail::Level> levels = detail::make_levels(input_w, input_h, strides);
    std::vector<Detection> boxes;
    boxes.reserve(candidates.size());
    for (std::size_t k = 0; k < candidates.size(); ++k) {
        boxes.push_back(detail::decode_box(output, num_channels, candidates[k], levels,
                                           center_offset, input_w, input_h));
    }
    const std::vector<int> kept =
        detail::nms(boxes, options.iou_thresh, options.max_det, num_channels - 4);
    detections->reserve(kept.size());
    for (std::size_t k = 0; k < kept.size(); ++k) {
        detections->push_back(to_original(boxes[kept[k]], resize_info));
    }
    return true;
}

}  // namespace nanodet

#endif  // NANODET_POSTPROCESS_HPP
