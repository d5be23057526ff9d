// Minimal stand-in for ncnn's src/net.h (Tencent/ncnn, BSD-3-Clause): declarations only of what
// cpp/example_ncnn.cpp uses, with the signatures of current ncnn releases (see mat.h here).
#ifndef NCNN_NET_H
#define NCNN_NET_H

#include "mat.h"

namespace ncnn {

class Extractor;
class ExtractorPrivate;

class Net {
   public:
    Net();
    virtual ~Net();

    // option can be changed before loading
    Option opt;

    // load network structure from plain param file; return 0 if success
    int load_param(const char* protopath);
    // load network weight data from model file; return 0 if success
    int load_model(const char* modelpath);

    // unload network structure and weight data
    void clear();

    // construct an Extractor from network
    Extractor create_extractor() const;

   private:
    Net(const Net&);
    Net& operator=(const Net&);
};

class Extractor {
   public:
    virtual ~Extractor();
    Extractor(const Extractor&);
    Extractor& operator=(const Extractor&);

    void clear();
    void set_light_mode(bool enable);

    // set input by blob name; return 0 if success
    int input(const char* blob_name, const Mat& in);
    // get result by blob name; return 0 if success
    int extract(const char* blob_name, Mat& feat, int type = 0);

   protected:
    friend Extractor Net::create_extractor() const;
    Extractor(const Net* net, size_t blob_count);

   private:
    ExtractorPrivate* const d;
};

}  // namespace ncnn

#endif  // NCNN_NET_H
