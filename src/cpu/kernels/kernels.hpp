// The kernels behind cpu/ternary_kernels.hpp, one file per ISA (as ggml keeps arch/x86 beside *_generic);
// internal to the cpu layer. See ternary_kernels.hpp for the contracts.
//
// cpu/ternary_kernels.cpp holds the public API: ISA detection, argument checks, pack/unpack, the scratch
// buffers, and the drivers that split work over OpenMP threads and call the kernels of the chosen ISA.
// kernels/generic.cpp, kernels/x86_avx2.cpp and kernels/x86_avx512.cpp hold the kernels of one ISA each.
// The SIMD kernels are compiled with __attribute__((target(...))) so the library runs on any x86-64; the
// drivers hold the OpenMP regions (outlined OpenMP bodies need not inherit a target attribute) and call
// the ISA kernels, which are plain functions. This header declares what is called across files, in
// tl::kernels_detail, each SIMD entry point with the target attribute of its definition; helpers used by
// one file stay in that file's anonymous namespace.
//
// The ternary kernels compute dot(code, x) with the unsigned codes c = w + 1 in {0,1,2} (u8 x s8
// instructions want one unsigned operand) and subtract sum(x) once per token: dot(w, x) = dot(c, x) - sum(x).
// Code 3 is mapped to code 1 (weight 0) before use ("sanitize": clear the high bit of a field whose low
// bit is set), so the unsigned codes never exceed 2 and the kernels' int16 bounds hold.
#pragma once

// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* (GCC PR 105593); the
// pragma covers only the header's lines.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif

#include <cstddef>
#include <cstdint>

#include "model/i2s_layout.hpp"

#define TL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TL_TARGET_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace tl::kernels_detail {

constexpr int64_t kBlock = int64_t(I2sBlock::kCodes);       // elements per I2_S block
constexpr int64_t kBlockBytes = int64_t(sizeof(I2sBlock));  // bytes per I2_S block
constexpr int64_t kMaxK = int64_t(1) << 20;
constexpr int64_t kMaxKI8 = (int64_t(1) << 17) - 1;  // 128*128*K < 2^31
// The GEMM unpacks kPanelRows weight rows at a time into a panel of u8 codes laid out (K/4, kPanelRows, 4):
// step s holds codes 4s..4s+3 of each row, so one 32-bit word per row matches 4 consecutive activations.
constexpr int64_t kPanelRows = 32;
// Tokens per tile of the GEMM micro-kernels: the drivers build the activation panel in tiles this wide.
constexpr int64_t kTokensAvx2 = 5;     // tokens per AVX2 micro-kernel tile: 10 of the 16 ymm accumulate
constexpr int64_t kTokensAvx512 = 14;  // tokens per AVX-512 micro-kernel tile: 28 accumulators

// ---------------------------------------------------------------------------------------------------------
// Scratch (ternary_kernels.cpp).

// Per-thread scratch, grown on demand and kept (OpenMP threads persist), 64-byte aligned.
enum class Slot { Activations, Panel, Partial, Row, Count };
uint8_t* scratch(Slot slot, size_t bytes);

// ---------------------------------------------------------------------------------------------------------
// Generic kernels (kernels/generic.cpp; plain C++, the compiler may vectorize them for the baseline ISA).

// One packed row (K/4 bytes) -> K weights in {-1,0,1}; loops the compiler can vectorize.
void decode_row(const uint8_t* packed, int64_t K, int8_t* weights);
// Rows [m0, m1) of W, decoded kGenericRows at a time (so each token's activations are read once per
// block of rows), multiplied by every token.
void ternary_rows_generic(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t K,
                          int64_t m0, int64_t m1);
// 8 partial sums (a fixed order the compiler can vectorize; a single fp32 sum it may not reorder).
void f16_rows_generic(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0, int64_t m1);
// Inline: the AVX2 i8 GEMV adds its tail with it and the generic i8_gemv calls it per row.
inline int32_t i8_dot_generic(const int8_t* a, const int8_t* b, int64_t K) {
  int32_t acc = 0;  // |acc| <= 128*128*K < 2^31 for K <= kMaxKI8
  for (int64_t k = 0; k < K; ++k) acc += int32_t(a[k]) * b[k];
  return acc;
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 kernels (kernels/x86_avx2.cpp).

// GEMV for T = 1, 2, 3 tokens (x natural order, token stride K), rows [m0, m1).
template <int T>
TL_TARGET_AVX2 void ternary_gemv_rows_avx2(int32_t* out, int64_t ldo, const int8_t* x, const uint8_t* w,
                                           int64_t K, int64_t m0, int64_t m1, const int32_t* xsum);
// The GEMM's panel of u8 codes: kPanelRows rows from m0 (`rows` of them valid), blocks [b0, b1).
TL_TARGET_AVX2 void build_panel_avx2(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0,
                                     int64_t b1, uint8_t* panel);
// One panel tile (both 16-row halves) x nt tokens, in rounds of at most 64 steps (the int16 bound).
TL_TARGET_AVX2 void gemm_tile_avx2(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps,
                                   int32_t* partial, bool first, bool last, const int32_t* xsum, int32_t* out,
                                   int64_t ldo, int64_t rows);
// f16 GEMV rows [m0, m1).
TL_TARGET_AVX2 void f16_rows_avx2(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0,
                                  int64_t m1);
// i8 GEMV rows [m0, m1) into dots[0 .. m1-m0); x16: xq widened to int16.
TL_TARGET_AVX2 void i8_rows_avx2(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                 const int16_t* x16, int64_t m0, int64_t m1);

// ---------------------------------------------------------------------------------------------------------
// AVX-512 VNNI kernels (kernels/x86_avx512.cpp).

// x (K) -> xp (K): the activations in the order the AVX-512 GEMVs read them (plain C++).
void permute_gemv_activations(const int8_t* x, int64_t K, int8_t* xp);
// One token (decoding), rows [m0, m1); Sanitize = false skips the code-3 step (PackedCodes::Valid).
template <bool Sanitize>
TL_TARGET_AVX512 void ternary_gemv_one_token_avx512(int32_t* out, const int8_t* xp, const uint8_t* w,
                                                    int64_t K, int64_t m0, int64_t m1, int32_t xsum);
// GEMV for N tokens (xp permuted, token stride K), rows [m0, m1).
TL_TARGET_AVX512 void ternary_gemv_avx512(int32_t* out, int64_t ldo, const int8_t* xp, int64_t N,
                                          const uint8_t* w, int64_t K, int64_t m0, int64_t m1,
                                          const int32_t* xsum, bool valid_codes);
// As build_panel_avx2.
TL_TARGET_AVX512 void build_panel_avx512(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0,
                                         int64_t b1, uint8_t* panel);
// As gemm_tile_avx2, for nt <= kTokensAvx512.
TL_TARGET_AVX512 void gemm_tile_avx512(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps,
                                       int32_t* partial, bool first, bool last, const int32_t* xsum,
                                       int32_t* out, int64_t ldo, int64_t rows);
// f16 GEMV rows [m0, m1).
TL_TARGET_AVX512 void f16_rows_avx512(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0,
                                      int64_t m1);
// i8 GEMV rows [m0, m1) into dots[0 .. m1-m0); xsum: sum of xq.
TL_TARGET_AVX512 void i8_rows_avx512(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                     int32_t xsum, int64_t m0, int64_t m1);
// model/quant.cpp's activation quantizer in two steps: max |x|, then the codes of x at scale s.
TL_TARGET_AVX512 float abs_max_avx512(const float* x, int64_t n);
TL_TARGET_AVX512 void quantize_codes_avx512(const float* x, int64_t n, float s, int8_t* q);

}  // namespace tl::kernels_detail
