// matmul_avx2.cpp — the CPU kernels for AVX2 + FMA + F16C (per-file flags in
// CMakeLists.txt); only called when CPUID reports AVX2 (isa.cpp).
//
// Defines the vector primitives (8 float lanes, MR = 6 row microkernel: 12 of the 16
// ymm registers hold the 6 x 16 tile), then includes the shared SIMD decoders and
// drivers.  float64 stays on the portable code (matmul_impl.inc), auto-vectorized here.
// Tests: tests/test_matmul.py (isa = avx2).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "kernel_table.h"
#include "parallel.h"

namespace pylin_avx2 {
#include "matmul_impl.inc"

namespace {

using vf = __m256;
constexpr int L = 8;
constexpr int MR = 6;

inline __m256i lane_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vset1(float v) { return _mm256_set1_ps(v); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline vf vload_n(const float* p, int n) { return _mm256_maskload_ps(p, lane_mask(n)); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline void vstore_n(float* p, vf v, int n) { _mm256_maskstore_ps(p, lane_mask(n), v); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline float vhsum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// out[i] = d * q[i] for 16 int8 codes (the scalar decoders' d * (float)q, exactly).
inline void store_q8x16(float* out, __m128i q, float d) {
    const vf dv = _mm256_set1_ps(d);
    _mm256_storeu_ps(out, _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    _mm256_storeu_ps(out + 8, _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)))));
}
// out[i] = a * q[i] + b, two roundings (no FMA), as the scalar decoders compute it.
inline void store_q8x16_affine(float* out, __m128i q, float a, float b) {
    const vf av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b);
    const vf lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    const vf hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_mul_ps(av, lo), bv));
    _mm256_storeu_ps(out + 8, _mm256_add_ps(_mm256_mul_ps(av, hi), bv));
}
inline void store_f16x16(float* out, const uint8_t* p) {
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)));
    _mm256_storeu_ps(out + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 16))));
}
inline void store_bf16x16(float* out, const uint8_t* p) {
    const __m256i lo = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    const __m256i hi = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(p + 16)));
    _mm256_storeu_ps(out, _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16)));
    _mm256_storeu_ps(out + 8, _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16)));
}

}  // namespace

#include "decode_simd.inc"
#include "matmul_simd.inc"
}  // namespace pylin_avx2

namespace pylin {

KernelTable kernel_table_avx2() {
    using namespace pylin_avx2;
    return {matmul_t_simd, matmul_t_impl<double>, matmul_simd, matmul_impl<double>, dequantize_simd};
}

}  // namespace pylin
