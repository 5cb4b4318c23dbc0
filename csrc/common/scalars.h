// scalars.h — what every block decoder shares: the host+device marker, block sizes, and the
// scalar conversions (fp16, bf16, E8M0, UE4M3 -> float) and unaligned little-endian loads.
//
// Included by block_formats.h and the per-family format headers (iquant_formats.h,
// ternary_fp4_formats.h); the CPU kernels and the CUDA kernels compile these same functions.
// Tests: tests/test_dequantize.py (bit-exact against gguf.quants, subnormal scales included).
#pragma once

#include <cstdint>
#include <cstring>

// static: internal linkage, so each translation unit (the generic, AVX2 and
// AVX-512 builds of the CPU kernels) keeps its own copy compiled with its own
// flags; a shared inline symbol could let the linker hand AVX-512 code to the
// portable path.
#if defined(__CUDACC__)
#define PYLIN_HD static __host__ __device__ __forceinline__
#else
#define PYLIN_HD static inline
#endif

namespace pylin {

constexpr int QK = 32;     // weights per block of the 32-block formats
constexpr int QK_K = 256;  // weights per super-block of the K-quants
constexpr int K_SCALE_SIZE = 12;

// ---- scalar conversions ------------------------------------------------------

// IEEE half -> float, exact for every finite value (subnormals included), inf and NaN.
PYLIN_HD float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        // subnormal half: normalize; the result is a normal float
        exponent = 113u;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

PYLIN_HD float bf16_to_fp32(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

PYLIN_HD uint16_t load_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

PYLIN_HD uint32_t load_u32(const uint8_t* p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

// MXFP4's E8M0 block scale, halved (its kvalues are E2M1 values doubled): ggml-impl.h
// ggml_e8m0_to_fp32_half, as gguf-py's MXFP4.e8m0_to_fp32_half.  Always finite: e = 255 is 2^127
// here, not the OCP spec's NaN.
PYLIN_HD float e8m0_to_fp32_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// 2^n as a float for -126 <= n <= 127 (built from its bits: exact, and the same on host and device).
PYLIN_HD float exp2_int(int n) {
    const uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// NVFP4's unsigned E4M3 sub-block scale (bias 7, no sign bit), halved as MXFP4's is: ggml-impl.h
// ggml_ue4m3_to_fp32 (which returns the half despite its name) and gguf-py's NVFP4.ue4m3_to_fp32.
// Both read bits 6..3 as the exponent and 2..0 as the mantissa, ignore bit 7, and decode 0x00 and
// 0x7F (E4M3's NaN) as 0 — 0xFF is not special there, so it is 240.  ggml computes
// ldexpf(man, -9) * 0.5 (exp 0) or ldexpf(1 + man / 8, exp - 7) * 0.5; every step is exact in float32,
// so the value equals the integer (8 + man, or man) times one power of two: always finite, 2^-10 .. 240.
PYLIN_HD float ue4m3_to_fp32_half(uint8_t x) {
    if (x == 0 || x == 0x7F) return 0.0f;
    const int exponent = (x >> 3) & 0xF, mantissa = x & 0x7;
    if (exponent == 0) return (float)mantissa * exp2_int(-10);
    return (float)(8 + mantissa) * exp2_int(exponent - 11);
}

}  // namespace pylin
