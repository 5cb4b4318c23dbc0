// kernel_table.h — the CPU kernels' raw-pointer interface and per-ISA tables.
//
// Kernels see no framework types: pointers, sizes, the weight format and a
// thread count.  bindings.cpp validates every array before filling a
// MatmulArgs; the kernels re-check nothing but trust nothing else either.
#pragma once

#include <cstdint>

#include "../common/block_formats.h"
#include "isa.h"

namespace pylin {

struct MatmulArgs {
    const void* x;     // activations: M x K (matmul_t) or M x N (matmul), contiguous, float or double
    const uint8_t* w;  // weight rows: N rows of K weights in `qtype`, row_bytes each
    void* y;           // output: M x N (matmul_t) or M x K (matmul), contiguous, same dtype as x
    int64_t M, N, K;
    int64_t row_bytes;
    QType qtype;
    int n_threads;
};

using MatmulFn = void (*)(const MatmulArgs&);
// out[r * K ..] = the float32 values of row r, for n_rows rows of row_bytes bytes.
using DequantizeFn = void (*)(const uint8_t* w, int64_t n_rows, int64_t K, int64_t row_bytes, QType qtype,
                              float* out, int n_threads);

struct KernelTable {
    MatmulFn matmul_t_f32;  // y = x . w^T
    MatmulFn matmul_t_f64;
    MatmulFn matmul_f32;    // y = g . w
    MatmulFn matmul_f64;
    DequantizeFn dequantize;  // the variant's own block decoders (bit-identical in every variant)
};

KernelTable kernel_table_generic();
#ifdef PYLIN_HAVE_AVX2
KernelTable kernel_table_avx2();
#endif
#ifdef PYLIN_HAVE_AVX512
KernelTable kernel_table_avx512();
#endif

const KernelTable& kernel_table(Isa isa);

// Decode `n_rows` whole rows of a weight matrix to float32 (threaded), with the active variant's decoders.
void dequantize_rows(const uint8_t* w, int64_t n_rows, int64_t K, int64_t row_bytes, QType qtype,
                     float* out, int n_threads);

}  // namespace pylin
