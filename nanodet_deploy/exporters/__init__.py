"""Export a NanoDet: ONNX (``onnx``: torch -> ONNX + onnxsim + op allow-list), NCNN (``ncnn``:
pnnx), MNN and OpenVINO (``mnn``, ``openvino``: optional, loaded through ``registry``), int8
(``int8``: calibration, onnxruntime QDQ; ``ncnn_calib`` + ``ncnn_int8``: ncnn's own int8
format), the parity check (``verify``, ``matching``) and the whole export built in a temp
folder and moved into place when complete (``pipeline``, ``folder``). Errors: ``errors``.
"""
