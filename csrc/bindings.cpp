// bindings.cpp — the only file that includes pybind11: pylin._core.
//
// Adapts Python buffers (numpy arrays; pylin.kernels hands torch tensors over
// as zero-copy numpy views) to the raw-pointer kernels.  Every size, dtype,
// contiguity and byte length is checked here before a kernel touches memory,
// and a mismatch raises ValueError naming it.  Kernels run without the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <stdexcept>
#include <string>

#include "common/block_formats.h"
#include "common/checks.h"
#include "cpu/isa.h"
#include "cpu/kernel_table.h"
#include "cpu/quantize.h"

namespace py = pybind11;
using namespace pylin;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

std::string shape_str(const py::buffer_info& b) {
    std::ostringstream s;
    s << "(";
    for (size_t i = 0; i < b.shape.size(); ++i) s << (i ? ", " : "") << b.shape[i];
    s << (b.shape.size() == 1 ? ",)" : ")");
    return s.str();
}

bool is_c_contiguous(const py::buffer_info& b) {
    py::ssize_t expected = b.itemsize;
    for (py::ssize_t i = b.ndim - 1; i >= 0; --i) {
        if (b.shape[i] != 1 && b.strides[i] != expected) return false;
        expected *= b.shape[i];
    }
    return true;
}

char float_kind(const py::buffer_info& b, const char* name) {
    if (b.format == py::format_descriptor<float>::format() && b.itemsize == 4) return 'f';
    if (b.format == py::format_descriptor<double>::format() && b.itemsize == 8) return 'd';
    fail(std::string(name) + " must be float32 or float64, got buffer format '" + b.format + "'");
}

void require_2d(const py::buffer_info& b, const char* name, py::ssize_t rows, py::ssize_t cols) {
    if (b.ndim != 2) fail(std::string(name) + " must be 2-D, got shape " + shape_str(b));
    if (!is_c_contiguous(b)) fail(std::string(name) + " must be C-contiguous");
    if ((rows >= 0 && b.shape[0] != rows) || (cols >= 0 && b.shape[1] != cols)) {
        std::ostringstream s;
        s << name << " has shape " << shape_str(b) << ", expected (" << (rows >= 0 ? std::to_string(rows) : "M")
          << ", " << cols << ")";
        fail(s.str());
    }
}

// Checks the weight bytes are contiguous and hold exactly N rows of K weights; returns bytes per row.
int64_t checked_weight(const py::buffer_info& w, QType qtype, int64_t N, int64_t K) {
    if (!is_c_contiguous(w)) fail("weight bytes must be C-contiguous");
    return checked_row_bytes(qtype, N, K, (int64_t)(w.size * w.itemsize));
}

int checked_threads(int n_threads) { return n_threads < 1 ? 1 : n_threads; }

// y = x . w^T (transposed = true) or y = g . w (transposed = false).
void run_matmul(bool transposed, py::buffer x_obj, py::buffer w_obj, int qtype_id, int64_t N, int64_t K,
                py::buffer y_obj, int n_threads) {
    const QType qtype = checked_qtype(qtype_id);
    py::buffer_info w = w_obj.request();
    py::buffer_info x = x_obj.request();
    py::buffer_info y = y_obj.request(true);
    const int64_t row_bytes = checked_weight(w, qtype, N, K);
    const char* xname = transposed ? "x" : "g";
    const int64_t inner = transposed ? K : N, outer = transposed ? N : K;
    require_2d(x, xname, -1, inner);
    const int64_t M = x.shape[0];
    if (M <= 0) fail(std::string(xname) + " has no rows (M = 0)");
    require_2d(y, "out", M, outer);
    const char kind = float_kind(x, xname);
    if (float_kind(y, "out") != kind) fail("out must have the same dtype as " + std::string(xname));
    if (ranges_overlap((uintptr_t)x.ptr, x.size * x.itemsize, (uintptr_t)y.ptr, y.size * y.itemsize))
        fail("out overlaps " + std::string(xname) + " in memory; pass a separate output array");

    MatmulArgs args{x.ptr, (const uint8_t*)w.ptr, y.ptr, M, N, K, row_bytes, qtype, checked_threads(n_threads)};
    const KernelTable& table = kernel_table(active_isa());
    MatmulFn fn = transposed ? (kind == 'f' ? table.matmul_t_f32 : table.matmul_t_f64)
                             : (kind == 'f' ? table.matmul_f32 : table.matmul_f64);
    py::gil_scoped_release release;
    fn(args);
}

void dequantize(py::buffer w_obj, int qtype_id, int64_t N, int64_t K, py::buffer y_obj, int n_threads) {
    const QType qtype = checked_qtype(qtype_id);
    py::buffer_info w = w_obj.request();
    py::buffer_info y = y_obj.request(true);
    const int64_t row_bytes = checked_weight(w, qtype, N, K);
    require_2d(y, "out", N, K);
    if (float_kind(y, "out") != 'f') fail("out must be float32");
    py::gil_scoped_release release;
    dequantize_rows((const uint8_t*)w.ptr, N, K, row_bytes, qtype, (float*)y.ptr, checked_threads(n_threads));
}

// Rows of float32 x (N x K, contiguous) into `out`, which must hold exactly N rows of the format.
void quantize(py::buffer x_obj, int qtype_id, py::buffer out_obj, int n_threads) {
    const QType qtype = checked_qtype(qtype_id);
    if (!can_quantize(qtype)) fail("pylin reads GGML type " + std::to_string(qtype_id) + " but cannot write it");
    py::buffer_info x = x_obj.request();
    py::buffer_info out = out_obj.request(true);
    require_2d(x, "x", -1, -1);
    if (float_kind(x, "x") != 'f') fail("quantize needs float32 input");
    const int64_t N = x.shape[0], K = x.shape[1];
    if (N <= 0 || K <= 0) fail("cannot quantize an empty array of shape " + shape_str(x));
    if (!is_c_contiguous(out)) fail("out must be C-contiguous");
    const int64_t row_bytes = pylin::row_bytes(qtype, K);
    if ((int64_t)(out.size * out.itemsize) != N * row_bytes)
        fail("out holds " + std::to_string(out.size * out.itemsize) + " bytes, expected " +
             std::to_string(N * row_bytes));
    py::gil_scoped_release release;
    quantize_rows((const float*)x.ptr, N, K, row_bytes, qtype, (uint8_t*)out.ptr, checked_threads(n_threads));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pylin native CPU kernels (see pylin.kernels for the documented API)";
    m.def("matmul_t", [](py::buffer x, py::buffer w, int q, int64_t N, int64_t K, py::buffer y, int t) {
        run_matmul(true, x, w, q, N, K, y, t);
    }, "y = x . w^T into out", py::arg("x"), py::arg("w"), py::arg("qtype"), py::arg("n"), py::arg("k"),
          py::arg("out"), py::arg("n_threads"));
    m.def("matmul", [](py::buffer g, py::buffer w, int q, int64_t N, int64_t K, py::buffer y, int t) {
        run_matmul(false, g, w, q, N, K, y, t);
    }, "y = g . w into out", py::arg("g"), py::arg("w"), py::arg("qtype"), py::arg("n"), py::arg("k"),
          py::arg("out"), py::arg("n_threads"));
    m.def("dequantize", &dequantize, py::arg("w"), py::arg("qtype"), py::arg("n"), py::arg("k"), py::arg("out"),
          py::arg("n_threads"));
    m.def("quantize", &quantize, "float32 rows -> GGUF blocks into out", py::arg("x"), py::arg("qtype"),
          py::arg("out"), py::arg("n_threads"));
    m.def("format_info", [](int q) {
        const FormatInfo f = format_info(checked_qtype(q));
        return py::make_tuple(f.block_size, f.block_bytes);
    });
    m.def("supported_isas", &supported_isas);
    m.def("active_isa", []() { return std::string(isa_name(active_isa())); });
    m.def("set_isa", [](const std::string& name) {
        try {
            set_active_isa(name);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
    });
    py::dict info;
    info["compiler"] = PYLIN_COMPILER;
    info["openmp"] = false;  // threads come from pylin's own pool (csrc/cpu/parallel.h)
    info["threading"] = "std::thread pool";
    py::list compiled;
    compiled.append("generic");
#ifdef PYLIN_HAVE_AVX2
    compiled.append("avx2");
#endif
#ifdef PYLIN_HAVE_AVX512
    compiled.append("avx512");
#endif
    info["isa_compiled"] = compiled;
    m.attr("BUILD_INFO") = info;
}
