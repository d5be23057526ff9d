// example_ncnn.cpp: a complete NCNN app around nanodet_postprocess.hpp (one image -> boxes).
//
// Build against an ncnn C++ library (e.g. built with cmake from ncnn's sources):
//   g++ -std=c++11 -O2 -ffp-contract=off -I<ncnn>/include/ncnn -Icpp cpp/example_ncnn.cpp
//       -L<ncnn>/lib -lncnn -fopenmp -lpthread -o example_ncnn     (one command line)
// Run:
//   ./example_ncnn model.ncnn.param model.ncnn.bin image.bgr WIDTH HEIGHT
// image.bgr holds raw 8-bit BGR pixels, row-major, WIDTH * HEIGHT * 3 bytes (from Python:
// cv2.imread(path).tofile("image.bgr")). With OpenCV in the app, use instead
//   cv::Mat bgr = cv::imread(path);  pixels = bgr.data, src_w = bgr.cols, src_h = bgr.rows.
//
// The pipeline is preprocess.py's `resize` sampler, which is what this computes bit for bit up
// to the float rounding of the normalization: resize the whole image to the content size
// (from_pixels_resize: the resize sampler calls this very function through ncnn's Python
// binding; cv2.resize rounds differently at some scales), normalize, THEN pad with pad_value (the
// padding must be the mean colour, 0.0 after normalization; padding before normalizing would
// give (v - mean) / std != 0), run the net, postprocess.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "nanodet_postprocess.hpp"
#include "net.h"

namespace {

// ---- values from meta.json (written beside the exported model); these are the defaults ----
const int kTargetH = 320;                      // "preprocess"."input_hw"[0]
const int kTargetW = 320;                      // "preprocess"."input_hw"[1]
const char* const kGeometry = "pad";           // "preprocess"."geometry" (sampler "resize")
const int kSizeMultiple = 32;                  // "preprocess"."size_multiple"
const double kMeanBgr[3] = {103.53, 116.28, 123.675};  // "preprocess"."mean_bgr"
const double kStdBgr[3] = {57.375, 57.12, 58.395};     // "preprocess"."std_bgr"
const float kPadValue = 0.0f;                  // "preprocess"."pad_value" (normalized models)
// "preprocess"."color_order" "BGR" -> PIXEL_BGR; for "RGB" use PIXEL_BGR2RGB and reverse the
// mean/std arrays. "preprocess"."normalize_folded" true -> skip substract_mean_normalize; the
// pad value is then the per-channel mean, which copy_make_border (one value) cannot write.
const int kStrides[] = {8, 16, 32};            // "strides" (NanoDet-Plus: 8, 16, 32, 64)
const double kCenterOffset = 0.5;              // "center_offset" (NanoDet-Plus: 0.0)
const char* const kInputBlob = "in0";          // "ncnn_input_name"
const char* const kOutputBlob = "out0";        // "ncnn_output_name"
// "class_names" gives the label names; "output_layout" must be "decoded".

bool read_bgr(const char* path, int w, int h, std::vector<unsigned char>* pixels) {
    std::ifstream in(path, std::ios::binary);
    pixels->resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    in.read(reinterpret_cast<char*>(pixels->data()), static_cast<std::streamsize>(pixels->size()));
    return in.gcount() == static_cast<std::streamsize>(pixels->size());
}

// BGR pixels -> network input, as preprocess.py does; *geometry maps boxes back.
ncnn::Mat make_input(const unsigned char* bgr, int src_w, int src_h, nanodet::Geometry* geometry) {
    nanodet::GeometryKind kind = nanodet::GEOMETRY_PAD;
    nanodet::parse_geometry(kGeometry, &kind);
    const nanodet::Geometry g =
        nanodet::resize_geometry(src_w, src_h, kTargetW, kTargetH, kind, kSizeMultiple);
    ncnn::Mat content = ncnn::Mat::from_pixels_resize(bgr, ncnn::Mat::PIXEL_BGR, src_w, src_h,
                                                      g.content_w, g.content_h);
    float mean[3];
    float norm[3];
    for (int k = 0; k < 3; ++k) {
        mean[k] = static_cast<float>(kMeanBgr[k]);  // float32(mean), float32(1 / std) as NumPy
        norm[k] = static_cast<float>(1.0 / kStdBgr[k]);
    }
    content.substract_mean_normalize(mean, norm);
    ncnn::Mat input;
    ncnn::copy_make_border(content, input, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right,
                           ncnn::BORDER_CONSTANT, kPadValue);
    *geometry = g;
    return input;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6) {
        std::fprintf(stderr, "usage: %s model.param model.bin image.bgr WIDTH HEIGHT\n", argv[0]);
        return 1;
    }
    const int src_w = std::atoi(argv[4]);
    const int src_h = std::atoi(argv[5]);
    std::vector<unsigned char> bgr;
    if (src_w <= 0 || src_h <= 0 || !read_bgr(argv[3], src_w, src_h, &bgr)) {
        std::fprintf(stderr, "%s: cannot read %dx%d BGR pixels\n", argv[3], src_w, src_h);
        return 1;
    }
    nanodet::Geometry geometry;
    const ncnn::Mat input = make_input(bgr.data(), src_w, src_h, &geometry);

    ncnn::Net net;
    net.opt.num_threads = 2;  // set options before load_param
    if (net.load_param(argv[1]) != 0 || net.load_model(argv[2]) != 0) {
        std::fprintf(stderr, "cannot load %s / %s\n", argv[1], argv[2]);
        return 1;
    }
    ncnn::Extractor ex = net.create_extractor();
    ncnn::Mat out;  // h = P points, w = C + 4 channels, row-major float32
    if (ex.input(kInputBlob, input) != 0 || ex.extract(kOutputBlob, out) != 0 || out.c != 1) {
        std::fprintf(stderr, "inference failed (blob names %s -> %s?)\n", kInputBlob,
                     kOutputBlob);
        return 1;
    }

    const std::vector<int> strides(kStrides, kStrides + sizeof(kStrides) / sizeof(kStrides[0]));
    nanodet::PostprocessOptions options;  // score > 0.05, NMS IoU 0.6, top 1000, 100 boxes
    std::vector<nanodet::Detection> detections;
    std::string error;
    if (!nanodet::postprocess(out.row(0), out.h, out.w, geometry.input_w, geometry.input_h,
                              strides, kCenterOffset, geometry.resize_info, options,
                              &detections, &error)) {
        std::fprintf(stderr, "postprocess: %s\n", error.c_str());
        return 1;
    }
    for (std::size_t k = 0; k < detections.size(); ++k) {
        const nanodet::Detection& d = detections[k];
        std::printf("label %d score %.4f box %.1f %.1f %.1f %.1f\n", d.label, d.score, d.x1,
                    d.y1, d.x2, d.y2);
    }
    return 0;
}
