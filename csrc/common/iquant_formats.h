// iquant_formats.h — the i-quants (IQ1_S … IQ4_XS): block structs and scalar decoders, host+device.
//
// Layouts are ggml's (ggml-common.h block_iq*); the arithmetic is gguf-py's gguf.quants
// dequantize_blocks (which matches ggml-quants.c dequantize_row_iq*) operation for operation, in
// float32 with no contraction, e.g. IQ2_XXS computes ((d*(0.5 + ls))*0.25)*grid*sign with three
// roundings, so decoding is bit-exact against both.  Every format here is decoded in groups of 8
// consecutive weights that share one scale and one grid entry (or two 4-wide ones):
// `decode_<format>_group(block, g, y)` writes weights [8g, 8g+8) of a block, and
// `decode_<format>(block, y)` runs every group.  The CPU reference decodes whole blocks with it, the
// CUDA kernels decode their 8-weight chunks with the very same group function (decode_chunk.cuh).
//
// The grids, sign table and non-linear values come from iquant_tables.h (generated from gguf-py
// by make_iquant_tables.py, checked equal to llama.cpp's).  In CUDA builds each table exists twice
// from the same values, in host memory and in device global memory; PYLIN_TABLE picks the one of
// the side being compiled.
// Tests: tests/test_dequantize.py (bit-exact vs gguf.quants), tests/test_cuda.py (chunk decoders).
#pragma once

#include "iquant_tables.h"
#include "scalars.h"

namespace pylin {
namespace tables {

#if defined(__CUDACC__)
#define PYLIN_DEFINE_TABLE(type, name, VALUES)     \
    static const type name##_host[] = {VALUES};    \
    static __device__ const type name##_device[] = {VALUES};
#else
#define PYLIN_DEFINE_TABLE(type, name, VALUES) static const type name##_host[] = {VALUES};
#endif

PYLIN_DEFINE_TABLE(uint64_t, iq2xxs_grid, PYLIN_TABLE_IQ2XXS_GRID)
PYLIN_DEFINE_TABLE(uint64_t, iq2xs_grid, PYLIN_TABLE_IQ2XS_GRID)
PYLIN_DEFINE_TABLE(uint64_t, iq2s_grid, PYLIN_TABLE_IQ2S_GRID)
PYLIN_DEFINE_TABLE(uint32_t, iq3xxs_grid, PYLIN_TABLE_IQ3XXS_GRID)
PYLIN_DEFINE_TABLE(uint32_t, iq3s_grid, PYLIN_TABLE_IQ3S_GRID)
PYLIN_DEFINE_TABLE(uint64_t, iq1s_grid, PYLIN_TABLE_IQ1S_GRID)
PYLIN_DEFINE_TABLE(uint8_t, ksigns_iq2xs, PYLIN_TABLE_KSIGNS_IQ2XS)
PYLIN_DEFINE_TABLE(int8_t, kvalues_iq4nl, PYLIN_TABLE_KVALUES_IQ4NL)
PYLIN_DEFINE_TABLE(int8_t, kvalues_mxfp4, PYLIN_TABLE_KVALUES_MXFP4)

}  // namespace tables

#if defined(__CUDA_ARCH__)
#define PYLIN_TABLE(name, i) (::pylin::tables::name##_device[i])
#else
#define PYLIN_TABLE(name, i) (::pylin::tables::name##_host[i])
#endif

constexpr float IQ1S_DELTA = 0.125f;  // ggml-common.h IQ1S_DELTA (= IQ1M_DELTA)

// ---- block structs (ggml-common.h) --------------------------------------------------------------

struct block_iq2_xxs {  // 2.0625 bits/weight: 8 x 32: 4 grid bytes | 4 x 7-bit ksigns index, 4-bit scale
    uint16_t d;
    uint16_t qs[QK_K / 8];
};
static_assert(sizeof(block_iq2_xxs) == 66, "block_iq2_xxs size");

struct block_iq2_xs {  // 2.3125 bits/weight: per 8 weights 9-bit grid index | 7-bit ksigns index
    uint16_t d;
    uint16_t qs[QK_K / 8];
    uint8_t scales[QK_K / 32];  // a 4-bit scale per 16 weights
};
static_assert(sizeof(block_iq2_xs) == 74, "block_iq2_xs size");

struct block_iq2_s {  // 2.5625 bits/weight: 10-bit grid index (qs | 2 bits of qh), plain sign bytes
    uint16_t d;
    uint8_t qs[QK_K / 4];  // 32 grid index bytes, then 32 sign bytes
    uint8_t qh[QK_K / 32];
    uint8_t scales[QK_K / 32];
};
static_assert(sizeof(block_iq2_s) == 82, "block_iq2_s size");

struct block_iq3_xxs {  // 3.0625 bits/weight: 64 grid bytes (4 values each), 8 x (4 ksigns | scale)
    uint16_t d;
    uint8_t qs[3 * QK_K / 8];
};
static_assert(sizeof(block_iq3_xxs) == 98, "block_iq3_xxs size");

struct block_iq3_s {  // 3.4375 bits/weight: 9-bit grid index (qs | qh bit), sign bytes, 4-bit scales
    uint16_t d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t signs[QK_K / 8];
    uint8_t scales[QK_K / 64];
};
static_assert(sizeof(block_iq3_s) == 110, "block_iq3_s size");

struct block_iq1_s {  // 1.5625 bits/weight: 11-bit index into a ternary grid, 3-bit scale, delta sign
    uint16_t d;
    uint8_t qs[QK_K / 8];
    uint16_t qh[QK_K / 32];
};
static_assert(sizeof(block_iq1_s) == 50, "block_iq1_s size");

struct block_iq1_m {  // 1.75 bits/weight: as IQ1_S, a delta per 8 and scales per 16; d split over scales
    uint8_t qs[QK_K / 8];
    uint8_t qh[QK_K / 16];
    uint8_t scales[QK_K / 32];  // 4 x u16: 3-bit scales, and d's 4 nibbles in the top bits
};
static_assert(sizeof(block_iq1_m) == 56, "block_iq1_m size");

struct block_iq4_nl {  // 4.5 bits/weight: 32 weights, d * kvalues_iq4nl[nibble]
    uint16_t d;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl size");

struct block_iq4_xs {  // 4.25 bits/weight: IQ4_NL nibbles, 6-bit scale (ls - 32) per 32 weights
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs size");

// ---- groups of 8 weights --------------------------------------------------------------------------
// `b` is the block (unaligned), g the group (0 .. block_size/8 - 1), y receives 8 floats.

// v * (bit ? -1 : 1), the reference's multiplication by a sign, as a flip of the sign bit: the same
// bits for every float (zeros included), without a branch per weight on random sign bits (the
// branchy form ran at ~30 cycles per weight in the portable build).
PYLIN_HD float negate_if(float v, uint32_t bit) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u ^= bit << 31;
    memcpy(&v, &u, sizeof v);
    return v;
}

// y[j] = s * grid[j] * (bit j of signs ? -1 : 1), the grid entry's bytes unsigned.
PYLIN_HD void signed_grid_8(float s, uint64_t grid, uint32_t signs, float* y) {
    for (int j = 0; j < 8; ++j) y[j] = negate_if(s * (float)(uint8_t)(grid >> (8 * j)), (signs >> j) & 1);
}

PYLIN_HD void decode_iq2_xxs_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4, l = g % 4;
    const uint8_t* q = b + 2 + 8 * ib;  // aux32[0] = 4 grid indices, aux32[1] = signs and scale
    const uint32_t aux = load_u32(q + 4);
    const float db = fp16_to_fp32(load_u16(b)) * (0.5f + (float)(aux >> 28)) * 0.25f;
    signed_grid_8(db, PYLIN_TABLE(iq2xxs_grid, q[l]), PYLIN_TABLE(ksigns_iq2xs, (aux >> (7 * l)) & 127), y);
}

PYLIN_HD void decode_iq2_xs_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4, l = g % 4;
    const uint16_t q = load_u16(b + 2 + 2 * g);
    const int scale = (b[66 + ib] >> (4 * (l / 2))) & 0xf;
    const float db = fp16_to_fp32(load_u16(b)) * (0.5f + (float)scale) * 0.25f;
    signed_grid_8(db, PYLIN_TABLE(iq2xs_grid, q & 511), PYLIN_TABLE(ksigns_iq2xs, q >> 9), y);
}

PYLIN_HD void decode_iq2_s_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4, l = g % 4;
    const uint8_t* qs = b + 2;
    const uint8_t qh = b[66 + ib];
    const int scale = (b[74 + ib] >> (4 * (l / 2))) & 0xf;
    const float db = fp16_to_fp32(load_u16(b)) * (0.5f + (float)scale) * 0.25f;
    const int index = qs[g] | ((qh << (8 - 2 * l)) & 0x300);
    signed_grid_8(db, PYLIN_TABLE(iq2s_grid, index), qs[32 + g], y);
}

// Two 4-wide grid entries (IQ3): y[j] = s * grid[j] * sign(j), j < 4 from g0, j >= 4 from g1.
PYLIN_HD void signed_grid_4x2(float s, uint32_t g0, uint32_t g1, uint32_t signs, float* y) {
    for (int j = 0; j < 4; ++j) {
        y[j] = negate_if(s * (float)(uint8_t)(g0 >> (8 * j)), (signs >> j) & 1);
        y[j + 4] = negate_if(s * (float)(uint8_t)(g1 >> (8 * j)), (signs >> (j + 4)) & 1);
    }
}

PYLIN_HD void decode_iq3_xxs_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4, l = g % 4;
    const uint8_t* qs = b + 2 + 8 * ib + 2 * l;
    const uint32_t aux = load_u32(b + 2 + 64 + 4 * ib);
    const float db = fp16_to_fp32(load_u16(b)) * (0.5f + (float)(aux >> 28)) * 0.5f;
    signed_grid_4x2(db, PYLIN_TABLE(iq3xxs_grid, qs[0]), PYLIN_TABLE(iq3xxs_grid, qs[1]),
                    PYLIN_TABLE(ksigns_iq2xs, (aux >> (7 * l)) & 127), y);
}

PYLIN_HD void decode_iq3_s_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4, l = g % 4;
    const uint8_t* qs = b + 2 + 8 * ib + 2 * l;
    const int qh = b[66 + ib];
    const int scale = (b[106 + ib / 2] >> (4 * (ib % 2))) & 0xf;
    const float db = fp16_to_fp32(load_u16(b)) * (float)(1 + 2 * scale);
    const int i0 = qs[0] | ((qh << (8 - 2 * l)) & 256), i1 = qs[1] | ((qh << (7 - 2 * l)) & 256);
    signed_grid_4x2(db, PYLIN_TABLE(iq3s_grid, i0), PYLIN_TABLE(iq3s_grid, i1), b[74 + g], y);
}

// y[j] = s * (grid[j] + delta), the grid entry's bytes signed (-1, 0, 1).
PYLIN_HD void shifted_grid_8(float s, uint64_t grid, float delta, float* y) {
    for (int j = 0; j < 8; ++j) y[j] = s * ((float)(int8_t)(uint8_t)(grid >> (8 * j)) + delta);
}

PYLIN_HD void decode_iq1_s_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4, l = g % 4;
    const uint16_t qh = load_u16(b + 34 + 2 * ib);
    const float dl = fp16_to_fp32(load_u16(b)) * (float)(2 * ((qh >> 12) & 7) + 1);
    const float delta = qh & 0x8000 ? -IQ1S_DELTA : IQ1S_DELTA;
    shifted_grid_8(dl, PYLIN_TABLE(iq1s_grid, b[2 + g] | (((qh >> (3 * l)) & 7) << 8)), delta, y);
}

// IQ1_M's super-block scale: an fp16 whose four nibbles are the top nibbles of the 4 scale words.
PYLIN_HD float iq1_m_d(const uint8_t* b) {
    const uint8_t* sc = b + 48;
    const uint16_t bits = (uint16_t)((load_u16(sc) >> 12) | ((load_u16(sc + 2) >> 8) & 0x00f0) |
                                     ((load_u16(sc + 4) >> 4) & 0x0f00) | (load_u16(sc + 6) & 0xf000));
    return fp16_to_fp32(bits);
}

PYLIN_HD void decode_iq1_m_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4, l = g % 4;
    const uint16_t sc = load_u16(b + 48 + 2 * (ib / 2));
    const int scale = (sc >> (6 * (ib % 2) + 3 * (l / 2))) & 0x7;
    const float dl = iq1_m_d(b) * (float)(2 * scale + 1);
    const uint8_t qh = b[32 + 2 * ib + l / 2];
    const int high = l % 2 ? (qh << 4) & 0x700 : (qh << 8) & 0x700;
    const float delta = qh & (l % 2 ? 0x80 : 0x08) ? -IQ1S_DELTA : IQ1S_DELTA;
    shifted_grid_8(dl, PYLIN_TABLE(iq1s_grid, b[g] | high), delta, y);
}

// Weights [8g, 8g+8) of 32 IQ4_NL-coded nibbles at qs: low nibbles of qs[0..16), then high ones.
PYLIN_HD void nonlinear_nibbles_8(float s, const uint8_t* qs, int g, float* y) {
    const uint8_t* q = qs + 8 * (g % 2);
    const int shift = 4 * (g / 2);
    for (int j = 0; j < 8; ++j) y[j] = s * (float)PYLIN_TABLE(kvalues_iq4nl, (q[j] >> shift) & 0xf);
}

PYLIN_HD void decode_iq4_nl_group(const uint8_t* b, int g, float* y) {
    nonlinear_nibbles_8(fp16_to_fp32(load_u16(b)), b + 2, g, y);
}

PYLIN_HD void decode_iq4_xs_group(const uint8_t* b, int g, float* y) {
    const int ib = g / 4;
    const int low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf, high = (load_u16(b + 2) >> (2 * ib)) & 3;
    const float dl = fp16_to_fp32(load_u16(b)) * (float)((low | (high << 4)) - 32);
    nonlinear_nibbles_8(dl, b + 8 + 16 * ib, g % 4, y);
}

// ---- whole blocks ---------------------------------------------------------------------------------

#define PYLIN_BLOCK_FROM_GROUPS(format, block_size)                                    \
    PYLIN_HD void decode_##format(const uint8_t* b, float* y) {                         \
        for (int g = 0; g < (block_size) / 8; ++g) decode_##format##_group(b, g, y + 8 * g); \
    }

PYLIN_BLOCK_FROM_GROUPS(iq2_xxs, QK_K)
PYLIN_BLOCK_FROM_GROUPS(iq2_xs, QK_K)
PYLIN_BLOCK_FROM_GROUPS(iq2_s, QK_K)
PYLIN_BLOCK_FROM_GROUPS(iq3_xxs, QK_K)
PYLIN_BLOCK_FROM_GROUPS(iq3_s, QK_K)
PYLIN_BLOCK_FROM_GROUPS(iq1_s, QK_K)
PYLIN_BLOCK_FROM_GROUPS(iq1_m, QK_K)
PYLIN_BLOCK_FROM_GROUPS(iq4_nl, QK)
PYLIN_BLOCK_FROM_GROUPS(iq4_xs, QK_K)

}  // namespace pylin
