// device_guard.cuh — CUDA runtime hygiene for every launcher: the caller's device is restored, and
// a failed runtime call leaves no recorded error behind.
//
// The runtime records the error of a failed call and hands it to the next cudaGetLastError, so an
// error that is returned but not cleared would fail the next, successful launch: every error path
// goes through `cleared`.  (pylin._cuda links the runtime statically: these errors and torch's
// never mix, but the current device is the thread's one context, shared with torch.)
// Tests: tests/test_cuda.py (test_error_leaves_no_trace, test_current_device_is_restored).
#pragma once

#include <cuda_runtime.h>

namespace pylin::cuda {

// Returns `err` after clearing the runtime's record of it (a no-op on success).
inline cudaError_t cleared(cudaError_t err) {
    if (err != cudaSuccess) cudaGetLastError();
    return err;
}

// The error of the launches just issued (cudaGetLastError also clears it).
inline cudaError_t launch_error() { return cudaGetLastError(); }

// Makes `device` current for the guard's lifetime and restores the caller's device after.
class DeviceGuard {
   public:
    // cudaSuccess, or the (cleared) error of switching to `device`.
    cudaError_t enter(int device) {
        int current = 0;
        cudaError_t err = cleared(cudaGetDevice(&current));
        if (err != cudaSuccess || current == device) return err;
        err = cleared(cudaSetDevice(device));
        if (err == cudaSuccess) previous_ = current;
        return err;
    }
    ~DeviceGuard() {
        if (previous_ >= 0) cleared(cudaSetDevice(previous_));
    }
    DeviceGuard() = default;
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

   private:
    int previous_ = -1;
};

// Multiprocessors of `device` (108, an A100's, if the query fails: it only sizes grids).
inline int multiprocessors(int device) {
    int count = 0;
    if (cleared(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) count = 108;
    return count;
}

}  // namespace pylin::cuda
