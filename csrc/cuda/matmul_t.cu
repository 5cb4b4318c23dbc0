// matmul_t.cu — y = x · wᵀ on GGUF-quantized w (forward pass and JVPs), x float32 or float64.
//
//   x: M x K (row-major), w: N rows of K weights (row_bytes each), y: M x N.
// Small M (<= 16, and every float64 product): one warp per pair of weight rows walks K in
// 1024-weight steps; the rows' bytes arrive in shared memory through 16-byte coalesced loads
// (stage_row), each lane decodes 8-weight chunks into registers (decode_chunk, bit-exact with
// the CPU decoders) and multiplies them with up to 16 rows of x; a warp-shuffle reduction
// finishes each dot product.  The weights are read once per 16 rows of x.
// Large M (float32): the tiled kernel of matmul_common.cuh.
// Tests: tests/test_cuda.py.
#include "cuda/launchers.h"
#include "cuda/matmul_common.cuh"

namespace pylin::cuda {
namespace {

constexpr int T_WARPS = 4;          // warps per thread block
constexpr int T_ROWS = 2;           // weight rows per warp (x values loaded once serve both)
constexpr int T_KSTEP = 1024;       // weights staged per row and step (4 K-quant blocks)

template <typename T>
__device__ __forceinline__ void load_chunk(const T* p, int valid, bool vec, T v[CHUNK]) {
    if constexpr (sizeof(T) == 4) {
        if (vec && valid == CHUNK) {  // 16-byte aligned: K % 4 == 0 and x aligned (checked by the launcher)
            const float4 a = __ldg((const float4*)p), b = __ldg((const float4*)p + 1);
            v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
            return;
        }
    }
#pragma unroll
    for (int i = 0; i < CHUNK; ++i) v[i] = i < valid ? __ldg(p + i) : T(0);
}

template <QType QT, typename T>
__global__ void __launch_bounds__(T_WARPS* WARP) matmul_t_small_kernel(const uint8_t* __restrict__ w, int64_t N,
                                                                       int64_t K, int64_t row_bytes,
                                                                       const T* __restrict__ x, int64_t M,
                                                                       bool vec, T* __restrict__ y) {
    constexpr int BS = Format<QT>::block_size, BB = Format<QT>::block_bytes;
    constexpr int STAGE = (T_KSTEP / BS * BB + 32 + 15) / 16 * 16;  // rows stay 16-byte aligned
    __shared__ __align__(16) uint8_t stage[T_WARPS][T_ROWS][STAGE];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int64_t n0 = ((int64_t)blockIdx.x * T_WARPS + warp) * T_ROWS;
    if (n0 >= N) return;  // warp-uniform; this kernel has no block-wide barrier
    const int64_t m0 = (int64_t)blockIdx.y * SMALL_M;
    const int mc = (int)min64(SMALL_M, M - m0);
    const T* xs = x + m0 * K;

    T acc[T_ROWS][SMALL_M];
#pragma unroll
    for (int r = 0; r < T_ROWS; ++r)
#pragma unroll
        for (int m = 0; m < SMALL_M; ++m) acc[r][m] = T(0);

    for (int64_t k0 = 0; k0 < K; k0 += T_KSTEP) {
        const int kn = (int)min64(T_KSTEP, K - k0);  // a whole number of blocks
        int off[T_ROWS];
#pragma unroll
        for (int r = 0; r < T_ROWS; ++r) {
            // a missing last row (N odd) leaves its stage unset: decoded, never written out
            off[r] = n0 + r < N ? stage_row(w + (n0 + r) * row_bytes + (k0 / BS) * BB, (int64_t)(kn / BS) * BB,
                                            stage[warp][r], lane)
                                : 0;
        }
        __syncwarp();
        for (int c = lane * CHUNK; c < kn; c += WARP * CHUNK) {
            const int valid = min(CHUNK, kn - c);
            float wv[T_ROWS][CHUNK];
#pragma unroll
            for (int r = 0; r < T_ROWS; ++r) decode_chunk<QT>(stage[warp][r] + off[r], c, valid, wv[r]);
#pragma unroll
            for (int m = 0; m < SMALL_M; ++m) {
                if (m < mc) {
                    T xv[CHUNK];
                    load_chunk<T>(xs + m * K + k0 + c, valid, vec, xv);
#pragma unroll
                    for (int r = 0; r < T_ROWS; ++r)
#pragma unroll
                        for (int i = 0; i < CHUNK; ++i) acc[r][m] = fma_<T>(xv[i], (T)wv[r][i], acc[r][m]);
                }
            }
        }
        __syncwarp();  // the stage is overwritten next step
    }
#pragma unroll
    for (int r = 0; r < T_ROWS; ++r) {
#pragma unroll
        for (int m = 0; m < SMALL_M; ++m) {
            T v = acc[r][m];
#pragma unroll
            for (int s = WARP / 2; s > 0; s /= 2) v += __shfl_xor_sync(0xffffffffu, v, s);
            // every lane now holds the sum; lane m stores row m
            if (lane == m && m < mc && n0 + r < N) y[(m0 + m) * N + n0 + r] = v;
        }
    }
}

template <QType QT>
void launch(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, const void* x, int64_t M, void* y,
            bool is_double, cudaStream_t stream) {
    const dim3 small_grid(ceil_div(N, T_WARPS * T_ROWS), ceil_div(M, SMALL_M));
    if (is_double) {
        matmul_t_small_kernel<QT, double><<<small_grid, T_WARPS * WARP, 0, stream>>>(
            w, N, K, row_bytes, (const double*)x, M, false, (double*)y);
    } else if (M <= SMALL_M) {
        const bool vec = K % 4 == 0 && ((uintptr_t)x & 15) == 0;
        matmul_t_small_kernel<QT, float><<<small_grid, T_WARPS * WARP, 0, stream>>>(
            w, N, K, row_bytes, (const float*)x, M, vec, (float*)y);
    } else {
        const dim3 grid(ceil_div(N, TILE_N), ceil_div(M, TILE_M));
        matmul_tiled_kernel<QT, true><<<grid, TILE_THREADS, 0, stream>>>(w, N, K, row_bytes, (const float*)x, M,
                                                                         (float*)y);
    }
}

}  // namespace

int matmul_t(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, int qtype, const void* x, int64_t M,
             void* y, bool is_double, int device, void* stream) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return (int)err;
    PYLIN_DISPATCH_QTYPE(qtype, launch<QT_>(w, N, K, row_bytes, x, M, y, is_double, (cudaStream_t)stream));
    return (int)cudaGetLastError();
}

}  // namespace pylin::cuda
