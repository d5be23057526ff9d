// Test driver for cpp/nanodet_postprocess.hpp, used by tests/test_cpp_postprocess.py.
//
//   run_postprocess postprocess CASE OUT [CASE OUT ...]
//       CASE (written by the Python test, little-endian):
//         8 bytes   magic "NDPPCASE"
//         12 int32  version (1), num_points, num_channels, input_h, input_w, num_strides,
//                   top_k (-1: none), max_det (-1: none), multi_label (0/1), src_h, src_w, 0
//         int32     strides[num_strides]
//         7 float64 center_offset, score_thresh, iou_thresh, scale_x, scale_y, offset_x,
//                   offset_y
//         float32   output[num_points * num_channels], row-major
//       OUT: int32 count, then count records of float32 x1, y1, x2, y2, score and int32 label
//       (raw bytes: nothing is lost in printing).
//   run_postprocess geometry
//       stdin lines "KIND SRC_W SRC_H TARGET_W TARGET_H MULTIPLE" (KIND plain/letterbox/pad);
//       stdout lines "content_w content_h input_w input_h pad_left pad_top pad_right
//       pad_bottom scale_x scale_y offset_x offset_y src_w src_h", doubles as hex floats (%a).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "nanodet_postprocess.hpp"

namespace {

struct Case {
    int num_points = 0;
    int num_channels = 0;
    int input_h = 0;
    int input_w = 0;
    std::vector<int> strides;
    double center_offset = 0.0;
    nanodet::PostprocessOptions options;
    nanodet::ResizeInfo resize_info;
    std::vector<float> output;
};

class Reader {
   public:
    explicit Reader(const std::vector<char>& bytes) : bytes_(bytes), pos_(0) {}

    template <typename T>
    bool read(T* values, std::size_t count) {
        const std::size_t size = sizeof(T) * count;
        if (bytes_.size() - pos_ < size) {
            return false;
        }
        if (size > 0) {
            std::memcpy(values, bytes_.data() + pos_, size);
        }
        pos_ += size;
        return true;
    }

    bool at_end() const { return pos_ == bytes_.size(); }

   private:
    const std::vector<char>& bytes_;
    std::size_t pos_;
};

bool read_file(const char* path, std::vector<char>* bytes) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return false;
    }
    bytes->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return true;
}

bool parse_case(const std::vector<char>& bytes, Case* c, std::string* error) {
    Reader reader(bytes);
    char magic[8];
    std::int32_t ints[12];
    if (!reader.read(magic, 8) || std::memcmp(magic, "NDPPCASE", 8) != 0 ||
        !reader.read(ints, 12) || ints[0] != 1) {
        *error = "not a version 1 case file";
        return false;
    }
    c->num_points = ints[1];
    c->num_channels = ints[2];
    c->input_h = ints[3];
    c->input_w = ints[4];
    std::vector<std::int32_t> strides(static_cast<std::size_t>(ints[5] > 0 ? ints[5] : 0));
    c->options.top_k = ints[6];
    c->options.max_det = ints[7];
    c->options.multi_label = ints[8] != 0;
    c->resize_info.src_h = ints[9];
    c->resize_info.src_w = ints[10];
    double doubles[7];
    c->output.resize(static_cast<std::size_t>(c->num_points) *
                     static_cast<std::size_t>(c->num_channels));
    if (!reader.read(strides.data(), strides.size()) || !reader.read(doubles, 7) ||
        !reader.read(c->output.data(), c->output.size()) || !reader.at_end()) {
        *error = "case file has the wrong size";
        return false;
    }
    c->strides.assign(strides.begin(), strides.end());
    c->center_offset = doubles[0];
    c->options.score_thresh = static_cast<float>(doubles[1]);  // == np.float32(score_thresh)
    c->options.iou_thresh = doubles[2];
    c->resize_info.scale_x = doubles[3];
    c->resize_info.scale_y = doubles[4];
    c->resize_info.offset_x = doubles[5];
    c->resize_info.offset_y = doubles[6];
    return true;
}

bool write_detections(const char* path, const std::vector<nanodet::Detection>& detections) {
    std::ofstream out(path, std::ios::binary);
    const std::int32_t count = static_cast<std::int32_t>(detections.size());
    out.write(reinterpret_cast<const char*>(&count), sizeof(count));
    for (std::size_t k = 0; k < detections.size(); ++k) {
        const nanodet::Detection& d = detections[k];
        const float values[5] = {d.x1, d.y1, d.x2, d.y2, d.score};
        const std::int32_t label = d.label;
        out.write(reinterpret_cast<const char*>(values), sizeof(values));
        out.write(reinterpret_cast<const char*>(&label), sizeof(label));
    }
    return static_cast<bool>(out);
}

int run_case(const char* case_path, const char* out_path) {
    std::vector<char> bytes;
    Case c;
    std::string error;
    if (!read_file(case_path, &bytes) || !parse_case(bytes, &c, &error)) {
        std::cerr << case_path << ": " << (error.empty() ? "cannot read" : error) << "\n";
        return 2;
    }
    std::vector<nanodet::Detection> detections;
    if (!nanodet::postprocess(c.output.data(), c.num_points, c.num_channels, c.input_w,
                              c.input_h, c.strides, c.center_offset, c.resize_info, c.options,
                              &detections, &error)) {
        std::cerr << case_path << ": postprocess failed: " << error << "\n";
        return 3;
    }
    if (!write_detections(out_path, detections)) {
        std::cerr << out_path << ": cannot write\n";
        return 2;
    }
    return 0;
}

int run_geometry() {
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream fields(line);
        std::string name;
        int src_w = 0, src_h = 0, target_w = 0, target_h = 0, multiple = 0;
        nanodet::GeometryKind kind;
        if (!(fields >> name >> src_w >> src_h >> target_w >> target_h >> multiple) ||
            !nanodet::parse_geometry(name, &kind)) {
            std::cerr << "bad geometry line: " << line << "\n";
            return 2;
        }
        const nanodet::Geometry g =
            nanodet::resize_geometry(src_w, src_h, target_w, target_h, kind, multiple);
        const nanodet::ResizeInfo& r = g.resize_info;
        std::printf("%d %d %d %d %d %d %d %d %a %a %a %a %d %d\n", g.content_w, g.content_h,
                    g.input_w, g.input_h, g.pad_left, g.pad_top, g.pad_right, g.pad_bottom,
                    r.scale_x, r.scale_y, r.offset_x, r.offset_y, r.src_w, r.src_h);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "geometry" && argc == 2) {
        return run_geometry();
    }
    if (mode == "postprocess" && argc >= 4 && argc % 2 == 0) {
        for (int k = 2; k < argc; k += 2) {
            const int status = run_case(argv[k], argv[k + 1]);
            if (status != 0) {
                return status;
            }
        }
        return 0;
    }
    std::cerr << "usage: run_postprocess postprocess CASE OUT [CASE OUT ...] | geometry\n";
    return 1;
}
