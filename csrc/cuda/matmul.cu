// matmul.cu — y = g · w on GGUF-quantized w (the transposed product of VJPs), g float32 or float64.
//
//   g: M x N (row-major), w: N rows of K weights (row_bytes each), y: M x K.
// No existing Q4 kernel library offers this orientation.  It must never race: every thread block
// owns its output tile and sums in a fixed order, so results are deterministic.
// Small M (<= 16 per slab; every float64 product): a thread block owns 256 output columns
// (k) of one 16-row slab and a range of weight rows (a split of N).  Each warp stages 4 row
// segments at a time with 16-byte loads, each lane decodes its 8 columns and accumulates
// g[m][n]·w[n][k] in registers; the 4 warps are summed through shared memory in warp order.
// When K alone gives too few blocks to fill the GPU, N is split: each split writes its own
// partial tile to a workspace and a second kernel adds the partials in split order.
// Large M (float32): the tiled kernel of matmul_common.cuh.
// Tests: tests/test_cuda.py.
#include "cuda/launchers.h"
#include "cuda/matmul_common.cuh"

namespace pylin::cuda {
namespace {

constexpr int V_WARPS = 4;
constexpr int V_ROWS = 4;                   // weight rows staged per warp and step
constexpr int V_KTILE = WARP * CHUNK;       // 256 output columns per block: 8 per lane
constexpr int V_ROW_STEP = V_WARPS * V_ROWS;

template <typename T>
__host__ __device__ constexpr int slab_rows() {  // activation rows per slab: keeps acc[MS][8] within registers
    return sizeof(T) == 4 ? SMALL_M : SMALL_M / 2;
}

template <QType QT, typename T>
__global__ void __launch_bounds__(V_WARPS* WARP) matmul_small_kernel(const uint8_t* __restrict__ w, int64_t N,
                                                                     int64_t K, int64_t row_bytes,
                                                                     const T* __restrict__ g, int64_t M,
                                                                     int64_t rows_per_split, T* __restrict__ out) {
    constexpr int BS = Format<QT>::block_size, BB = Format<QT>::block_bytes;
    constexpr int MS = slab_rows<T>();
    constexpr int STAGE = (V_KTILE / BS * BB + 32 + 15) / 16 * 16;  // rows stay 16-byte aligned
    __shared__ __align__(16) uint8_t stage[V_WARPS][V_ROWS][STAGE];
    __shared__ T red[MS][V_KTILE];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int64_t k0 = (int64_t)blockIdx.x * V_KTILE;
    const int kn = (int)min64(V_KTILE, K - k0);  // a whole number of blocks
    const int64_t n_begin = (int64_t)blockIdx.y * rows_per_split;
    const int64_t n_end = min64(N, n_begin + rows_per_split);
    const int64_t m0 = (int64_t)blockIdx.z * MS;
    const int mc = (int)min64(MS, M - m0);
    const int c = lane * CHUNK, valid = min(CHUNK, kn - c);  // this lane's columns; valid <= 0: idle

    T acc[MS][CHUNK];
#pragma unroll
    for (int m = 0; m < MS; ++m)
#pragma unroll
        for (int i = 0; i < CHUNK; ++i) acc[m][i] = T(0);

    for (int64_t n = n_begin + warp * V_ROWS; n < n_end; n += V_ROW_STEP) {
        int off[V_ROWS];
#pragma unroll
        for (int r = 0; r < V_ROWS; ++r) {
            off[r] = n + r < n_end ? stage_row(w + (n + r) * row_bytes + (k0 / BS) * BB, (int64_t)(kn / BS) * BB,
                                               stage[warp][r], lane)
                                   : 0;
        }
        __syncwarp();
        if (valid > 0) {
#pragma unroll
            for (int r = 0; r < V_ROWS; ++r) {
                if (n + r < n_end) {
                    float wv[CHUNK];
                    decode_chunk<QT>(stage[warp][r] + off[r], c, valid, wv);
#pragma unroll
                    for (int m = 0; m < MS; ++m) {
                        if (m < mc) {
                            const T gv = __ldg(g + (m0 + m) * N + n + r);  // one value for the whole warp
#pragma unroll
                            for (int i = 0; i < CHUNK; ++i) acc[m][i] = fma_<T>(gv, (T)wv[i], acc[m][i]);
                        }
                    }
                }
            }
        }
        __syncwarp();
    }
    // sum the warps in a fixed order (deterministic), then write this block's tile
    for (int wi = 0; wi < V_WARPS; ++wi) {
        if (warp == wi) {
#pragma unroll
            for (int m = 0; m < MS; ++m)
#pragma unroll
                for (int i = 0; i < CHUNK; ++i) red[m][c + i] = wi == 0 ? acc[m][i] : red[m][c + i] + acc[m][i];
        }
        __syncthreads();
    }
    T* dst = out + (int64_t)blockIdx.y * M * K;  // the split's partial (the output itself when unsplit)
    for (int idx = threadIdx.x; idx < MS * V_KTILE; idx += V_WARPS * WARP) {
        const int m = idx / V_KTILE, kk = idx % V_KTILE;
        if (m < mc && kk < kn) dst[(m0 + m) * K + k0 + kk] = red[m][kk];
    }
}

// y[i] = sum over splits s (in order) of partial[s][i]
template <typename T>
__global__ void sum_splits_kernel(const T* __restrict__ partial, int splits, int64_t size, T* __restrict__ y) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < size; i += (int64_t)gridDim.x * blockDim.x) {
        T s = partial[i];
        for (int j = 1; j < splits; ++j) s += partial[j * size + i];
        y[i] = s;
    }
}

int multiprocessors(int device) {
    int count = 0;
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) count = 108;
    return count;
}

template <QType QT, typename T>
cudaError_t launch_small(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, const T* g, int64_t M, T* y,
                         int device, cudaStream_t stream) {
    constexpr int MS = slab_rows<T>();
    const int k_tiles = ceil_div(K, V_KTILE), slabs = ceil_div(M, MS);
    // Enough blocks for ~4 per SM; each split keeps at least 8 row steps so partials stay few.
    const int64_t want = 4LL * multiprocessors(device);
    const int64_t have = (int64_t)k_tiles * slabs;
    int64_t splits = have >= want ? 1 : (want + have - 1) / have;
    splits = min64(splits, ceil_div(N, 8 * V_ROW_STEP));
    splits = splits < 1 ? 1 : splits;
    int64_t rows_per_split = ceil_div(ceil_div(N, splits), V_ROW_STEP) * (int64_t)V_ROW_STEP;
    splits = ceil_div(N, rows_per_split);
    const dim3 grid(k_tiles, (unsigned)splits, slabs);
    if (splits == 1) {
        matmul_small_kernel<QT, T><<<grid, V_WARPS * WARP, 0, stream>>>(w, N, K, row_bytes, g, M, N, y);
        return cudaGetLastError();
    }
    T* partial = nullptr;
    cudaError_t err = cudaMallocAsync((void**)&partial, (size_t)splits * M * K * sizeof(T), stream);
    if (err != cudaSuccess) return err;
    matmul_small_kernel<QT, T><<<grid, V_WARPS * WARP, 0, stream>>>(w, N, K, row_bytes, g, M, rows_per_split,
                                                                    partial);
    err = cudaGetLastError();
    if (err == cudaSuccess) {
        const int64_t size = M * K;
        const int blocks = (int)min64(ceil_div(size, 256), 65535);
        sum_splits_kernel<T><<<blocks, 256, 0, stream>>>(partial, (int)splits, size, y);
        err = cudaGetLastError();
    }
    const cudaError_t freed = cudaFreeAsync(partial, stream);
    return err != cudaSuccess ? err : freed;
}

template <QType QT>
cudaError_t launch(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, const void* g, int64_t M, void* y,
                   bool is_double, int device, cudaStream_t stream) {
    if (is_double) return launch_small<QT, double>(w, N, K, row_bytes, (const double*)g, M, (double*)y, device, stream);
    if (M <= SMALL_M) return launch_small<QT, float>(w, N, K, row_bytes, (const float*)g, M, (float*)y, device, stream);
    const dim3 grid(ceil_div(K, TILE_N), ceil_div(M, TILE_M));
    matmul_tiled_kernel<QT, false><<<grid, TILE_THREADS, 0, stream>>>(w, N, K, row_bytes, (const float*)g, M,
                                                                      (float*)y);
    return cudaGetLastError();
}

}  // namespace

int matmul(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, int qtype, const void* g, int64_t M, void* y,
           bool is_double, int device, void* stream) {
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return (int)err;
    PYLIN_DISPATCH_QTYPE(qtype, err = launch<QT_>(w, N, K, row_bytes, g, M, y, is_double, device,
                                                  (cudaStream_t)stream));
    return (int)err;
}

}  // namespace pylin::cuda
