// Minimal stand-in for ncnn's src/mat.h (Tencent/ncnn, BSD-3-Clause): DECLARATIONS ONLY of the
// API surface cpp/example_ncnn.cpp uses, with the signatures of current ncnn releases. It lets
// tests/test_cpp_postprocess.py syntax-check the example (g++ -fsyntax-only) where no ncnn C++
// library is installed; set NCNN_INCLUDE_DIR to check against the real headers instead.
// Nothing here can be linked.
#ifndef NCNN_MAT_H
#define NCNN_MAT_H

#include <stddef.h>

namespace ncnn {

class Allocator;

class Option {
   public:
    Option();
    bool lightmode;
    int num_threads;
    Allocator* blob_allocator;
    Allocator* workspace_allocator;
    bool use_vulkan_compute;
};

class Mat {
   public:
    Mat();
    Mat(const Mat& m);
    ~Mat();
    Mat& operator=(const Mat& m);

    bool empty() const;
    size_t total() const;
    float* row(int y);
    const float* row(int y) const;

    enum PixelType {
        PIXEL_CONVERT_SHIFT = 16,
        PIXEL_FORMAT_MASK = 0x0000ffff,
        PIXEL_CONVERT_MASK = 0xffff0000,

        PIXEL_RGB = 1,
        PIXEL_BGR = 2,
        PIXEL_GRAY = 3,
        PIXEL_RGBA = 4,
        PIXEL_BGRA = 5,

        PIXEL_RGB2BGR = PIXEL_RGB | (PIXEL_BGR << PIXEL_CONVERT_SHIFT),
        PIXEL_BGR2RGB = PIXEL_BGR | (PIXEL_RGB << PIXEL_CONVERT_SHIFT),
    };
    // convenient construct from pixel data and resize to specific size
    static Mat from_pixels_resize(const unsigned char* pixels, int type, int w, int h,
                                  int target_width, int target_height, Allocator* allocator = 0);

    // substract channel-wise mean values, then multiply by normalize values, pass 0 to skip
    void substract_mean_normalize(const float* mean_vals, const float* norm_vals);

    void* data;
    int* refcount;
    size_t elemsize;
    int elempack;
    Allocator* allocator;
    int dims;
    int w;
    int h;
    int d;
    int c;
    size_t cstep;
};

enum BorderType {
    BORDER_CONSTANT = 0,
    BORDER_REPLICATE = 1,
    BORDER_REFLECT = 2,
    BORDER_TRANSPARENT = -233,
};
void copy_make_border(const Mat& src, Mat& dst, int top, int bottom, int left, int right, int type,
                      float v, const Option& opt = Option());

}  // namespace ncnn

#endif  // NCNN_MAT_H
