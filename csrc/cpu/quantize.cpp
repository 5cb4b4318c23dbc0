// quantize.cpp — round-to-nearest quantization of float32 rows into every GGUF format.
//
// 32-blocks: gguf-py's quantize_blocks (gguf/quants.py) step by step in float32 —
// the same divisions, `trunc(x*id + 8.5)` truncations, np_roundf (round half away
// from zero) for Q8_0 and an RNE float->half for the scales — so the bytes are
// identical to gguf.quants.quantize.  Compiled with -ffp-contract=off: a fused
// x*id + 8.5 would round once and change bytes.
// K-quants: ggml-quants.c's layouts (block_q2_K ... block_q6_K) with a simpler
// search than ggml's: per sub-block, a handful of candidate scales, each refit by
// least squares (as ggml's make_qkx2_quants / make_qx_quants do), then the
// sub-block scales quantized to the super-block's 4/6/8-bit grid and the
// weights re-rounded against the final scales.
// Tests: tests/test_quantize.py (bit-exact vs gguf-py; ggml test-quantize-fns budgets).
#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "parallel.h"

namespace pylin {

uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)  // inf stays inf; NaN stays a (quiet) NaN
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                                     // below 2^-14: a half subnormal or zero
        if (ax < 0x33000000u) return (uint16_t)sign;            // < 2^-25 (the tie at 2^-25 goes to even 0)
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e;  // m * 2^(e-150) in units of 2^-24
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) ++q;
        return (uint16_t)(sign | q);
    }
    uint32_t h = (ax - 0x38000000u) >> 13;  // rebias 127 -> 15
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
    return (uint16_t)(sign | h);
}

namespace {

void store_u16(uint8_t* p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

float inverse_or_zero(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

// np_roundf: floor(a) + floor(2*(a - floor(a))), with the sign put back; float32 throughout.
float np_roundf(float n) {
    const float a = std::fabs(n), floored = std::floor(a);
    const float b = floored + std::floor(2.0f * (a - floored));
    return n > 0 ? b : (n < 0 ? -b : 0.0f);
}

int nearest_int(float v) { return (int)std::lrintf(v); }

// The element of largest magnitude, signed; the first one on ties (numpy argmax).
float signed_absmax(const float* x, int n) {
    int imax = 0;
    float amax = std::fabs(x[0]);
    for (int i = 1; i < n; ++i)
        if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), imax = i;
    return x[imax];
}

// ---- 32-blocks: gguf-py's quantize_blocks -------------------------------------

// Q4_0 / Q5_0: d = max / -2^(bits-1), q = trunc(x*id + 2^(bits-1) + 0.5) clipped.
void quantize_symmetric_block(const float* x, int bits, uint8_t* q) {
    const float half_range = (float)(1 << (bits - 1));
    const float d = signed_absmax(x, QK) / -half_range;
    const float id = inverse_or_zero(d);
    const int qmax = (1 << bits) - 1;
    for (int j = 0; j < QK; ++j) {
        const float v = std::trunc(x[j] * id + (half_range + 0.5f));
        q[j] = (uint8_t)std::min(std::max((int)v, 0), qmax);
    }
}

// Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), q = trunc((x - min)*id + 0.5) clipped.
void quantize_affine_block(const float* x, int bits, uint8_t* q, float* d_out, float* min_out) {
    float mx = x[0], mn = x[0];
    for (int j = 1; j < QK; ++j) mx = std::max(mx, x[j]), mn = std::min(mn, x[j]);
    const int qmax = (1 << bits) - 1;
    const float d = (mx - mn) / (float)qmax;
    const float id = inverse_or_zero(d);
    for (int j = 0; j < QK; ++j) {
        const float v = std::trunc((x[j] - mn) * id + 0.5f);
        q[j] = (uint8_t)std::min(std::max((int)v, 0), qmax);
    }
    *d_out = d;
    *min_out = mn;
}

void pack_nibbles(const uint8_t* q, uint8_t* qs) {
    for (int j = 0; j < QK / 2; ++j) qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + QK / 2] & 0xF) << 4));
}

void pack_fifth_bits(const uint8_t* q, uint8_t* qh) {
    uint32_t bits = 0;
    for (int j = 0; j < QK; ++j) bits |= (uint32_t)((q[j] >> 4) & 1) << j;
    for (int i = 0; i < 4; ++i) qh[i] = (uint8_t)(bits >> (8 * i));
}

void quantize_block_32(QType t, const float* x, uint8_t* out) {
    uint8_t q[QK];
    switch (t) {
        case QType::Q4_0: {
            const float d = signed_absmax(x, QK) / -8.0f;
            quantize_symmetric_block(x, 4, q);
            store_u16(out, fp32_to_fp16(d));
            pack_nibbles(q, out + 2);
            break;
        }
        case QType::Q5_0: {
            const float d = signed_absmax(x, QK) / -16.0f;
            quantize_symmetric_block(x, 5, q);
            store_u16(out, fp32_to_fp16(d));
            pack_fifth_bits(q, out + 2);
            pack_nibbles(q, out + 6);
            break;
        }
        case QType::Q4_1:
        case QType::Q5_1: {
            const int bits = t == QType::Q4_1 ? 4 : 5;
            float d, mn;
            quantize_affine_block(x, bits, q, &d, &mn);
            store_u16(out, fp32_to_fp16(d));
            store_u16(out + 2, fp32_to_fp16(mn));
            if (bits == 5) pack_fifth_bits(q, out + 4);
            pack_nibbles(q, out + (bits == 5 ? 8 : 4));
            break;
        }
        case QType::Q8_0: {
            float amax = 0.0f;
            for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float d = amax / 127.0f;
            const float id = inverse_or_zero(d);
            store_u16(out, fp32_to_fp16(d));
            for (int j = 0; j < QK; ++j) out[2 + j] = (uint8_t)(int8_t)np_roundf(x[j] * id);
            break;
        }
        default: break;
    }
}

// ---- K-quants: sub-block fits -------------------------------------------------

// Fit x ≈ scale*L - min with L in [0, nmax], min >= 0 (the K-quants store a subtracted min).
// Candidate inverse scales around nmax/(max - min), each refit by least squares; the best
// squared error wins.  Returns scale and min through the pointers.
void fit_affine(const float* x, int n, int nmax, float* scale, float* the_min) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; ++i) mn = std::min(mn, x[i]), mx = std::max(mx, x[i]);
    if (mn > 0) mn = 0;
    if (mx == mn) {
        *scale = 0.0f;
        *the_min = -mn;
        return;
    }
    float best_err = INFINITY, best_scale = (mx - mn) / nmax, best_min = -mn;
    for (int step = -4; step <= 10; ++step) {
        const float iscale = ((float)nmax + 0.1f * (float)step) / (mx - mn);
        double sl = 0, sl2 = 0, sx = 0, slx = 0;
        int L[QK_K / 8];
        for (int i = 0; i < n; ++i) {
            L[i] = std::min(std::max(nearest_int(iscale * (x[i] - mn)), 0), nmax);
            sl += L[i], sl2 += (double)L[i] * L[i], sx += x[i], slx += (double)L[i] * x[i];
        }
        const double det = n * sl2 - sl * sl;
        if (det <= 0) continue;
        double s = (n * slx - sl * sx) / det, m = (sl2 * sx - sl * slx) / det;  // x ≈ s*L + m
        if (m > 0) m = 0, s = slx / sl2;
        double err = 0;
        for (int i = 0; i < n; ++i) err += (s * L[i] + m - x[i]) * (s * L[i] + m - x[i]);
        if (err < best_err) best_err = (float)err, best_scale = (float)s, best_min = (float)-m;
    }
    *scale = best_scale;
    *the_min = best_min;
}

// Fit x ≈ scale*L with L in [-nmax, nmax-1]; the scale is signed so the largest element maps to -nmax.
float fit_symmetric(const float* x, int n, int nmax) {
    const float vmax = signed_absmax(x, n);
    if (vmax == 0.0f) return 0.0f;
    float best_err = INFINITY, best = vmax / -nmax;
    for (int step = -6; step <= 6; ++step) {
        const float iscale = -((float)nmax + 0.1f * (float)step) / vmax;
        double slx = 0, sl2 = 0;
        int L[QK_K / 8];
        for (int i = 0; i < n; ++i) {
            L[i] = std::min(std::max(nearest_int(iscale * x[i]), -nmax), nmax - 1);
            slx += (double)L[i] * x[i], sl2 += (double)L[i] * L[i];
        }
        if (sl2 == 0) continue;
        const double s = slx / sl2;
        double err = 0;
        for (int i = 0; i < n; ++i) err += (s * L[i] - x[i]) * (s * L[i] - x[i]);
        if (err < best_err) best_err = (float)err, best = (float)s;
    }
    return best;
}

int requantize(float x, float dl, float ml, int lo, int hi) {
    if (dl == 0.0f) return std::min(std::max(0, lo), hi);
    return std::min(std::max(nearest_int((x + ml) / dl), lo), hi);
}

// Super-block quantization of per-sub-block scales/mins to `levels` steps.
float grid_step(const float* v, int n, int levels) {
    float mx = 0.0f;
    for (int i = 0; i < n; ++i) mx = std::max(mx, v[i]);
    return mx / (float)levels;
}

// Q2_K / Q4_K / Q5_K: affine sub-blocks with quantized scales and mins; fills q (0..nmax), sc, m.
void quantize_affine_super(const float* x, int sub, int nmax, int levels, uint8_t* q, uint8_t* sc, uint8_t* m,
                           uint16_t* d_bits, uint16_t* dmin_bits) {
    const int n_sub = QK_K / sub;
    float scales[16], mins[16];
    for (int j = 0; j < n_sub; ++j) fit_affine(x + j * sub, sub, nmax, &scales[j], &mins[j]);
    *d_bits = fp32_to_fp16(grid_step(scales, n_sub, levels));
    *dmin_bits = fp32_to_fp16(grid_step(mins, n_sub, levels));
    const float d = fp16_to_fp32(*d_bits), dmin = fp16_to_fp32(*dmin_bits);
    for (int j = 0; j < n_sub; ++j) {
        sc[j] = (uint8_t)(d > 0 ? std::min(std::max(nearest_int(scales[j] / d), 0), levels) : 0);
        m[j] = (uint8_t)(dmin > 0 ? std::min(std::max(nearest_int(mins[j] / dmin), 0), levels) : 0);
        const float dl = d * (float)sc[j], ml = dmin * (float)m[j];  // as the decoder computes them
        for (int i = 0; i < sub; ++i) q[j * sub + i] = (uint8_t)requantize(x[j * sub + i], dl, ml, 0, nmax);
    }
}

// Q3_K / Q6_K: symmetric sub-blocks of 16 with signed scales on a `levels` grid; q in [-nmax, nmax-1].
void quantize_symmetric_super(const float* x, int nmax, int levels, int8_t* q, int* sc, uint16_t* d_bits) {
    float scales[16];
    int imax = 0;
    for (int j = 0; j < 16; ++j) {
        scales[j] = fit_symmetric(x + 16 * j, 16, nmax);
        if (std::fabs(scales[j]) > std::fabs(scales[imax])) imax = j;
    }
    *d_bits = fp32_to_fp16(scales[imax] / (float)-levels);  // the largest scale maps to -levels
    const float d = fp16_to_fp32(*d_bits);
    for (int j = 0; j < 16; ++j) {
        sc[j] = d != 0 ? std::min(std::max(nearest_int(scales[j] / d), -levels), levels - 1) : 0;
        const float dl = d * (float)sc[j];
        for (int i = 0; i < 16; ++i) q[16 * j + i] = (int8_t)requantize(x[16 * j + i], dl, 0.0f, -nmax, nmax - 1);
    }
}

// ggml's 12-byte packing of eight 6-bit scales and mins (inverse of get_scale_min_k4).
void pack_scale_min_k4(const uint8_t* sc, const uint8_t* m, uint8_t* out) {
    memset(out, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            out[j] |= sc[j] & 63;
            out[j + 4] |= m[j] & 63;
        } else {
            out[j + 4] = (uint8_t)((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
            out[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            out[j] |= (uint8_t)((m[j] >> 4) << 6);
        }
    }
}

// The 2-bit planes shared by Q2_K and Q3_K: element e = half*128 + plane*32 + l sits in
// qs[half*32 + l] at bit 2*plane.
void pack_two_bit_planes(const uint8_t* q2, uint8_t* qs) {
    memset(qs, 0, QK_K / 4);
    for (int e = 0; e < QK_K; ++e) qs[(e / 128) * 32 + e % 32] |= (uint8_t)((q2[e] & 3) << (2 * ((e % 128) / 32)));
}

void quantize_block_k(QType t, const float* x, uint8_t* out) {
    uint8_t q[QK_K], sc[16], m[16];
    int8_t qi[QK_K];
    int sci[16];
    uint16_t d, dmin;
    switch (t) {
        case QType::Q2_K: {  // scales[16] | qs[64] | d | dmin
            quantize_affine_super(x, 16, 3, 15, q, sc, m, &d, &dmin);
            for (int j = 0; j < 16; ++j) out[j] = (uint8_t)(sc[j] | (m[j] << 4));
            pack_two_bit_planes(q, out + 16);
            store_u16(out + 80, d);
            store_u16(out + 82, dmin);
            break;
        }
        case QType::Q3_K: {  // hmask[32] | qs[64] | scales[12] | d
            quantize_symmetric_super(x, 4, 32, qi, sci, &d);
            uint8_t* hmask = out;
            uint8_t* scales = out + 96;
            memset(hmask, 0, 32);
            memset(scales, 0, 12);
            for (int e = 0; e < QK_K; ++e) {
                q[e] = (uint8_t)(qi[e] + 4);  // 0..7: the decoder subtracts 4 where the mask bit is 0
                hmask[e % 32] |= (uint8_t)((q[e] >> 2) << (e / 32));
            }
            pack_two_bit_planes(q, out + 32);
            for (int i = 0; i < 16; ++i) {
                const int u = sci[i] + 32;
                scales[i % 8] |= (uint8_t)((u & 0xF) << (i < 8 ? 0 : 4));
                scales[8 + i % 4] |= (uint8_t)((u >> 4) << (2 * (i / 4)));
            }
            store_u16(out + 108, d);
            break;
        }
        case QType::Q4_K:
        case QType::Q5_K: {  // d | dmin | scales[12] | (qh[32]) | qs[128]
            const bool five = t == QType::Q5_K;
            quantize_affine_super(x, 32, five ? 31 : 15, 63, q, sc, m, &d, &dmin);
            store_u16(out, d);
            store_u16(out + 2, dmin);
            pack_scale_min_k4(sc, m, out + 4);
            uint8_t* qs = out + 16 + (five ? 32 : 0);
            for (int c = 0; c < 4; ++c)  // chunk c: sub-block 2c in the low nibbles, 2c+1 in the high
                for (int l = 0; l < 32; ++l)
                    qs[32 * c + l] = (uint8_t)((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
            if (five) {
                uint8_t* qh = out + 16;
                memset(qh, 0, 32);
                for (int e = 0; e < QK_K; ++e) qh[e % 32] |= (uint8_t)(((q[e] >> 4) & 1) << (e / 32));
            }
            break;
        }
        case QType::Q6_K: {  // ql[128] | qh[64] | scales[16] | d
            quantize_symmetric_super(x, 32, 128, qi, sci, &d);
            uint8_t* ql = out;
            uint8_t* qh = out + 128;
            memset(ql, 0, 192);
            for (int e = 0; e < QK_K; ++e) {
                const int v = qi[e] + 32, half = e / 128, s = (e % 128) / 32, l = e % 32;
                ql[half * 64 + (s % 2) * 32 + l] |= (uint8_t)((v & 0xF) << (4 * (s / 2)));
                qh[half * 32 + l] |= (uint8_t)((v >> 4) << (2 * s));
            }
            for (int j = 0; j < 16; ++j) out[192 + j] = (uint8_t)(int8_t)sci[j];
            store_u16(out + 208, d);
            break;
        }
        default: break;
    }
}

uint16_t fp32_to_bf16(float f) {  // ggml_compute_fp32_to_bf16 / gguf-py BF16.quantize_blocks
    uint32_t n;
    memcpy(&n, &f, 4);
    if ((n & 0x7fffffffu) > 0x7f800000u) n = (n & 0xffff0000u) | (64u << 16);  // quiet NaN
    return (uint16_t)(((uint64_t)n + (0x7fffu + ((n >> 16) & 1u))) >> 16);
}

void quantize_row(const float* x, int64_t K, QType t, uint8_t* out) {
    switch (t) {
        case QType::F32: memcpy(out, x, (size_t)K * 4); return;
        case QType::F16:
            for (int64_t k = 0; k < K; ++k) store_u16(out + 2 * k, fp32_to_fp16(x[k]));
            return;
        case QType::BF16:
            for (int64_t k = 0; k < K; ++k) store_u16(out + 2 * k, fp32_to_bf16(x[k]));
            return;
        default: break;
    }
    const FormatInfo f = format_info(t);
    for (int64_t k = 0; k < K; k += f.block_size, out += f.block_bytes) {
        if (f.block_size == QK)
            quantize_block_32(t, x + k, out);
        else
            quantize_block_k(t, x + k, out);
    }
}

}  // namespace

bool can_quantize(QType t) {
    switch (t) {
        case QType::F32: case QType::F16: case QType::BF16: case QType::Q4_0: case QType::Q4_1:
        case QType::Q5_0: case QType::Q5_1: case QType::Q8_0: case QType::Q2_K: case QType::Q3_K:
        case QType::Q4_K: case QType::Q5_K: case QType::Q6_K: return true;
        default: return false;  // the i-quants, TQ1_0 / TQ2_0, MXFP4, NVFP4: read, never written
    }
}

void quantize_rows(const float* x, int64_t N, int64_t K, int64_t row_bytes, QType qtype, uint8_t* out,
                   int n_threads) {
    parallel_for(N, n_threads, [&](int64_t r) { quantize_row(x + r * K, K, qtype, out + r * row_bytes); });
}

}  // namespace pylin
