// runtime.cu — device discovery and error strings for pylin._cuda.
#include <cuda_runtime.h>

#include "launchers.h"

namespace pylin::cuda {

int device_count(const char** why_not) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        if (why_not) *why_not = cudaGetErrorString(err);
        cudaGetLastError();  // clear the sticky "no device" error
        return 0;
    }
    return count;
}

const char* error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

}  // namespace pylin::cuda
