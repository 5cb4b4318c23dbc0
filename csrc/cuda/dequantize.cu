// dequantize.cu — GGUF blocks -> float32 on the GPU, one thread per block.
//
// Uses the same decoders as the CPU (csrc/common/block_formats.h, host+device),
// so the CPU bit-exactness tests cover the decoding arithmetic; compiled with
// --fmad=false so no multiply-add is fused.  Tests: tests/test_cuda.py.
#include <cuda_runtime.h>

#include "common/block_formats.h"
#include "cuda/device_guard.cuh"
#include "cuda/launchers.h"

namespace pylin::cuda {
namespace {

__global__ void dequantize_kernel(const uint8_t* w, int64_t n_rows, int64_t blocks_per_row, int64_t row_bytes,
                                  QType qtype, int block_size, int block_bytes, float* out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rows * blocks_per_row) return;
    const int64_t row = i / blocks_per_row, b = i % blocks_per_row;
    decode_block(qtype, w + row * row_bytes + b * block_bytes, out + row * blocks_per_row * block_size + b * block_size);
}

}  // namespace

int dequantize(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, QType qtype, float* out, int device,
               void* stream) {
    DeviceGuard guard;
    const cudaError_t err = guard.enter(device);
    if (err != cudaSuccess) return (int)err;
    const FormatInfo f = format_info(qtype);
    const int64_t blocks_per_row = K / f.block_size;
    const int64_t total = N * blocks_per_row;
    const int threads = 256;
    const int64_t grid = (total + threads - 1) / threads;  // < 2^31 - 1 (grid.x's limit) below 5e11 blocks
    dequantize_kernel<<<(unsigned)grid, threads, 0, (cudaStream_t)stream>>>(w, N, blocks_per_row, row_bytes, qtype,
                                                                          f.block_size, f.block_bytes, out);
    return (int)launch_error();
}

}  // namespace pylin::cuda
