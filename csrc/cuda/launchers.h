// launchers.h — host-side entry points of the CUDA kernels (one .cu per op).
//
// Raw device pointers, sizes, the device index and a stream (torch's current stream, passed as
// an integer); cuda_bindings.cpp validates the arguments and turns a cudaError_t into a Python
// exception.  Arguments come in the CPU kernels' order (csrc/cpu/kernel_table.h: activations,
// weights, output, sizes, format), then the GPU's context.  Every launcher returns a cudaError_t
// as int (0 = success), leaves no error recorded behind and restores the caller's current device.
// Tests: tests/test_cuda.py.
#pragma once

#include <cstdint>

#include "common/block_formats.h"

namespace pylin::cuda {

struct MatmulArgs {
    const void* x;     // activations: M x K (matmul_t) or M x N (matmul), contiguous, float or double
    const uint8_t* w;  // weight rows: N rows of K weights in `qtype`, row_bytes each (device memory)
    void* y;           // output: M x N (matmul_t) or M x K (matmul), same dtype as x, overlapping neither
    int64_t M, N, K;
    int64_t row_bytes;
    QType qtype;
    bool is_double;           // x and y are float64 (else float32)
    void* workspace;          // matmul only: matmul_workspace_bytes(args) bytes of device memory
    int64_t workspace_bytes;  // (allocated by the caller, from torch's caching allocator)
    int device;
    void* stream;  // cudaStream_t
};

// Number of visible devices; 0 (not an error) when there is no GPU or no driver.
int device_count(const char** why_not);

// out[N x K] (float32, device) = decode(w[N rows of row_bytes], qtype).
int dequantize(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, QType qtype, float* out, int device,
               void* stream);

// y[M x N] = x[M x K] · wᵀ (matmul_t.cu).  Needs no workspace.
int matmul_t(const MatmulArgs& args);

// y[M x K] = g[M x N] · w (matmul.cu), g in args.x.
int matmul(const MatmulArgs& args);

// Workspace bytes `matmul(args)` needs (0 when N is not split); reads only sizes, dtype and device.
int64_t matmul_workspace_bytes(const MatmulArgs& args);

const char* error_string(int code);

}  // namespace pylin::cuda
