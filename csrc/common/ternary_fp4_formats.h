// ternary_fp4_formats.h — TQ1_0, TQ2_0 (ternary), MXFP4 and NVFP4: block structs and scalar decoders.
//
// Layouts are ggml's (ggml-common.h block_tq1_0, block_tq2_0, block_mxfp4, block_nvfp4); the
// arithmetic is gguf-py's gguf.quants (TQ1_0, TQ2_0, MXFP4, NVFP4 dequantize_blocks, the same as
// ggml-quants.c dequantize_row_tq1_0 / _tq2_0 / _mxfp4 / _nvfp4): one product d * q per weight, q a
// small integer, so decoding is bit-exact.  As in iquant_formats.h each format decodes in groups of
// 8 weights (`decode_<format>_group`), shared by the CPU reference and the CUDA chunk decoder.
// Tests: tests/test_dequantize.py, tests/test_cuda.py.
#pragma once

#include "iquant_formats.h"  // the kvalues tables and PYLIN_TABLE
#include "scalars.h"

namespace pylin {

struct block_tq1_0 {  // 1.6875 bits/weight: 5 ternary digits per byte (qs), 4 per byte (qh), d last
    uint8_t qs[(QK_K - 4 * QK_K / 64) / 5];
    uint8_t qh[QK_K / 64];
    uint16_t d;
};
static_assert(sizeof(block_tq1_0) == 54, "block_tq1_0 size");

struct block_tq2_0 {  // 2.0625 bits/weight: 2 bits per weight, q - 1 in {-1, 0, 1}, d last
    uint8_t qs[QK_K / 4];
    uint16_t d;
};
static_assert(sizeof(block_tq2_0) == 66, "block_tq2_0 size");

struct block_mxfp4 {  // 4.25 bits/weight: an E8M0 scale and 32 E2M1 codes (OCP MX v1.0)
    uint8_t e;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_mxfp4) == 17, "block_mxfp4 size");

constexpr int QK_NVFP4 = 64;      // weights per NVFP4 block
constexpr int QK_NVFP4_SUB = 16;  // weights per UE4M3 scale

// 4.5 bits/weight: 4 UE4M3 scales, one per 16 weights, then 8 bytes of E2M1 codes per 16 (the
// same doubled kvalues_mxfp4 table).  NVFP4's per-tensor float scale is not in the block: ggml keeps
// it out of the format (a separate multiply), and so does a GGUF file.
struct block_nvfp4 {
    uint8_t d[QK_NVFP4 / QK_NVFP4_SUB];
    uint8_t qs[QK_NVFP4 / 2];
};
static_assert(sizeof(block_nvfp4) == 36, "block_nvfp4 size");

// Ternary digit n of byte q (TQ1_0 stores a byte ~ 256 * value / 243): ((q * 3^n mod 256) * 3) >> 8.
PYLIN_HD int tq1_digit(uint8_t byte, int n) {
    const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const uint8_t q = (uint8_t)(byte * pow3[n]);
    return (int)(((uint16_t)q * 3) >> 8);
}

// Weight e of a TQ1_0 block: digits 0..4 of qs[0..32) (160 weights, digit-major), digits 0..4 of
// qs[32..48) (80), then digits 0..3 of qh[0..4) (16).
PYLIN_HD void decode_tq1_0_group(const uint8_t* b, int g, float* y) {
    const float d = fp16_to_fp32(load_u16(b + 52));
    for (int j = 0; j < 8; ++j) {
        const int e = 8 * g + j;
        int digit;
        if (e < 160) {
            digit = tq1_digit(b[e % 32], e / 32);
        } else if (e < 240) {
            digit = tq1_digit(b[32 + (e - 160) % 16], (e - 160) / 16);
        } else {
            digit = tq1_digit(b[48 + (e - 240) % 4], (e - 240) / 4);
        }
        y[j] = d * (float)(digit - 1);
    }
}

// Weight e of a TQ2_0 block: bits 2l of qs[32 * (e / 128) + e % 32], l = (e % 128) / 32.
PYLIN_HD void decode_tq2_0_group(const uint8_t* b, int g, float* y) {
    const float d = fp16_to_fp32(load_u16(b + 64));
    const int e0 = 8 * g, shift = 2 * ((e0 % 128) / 32);
    const uint8_t* qs = b + 32 * (e0 / 128) + e0 % 32;
    for (int j = 0; j < 8; ++j) y[j] = d * (float)((int)((qs[j] >> shift) & 3) - 1);
}

// Weight e of an MXFP4 block: kvalues_mxfp4[low nibble of qs[e]] for e < 16, else of the high nibble.
PYLIN_HD void decode_mxfp4_group(const uint8_t* b, int g, float* y) {
    const float d = e8m0_to_fp32_half(b[0]);
    const uint8_t* qs = b + 1 + 8 * (g % 2);
    const int shift = 4 * (g / 2);
    for (int j = 0; j < 8; ++j) y[j] = d * (float)PYLIN_TABLE(kvalues_mxfp4, (qs[j] >> shift) & 0xf);
}

// Weight e of an NVFP4 block, sub-block s = e / 16: kvalues_mxfp4[low nibble of qs[8s + e % 8]] for
// e % 16 < 8, else of the high nibble, times the sub-block's scale ue4m3_to_fp32_half(d[s]).
PYLIN_HD void decode_nvfp4_group(const uint8_t* b, int g, float* y) {
    const int s = g / 2;
    const float d = ue4m3_to_fp32_half(b[s]);
    const uint8_t* qs = b + QK_NVFP4 / QK_NVFP4_SUB + (QK_NVFP4_SUB / 2) * s;
    const int shift = 4 * (g % 2);
    for (int j = 0; j < 8; ++j) y[j] = d * (float)PYLIN_TABLE(kvalues_mxfp4, (qs[j] >> shift) & 0xf);
}

PYLIN_BLOCK_FROM_GROUPS(tq1_0, QK_K)
PYLIN_BLOCK_FROM_GROUPS(tq2_0, QK_K)
PYLIN_BLOCK_FROM_GROUPS(mxfp4, QK)
PYLIN_BLOCK_FROM_GROUPS(nvfp4, QK_NVFP4)

}  // namespace pylin
