// Data movement for input pipelines: gathering rows by index (the shuffled batch of an
// epoch) without the GIL, so a background thread can prepare the next batch while the
// kernels compute the current one.
#pragma once

#include "common.hpp"

namespace densekit {

// out[i, :] = source[indices[i], :] for i < count; rows are row_bytes long. Indices are
// checked by the caller (0 <= index < source_rows).
template <typename Index>
void take_rows(void* out, const void* source, const Index* indices, index_t count,
               index_t row_bytes, int num_threads);

// The first index outside [0, rows), or -1 when all are inside.
template <typename Index>
index_t first_index_out_of_range(const Index* indices, index_t count, index_t rows);

}  // namespace densekit
