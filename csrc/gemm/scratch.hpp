// Scratch memory of a calling thread, kept between calls so that small products pay no
// allocation. Each user keeps a thread_local instance: every calling thread has its own, and
// a call uses it only while it runs. Buffers above kMaxKept bytes (huge thread counts) are
// given back after the call (trim).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace densekit::gemm {

class Scratch {
 public:
  static constexpr size_t kScratchAlign = 64;
  static constexpr size_t kMaxKept = size_t(64) << 20;
  ~Scratch() { std::free(data_); }
  void trim() {
    if (size_ > kMaxKept) {
      std::free(data_);
      data_ = nullptr;
      size_ = 0;
    }
  }
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(data_);
      data_ = nullptr;
      size_ = 0;
      const size_t rounded = ((bytes + kScratchAlign - 1) / kScratchAlign) * kScratchAlign;
      data_ = std::aligned_alloc(kScratchAlign, rounded);
      if (data_ == nullptr) throw std::bad_alloc();
      size_ = rounded;
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace densekit::gemm
