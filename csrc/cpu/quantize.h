// quantize.h — float32 rows -> any GGUF block format pylin reads (round to nearest).
//
// The 32-blocks and F16/BF16 reproduce gguf-py's `quantize_blocks` operation by
// operation (so the bytes equal gguf.quants.quantize); the K-quants, which
// gguf-py does not quantize, use a simple least-squares scale search per
// sub-block and pack exactly the layouts block_formats.h decodes.
// Tests: tests/test_quantize.py.
#pragma once

#include <cstdint>

#include "../common/block_formats.h"

namespace pylin {

// x: N rows of K floats (contiguous); out: N rows of row_bytes bytes.  K must be a
// whole number of blocks and row_bytes = K / block_size * block_bytes (the binding checks).
void quantize_rows(const float* x, int64_t N, int64_t K, int64_t row_bytes, QType qtype, uint8_t* out,
                   int n_threads);

// The formats quantize_rows writes (pylin.qtensor.WRITABLE_QTYPES): pylin reads the i-quants,
// TQ1_0 / TQ2_0, MXFP4 and NVFP4 but does not write them.
bool can_quantize(QType qtype);

// IEEE float -> half, round to nearest even, overflow to inf, subnormals exact (as numpy's astype).
uint16_t fp32_to_fp16(float f);

}  // namespace pylin
