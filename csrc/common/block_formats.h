// block_formats.h — every GGUF weight format pylin reads: the type ids, the per-format facts and the
// one dispatch over the scalar decoders.  The 32-blocks and K-quants are defined here; the i-quants
// in iquant_formats.h, TQ1_0 / TQ2_0 / MXFP4 / NVFP4 in ternary_fp4_formats.h, the shared conversions in
// scalars.h.
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

#include "iquant_formats.h"
#include "scalars.h"
#include "ternary_fp4_formats.h"

namespace pylin {

// GGUF's numeric type ids (ggml_type), spelled as GGUF spells them.
enum class QType : int {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
    IQ4_XS = 23, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
    NVFP4 = 40,
};

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
        case QType::IQ2_XXS: return {QK_K, (int)sizeof(block_iq2_xxs)};
        case QType::IQ2_XS: return {QK_K, (int)sizeof(block_iq2_xs)};
        case QType::IQ2_S: return {QK_K, (int)sizeof(block_iq2_s)};
        case QType::IQ3_XXS: return {QK_K, (int)sizeof(block_iq3_xxs)};
        case QType::IQ3_S: return {QK_K, (int)sizeof(block_iq3_s)};
        case QType::IQ1_S: return {QK_K, (int)sizeof(block_iq1_s)};
        case QType::IQ1_M: return {QK_K, (int)sizeof(block_iq1_m)};
        case QType::IQ4_NL: return {QK, (int)sizeof(block_iq4_nl)};
        case QType::IQ4_XS: return {QK_K, (int)sizeof(block_iq4_xs)};
        case QType::TQ1_0: return {QK_K, (int)sizeof(block_tq1_0)};
        case QType::TQ2_0: return {QK_K, (int)sizeof(block_tq2_0)};
        case QType::MXFP4: return {QK, (int)sizeof(block_mxfp4)};
        case QType::NVFP4: return {QK_NVFP4, (int)sizeof(block_nvfp4)};
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
        case QType::IQ2_XXS: decode_iq2_xxs(bytes, y); break;
        case QType::IQ2_XS: decode_iq2_xs(bytes, y); break;
        case QType::IQ2_S: decode_iq2_s(bytes, y); break;
        case QType::IQ3_XXS: decode_iq3_xxs(bytes, y); break;
        case QType::IQ3_S: decode_iq3_s(bytes, y); break;
        case QType::IQ1_S: decode_iq1_s(bytes, y); break;
        case QType::IQ1_M: decode_iq1_m(bytes, y); break;
        case QType::IQ4_NL: decode_iq4_nl(bytes, y); break;
        case QType::IQ4_XS: decode_iq4_xs(bytes, y); break;
        case QType::TQ1_0: decode_tq1_0(bytes, y); break;
        case QType::TQ2_0: decode_tq2_0(bytes, y); break;
        case QType::MXFP4: decode_mxfp4(bytes, y); break;
        case QType::NVFP4: decode_nvfp4(bytes, y); break;
    }
}

}  // namespace pylin
