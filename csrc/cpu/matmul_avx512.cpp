// matmul_avx512.cpp — the CPU kernels for AVX-512 (F, BW, VL, DQ; per-file flags in
// CMakeLists.txt); only called when CPUID reports AVX-512 (isa.cpp).
//
// Defines the vector primitives (16 float lanes, MR = 12 row microkernel: 24 of the 32
// zmm registers hold the 12 x 32 tile), then includes the shared SIMD decoders and
// drivers.  float64 stays on the portable code (matmul_impl.inc), auto-vectorized here.
// Tests: tests/test_matmul.py (isa = avx512).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "kernel_table.h"
#include "parallel.h"

namespace pylin_avx512 {
#include "matmul_impl.inc"

namespace {

using vf = __m512;
constexpr int L = 16;
constexpr int MR = 12;

inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vset1(float v) { return _mm512_set1_ps(v); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline vf vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p); }
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline void vstore_n(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline float vhsum(vf v) { return _mm512_reduce_add_ps(v); }

// out[i] = d * q[i] for 16 int8 codes (the scalar decoders' d * (float)q, exactly).
inline void store_q8x16(float* out, __m128i q, float d) {
    _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))));
}
// out[i] = a * q[i] + b, two roundings (no FMA), as the scalar decoders compute it.
inline void store_q8x16_affine(float* out, __m128i q, float a, float b) {
    const vf prod = _mm512_mul_ps(_mm512_set1_ps(a), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)));
    _mm512_storeu_ps(out, _mm512_add_ps(prod, _mm512_set1_ps(b)));
}
inline void store_f16x16(float* out, const uint8_t* p) {
    _mm512_storeu_ps(out, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)));
}
inline void store_bf16x16(float* out, const uint8_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    _mm512_storeu_ps(out, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
}

}  // namespace

#include "decode_simd.inc"
#include "matmul_simd.inc"
}  // namespace pylin_avx512

namespace pylin {

KernelTable kernel_table_avx512() {
    using namespace pylin_avx512;
    return {matmul_t_simd, matmul_t_impl<double>, matmul_simd, matmul_impl<double>, dequantize_simd};
}

}  // namespace pylin
