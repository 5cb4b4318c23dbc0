// cuda_bindings.cpp — pylin._cuda: the CUDA kernels behind pylin.kernels.
//
// A separate module so `import pylin` never loads CUDA.  Arrays arrive as raw
// device pointers (torch CUDA tensors' data_ptr(), already validated in
// pylin/kernels.py); sizes are re-checked here before any launch.
#include <pybind11/pybind11.h>

#include <string>

#include "common/block_formats.h"
#include "cuda/launchers.h"

namespace py = pybind11;
using namespace pylin;

namespace {

void check(int code, const char* what) {
    if (code != 0) throw std::runtime_error(std::string(what) + " failed: " + cuda::error_string(code));
}

int64_t checked_row_bytes(int qtype, int64_t N, int64_t K, int64_t n_bytes) {
    if (!is_known_qtype(qtype)) throw py::value_error("unknown GGML quantization type id " + std::to_string(qtype));
    const FormatInfo f = format_info((QType)qtype);
    if (N <= 0 || K <= 0 || K % f.block_size != 0)
        throw py::value_error("bad weight shape (" + std::to_string(N) + ", " + std::to_string(K) + ")");
    const int64_t row_bytes = K / f.block_size * f.block_bytes;
    if (n_bytes != N * row_bytes) throw py::value_error("weight byte length does not match its shape");
    return row_bytes;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "pylin CUDA kernels";
    m.def("device_count", []() {
        const char* why = nullptr;
        int n = cuda::device_count(&why);
        return py::make_tuple(n, why ? std::string(why) : std::string());
    });
    m.def("dequantize", [](uintptr_t w, int64_t n_bytes, int qtype, int64_t N, int64_t K, uintptr_t out,
                           uintptr_t stream) {
        const int64_t row_bytes = checked_row_bytes(qtype, N, K, n_bytes);
        py::gil_scoped_release release;
        check(cuda::dequantize((const uint8_t*)w, N, K, row_bytes, qtype, (float*)out, (void*)stream), "dequantize");
    });
    py::dict info;
    info["archs"] = std::string(PYLIN_CUDA_ARCHS);
    info["cuda_version"] = std::string(PYLIN_CUDA_VERSION);
    m.attr("BUILD_INFO") = info;
}
