// checks.h — argument checks both bindings share (bindings.cpp for pylin._core, cuda_bindings.cpp
// for pylin._cuda): a known format, the bytes of a quantized row, and overlapping byte ranges.
//
// Host-only and free of pybind11: failures throw std::invalid_argument, which pybind11 turns into
// ValueError, so both modules raise the same one-line message.  Python's counterpart of
// row_bytes is pylin.qtensor.row_nbytes.  Tests: tests/test_matmul.py, tests/test_cuda.py.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/block_formats.h"

namespace pylin {

inline QType checked_qtype(int qtype) {
    if (!is_known_qtype(qtype))
        throw std::invalid_argument("unknown or unsupported GGML quantization type id " + std::to_string(qtype));
    return (QType)qtype;
}

// Bytes of one row of K weights; K must be a positive multiple of the format's block size.
inline int64_t row_bytes(QType qtype, int64_t K) {
    const FormatInfo f = format_info(qtype);
    if (K <= 0 || K % f.block_size != 0)
        throw std::invalid_argument("K = " + std::to_string(K) + " is not a positive multiple of the block size " +
                                    std::to_string(f.block_size) + " of this format");
    return K / f.block_size * f.block_bytes;
}

// Bytes of one row, after checking that `have` bytes hold exactly N rows of K weights.
inline int64_t checked_row_bytes(QType qtype, int64_t N, int64_t K, int64_t have) {
    if (N <= 0 || K <= 0)
        throw std::invalid_argument("weight shape must be positive, got (" + std::to_string(N) + ", " +
                                    std::to_string(K) + ")");
    const int64_t bytes = row_bytes(qtype, K);
    if (have != N * bytes)
        throw std::invalid_argument("weight buffer holds " + std::to_string(have) + " bytes, expected " +
                                    std::to_string(N * bytes) + " for " + std::to_string(N) + " x " +
                                    std::to_string(K) + " weights");
    return bytes;
}

// Whether [a, a + a_bytes) and [b, b + b_bytes) share a byte (an output must not overlap an input:
// the kernels read the input while they write the output).
inline bool ranges_overlap(uintptr_t a, int64_t a_bytes, uintptr_t b, int64_t b_bytes) {
    return a < b + (uintptr_t)b_bytes && b < a + (uintptr_t)a_bytes;
}

}  // namespace pylin
