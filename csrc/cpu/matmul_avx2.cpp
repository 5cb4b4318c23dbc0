// matmul_avx2.cpp — the CPU kernels compiled for AVX2 (per-file flags in
// CMakeLists.txt); only called when CPUID reports AVX2 (isa.cpp).
#include <cstdlib>
#include <cstring>

#include "kernel_table.h"
#include "parallel.h"

namespace pylin_avx2 {
#include "matmul_impl.inc"
}  // namespace pylin_avx2

namespace pylin {

KernelTable kernel_table_avx2() {
    using namespace pylin_avx2;
    return {matmul_t_impl<float>, matmul_t_impl<double>, matmul_impl<float>, matmul_impl<double>};
}

}  // namespace pylin
