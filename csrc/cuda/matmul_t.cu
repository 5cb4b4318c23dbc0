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

    // One running sum per lane: over K = 28672 (896 terms per lane) float32 loses ~5.4e-7 relative
    // (rounding emulated in numpy on Gaussian data), inside the 1e-6 claim; a second level (per K
    // step) would cut that to 1.4e-7 but takes 96 -> 128 registers (16 instead of 20 warps per SM).
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

template <QType QT, typename T>
cudaError_t launch_small(const MatmulArgs& a, cudaStream_t stream) {
    const T* x = (const T*)a.x;
    T* y = (T*)a.y;
    // 16-byte loads of x need every row 16-byte aligned: K % 4 == 0 and x itself aligned (pieces
    // start a multiple of 16 rows further on, so they stay aligned)
    const bool vec = sizeof(T) == 4 && a.K % 4 == 0 && ((uintptr_t)a.x & 15) == 0;
    return for_each_row_piece(a.M, SMALL_M, MAX_GRID_YZ, [&](int64_t m0, int64_t m) {
        const dim3 grid(ceil_div(a.N, T_WARPS * T_ROWS), ceil_div(m, SMALL_M));
        matmul_t_small_kernel<QT, T>
            <<<grid, T_WARPS * WARP, 0, stream>>>(a.w, a.N, a.K, a.row_bytes, x + m0 * a.K, m, vec, y + m0 * a.N);
        return launch_error();
    });
}

template <QType QT>
cudaError_t launch(const MatmulArgs& a) {
    const cudaStream_t stream = (cudaStream_t)a.stream;
    if (a.is_double) return launch_small<QT, double>(a, stream);
    if (a.M <= SMALL_M) return launch_small<QT, float>(a, stream);
    return launch_tiled<QT, true>(a, stream);
}

}  // namespace

int matmul_t(const MatmulArgs& args) {
    DeviceGuard guard;
    cudaError_t err = guard.enter(args.device);
    if (err != cudaSuccess) return (int)err;
    err = cudaErrorInvalidValue;  // an unknown format (the binding rejects it first)
    PYLIN_DISPATCH_QTYPE(args.qtype, err = launch<QT_>(args));
    return (int)err;
}

}  // namespace pylin::cuda
