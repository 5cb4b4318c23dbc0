// matmul_common.cuh — pieces shared by matmul_t.cu (x·wᵀ) and matmul.cu (g·w).
//
// - stage_row: a warp copies a row segment of quantized bytes into shared memory with 16-byte
//   loads (ld.global.nc.v4), so every weight byte is read from DRAM once, fully coalesced,
//   whatever the block size (18, 110, 210 bytes... are not multiples of 16).
// - the large-M tiled kernel (decoded weight tiles in shared memory, FFMA), one template for
//   both orientations so the two stay identical.
// Tests: tests/test_cuda.py (every format x orientation x small/large M vs float64).
#pragma once

#include <cuda_runtime.h>

#include "cuda/decode_chunk.cuh"
#include "cuda/device_guard.cuh"
#include "cuda/launchers.h"

namespace pylin::cuda {

constexpr int WARP = 32;
constexpr int SMALL_M = 16;  // M at or below this takes the small-M (memory-bound) kernels

// Copy bytes [src, src + n) into `dst` (16-byte aligned shared memory) with aligned 16-byte loads;
// returns where src landed inside dst.  The copy covers the aligned 16-byte granules around the
// range; the (at most two) granules that the range's ends cut are copied byte by byte, only their
// bytes inside the range, so nothing outside [src, src + n) is read: the end of a tensor need not
// be 16-byte aligned (compute-sanitizer's memcheck would flag such a read even where the hardware
// would not fault).  The bytes of dst outside the range stay unset and are never decoded.  `dst`
// needs n + 32 bytes.
__device__ __forceinline__ int stage_row(const uint8_t* src, int64_t n, uint8_t* dst, int lane) {
    const uintptr_t a = (uintptr_t)src, e = a + n;
    const uintptr_t a0 = a & ~(uintptr_t)15;
    const int n16 = (int)((e + 15 - a0) >> 4);
    const uint4* s = (const uint4*)a0;
    uint4* d = (uint4*)dst;
    for (int i = lane; i < n16; i += WARP) {
        const uintptr_t g = a0 + 16 * (uintptr_t)i;
        if (g >= a && g + 16 <= e) {
            d[i] = __ldg(s + i);
        } else {
            uint8_t* db = (uint8_t*)(d + i);
            for (int b = 0; b < 16; ++b)
                if (g + b >= a && g + b < e) db[b] = __ldg((const uint8_t*)(g + b));
        }
    }
    return (int)(a - a0);
}

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
__device__ __forceinline__ T fma_(T a, T b, T c);
template <>
__device__ __forceinline__ float fma_<float>(float a, float b, float c) { return __fmaf_rn(a, b, c); }
template <>
__device__ __forceinline__ double fma_<double>(double a, double b, double c) { return __fma_rn(a, b, c); }

// ---- large-M tiled kernel (float32) ---------------------------------------------------------------
//
// Output tile TILE_M x TILE_N per thread block (each block owns its tile: no atomics, no races),
// reduction in steps of TILE_R; 256 threads, each an 8 x 8 register tile.  Per step the block
// decodes a TILE_R x TILE_N (matmul: rows n, columns k) or TILE_N x TILE_R (matmul_t: rows n,
// columns k) weight tile into shared memory with decode_chunk — one chunk of 8 per thread — and
// loads the activation tile; then FFMA.  Each thread sums PART_STEPS steps (128 terms) into partial
// sums and adds those into its running sums (two-level summation): a plain running FMA sum over
// N = 28672 loses 3e-6 relative (float32 rounding emulated in numpy, Gaussian data), 16-term
// partials 7e-7, 128-term partials 3.3e-7 (the optimum of two levels is near sqrt(R) terms).
// Tensor cores are not used: keeping 1e-6 of float32 needs a bf16x3 split (TODO when a GPU is
// lent to measure it).
constexpr int TILE_M = 128, TILE_N = 128, TILE_R = 16, TILE_THREADS = 256;
constexpr int PART_STEPS = 8;  // reduction steps per partial sum

// TRANSPOSED: y[m][n] = sum_k x[m][k] w[n][k] (matmul_t; R = K, output width N)
// otherwise:  y[m][k] = sum_n g[m][n] w[n][k] (matmul;   R = N, output width K)
// v = weights [k, k+8) of row n, or zeros for a chunk outside the N x K weight (tile edges).
template <QType QT>
__device__ __forceinline__ void decode_chunk_or_zero(const uint8_t* w, int64_t row_bytes, int64_t n, int64_t k,
                                                     int64_t N, int64_t K, float* v) {
    if (n < N && k < K) {
        decode_chunk<QT>(w + n * row_bytes, k, (int)min64(CHUNK, K - k), v);
    } else {
#pragma unroll
        for (int i = 0; i < CHUNK; ++i) v[i] = 0.0f;
    }
}

template <QType QT, bool TRANSPOSED>
__global__ void __launch_bounds__(TILE_THREADS) matmul_tiled_kernel(const uint8_t* __restrict__ w, int64_t N,
                                                                    int64_t K, int64_t row_bytes,
                                                                    const float* __restrict__ a, int64_t M,
                                                                    float* __restrict__ y) {
    __shared__ __align__(16) float As[TILE_R][TILE_M + 4];
    __shared__ __align__(16) float Bs[TILE_R][TILE_N + 4];
    const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
    const int64_t m0 = (int64_t)blockIdx.y * TILE_M;
    const int64_t c0 = (int64_t)blockIdx.x * TILE_N;  // first output column (n or k)
    const int64_t R = TRANSPOSED ? K : N;            // reduction length
    const int64_t width = TRANSPOSED ? N : K;        // output row length
    float acc[8][8], part[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    for (int64_t r0 = 0, step = 0; r0 < R; r0 += TILE_R, ++step) {
        // activations: As[rr][mm] = a[m0 + mm][r0 + rr]; 16 consecutive threads read one row's 16 values
#pragma unroll
        for (int j = 0; j < TILE_M * TILE_R / TILE_THREADS; ++j) {
            const int idx = tid + j * TILE_THREADS, mm = idx / TILE_R, rr = idx % TILE_R;
            const int64_t m = m0 + mm, r = r0 + rr;
            As[rr][mm] = (m < M && r < R) ? a[m * R + r] : 0.0f;
        }
        // weights: one chunk of 8 decoded values per thread
        float v[CHUNK];
        if (TRANSPOSED) {  // rows n = c0 + tid/2, columns k = r0 + 8*(tid%2) .. +8  ->  Bs[k][n]
            const int nn = tid / 2, kk = 8 * (tid % 2);
            const int64_t n = c0 + nn, k = r0 + kk;
            decode_chunk_or_zero<QT>(w, row_bytes, n, k, N, K, v);
#pragma unroll
            for (int i = 0; i < CHUNK; ++i) Bs[kk + i][nn] = v[i];
        } else {  // rows n = r0 + tid/16, columns k = c0 + 8*(tid%16) .. +8  ->  Bs[n][k]
            const int nn = tid / 16, kk = 8 * (tid % 16);
            const int64_t n = r0 + nn, k = c0 + kk;
            decode_chunk_or_zero<QT>(w, row_bytes, n, k, N, K, v);
            *(float4*)&Bs[nn][kk] = make_float4(v[0], v[1], v[2], v[3]);
            *(float4*)&Bs[nn][kk + 4] = make_float4(v[4], v[5], v[6], v[7]);
        }
        __syncthreads();
        if (step % PART_STEPS == 0) {
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) part[i][j] = 0.0f;
        }
#pragma unroll
        for (int rr = 0; rr < TILE_R; ++rr) {
            const float4 a0 = *(const float4*)&As[rr][ty * 8], a1 = *(const float4*)&As[rr][ty * 8 + 4];
            const float4 b0 = *(const float4*)&Bs[rr][tx * 8], b1 = *(const float4*)&Bs[rr][tx * 8 + 4];
            const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) part[i][j] = __fmaf_rn(av[i], bv[j], part[i][j]);
        }
        if (step % PART_STEPS == PART_STEPS - 1 || r0 + TILE_R >= R) {
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] += part[i][j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int64_t m = m0 + ty * 8 + i;
        if (m >= M) break;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int64_t c = c0 + tx * 8 + j;
            if (c < width) y[m * width + c] = acc[i][j];
        }
    }
}

inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

// A grid holds at most 65535 blocks along y and z, where the kernels put their row slabs: one launch
// covers at most that many slabs, so an M of millions (the engine's tangent chunks on a large card,
// float64 above ~0.5M rows) is launched in pieces of rows.  launch_piece(m0, m) launches rows
// [m0, m0 + m) and returns launch_error(); the first error stops the loop.
constexpr int64_t MAX_GRID_YZ = 65535;

template <typename LaunchPiece>
cudaError_t for_each_row_piece(int64_t M, int64_t rows_per_slab, int64_t max_slabs, LaunchPiece&& launch_piece) {
    const int64_t piece = max_slabs * rows_per_slab;
    for (int64_t m0 = 0; m0 < M; m0 += piece) {
        const cudaError_t err = launch_piece(m0, min64(piece, M - m0));
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}

// The tiled kernel over all M rows: output tiles on grid.x, row tiles on grid.y.
template <QType QT, bool TRANSPOSED>
cudaError_t launch_tiled(const MatmulArgs& a, cudaStream_t stream) {
    const int64_t in_width = TRANSPOSED ? a.K : a.N, out_width = TRANSPOSED ? a.N : a.K;
    const float* x = (const float*)a.x;
    float* y = (float*)a.y;
    return for_each_row_piece(a.M, TILE_M, MAX_GRID_YZ, [&](int64_t m0, int64_t m) {
        const dim3 grid(ceil_div(out_width, TILE_N), ceil_div(m, TILE_M));
        matmul_tiled_kernel<QT, TRANSPOSED>
            <<<grid, TILE_THREADS, 0, stream>>>(a.w, a.N, a.K, a.row_bytes, x + m0 * in_width, m, y + m0 * out_width);
        return launch_error();
    });
}

}  // namespace pylin::cuda
