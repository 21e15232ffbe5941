// The bfloat16 matrix product: bf16 operands, float32 accumulation, the float32 epilogue of the
// float32 engine (bias, pre-activation copy, activation), output in float32 or bf16.
//
// Every element of the product is one chain over the k pairs (2q, 2q + 1), q increasing, started
// from 0, with the rule of AVX512-BF16's vdpbf16ps (its reference pseudo-code, and what the CPU
// does: checked bit for bit by the tests):
//   acc = acc + A(i, 2q+1) B(2q+1, j);  acc = acc + A(i, 2q) B(2q, j)
// each sum rounded to nearest even in float32 (a product of two bf16 values is exact in float32,
// so each step is one fma), with subnormal inputs and results read and written as zero (the
// instruction's DAZ and FTZ, whatever MXCSR says). An odd k ends with a zero pair member.
// The emulated paths follow the same rule with float32 fma under MXCSR's DAZ and FTZ, so every
// path gives the same bits; the results never depend on the thread count, tiling or blocking
// (partial sums between k blocks go through float32 memory exactly). NaN payloads may differ.
// The amx path follows tdpbf16ps's rule instead (the Intel SDM's pseudo-code, and what the CPU
// does: checked bit for bit by the tests): k is cut into steps of 16 pairs from pair 0 (the
// last step padded with zero pairs); per step, the even members' products and the odd members'
// are summed in two chains of float32 fma from 0, in increasing pair order, and then
//   acc = acc + (even + odd)
// each rounded to nearest even, subnormals read and written as zero. Its bits differ from the
// other paths' (by float32 accumulation error) but, as theirs, not with the thread count,
// tiling or blocking (k blocks are whole steps).
// After the chain: v = (accumulate ? C : 0) + chain, v += bias[j], preact = v, C = act(v), in
// float32 with the float32 engine's vector math; a bf16 output is then rounded to nearest even.
#pragma once

#include <string>
#include <vector>

#include "activation_table.hpp"
#include "common.hpp"
#include "lowp/bf16.hpp"
#include "lowp/tile_loop.hpp"

namespace densekit::lowp {

// How the bf16 products run. emulated: float32 fma on the float32 engine's ISA (defined
// everywhere); avx512_bf16: vdpbf16ps (Zen 4, Sapphire Rapids and later); amx: tdpbf16ps on
// AMX tiles (Sapphire Rapids and later), whose rule differs (below).
enum class Bf16Path { emulated = 0, avx512_bf16 = 1, amx = 2 };

struct Bf16Choice {
  Bf16Path path = Bf16Path::emulated;  // in use
  Bf16Path best = Bf16Path::emulated;  // the best this CPU, build and DENSEKIT_ISA allow
  bool forced = false;                 // DENSEKIT_BF16 was set and honoured
  std::string requested;               // DENSEKIT_BF16 as given ("" when unset)
  std::string note;                    // why a request was not honoured ("" when it was)
};

// Made once, on first use (the extension module asks at import): DENSEKIT_BF16=avx512_bf16 or
// emulated lowers it; a DENSEKIT_ISA below avx512 rules out avx512_bf16 and amx.
const Bf16Choice& bf16_choice();
bool bf16_path_supported(Bf16Path path);
const char* bf16_path_name(Bf16Path path);
bool bf16_path_from_name(const std::string& name, Bf16Path* path);

// B (k, n) packed (tile_loop.hpp): in each panel, for every k pair q, kPanel 32-bit words whose
// low half is B(2q, j) and high half B(2q + 1, j) (zero past k and past n).
using PackedBf16 = PackedPanels;

// op(B) (k, n) with op(B)(p, j) = b[p * ld + j], or b[j * ld + p] when transposed, into out
// (its storage reused).
void pack_bf16_into(PackedBf16* out, const bf16_bits* b, index_t ld, bool transposed, index_t k,
                    index_t n, int num_threads);

struct Bf16Epilogue {
  const float* bias = nullptr;  // (n,)
  float* preact = nullptr;      // (m, n), row stride ld_preact
  index_t ld_preact = 0;
  Activation activation{};
  bool accumulate = false;  // float32 output only: add to what C holds
};

// Columns [j0, j0 + cols) (cols <= kPanel) of a panel of a packed B whose column j is the
// bf16 row rows[j - j0] of k elements (a transposed B: its pairs are 32-bit words already,
// an odd k's last word with a zero high half), written at dst (word q of column j0 + c at
// dst[q * kPanel + c]).
void panel_from_rows(const bf16_bits* const* rows, index_t cols, index_t k, std::uint32_t* dst);

// op(B) (k, n) of float32 values rounded to bf16 while packed, into out (its storage reused).
void pack_bf16_into(PackedBf16* out, const float* b, index_t ld, bool transposed, index_t k,
                    index_t n, int num_threads);

// C (m, n) = op(A) @ B with the epilogue; op(A)(i, p) = a[i * lda + p], or a[p * lda + i] when
// trans_a. Exactly one of c32 / c16 is given (row stride ldc).
void gemm_bf16(index_t m, index_t n, index_t k, const bf16_bits* a, index_t lda, bool trans_a,
               const PackedBf16& b, float* c32, bf16_bits* c16, index_t ldc,
               const Bf16Epilogue& epilogue, int num_threads);
// The same with a float32 A, rounded to bf16 (nearest even) as it is packed: the product of
// the rounded A, with no bf16 copy of A in memory.
void gemm_bf16(index_t m, index_t n, index_t k, const float* a, index_t lda, bool trans_a,
               const PackedBf16& b, float* c32, bf16_bits* c16, index_t ldc,
               const Bf16Epilogue& epilogue, int num_threads);
// The same on a given path (tests and benchmarks); it must be supported.
void gemm_bf16_with_path(Bf16Path path, index_t m, index_t n, index_t k, const bf16_bits* a,
                         index_t lda, bool trans_a, const PackedBf16& b, float* c32,
                         bf16_bits* c16, index_t ldc, const Bf16Epilogue& epilogue,
                         int num_threads);
void gemm_bf16_with_path(Bf16Path path, index_t m, index_t n, index_t k, const float* a,
                         index_t lda, bool trans_a, const PackedBf16& b, float* c32,
                         bf16_bits* c16, index_t ldc, const Bf16Epilogue& epilogue,
                         int num_threads);

// The threads gemm_bf16 runs a product of m rows and k-long chains over n columns on, on the
// chosen path (its tiles' grain), out of num_threads.
int gemm_bf16_threads(index_t m, index_t n, index_t k, int num_threads);

// C (m, n) = op(A) @ op(B) with op(B) packed for this call alone, into the calling thread's
// kept buffer (a product that packs B on every call pays no allocation and no page faults;
// buffers above gemm::Scratch::kMaxKept are given back). path: the path, or null for the
// chosen one.
void matmul_bf16(const Bf16Path* path, index_t m, index_t n, index_t k, const bf16_bits* a,
                 index_t lda, bool trans_a, const bf16_bits* b, index_t ldb, bool trans_b,
                 float* c32, bf16_bits* c16, index_t ldc, const Bf16Epilogue& epilogue,
                 int num_threads);

// The bf16 path in use: operations of `steps` rounds of register-only multiply-adds on
// num_threads threads (TileSet::probe); the caller times the call for the peak rate.
double bf16_peak_probe(index_t steps, int num_threads);

// Elementwise conversions over count elements, on up to num_threads threads.
void convert_to_bf16(const float* x, bf16_bits* y, index_t count, int num_threads);
void convert_from_bf16(const bf16_bits* x, float* y, index_t count, int num_threads);

// The tiles of one path (tile_loop.hpp): float32 accumulators, a word is a k pair.
using Bf16Tiles = TileSet<float>;

Bf16Tiles bf16_tiles_portable();
#if defined(DENSEKIT_HAVE_X86_KERNELS)
Bf16Tiles bf16_tiles_avx2();
Bf16Tiles bf16_tiles_avx512();
Bf16Tiles bf16_tiles_avx512_bf16();
#endif
#if defined(DENSEKIT_HAVE_AMX_KERNELS)
Bf16Tiles bf16_tiles_amx();
#endif

}  // namespace densekit::lowp
