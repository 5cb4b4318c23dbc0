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
// partial tile to a workspace (the caller's, from torch's caching allocator: see
// matmul_workspace_bytes) and a second kernel adds the partials in split order.
// M beyond a grid's 65535 slabs runs in pieces of rows (for_each_row_piece).
// Large M (float32): the tiled kernel of matmul_common.cuh.
// Tests: tests/test_cuda.py.
#include <algorithm>

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

// How the small-M kernel covers m rows: k tiles on grid.x, splits of N on grid.y, slabs on grid.z.
struct SmallPlan {
    int k_tiles;
    int64_t slabs, splits, rows_per_split;
};

template <typename T>
SmallPlan plan_small(int64_t N, int64_t K, int64_t m, int device) {
    SmallPlan p;
    p.k_tiles = ceil_div(K, V_KTILE);
    p.slabs = ceil_div(m, slab_rows<T>());
    // Enough blocks for ~4 per SM; each split keeps at least 8 row steps so partials stay few.
    const int64_t want = 4LL * multiprocessors(device);
    const int64_t have = (int64_t)p.k_tiles * p.slabs;
    int64_t splits = have >= want ? 1 : (want + have - 1) / have;
    splits = min64(splits, ceil_div(N, 8 * V_ROW_STEP));
    splits = splits < 1 ? 1 : splits;
    p.rows_per_split = ceil_div(ceil_div(N, splits), V_ROW_STEP) * (int64_t)V_ROW_STEP;
    p.splits = ceil_div(N, p.rows_per_split);
    return p;
}

// The split partials of rows [m0, m0 + m) need splits * m * K values; pieces run one after the
// other on one stream, so the workspace is the largest piece's (a full one, or the last).
template <typename T>
int64_t small_workspace_bytes(const MatmulArgs& a) {
    const int64_t piece = MAX_GRID_YZ * slab_rows<T>();
    int64_t most = 0;
    for (const int64_t m : {min64(a.M, piece), a.M % piece}) {
        if (m <= 0) continue;
        const SmallPlan p = plan_small<T>(a.N, a.K, m, a.device);
        if (p.splits > 1) most = std::max<int64_t>(most, p.splits * m * a.K * (int64_t)sizeof(T));
    }
    return most;
}

template <QType QT, typename T>
cudaError_t launch_small(const MatmulArgs& a, cudaStream_t stream) {
    if (a.workspace_bytes < small_workspace_bytes<T>(a)) return cudaErrorInvalidValue;  // the binding checks first
    const T* g = (const T*)a.x;
    T* y = (T*)a.y;
    T* partial = (T*)a.workspace;
    return for_each_row_piece(a.M, slab_rows<T>(), MAX_GRID_YZ, [&](int64_t m0, int64_t m) {
        const SmallPlan p = plan_small<T>(a.N, a.K, m, a.device);
        const dim3 grid(p.k_tiles, (unsigned)p.splits, (unsigned)p.slabs);
        const T* gm = g + m0 * a.N;
        T* ym = y + m0 * a.K;
        if (p.splits == 1) {
            matmul_small_kernel<QT, T><<<grid, V_WARPS * WARP, 0, stream>>>(a.w, a.N, a.K, a.row_bytes, gm, m, a.N, ym);
            return launch_error();
        }
        matmul_small_kernel<QT, T>
            <<<grid, V_WARPS * WARP, 0, stream>>>(a.w, a.N, a.K, a.row_bytes, gm, m, p.rows_per_split, partial);
        const cudaError_t err = launch_error();
        if (err != cudaSuccess) return err;
        const int64_t size = m * a.K;
        const int blocks = (int)min64(ceil_div(size, 256), 65535);
        sum_splits_kernel<T><<<blocks, 256, 0, stream>>>(partial, (int)p.splits, size, ym);
        return launch_error();
    });
}

template <QType QT>
cudaError_t launch(const MatmulArgs& a) {
    const cudaStream_t stream = (cudaStream_t)a.stream;
    if (a.is_double) return launch_small<QT, double>(a, stream);
    if (a.M <= SMALL_M) return launch_small<QT, float>(a, stream);
    return launch_tiled<QT, false>(a, stream);
}

}  // namespace

int64_t matmul_workspace_bytes(const MatmulArgs& args) {
    if (args.is_double) return small_workspace_bytes<double>(args);
    return args.M <= SMALL_M ? small_workspace_bytes<float>(args) : 0;
}

int matmul(const MatmulArgs& args) {
    DeviceGuard guard;
    cudaError_t err = guard.enter(args.device);
    if (err != cudaSuccess) return (int)err;
    err = cudaErrorInvalidValue;  // an unknown format (the binding rejects it first)
    PYLIN_DISPATCH_QTYPE(args.qtype, err = launch<QT_>(args));
    return (int)err;
}

}  // namespace pylin::cuda
