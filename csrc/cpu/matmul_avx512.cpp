// matmul_avx512.cpp — the CPU kernels compiled for AVX512 (per-file flags in
// CMakeLists.txt); only called when CPUID reports AVX512 (isa.cpp).
#include <cstdlib>
#include <cstring>

#include "kernel_table.h"
#include "parallel.h"

namespace pylin_avx512 {
#include "matmul_impl.inc"
}  // namespace pylin_avx512

namespace pylin {

KernelTable kernel_table_avx512() {
    using namespace pylin_avx512;
    return {matmul_t_impl<float>, matmul_t_impl<double>, matmul_impl<float>, matmul_impl<double>};
}

}  // namespace pylin
