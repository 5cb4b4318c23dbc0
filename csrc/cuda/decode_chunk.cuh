// decode_chunk.cuh — decode 8 consecutive weights of a GGUF block into registers.
//
// The CUDA kernels never decode a whole block (256 floats of a K-quant would spill to local
// memory): each thread decodes an aligned chunk of 8 weights.  The i-quants, TQ1_0 / TQ2_0, MXFP4
// and NVFP4 decode in groups of 8 in their shared headers, so a chunk calls that group decoder itself
// (decode_group).  For the other formats every formula below is the one
// of the shared scalar decoders in csrc/common/block_formats.h (`decode_q4_K` etc.), operation
// for operation, restricted to elements [8c, 8c+8) of the block; a chunk never crosses a
// 16-weight sub-block, so each chunk needs one scale (and one min).  With --fmad=false (CMake)
// nothing is contracted into an FMA, so the values are bit-identical to the CPU decoders.
//
// Host+device (PYLIN_HD): pylin._cuda exposes a host loop over these functions
// (`decode_chunks_host`) so tests/test_cuda.py checks them bit for bit against gguf-py on
// machines without a GPU — CI included.
#pragma once

#include "common/block_formats.h"

namespace pylin {

constexpr int CHUNK = 8;  // weights decoded per call

// A format's block facts as compile-time constants (from the shared format_info table).
template <QType QT>
struct Format {
    static constexpr int block_size = format_info(QT).block_size;
    static constexpr int block_bytes = format_info(QT).block_bytes;
};

// The formats decoded in groups of 8 by the shared decoders (iquant_formats.h, ternary_fp4_formats.h):
// a chunk is exactly one group, decoded by the very function the CPU reference uses.
PYLIN_HD constexpr bool is_group_format(QType t) {
    switch (t) {
        case QType::IQ2_XXS: case QType::IQ2_XS: case QType::IQ2_S: case QType::IQ3_XXS: case QType::IQ3_S:
        case QType::IQ1_S: case QType::IQ1_M: case QType::IQ4_NL: case QType::IQ4_XS: case QType::TQ1_0:
        case QType::TQ2_0: case QType::MXFP4: case QType::NVFP4: return true;
        default: return false;
    }
}

template <QType QT>
PYLIN_HD void decode_group(const uint8_t* b, int g, float y[CHUNK]) {
    if constexpr (QT == QType::IQ2_XXS) decode_iq2_xxs_group(b, g, y);
    else if constexpr (QT == QType::IQ2_XS) decode_iq2_xs_group(b, g, y);
    else if constexpr (QT == QType::IQ2_S) decode_iq2_s_group(b, g, y);
    else if constexpr (QT == QType::IQ3_XXS) decode_iq3_xxs_group(b, g, y);
    else if constexpr (QT == QType::IQ3_S) decode_iq3_s_group(b, g, y);
    else if constexpr (QT == QType::IQ1_S) decode_iq1_s_group(b, g, y);
    else if constexpr (QT == QType::IQ1_M) decode_iq1_m_group(b, g, y);
    else if constexpr (QT == QType::IQ4_NL) decode_iq4_nl_group(b, g, y);
    else if constexpr (QT == QType::IQ4_XS) decode_iq4_xs_group(b, g, y);
    else if constexpr (QT == QType::TQ1_0) decode_tq1_0_group(b, g, y);
    else if constexpr (QT == QType::TQ2_0) decode_tq2_0_group(b, g, y);
    else if constexpr (QT == QType::MXFP4) decode_mxfp4_group(b, g, y);
    else decode_nvfp4_group(b, g, y);
}

// Decode weights [k, k+8) of a row whose bytes start at `row` (k a multiple of 8).  For the float
// formats only the first `valid` (1..8) values are read; the rest are set to 0 (a row of a float
// format need not be a multiple of 8 long, and the bytes past its end may be anything).
template <QType QT>
PYLIN_HD void decode_chunk(const uint8_t* row, int64_t k, int valid, float y[CHUNK]) {
    constexpr int BS = Format<QT>::block_size, BB = Format<QT>::block_bytes;
    if constexpr (BS == 1) {
        const uint8_t* p = row + k * BB;
#pragma unroll
        for (int i = 0; i < CHUNK; ++i) {
            float v = 0.0f;
            if (i < valid) {
                if constexpr (QT == QType::F32) {
                    memcpy(&v, p + 4 * i, 4);
                } else if constexpr (QT == QType::F16) {
                    v = fp16_to_fp32(load_u16(p + 2 * i));
                } else {
                    v = bf16_to_fp32(load_u16(p + 2 * i));
                }
            }
            y[i] = v;
        }
    } else {
        const uint8_t* b = row + (k / BS) * BB;  // the block
        const int e0 = (int)(k % BS);             // first element of the chunk inside the block
        if constexpr (is_group_format(QT)) {
            decode_group<QT>(b, e0 / CHUNK, y);
        } else if constexpr (QT == QType::Q4_0) {
            const float d = fp16_to_fp32(load_u16(b));
            const int j0 = e0 % 16, shift = 4 * (e0 / 16);
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) y[i] = d * (float)((int)((b[2 + j0 + i] >> shift) & 0xF) - 8);
        } else if constexpr (QT == QType::Q4_1) {
            const float d = fp16_to_fp32(load_u16(b)), m = fp16_to_fp32(load_u16(b + 2));
            const int j0 = e0 % 16, shift = 4 * (e0 / 16);
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) y[i] = d * (float)((b[4 + j0 + i] >> shift) & 0xF) + m;
        } else if constexpr (QT == QType::Q5_0) {
            const float d = fp16_to_fp32(load_u16(b));
            const uint32_t qh = load_u32(b + 2);
            const int j0 = e0 % 16, shift = 4 * (e0 / 16);
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) {
                // element e = e0+i: low nibble (e < 16) or high nibble of qs[e % 16]; 5th bit = qh bit e
                const int q = ((b[6 + j0 + i] >> shift) & 0xF) | (int)(((qh >> (e0 + i)) & 1) << 4);
                y[i] = d * (float)(q - 16);
            }
        } else if constexpr (QT == QType::Q5_1) {
            const float d = fp16_to_fp32(load_u16(b)), m = fp16_to_fp32(load_u16(b + 2));
            const uint32_t qh = load_u32(b + 4);
            const int j0 = e0 % 16, shift = 4 * (e0 / 16);
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) {
                const int q = ((b[8 + j0 + i] >> shift) & 0xF) | (int)(((qh >> (e0 + i)) & 1) << 4);
                y[i] = d * (float)q + m;
            }
        } else if constexpr (QT == QType::Q8_0) {
            const float d = fp16_to_fp32(load_u16(b));
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) y[i] = (float)(int8_t)b[2 + e0 + i] * d;
        } else if constexpr (QT == QType::Q2_K) {
            const uint8_t* qs = b + QK_K / 16;
            const float d = fp16_to_fp32(load_u16(b + QK_K / 16 + QK_K / 4));
            const float dmin = fp16_to_fp32(load_u16(b + QK_K / 16 + QK_K / 4 + 2));
            const int half = e0 / 128, shift = 2 * ((e0 % 128) / 32), l0 = e0 % 32;
            const uint8_t sc = b[e0 / 16];
            const float dl = d * (float)(sc & 0xF);
            const float ml = dmin * (float)(sc >> 4);
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) y[i] = dl * (float)((qs[half * 32 + l0 + i] >> shift) & 3) - ml;
        } else if constexpr (QT == QType::Q3_K) {
            const uint8_t* hmask = b;
            const uint8_t* qs = b + QK_K / 8;
            const uint8_t* scales = b + QK_K / 8 + QK_K / 4;
            const float d = fp16_to_fp32(load_u16(b + QK_K / 8 + QK_K / 4 + 12));
            const int half = e0 / 128, shift = 2 * ((e0 % 128) / 32), l0 = e0 % 32, hbit = e0 / 32;
            const float dl = d * (float)q3_K_scale(scales, e0 / 16);
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) {
                const int low = (qs[half * 32 + l0 + i] >> shift) & 3;
                const int high_bit = (hmask[l0 + i] >> hbit) & 1;
                y[i] = dl * (float)(low - (high_bit ? 0 : 4));
            }
        } else if constexpr (QT == QType::Q4_K || QT == QType::Q5_K) {
            const float d = fp16_to_fp32(load_u16(b));
            const float dmin = fp16_to_fp32(load_u16(b + 2));
            const int j = e0 / 32, l0 = e0 % 32, shift = 4 * (j % 2);
            uint8_t sc, m;
            get_scale_min_k4(j, b + 4, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            if constexpr (QT == QType::Q4_K) {
                const uint8_t* q = b + 4 + K_SCALE_SIZE + (j / 2) * 32;
#pragma unroll
                for (int i = 0; i < CHUNK; ++i) y[i] = dl * (float)((q[l0 + i] >> shift) & 0xF) - ml;
            } else {
                const uint8_t* qh = b + 4 + K_SCALE_SIZE;
                const uint8_t* q = qh + QK_K / 8 + (j / 2) * 32;
#pragma unroll
                for (int i = 0; i < CHUNK; ++i) {
                    const int v = ((q[l0 + i] >> shift) & 0xF) | (((qh[l0 + i] >> j) & 1) << 4);
                    y[i] = dl * (float)v - ml;
                }
            }
        } else {  // Q6_K
            static_assert(QT == QType::Q6_K, "unhandled format");
            const uint8_t* ql = b;
            const uint8_t* qh = b + QK_K / 2;
            const int8_t* scales = (const int8_t*)(b + QK_K / 2 + QK_K / 4);
            const float d = fp16_to_fp32(load_u16(b + QK_K / 2 + QK_K / 4 + QK_K / 16));
            const int half = e0 / 128, s = (e0 % 128) / 32, l0 = e0 % 32;
            const float dl = d * (float)scales[e0 / 16];
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) {
                const int low = (ql[half * 64 + (s % 2) * 32 + l0 + i] >> (4 * (s / 2))) & 0xF;
                const int high = (qh[half * 32 + l0 + i] >> (2 * s)) & 3;
                y[i] = dl * (float)((low | (high << 4)) - 32);
            }
        }
    }
}

// Expands `BODY` once per format with `QT_` bound to the QType (host-side dispatch of templates).
#define PYLIN_DISPATCH_QTYPE(qtype, BODY)                                           \
    switch ((QType)(qtype)) {                                                       \
        case QType::F32: { constexpr QType QT_ = QType::F32; BODY; } break;         \
        case QType::F16: { constexpr QType QT_ = QType::F16; BODY; } break;         \
        case QType::BF16: { constexpr QType QT_ = QType::BF16; BODY; } break;       \
        case QType::Q4_0: { constexpr QType QT_ = QType::Q4_0; BODY; } break;       \
        case QType::Q4_1: { constexpr QType QT_ = QType::Q4_1; BODY; } break;       \
        case QType::Q5_0: { constexpr QType QT_ = QType::Q5_0; BODY; } break;       \
        case QType::Q5_1: { constexpr QType QT_ = QType::Q5_1; BODY; } break;       \
        case QType::Q8_0: { constexpr QType QT_ = QType::Q8_0; BODY; } break;       \
        case QType::Q2_K: { constexpr QType QT_ = QType::Q2_K; BODY; } break;       \
        case QType::Q3_K: { constexpr QType QT_ = QType::Q3_K; BODY; } break;       \
        case QType::Q4_K: { constexpr QType QT_ = QType::Q4_K; BODY; } break;       \
        case QType::Q5_K: { constexpr QType QT_ = QType::Q5_K; BODY; } break;       \
        case QType::Q6_K: { constexpr QType QT_ = QType::Q6_K; BODY; } break;       \
        case QType::IQ2_XXS: { constexpr QType QT_ = QType::IQ2_XXS; BODY; } break; \
        case QType::IQ2_XS: { constexpr QType QT_ = QType::IQ2_XS; BODY; } break;   \
        case QType::IQ2_S: { constexpr QType QT_ = QType::IQ2_S; BODY; } break;     \
        case QType::IQ3_XXS: { constexpr QType QT_ = QType::IQ3_XXS; BODY; } break; \
        case QType::IQ3_S: { constexpr QType QT_ = QType::IQ3_S; BODY; } break;     \
        case QType::IQ1_S: { constexpr QType QT_ = QType::IQ1_S; BODY; } break;     \
        case QType::IQ1_M: { constexpr QType QT_ = QType::IQ1_M; BODY; } break;     \
        case QType::IQ4_NL: { constexpr QType QT_ = QType::IQ4_NL; BODY; } break;   \
        case QType::IQ4_XS: { constexpr QType QT_ = QType::IQ4_XS; BODY; } break;   \
        case QType::TQ1_0: { constexpr QType QT_ = QType::TQ1_0; BODY; } break;     \
        case QType::TQ2_0: { constexpr QType QT_ = QType::TQ2_0; BODY; } break;     \
        case QType::MXFP4: { constexpr QType QT_ = QType::MXFP4; BODY; } break;     \
        case QType::NVFP4: { constexpr QType QT_ = QType::NVFP4; BODY; } break;     \
    }

}  // namespace pylin
