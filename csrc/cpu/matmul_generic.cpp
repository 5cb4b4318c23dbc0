// matmul_generic.cpp — the portable baseline of the CPU kernels (no ISA flags),
// plus the table lookup and row dequantization every variant shares.
#include <stdexcept>

#include <cstdlib>
#include <cstring>

#include "kernel_table.h"
#include "parallel.h"

#include "matmul_impl.inc"

namespace pylin {

KernelTable kernel_table_generic() {
    return {matmul_t_impl<float>, matmul_t_impl<double>, matmul_impl<float>, matmul_impl<double>, dequantize_impl};
}

const KernelTable& kernel_table(Isa isa) {
    static const KernelTable generic = kernel_table_generic();
#ifdef PYLIN_HAVE_AVX2
    static const KernelTable avx2 = kernel_table_avx2();
    if (isa == Isa::Avx2) return avx2;
#endif
#ifdef PYLIN_HAVE_AVX512
    static const KernelTable avx512 = kernel_table_avx512();
    if (isa == Isa::Avx512) return avx512;
#endif
    (void)isa;
    return generic;
}

void dequantize_rows(const uint8_t* w, int64_t n_rows, int64_t K, int64_t row_bytes, QType qtype, float* out,
                     int n_threads) {
    kernel_table(active_isa()).dequantize(w, n_rows, K, row_bytes, qtype, out, n_threads);
}

}  // namespace pylin
