// cuda_bindings.cpp — pylin._cuda: the CUDA kernels behind pylin.cuda / pylin.kernels.
//
// A separate module so `import pylin` never loads CUDA; importing it needs no GPU or driver
// (the CUDA runtime is linked statically and only asked for devices when called).  Arrays arrive
// as raw device pointers (torch CUDA tensors' data_ptr(), validated in pylin/cuda.py); sizes, byte
// lengths, overlaps and the workspace are re-checked here before any launch.  Arguments come in
// the order of pylin._core's (activations, weight, format, N, K, output), then the GPU's context.
// `decode_chunks_host` runs the kernels' 8-weight decoders on the CPU so that their bit-exactness
// is tested without a GPU.
// Tests: tests/test_cuda.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common/block_formats.h"
#include "common/checks.h"
#include "cuda/decode_chunk.cuh"
#include "cuda/launchers.h"

namespace py = pybind11;
using namespace pylin;

namespace {

void check(int code, const char* what) {
    if (code != 0) throw std::runtime_error(std::string("pylin CUDA ") + what + " failed: " + cuda::error_string(code));
}

void check_pointer(uintptr_t p, const char* name) {
    if (!p) throw py::value_error(std::string("null device pointer for ") + name);
}

// The sizes of a product x (M rows) with an N x K weight, checked; pointers still unset.
cuda::MatmulArgs product_sizes(const char* xname, int64_t M, int qtype, int64_t N, int64_t K, bool is_double,
                               int device) {
    const QType q = checked_qtype(qtype);
    if (N <= 0) throw py::value_error("weight shape must be positive, got N = " + std::to_string(N));
    if (M <= 0) throw py::value_error(std::string(xname) + " has no rows (M = " + std::to_string(M) + ")");
    return cuda::MatmulArgs{nullptr, nullptr, nullptr, M, N, K, row_bytes(q, K), q, is_double, nullptr, 0, device,
                            nullptr};
}

// The arguments of matmul_t (transposed) or matmul, checked: sizes, byte lengths, no overlap.
cuda::MatmulArgs matmul_args(bool transposed, uintptr_t x, int64_t M, uintptr_t w, int64_t w_bytes, int qtype,
                             int64_t N, int64_t K, uintptr_t y, bool is_double, int device, uintptr_t stream) {
    const char* xname = transposed ? "x" : "g";
    cuda::MatmulArgs a = product_sizes(xname, M, qtype, N, K, is_double, device);
    checked_row_bytes(a.qtype, N, K, w_bytes);
    check_pointer(x, xname), check_pointer(w, "w"), check_pointer(y, "out");
    const int64_t item = is_double ? 8 : 4;
    const int64_t x_bytes = M * (transposed ? K : N) * item, y_bytes = M * (transposed ? N : K) * item;
    if (ranges_overlap(x, x_bytes, y, y_bytes))
        throw py::value_error(std::string("out overlaps ") + xname + " in memory; pass a separate output tensor");
    if (ranges_overlap(w, w_bytes, y, y_bytes)) throw py::value_error("out overlaps the weight bytes");
    a.x = (const void*)x, a.w = (const uint8_t*)w, a.y = (void*)y, a.stream = (void*)stream;
    return a;
}

// float32 values of n_rows x K weights decoded on the host by decode_chunk (the kernels' decoder)
py::array_t<float> decode_chunks_host(py::array_t<uint8_t, py::array::c_style> data, int qtype, int64_t N, int64_t K) {
    const QType q = checked_qtype(qtype);
    const int64_t row_bytes = checked_row_bytes(q, N, K, data.size());
    py::array_t<float> out({N, K});
    const uint8_t* w = data.data();
    float* y = out.mutable_data();
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t k = 0; k < K; k += CHUNK) {
            float v[CHUNK];
            const int valid = (int)std::min<int64_t>(CHUNK, K - k);
            PYLIN_DISPATCH_QTYPE(q, decode_chunk<QT_>(w + n * row_bytes, k, valid, v));
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
    m.def("dequantize", [](uintptr_t w, int64_t w_bytes, int qtype, int64_t N, int64_t K, uintptr_t out, int device,
                           uintptr_t stream) {
        const QType q = checked_qtype(qtype);
        const int64_t row_bytes = checked_row_bytes(q, N, K, w_bytes);
        check_pointer(w, "w"), check_pointer(out, "out");
        if (ranges_overlap(w, w_bytes, out, N * K * 4)) throw py::value_error("out overlaps the weight bytes");
        py::gil_scoped_release release;
        check(cuda::dequantize((const uint8_t*)w, N, K, row_bytes, q, (float*)out, device, (void*)stream),
              "dequantize");
    });
    m.def("matmul_workspace_bytes", [](int64_t M, int qtype, int64_t N, int64_t K, bool is_double, int device) {
        return cuda::matmul_workspace_bytes(product_sizes("g", M, qtype, N, K, is_double, device));
    });
    // matmul_t: y (M x N) = x (M x K) · wᵀ;  matmul: y (M x K) = g (M x N) · w
    for (const bool transposed : {true, false}) {
        m.def(transposed ? "matmul_t" : "matmul",
              [transposed](uintptr_t x, int64_t M, uintptr_t w, int64_t w_bytes, int qtype, int64_t N, int64_t K,
                           uintptr_t y, bool is_double, uintptr_t workspace, int64_t workspace_bytes, int device,
                           uintptr_t stream) {
                  cuda::MatmulArgs a = matmul_args(transposed, x, M, w, w_bytes, qtype, N, K, y, is_double, device,
                                                   stream);
                  if (!transposed) {
                      const int64_t needed = cuda::matmul_workspace_bytes(a);
                      if (workspace_bytes < needed || (needed > 0 && !workspace))
                          throw py::value_error("matmul needs a workspace of " + std::to_string(needed) +
                                                " bytes, got " + std::to_string(workspace_bytes));
                      a.workspace = (void*)workspace, a.workspace_bytes = workspace_bytes;
                  }
                  py::gil_scoped_release release;
                  check(transposed ? cuda::matmul_t(a) : cuda::matmul(a), transposed ? "matmul_t" : "matmul");
              });
    }
    m.def("decode_chunks_host", &decode_chunks_host, "the kernels' chunk decoder run on the CPU (for tests)");
    py::dict info;
    info["archs"] = std::string(PYLIN_CUDA_ARCHS);
    info["cuda_version"] = std::string(PYLIN_CUDA_VERSION);
    m.attr("BUILD_INFO") = info;
}
