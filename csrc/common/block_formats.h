// block_formats.h — every GGUF weight format pylin reads, in one place.
//
// One struct per block with a static_assert on its size, and one scalar
// `decode_<format>` that writes the block's float32 values.  The decoders are
// marked PYLIN_HD so the CPU reference path and the CUDA kernels share this
// single copy.  Layouts follow ggml's `ggml-common.h`; the arithmetic follows
// gguf-py's `gguf.quants` operation by operation (e.g. Q4_K computes
// `(d*sc)*q - (dmin*m)` with two float32 roundings), so that decoding is bit
// exact against it.  Keep floating-point contraction off when compiling this
// (CMake passes -ffp-contract=off): an FMA would round once and change bits.
//
// Tests: tests/test_dequantize.py (bit-exact against gguf.quants).
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

// GGUF's numeric type ids (ggml_type), spelled as GGUF spells them.
enum class QType : int {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30,
};

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

// ---- block structs (ggml-common.h) ------------------------------------------

struct block_q4_0 {  // 4.5 bits/weight: y[j] = d*((qs[j]&15)-8), y[j+16] = d*((qs[j]>>4)-8)
    uint16_t d;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");

struct block_q4_1 {  // 5.0 bits/weight: y = d*q + m
    uint16_t d, m;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");

struct block_q5_0 {  // 5.5 bits/weight: fifth bit j of y[j] in qh (little-endian u32), y = d*(q-16)
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");

struct block_q5_1 {  // 6.0 bits/weight: y = d*q + m
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");

struct block_q8_0 {  // 8.5 bits/weight: y = d*qs
    uint16_t d;
    int8_t qs[QK];
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");

struct block_q2_K {  // 2.625 bits/weight: 16 sub-blocks of 16, 4-bit scale | 4-bit min per sub-block
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d, dmin;
};
static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");

struct block_q3_K {  // 3.4375 bits/weight: 16 sub-blocks of 16, 6-bit signed scales
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};
static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");

struct block_q4_K {  // 4.5 bits/weight: 8 sub-blocks of 32, 6-bit scale and min each
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");

struct block_q5_K {  // 5.5 bits/weight: as Q4_K plus a fifth bit per weight
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");

struct block_q6_K {  // 6.5625 bits/weight: 16 sub-blocks of 16, int8 scales, d LAST
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");

// ---- per-format facts --------------------------------------------------------

struct FormatInfo {
    int block_size;   // weights per block
    int block_bytes;  // bytes per block
};

// constexpr as well, so compile-time tables (the CUDA kernels' Format<QT>) read the same facts.
PYLIN_HD constexpr FormatInfo format_info(QType t) {
    switch (t) {
        case QType::F32: return {1, 4};
        case QType::F16: return {1, 2};
        case QType::BF16: return {1, 2};
        case QType::Q4_0: return {QK, (int)sizeof(block_q4_0)};
        case QType::Q4_1: return {QK, (int)sizeof(block_q4_1)};
        case QType::Q5_0: return {QK, (int)sizeof(block_q5_0)};
        case QType::Q5_1: return {QK, (int)sizeof(block_q5_1)};
        case QType::Q8_0: return {QK, (int)sizeof(block_q8_0)};
        case QType::Q2_K: return {QK_K, (int)sizeof(block_q2_K)};
        case QType::Q3_K: return {QK_K, (int)sizeof(block_q3_K)};
        case QType::Q4_K: return {QK_K, (int)sizeof(block_q4_K)};
        case QType::Q5_K: return {QK_K, (int)sizeof(block_q5_K)};
        case QType::Q6_K: return {QK_K, (int)sizeof(block_q6_K)};
    }
    return {0, 0};
}

PYLIN_HD bool is_known_qtype(int t) {
    return format_info((QType)t).block_size != 0;
}

// The K-quants' 6-bit scale/min unpacking (ggml's get_scale_min_k4).
PYLIN_HD void get_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q3_K's 16 signed 6-bit scales, unpacked (value - 32).
PYLIN_HD int q3_K_scale(const uint8_t* scales, int i) {
    const int low = (i < 8) ? (scales[i] & 0xF) : (scales[i - 8] >> 4);
    const int high = (scales[8 + (i % 4)] >> (2 * (i / 4))) & 3;
    return (int)(int8_t)(uint8_t)(low | (high << 4)) - 32;
}

// ---- scalar decoders: one block -> float32 values ---------------------------
// `bytes` points at the block; blocks carry fp16 fields unaligned-safe via load_u16.

PYLIN_HD void decode_q4_0(const uint8_t* bytes, float* y) {
    const float d = fp16_to_fp32(load_u16(bytes));
    const uint8_t* qs = bytes + 2;
    for (int j = 0; j < QK / 2; ++j) {
        y[j] = d * (float)((int)(qs[j] & 0xF) - 8);
        y[j + QK / 2] = d * (float)((int)(qs[j] >> 4) - 8);
    }
}

PYLIN_HD void decode_q4_1(const uint8_t* bytes, float* y) {
    const float d = fp16_to_fp32(load_u16(bytes));
    const float m = fp16_to_fp32(load_u16(bytes + 2));
    const uint8_t* qs = bytes + 4;
    for (int j = 0; j < QK / 2; ++j) {
        y[j] = d * (float)(qs[j] & 0xF) + m;
        y[j + QK / 2] = d * (float)(qs[j] >> 4) + m;
    }
}

PYLIN_HD uint32_t load_u32(const uint8_t* p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

PYLIN_HD void decode_q5_0(const uint8_t* bytes, float* y) {
    const float d = fp16_to_fp32(load_u16(bytes));
    const uint32_t qh = load_u32(bytes + 2);
    const uint8_t* qs = bytes + 6;
    for (int j = 0; j < QK / 2; ++j) {
        const int lo = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
        const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(lo - 16);
        y[j + QK / 2] = d * (float)(hi - 16);
    }
}

PYLIN_HD void decode_q5_1(const uint8_t* bytes, float* y) {
    const float d = fp16_to_fp32(load_u16(bytes));
    const float m = fp16_to_fp32(load_u16(bytes + 2));
    const uint32_t qh = load_u32(bytes + 4);
    const uint8_t* qs = bytes + 8;
    for (int j = 0; j < QK / 2; ++j) {
        const int lo = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
        const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)lo + m;
        y[j + QK / 2] = d * (float)hi + m;
    }
}

PYLIN_HD void decode_q8_0(const uint8_t* bytes, float* y) {
    const float d = fp16_to_fp32(load_u16(bytes));
    const int8_t* qs = (const int8_t*)(bytes + 2);
    for (int j = 0; j < QK; ++j) y[j] = (float)qs[j] * d;
}

PYLIN_HD void decode_q2_K(const uint8_t* bytes, float* y) {
    const uint8_t* scales = bytes;
    const uint8_t* qs = bytes + QK_K / 16;
    const float d = fp16_to_fp32(load_u16(bytes + QK_K / 16 + QK_K / 4));
    const float dmin = fp16_to_fp32(load_u16(bytes + QK_K / 16 + QK_K / 4 + 2));
    for (int e = 0; e < QK_K; ++e) {
        const int half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
        const int q = (qs[half * 32 + l] >> shift) & 3;
        const uint8_t sc = scales[e / 16];
        const float dl = d * (float)(sc & 0xF);
        const float ml = dmin * (float)(sc >> 4);
        y[e] = dl * (float)q - ml;
    }
}

PYLIN_HD void decode_q3_K(const uint8_t* bytes, float* y) {
    const uint8_t* hmask = bytes;
    const uint8_t* qs = bytes + QK_K / 8;
    const uint8_t* scales = bytes + QK_K / 8 + QK_K / 4;
    const float d = fp16_to_fp32(load_u16(bytes + QK_K / 8 + QK_K / 4 + 12));
    for (int e = 0; e < QK_K; ++e) {
        const int half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
        const int low = (qs[half * 32 + l] >> shift) & 3;
        const int high_bit = (hmask[l] >> (e / 32)) & 1;
        const int q = low - (high_bit ? 0 : 4);  // the offset applies when the mask bit is 0
        const float dl = d * (float)q3_K_scale(scales, e / 16);
        y[e] = dl * (float)q;
    }
}

PYLIN_HD void decode_q4_K(const uint8_t* bytes, float* y) {
    const float d = fp16_to_fp32(load_u16(bytes));
    const float dmin = fp16_to_fp32(load_u16(bytes + 2));
    const uint8_t* scales = bytes + 4;
    const uint8_t* qs = bytes + 4 + K_SCALE_SIZE;
    for (int j = 0; j < QK_K / 32; ++j) {  // sub-block j: 64-byte chunk j/2, low or high nibbles
        uint8_t sc, m;
        get_scale_min_k4(j, scales, &sc, &m);
        const float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t* q = qs + (j / 2) * 32;
        const int shift = 4 * (j % 2);
        for (int l = 0; l < 32; ++l) y[j * 32 + l] = dl * (float)((q[l] >> shift) & 0xF) - ml;
    }
}

PYLIN_HD void decode_q5_K(const uint8_t* bytes, float* y) {
    const float d = fp16_to_fp32(load_u16(bytes));
    const float dmin = fp16_to_fp32(load_u16(bytes + 2));
    const uint8_t* scales = bytes + 4;
    const uint8_t* qh = bytes + 4 + K_SCALE_SIZE;
    const uint8_t* qs = qh + QK_K / 8;
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales, &sc, &m);
        const float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t* q = qs + (j / 2) * 32;
        const int shift = 4 * (j % 2);
        for (int l = 0; l < 32; ++l) {
            const int v = ((q[l] >> shift) & 0xF) | (((qh[l] >> j) & 1) << 4);
            y[j * 32 + l] = dl * (float)v - ml;
        }
    }
}

PYLIN_HD void decode_q6_K(const uint8_t* bytes, float* y) {
    const uint8_t* ql = bytes;
    const uint8_t* qh = bytes + QK_K / 2;
    const int8_t* scales = (const int8_t*)(bytes + QK_K / 2 + QK_K / 4);
    const float d = fp16_to_fp32(load_u16(bytes + QK_K / 2 + QK_K / 4 + QK_K / 16));
    for (int e = 0; e < QK_K; ++e) {
        const int half = e / 128, s = (e % 128) / 32, l = e % 32;
        const int low = (ql[half * 64 + (s % 2) * 32 + l] >> (4 * (s / 2))) & 0xF;
        const int high = (qh[half * 32 + l] >> (2 * s)) & 3;
        const int q = (low | (high << 4)) - 32;
        const float dl = d * (float)scales[e / 16];
        y[e] = dl * (float)q;
    }
}

// Decode one block of any format (for F32/F16/BF16 a "block" is one value).
PYLIN_HD void decode_block(QType t, const uint8_t* bytes, float* y) {
    switch (t) {
        case QType::F32: memcpy(y, bytes, 4); break;
        case QType::F16: y[0] = fp16_to_fp32(load_u16(bytes)); break;
        case QType::BF16: y[0] = bf16_to_fp32(load_u16(bytes)); break;
        case QType::Q4_0: decode_q4_0(bytes, y); break;
        case QType::Q4_1: decode_q4_1(bytes, y); break;
        case QType::Q5_0: decode_q5_0(bytes, y); break;
        case QType::Q5_1: decode_q5_1(bytes, y); break;
        case QType::Q8_0: decode_q8_0(bytes, y); break;
        case QType::Q2_K: decode_q2_K(bytes, y); break;
        case QType::Q3_K: decode_q3_K(bytes, y); break;
        case QType::Q4_K: decode_q4_K(bytes, y); break;
        case QType::Q5_K: decode_q5_K(bytes, y); break;
        case QType::Q6_K: decode_q6_K(bytes, y); break;
    }
}

}  // namespace pylin
