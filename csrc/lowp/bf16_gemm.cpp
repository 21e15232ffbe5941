// The bf16 product's driver: the path choice, packing, the task loop and the float32 epilogue
// (see bf16_gemm.hpp). Baseline ISA; the tiles live in the per-path files.
#include "lowp/bf16_gemm.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <vector>

#include "gemm/isa.hpp"
#include "parallel.hpp"
#include "vecmath/scalar_activations.hpp"
#include "vecmath/vecmath.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace densekit::lowp {
namespace {

constexpr index_t kBlockPairs = 128;  // k block: 256 k, a 32-column B panel of 16 KiB
constexpr index_t kChunkPanels = 8;   // columns per task: 256

bool cpu_has_avx512_bf16() {
#if defined(DENSEKIT_HAVE_X86_KERNELS) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#elif defined(DENSEKIT_HAVE_X86_KERNELS) && defined(__clang__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

Bf16Choice choose() {
  Bf16Choice choice;
  choice.best = bf16_path_supported(Bf16Path::avx512_bf16) ? Bf16Path::avx512_bf16
                                                           : Bf16Path::emulated;
  choice.path = choice.best;
  const char* env = std::getenv("DENSEKIT_BF16");
  if (env == nullptr || *env == '\0') return choice;
  choice.requested = env;
  std::string lowered;
  for (const char* p = env; *p != '\0'; ++p)
    lowered += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
  Bf16Path wanted;
  if (!bf16_path_from_name(lowered, &wanted)) {
    choice.note = "DENSEKIT_BF16='" + choice.requested +
                  "' is not one of avx512_bf16, emulated; using " + bf16_path_name(choice.best);
  } else if (static_cast<int>(wanted) > static_cast<int>(choice.best)) {
    choice.note = "DENSEKIT_BF16='" + choice.requested +
                  "' is not supported by this CPU/build/DENSEKIT_ISA; using " +
                  bf16_path_name(choice.best);
  } else {
    choice.path = wanted;
    choice.forced = true;
  }
  return choice;
}

// The emulated tiles follow the float32 engine's ISA.
const Bf16Tiles& tiles_for(Bf16Path path) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  static const Bf16Tiles native = bf16_path_supported(Bf16Path::avx512_bf16)
                                      ? bf16_tiles_avx512_bf16()
                                      : Bf16Tiles{};
  static const Bf16Tiles emulated = [] {
    switch (gemm::isa_choice().isa) {
      case gemm::Isa::avx512:
        return bf16_tiles_avx512();
      case gemm::Isa::avx2:
        return bf16_tiles_avx2();
      default:
        return bf16_tiles_portable();
    }
  }();
  return path == Bf16Path::avx512_bf16 ? native : emulated;
#else
  (void)path;
  static const Bf16Tiles emulated = bf16_tiles_portable();
  return emulated;
#endif
}

// DAZ and FTZ on this thread for the emulated tiles' lifetime (x86: MXCSR; the float32 code
// that follows runs under the caller's mode again).
class FlushDenormals {
 public:
  explicit FlushDenormals(bool on) : on_(on) {
#if defined(__x86_64__) || defined(__i386__)
    if (on_) {
      saved_ = _mm_getcsr();
      _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
    }
#endif
  }
  ~FlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    if (on_) _mm_setcsr(saved_);
#endif
  }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  bool on_;
  unsigned saved_ = 0;
};

// Rows [r0, r0 + rows) of op(A) as pair words, pair q of row i at out[q * rows + i].
void pack_a(const bf16_bits* a, index_t lda, bool trans_a, index_t r0, int rows, index_t k,
            std::uint32_t* out) {
  const index_t pairs = (k + 1) / 2;
  if (!trans_a) {
    for (int i = 0; i < rows; ++i) {
      const bf16_bits* row = a + (r0 + i) * lda;
      for (index_t q = 0; q < k / 2; ++q)
        out[q * rows + i] = std::uint32_t(row[2 * q]) | (std::uint32_t(row[2 * q + 1]) << 16);
      if (k % 2) out[(pairs - 1) * rows + i] = row[k - 1];
    }
  } else {
    for (index_t q = 0; q < pairs; ++q) {
      const bf16_bits* lo = a + 2 * q * lda + r0;
      const bf16_bits* hi = 2 * q + 1 < k ? lo + lda : nullptr;
      for (int i = 0; i < rows; ++i)
        out[q * rows + i] = std::uint32_t(lo[i]) | (hi ? std::uint32_t(hi[i]) << 16 : 0u);
    }
  }
}

void check_path(Bf16Path path) {
  if (!bf16_path_supported(path))
    throw ArgumentError(std::string("bf16 path '") + bf16_path_name(path) +
                        "' is not supported by this CPU/build");
}

void finish_row(const float* acc, index_t cols, index_t i, index_t j0, float* c32, bf16_bits* c16,
                index_t ldc, const Bf16Epilogue& ep, float* scratch) {
  float* v = c32 != nullptr ? c32 + i * ldc + j0 : scratch;
  for (index_t j = 0; j < cols; ++j) {
    float x = acc[j];
    if (ep.accumulate) x = v[j] + x;
    if (ep.bias != nullptr) x += ep.bias[j0 + j];
    v[j] = x;
  }
  if (ep.preact != nullptr) std::copy(v, v + cols, ep.preact + i * ep.ld_preact + j0);
  const Activation& act = ep.activation;
  if (act.kind != ActivationKind::linear &&
      !vecmath::vector_activation<float>(v, nullptr, v, cols, act)) {
    const float alpha = static_cast<float>(act.alpha);
    for (index_t j = 0; j < cols; ++j) v[j] = scalar::forward(act.kind, alpha, v[j]);
  }
  if (c16 != nullptr) {
    bf16_bits* out = c16 + i * ldc + j0;
    for (index_t j = 0; j < cols; ++j) out[j] = float_to_bf16(v[j]);
  }
}

}  // namespace

bool bf16_path_supported(Bf16Path path) {
  if (path == Bf16Path::emulated) return true;
  return gemm::isa_choice().isa == gemm::Isa::avx512 && cpu_has_avx512_bf16();
}

const char* bf16_path_name(Bf16Path path) {
  return path == Bf16Path::avx512_bf16 ? "avx512_bf16" : "emulated";
}

bool bf16_path_from_name(const std::string& name, Bf16Path* path) {
  if (name == "avx512_bf16") {
    *path = Bf16Path::avx512_bf16;
  } else if (name == "emulated") {
    *path = Bf16Path::emulated;
  } else {
    return false;
  }
  return true;
}

const Bf16Choice& bf16_choice() {
  static const Bf16Choice choice = choose();
  return choice;
}

PackedBf16 pack_bf16(const bf16_bits* b, index_t ld, bool transposed, index_t k, index_t n,
                     int num_threads) {
  PackedBf16 p;
  p.k = k;
  p.n = n;
  p.pairs = (k + 1) / 2;
  p.panels = (n + kPanel - 1) / kPanel;
  p.data.assign(buffer_bytes(p.pairs * kPanel, p.panels, 1), 0u);
  const index_t pairs = p.pairs;
  const int threads = threads_for_work(num_threads, double(k) * double(n), 1 << 16);
  parallel_for(p.panels, threads, [&](index_t panel) {
    std::uint32_t* out = p.data.data() + panel * pairs * kPanel;
    const index_t j0 = panel * kPanel;
    const index_t cols = std::min<index_t>(kPanel, n - j0);
    for (index_t q = 0; q < pairs; ++q) {
      const index_t r = 2 * q;
      std::uint32_t* w = out + q * kPanel;
      for (index_t j = 0; j < cols; ++j) {
        const bf16_bits lo = transposed ? b[(j0 + j) * ld + r] : b[r * ld + j0 + j];
        const bf16_bits hi =
            r + 1 < k ? (transposed ? b[(j0 + j) * ld + r + 1] : b[(r + 1) * ld + j0 + j]) : 0;
        w[j] = std::uint32_t(lo) | (std::uint32_t(hi) << 16);
      }
    }
  });
  return p;
}

void gemm_bf16_with_path(Bf16Path path, index_t m, index_t n, index_t k, const bf16_bits* a,
                         index_t lda, bool trans_a, const PackedBf16& b, float* c32,
                         bf16_bits* c16, index_t ldc, const Bf16Epilogue& ep, int num_threads) {
  check_path(path);
  if ((c32 == nullptr) == (c16 == nullptr))
    throw ArgumentError("gemm_bf16: exactly one of the float32 and bf16 outputs");
  if (ep.accumulate && c32 == nullptr)
    throw ArgumentError("gemm_bf16: accumulate needs a float32 output");
  if (ep.activation.kind == ActivationKind::softmax)
    throw ArgumentError("gemm_bf16: softmax is a row operation, not an elementwise epilogue");
  if (b.k != k || b.n != n) throw ArgumentError("gemm_bf16: packed B does not match k and n");
  if (m <= 0 || n <= 0) return;
  const Bf16Tiles& tiles = tiles_for(path);
  const index_t pairs = b.pairs;
  const index_t row_tiles = (m + kMaxRows - 1) / kMaxRows;
  const index_t chunks = (b.panels + kChunkPanels - 1) / kChunkPanels;
  const double flops = 2.0 * double(m) * double(n) * double(std::max<index_t>(k, 1));
  const int threads = threads_for_work(num_threads, flops, 4e6);
  const index_t panel_stride = pairs * kPanel;

  struct Scratch {
    std::vector<std::uint32_t> a;
    std::vector<float> acc, row;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(std::max(threads, 1)));
  parallel_tasks(row_tiles * chunks, threads, [&](int participant, index_t task) {
    Scratch& s = scratch[static_cast<size_t>(participant)];
    // Chunk-major: consecutive tasks (one participant's share) reuse a chunk of B from cache.
    const index_t chunk = task / row_tiles, rt = task % row_tiles;
    const index_t r0 = m * rt / row_tiles;
    const int rows = static_cast<int>(m * (rt + 1) / row_tiles - r0);
    const index_t p0 = chunk * kChunkPanels;
    const index_t panels = std::min(kChunkPanels, b.panels - p0);
    const index_t width = panels * kPanel;
    s.a.resize(static_cast<size_t>(std::max<index_t>(pairs, 1) * rows));
    s.acc.assign(static_cast<size_t>(rows * width), 0.0f);
    s.row.resize(static_cast<size_t>(width));
    if (pairs > 0) {
      pack_a(a, lda, trans_a, r0, rows, k, s.a.data());
      FlushDenormals flush(tiles.sets_mxcsr);
      const int wide = wide_panels(rows);
      for (index_t q0 = 0; q0 < pairs; q0 += kBlockPairs) {
        const index_t kq = std::min(kBlockPairs, pairs - q0);
        const std::uint32_t* ablock = s.a.data() + q0 * rows;
        index_t p = 0;
        if (wide > 1)
          for (; p + wide <= panels; p += wide)
            tiles.wide[rows](kq, ablock, b.panel(p0 + p) + q0 * kPanel, panel_stride,
                             s.acc.data() + p * kPanel, width, q0 > 0);
        for (; p < panels; ++p)
          tiles.narrow[rows](kq, ablock, b.panel(p0 + p) + q0 * kPanel, panel_stride,
                             s.acc.data() + p * kPanel, width, q0 > 0);
      }
    }
    const index_t j0 = p0 * kPanel;
    const index_t cols = std::min(width, n - j0);
    for (int i = 0; i < rows; ++i)
      finish_row(s.acc.data() + i * width, cols, r0 + i, j0, c32, c16, ldc, ep, s.row.data());
  });
}

void gemm_bf16(index_t m, index_t n, index_t k, const bf16_bits* a, index_t lda, bool trans_a,
               const PackedBf16& b, float* c32, bf16_bits* c16, index_t ldc,
               const Bf16Epilogue& epilogue, int num_threads) {
  gemm_bf16_with_path(bf16_choice().path, m, n, k, a, lda, trans_a, b, c32, c16, ldc, epilogue,
                      num_threads);
}

void convert_to_bf16(const float* x, bf16_bits* y, index_t count, int num_threads) {
  constexpr index_t kChunk = 1 << 15;
  const index_t chunks = (count + kChunk - 1) / kChunk;
  parallel_for(chunks, threads_for_work(num_threads, double(count), kChunk), [&](index_t c) {
    const index_t end = std::min(count, (c + 1) * kChunk);
    for (index_t i = c * kChunk; i < end; ++i) y[i] = float_to_bf16(x[i]);
  });
}

void convert_from_bf16(const bf16_bits* x, float* y, index_t count, int num_threads) {
  constexpr index_t kChunk = 1 << 15;
  const index_t chunks = (count + kChunk - 1) / kChunk;
  parallel_for(chunks, threads_for_work(num_threads, double(count), kChunk), [&](index_t c) {
    const index_t end = std::min(count, (c + 1) * kChunk);
    for (index_t i = c * kChunk; i < end; ++i) y[i] = bf16_to_float(x[i]);
  });
}

}  // namespace densekit::lowp
