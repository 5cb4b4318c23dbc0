// launchers.h — host-side entry points of the CUDA kernels (one .cu per op).
//
// Raw device pointers, sizes, the device index and a stream (torch's current stream, passed as
// an integer); cuda_bindings.cpp validates the arguments and turns a cudaError_t into a Python
// exception.  Every launcher returns a cudaError_t as int (0 = success).
// Tests: tests/test_cuda.py.
#pragma once

#include <cstdint>

namespace pylin::cuda {

// Number of visible devices; 0 (not an error) when there is no GPU or no driver.
int device_count(const char** why_not);

// out[N x K] (float32, device) = decode(w[N rows of row_bytes], qtype).
int dequantize(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, int qtype, float* out, int device,
               void* stream);

// y[M x N] = x[M x K] · wᵀ (matmul_t.cu).  x, y float32, or float64 when is_double.
int matmul_t(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, int qtype, const void* x, int64_t M,
             void* y, bool is_double, int device, void* stream);

// y[M x K] = g[M x N] · w (matmul.cu).  g, y float32, or float64 when is_double.
int matmul(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, int qtype, const void* g, int64_t M, void* y,
           bool is_double, int device, void* stream);

const char* error_string(int code);

}  // namespace pylin::cuda
