// launchers.h — host-side entry points of the CUDA kernels (one .cu per op).
//
// Raw device pointers, sizes and a stream; cuda_bindings.cpp validates the
// arguments and turns a cudaError_t into a Python exception.
#pragma once

#include <cstdint>

namespace pylin::cuda {

// Number of visible devices; 0 (not an error) when there is no GPU or no driver.
int device_count(const char** why_not);

// out[N x K] (float32, device) = decode(w[N rows of row_bytes], qtype).
int dequantize(const uint8_t* w, int64_t N, int64_t K, int64_t row_bytes, int qtype, float* out, void* stream);

const char* error_string(int code);

}  // namespace pylin::cuda
