// The block tiles on AMX: bf16 (tdpbf16ps) and int8 (tdpbusd) products in tile registers. This
// file alone is compiled with -mamx-tile -mamx-bf16 -mamx-int8; it is entered only after
// amx_support() (amx.hpp) has found the tiles usable and the tile state granted.
//
// A block is up to 32 rows x one 32-column panel at a time: tmm0-3 hold C (rows 0-15 and
// 16-31, columns 0-15 and 16-31 of the panel), tmm4 and tmm5 A's two row halves (16 k words
// each), tmm6 and tmm7 the panel's two column halves of B (16 word rows, 128 bytes apart in the
// panel). Per step of 16 k words: 2 loads of A, 2 of B (with the streaming hint: B is read
// once per row tile, A's block is kept in L1), 4 tile products.
//
// The tile configuration depends on the block's rows and is loaded once per task (a
// configuration and release cost about 100 ns): `configure` skips it while the rows are the
// configured ones; run_tiles calls `release` at the end of each task, so no tile state
// outlives a task and no other code on the thread sees a configuration of ours.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "lowp/bf16_gemm.hpp"
#include "lowp/int8_gemm.hpp"

namespace densekit::lowp {
namespace {

constexpr int kHalf = 16;  // rows (and columns) of a tile of C
static_assert(2 * kHalf == kMaxBlockRows, "a block is two tiles of rows");

struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "the 64-byte tile configuration of palette 1");

thread_local int t_configured_rows = 0;  // rows of the loaded configuration, 0: none

void configure(int rows) {
  if (rows == t_configured_rows) return;
  TileConfig config;
  const int top = std::min(rows, kHalf), bottom = rows - top;
  auto set = [&](int tile, int tile_rows) {
    config.rows[tile] = static_cast<std::uint8_t>(tile_rows);
    config.colsb[tile] = 64;
  };
  for (int tile : {0, 1, 4}) set(tile, top);
  if (bottom > 0)
    for (int tile : {2, 3, 5}) set(tile, bottom);
  set(6, kHalf);
  set(7, kHalf);
  // GCC 12's _tile_loadconfig names only the first 8 bytes as read, so the compiler drops the
  // stores of the rows and widths before it: the whole 64 bytes are the asm's operand here
  __asm__ volatile("ldtilecfg %0" : : "m"(config));
  t_configured_rows = rows;
}

void release() {
  if (t_configured_rows == 0) return;
  _tile_release();
  t_configured_rows = 0;
}

// Tile C += tile A times tile B: tdpbf16ps (Op 0) or tdpbusd (Op 1), in a function with a
// template parameter Op. A macro: the tile intrinsics take their register numbers as literals.
#define DENSEKIT_TILE_PRODUCT(C, A, B) \
  do {                                 \
    if constexpr (Op == 0) {           \
      _tile_dpbf16ps(C, A, B);         \
    } else {                           \
      _tile_dpbusd(C, A, B);           \
    }                                  \
  } while (false)

// Rows > 16 (Bottom) use tmm2, tmm3 and tmm5 as well. Op: 0 bf16, 1 int8.
template <int Op, bool Bottom, typename Acc>
void block_rows(index_t panels, index_t words, const std::uint32_t* a, index_t a_stride,
                const std::uint32_t* b, index_t panel_stride, Acc* c, index_t ldc, bool load_c) {
  const index_t a_bytes = a_stride * 4, c_bytes = ldc * index_t(sizeof(Acc));
  constexpr index_t kB = kPanel * 4;  // bytes between B's word rows in a panel
  const std::uint32_t* a_low = a + kHalf * a_stride;
  for (index_t p = 0; p < panels; ++p) {
    Acc* cp = c + p * kPanel;
    Acc* cp_low = cp + kHalf * ldc;
    const std::uint32_t* bp = b + p * panel_stride;
    if (load_c) {
      _tile_loadd(0, cp, c_bytes);
      _tile_loadd(1, cp + kHalf, c_bytes);
      if constexpr (Bottom) {
        _tile_loadd(2, cp_low, c_bytes);
        _tile_loadd(3, cp_low + kHalf, c_bytes);
      }
    } else {
      _tile_zero(0);
      _tile_zero(1);
      if constexpr (Bottom) {
        _tile_zero(2);
        _tile_zero(3);
      }
    }
    for (index_t q = 0; q < words; q += kHalf) {
      _tile_stream_loadd(6, bp + q * kPanel, kB);
      _tile_stream_loadd(7, bp + q * kPanel + kHalf, kB);
      _tile_loadd(4, a + q, a_bytes);
      DENSEKIT_TILE_PRODUCT(0, 4, 6);
      DENSEKIT_TILE_PRODUCT(1, 4, 7);
      if constexpr (Bottom) {
        _tile_loadd(5, a_low + q, a_bytes);
        DENSEKIT_TILE_PRODUCT(2, 5, 6);
        DENSEKIT_TILE_PRODUCT(3, 5, 7);
      }
    }
    _tile_stored(0, cp, c_bytes);
    _tile_stored(1, cp + kHalf, c_bytes);
    if constexpr (Bottom) {
      _tile_stored(2, cp_low, c_bytes);
      _tile_stored(3, cp_low + kHalf, c_bytes);
    }
  }
}

template <int Op, typename Acc>
void block(int rows, index_t panels, index_t words, const std::uint32_t* a, index_t a_stride,
           const std::uint32_t* b, index_t panel_stride, Acc* c, index_t ldc, bool load_c) {
  configure(rows);
  if (rows > kHalf) {
    block_rows<Op, true>(panels, words, a, a_stride, b, panel_stride, c, ldc, load_c);
  } else {
    block_rows<Op, false>(panels, words, a, a_stride, b, panel_stride, c, ldc, load_c);
  }
}

// `steps` rounds of 4 tile products on zero tiles (nothing from memory): 16 x 16 outputs of 16
// k words each, 2 (bf16) or 4 (int8) multiply-adds per word and output.
template <int Op>
double probe(index_t steps) {
  configure(kMaxBlockRows);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  for (index_t s = 0; s < steps; ++s) {
    DENSEKIT_TILE_PRODUCT(0, 4, 6);
    DENSEKIT_TILE_PRODUCT(1, 4, 7);
    DENSEKIT_TILE_PRODUCT(2, 5, 6);
    DENSEKIT_TILE_PRODUCT(3, 5, 7);
  }
  release();
  constexpr double kPerWord = Op == 0 ? 2 * 2 : 4 * 2;  // operations per k word and output
  return double(steps) * 4 * kHalf * kHalf * kHalf * kPerWord;
}

template <int Op, typename Acc>
TileSet<Acc> make_tiles() {
  TileSet<Acc> t;
  t.block = &block<Op, Acc>;
  // k blocks of 256 words: A's 32-row block (32 KiB) stays in L1 while the task's panels pass;
  // B's tiles are loaded with the streaming hint (tileloaddt1), so that B, read once per row
  // tile, does not evict it. Without the hint 128 words were best (B's block of a panel and
  // A's block together within L1); with it 256 words halve the reloads of C per product (see
  // README.md).
  t.block_words = 256;
  t.release = &release;
  t.probe = &probe<Op>;
  return t;
}

}  // namespace

Bf16Tiles bf16_tiles_amx() { return make_tiles<0, float>(); }
TileSet<std::int32_t> int8_tiles_amx() { return make_tiles<1, std::int32_t>(); }

}  // namespace densekit::lowp
