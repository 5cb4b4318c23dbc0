// cuda_bindings.cpp — pylin._cuda: the CUDA kernels behind pylin.cuda / pylin.kernels.
//
// A separate module so `import pylin` never loads CUDA; importing it needs no GPU or driver
// (the CUDA runtime is linked statically and only asked for devices when called).  Arrays arrive
// as raw device pointers (torch CUDA tensors' data_ptr(), validated in pylin/cuda.py); sizes and
// byte lengths are re-checked here before any launch.  `decode_chunks_host` runs the kernels'
// 8-weight decoders on the CPU so that their bit-exactness is tested without a GPU.
// Tests: tests/test_cuda.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common/block_formats.h"
#include "cuda/decode_chunk.cuh"
#include "cuda/launchers.h"

namespace py = pybind11;
using namespace pylin;

namespace {

void check(int code, const char* what) {
    if (code != 0) throw std::runtime_error(std::string("pylin CUDA ") + what + " failed: " + cuda::error_string(code));
}

int64_t checked_row_bytes(int qtype, int64_t N, int64_t K, int64_t n_bytes) {
    if (!is_known_qtype(qtype)) throw py::value_error("unknown GGML quantization type id " + std::to_string(qtype));
    const FormatInfo f = format_info((QType)qtype);
    if (N <= 0 || K <= 0 || K % f.block_size != 0)
        throw py::value_error("bad weight shape (" + std::to_string(N) + ", " + std::to_string(K) + ")");
    const int64_t row_bytes = K / f.block_size * f.block_bytes;
    if (n_bytes != N * row_bytes)
        throw py::value_error("weight holds " + std::to_string(n_bytes) + " bytes, its shape needs " +
                              std::to_string(N * row_bytes));
    return row_bytes;
}

void check_pointers(uintptr_t w, uintptr_t x, uintptr_t y, int64_t M) {
    if (!w || !x || !y) throw py::value_error("null device pointer");
    if (M <= 0) throw py::value_error("M must be positive, got " + std::to_string(M));
}

// float32 values of n_rows x K weights decoded on the host by decode_chunk (the kernels' decoder)
py::array_t<float> decode_chunks_host(py::array_t<uint8_t, py::array::c_style> data, int qtype, int64_t N, int64_t K) {
    const int64_t row_bytes = checked_row_bytes(qtype, N, K, data.size());
    py::array_t<float> out({N, K});
    const uint8_t* w = data.data();
    float* y = out.mutable_data();
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t k = 0; k < K; k += CHUNK) {
            float v[CHUNK];
            const int valid = (int)std::min<int64_t>(CHUNK, K - k);
            PYLIN_DISPATCH_QTYPE(qtype, decode_chunk<QT_>(w + n * row_bytes, k, valid, v));
            for (int i = 0; i < valid; ++i) y[n * K + k + i] = v[i];
        }
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "pylin CUDA kernels (raw device pointers; use pylin.cuda)";
    m.def("device_count", []() {
        const char* why = nullptr;
        int n = cuda::device_count(&why);
        return py::make_tuple(n, why ? std::string(why) : std::string());
    });
    m.def("dequantize", [](uintptr_t w, int64_t n_bytes, int qtype, int64_t N, int64_t K, uintptr_t out, int device,
                           uintptr_t stream) {
        const int64_t row_bytes = checked_row_bytes(qtype, N, K, n_bytes);
        check_pointers(w, out, out, N);
        py::gil_scoped_release release;
        check(cuda::dequantize((const uint8_t*)w, N, K, row_bytes, qtype, (float*)out, device, (void*)stream),
              "dequantize");
    });
    // matmul_t: y (M x N) = x (M x K) · wᵀ;  matmul: y (M x K) = x (M x N) · w
    for (const bool transposed : {true, false}) {
        m.def(transposed ? "matmul_t" : "matmul",
              [transposed](uintptr_t w, int64_t n_bytes, int qtype, int64_t N, int64_t K, uintptr_t x, int64_t M,
                           uintptr_t y, bool is_double, int device, uintptr_t stream) {
                  const int64_t row_bytes = checked_row_bytes(qtype, N, K, n_bytes);
                  check_pointers(w, x, y, M);
                  py::gil_scoped_release release;
                  auto fn = transposed ? cuda::matmul_t : cuda::matmul;
                  check(fn((const uint8_t*)w, N, K, row_bytes, qtype, (const void*)x, M, (void*)y, is_double, device,
                           (void*)stream),
                        transposed ? "matmul_t" : "matmul");
              });
    }
    m.def("decode_chunks_host", &decode_chunks_host, "the kernels' chunk decoder run on the CPU (for tests)");
    py::dict info;
    info["archs"] = std::string(PYLIN_CUDA_ARCHS);
    info["cuda_version"] = std::string(PYLIN_CUDA_VERSION);
    m.attr("BUILD_INFO") = info;
}
