// Row gathers for the input pipeline (see data.hpp).
#include "data.hpp"

#include <cstdint>
#include <cstring>

#include "parallel.hpp"

namespace densekit {

template <typename Index>
void take_rows(void* out, const void* source, const Index* indices, index_t count,
               index_t row_bytes, int num_threads) {
  if (count <= 0 || row_bytes <= 0) return;
  auto* dst = static_cast<std::uint8_t*>(out);
  const auto* src = static_cast<const std::uint8_t*>(source);
  // About 64 KiB copied per task: enough to amortise waking a thread.
  const index_t rows_per_task = std::max<index_t>(1, (index_t{1} << 16) / row_bytes);
  const index_t n_tasks = (count + rows_per_task - 1) / rows_per_task;
  const int threads = threads_for_work(num_threads, double(count) * row_bytes, 1 << 17);
  parallel_for(n_tasks, threads, [&](index_t task) {
    const index_t begin = task * rows_per_task;
    const index_t end = std::min(count, begin + rows_per_task);
    for (index_t i = begin; i < end; ++i)
      std::memcpy(dst + i * row_bytes, src + static_cast<index_t>(indices[i]) * row_bytes,
                  static_cast<size_t>(row_bytes));
  });
}

template <typename Index>
index_t first_index_out_of_range(const Index* indices, index_t count, index_t rows) {
  for (index_t i = 0; i < count; ++i)
    if (indices[i] < 0 || static_cast<index_t>(indices[i]) >= rows) return i;
  return -1;
}

template void take_rows<std::int32_t>(void*, const void*, const std::int32_t*, index_t, index_t,
                                      int);
template void take_rows<std::int64_t>(void*, const void*, const std::int64_t*, index_t, index_t,
                                      int);
template index_t first_index_out_of_range<std::int32_t>(const std::int32_t*, index_t, index_t);
template index_t first_index_out_of_range<std::int64_t>(const std::int64_t*, index_t, index_t);

}  // namespace densekit
