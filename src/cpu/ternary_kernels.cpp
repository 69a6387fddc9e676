// Packed-ternary x int8 kernels and the LM-head GEMVs; see ternary_kernels.hpp for the contracts.
//
// Layout of this file: ISA detection, argument checks, pack/unpack, scratch buffers, then the kernels of
// each ISA (generic, AVX2, AVX-512 VNNI), then the drivers that split work over OpenMP threads. The
// SIMD kernels are compiled with __attribute__((target(...))) so the library runs on any x86-64; the
// drivers hold the OpenMP regions (outlined OpenMP bodies need not inherit a target attribute) and call
// the ISA kernels, which are plain functions.
//
// The ternary kernels compute dot(code, x) with the unsigned codes c = w + 1 in {0,1,2} (u8 x s8
// instructions want one unsigned operand) and subtract sum(x) once per token: dot(w, x) = dot(c, x) - sum(x).
// Code 3 is mapped to code 1 (weight 0) before use ("sanitize": clear the high bit of a field whose low
// bit is set), so the unsigned codes never exceed 2 and the int16 bounds below hold.
#include "cpu/ternary_kernels.hpp"

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

#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/enum_names.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "model/i2s_layout.hpp"
#include "model/quant.hpp"

#define TL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TL_TARGET_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace tl {
namespace {

constexpr int64_t kBlock = int64_t(I2sBlock::kCodes);       // elements per I2_S block
constexpr int64_t kBlockBytes = int64_t(sizeof(I2sBlock));  // bytes per I2_S block
constexpr int64_t kMaxK = int64_t(1) << 20;
constexpr int64_t kMaxKI8 = (int64_t(1) << 17) - 1;  // 128*128*K < 2^31
// The GEMM unpacks kPanelRows weight rows at a time into a panel of u8 codes laid out (K/4, kPanelRows, 4):
// step s holds codes 4s..4s+3 of each row, so one 32-bit word per row matches 4 consecutive activations.
constexpr int64_t kPanelRows = 32;
// Up to this many tokens the GEMV kernels (which unpack the weights in registers, shared by the tokens)
// beat the GEMM (whose panel unpacking pays off over many tokens); measured on a Cascade Lake Xeon.
constexpr int64_t kGemvMaxTokensAvx2 = 3;
constexpr int64_t kGemvMaxTokensAvx512 = 8;
// Work (multiply-adds) below which a call stays on one thread: waking threads costs more than it saves.
constexpr int64_t kParallelMinWork = int64_t(1) << 21;

// ---------------------------------------------------------------------------------------------------------
// ISA detection.

bool cpu_has_f16c() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & bit_F16C) != 0;
}

bool cpu_supports(KernelIsa isa) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  switch (isa) {
    case KernelIsa::Generic:
      return true;
    case KernelIsa::Avx2:
      return avx2;
    case KernelIsa::Avx512Vnni:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

void check_isa(KernelIsa isa, const char* what) {
  TL_CHECK(kernel_isa_supported(isa), "{}: this CPU does not support the {} kernels", what,
           kernel_isa_name(isa));
}

// ---------------------------------------------------------------------------------------------------------
// Thread splitting: units [0, n) cut into contiguous chunks (a few per thread), handed out dynamically so
// that a thread slowed down by a busy core takes fewer. Every output is computed by exactly one call of f,
// so the bits never depend on the thread count or the schedule.
template <class F>
void split_over_threads(int64_t units, bool parallel, F&& f) {
  if (!parallel || units < 2 || omp_get_max_threads() < 2 || omp_in_parallel()) {
    f(int64_t(0), units);
    return;
  }
  const int64_t chunks = std::min<int64_t>(units, 8 * int64_t(omp_get_max_threads()));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) f(units * c / chunks, units * (c + 1) / chunks);
}

// Per-thread scratch, grown on demand and kept (OpenMP threads persist), 64-byte aligned.
enum class Slot { Activations, Panel, Partial, Row, Count };
uint8_t* scratch(Slot slot, size_t bytes) {
  static thread_local std::vector<uint8_t> buffers[int(Slot::Count)];
  std::vector<uint8_t>& b = buffers[int(slot)];
  if (b.size() < bytes + 64) b.resize(bytes + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
  return b.data() + ((64 - p % 64) % 64);
}

// sum(x) of each of N tokens (N,K) into xsum (N).
void token_sums(const int8_t* x, int64_t N, int64_t K, int32_t* xsum) {
  for (int64_t n = 0; n < N; ++n) {
    const int8_t* xr = x + n * K;
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += xr[k];
    xsum[n] = s;
  }
}

// Activations for the GEMM micro-kernels: tokens in tiles of `nr`, interleaved per 16 elements:
// xpanel (ceil(N/nr), K/16, nr, 16), so the words a micro-kernel broadcasts for 4 consecutive steps (4
// elements each) of all its tokens are contiguous, and building it is a copy of 16-byte pieces (no
// transposition). Missing tokens of the last tile are zero.
void build_activation_panel(const int8_t* x, int64_t N, int64_t K, int64_t nr, uint8_t* xpanel) {
  const int64_t tiles = (N + nr - 1) / nr, pieces = K / 16;
  for (int64_t tile = 0; tile < tiles; ++tile) {
    uint8_t* dst = xpanel + tile * K * nr;
    for (int64_t t = 0; t < nr; ++t) {
      const int64_t n = tile * nr + t;
      for (int64_t q = 0; q < pieces; ++q) {
        uint8_t* d = dst + (q * nr + t) * 16;
        if (n < N)
          std::memcpy(d, x + n * K + 16 * q, 16);
        else
          std::memset(d, 0, 16);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Generic kernels (plain C++; the compiler may vectorize them for the baseline ISA).

// One packed row (K/4 bytes) -> K weights in {-1,0,1}; loops the compiler can vectorize.
void decode_row(const uint8_t* packed, int64_t K, int8_t* weights) {
  for (int64_t b = 0; b < K / kBlock; ++b)
    for (int g = 0; g < 4; ++g) {
      const uint8_t* src = packed + b * kBlockBytes;
      int8_t* dst = weights + b * kBlock + 32 * g;
      for (int p = 0; p < 32; ++p) {
        const int code = (src[p] >> i2s_shift(g)) & 3;
        dst[p] = int8_t(code == 3 ? 0 : code - 1);
      }
    }
}

// Rows [m0, m1) of W, decoded kGenericRows at a time (so each token's activations are read once per
// block of rows), multiplied by every token.
void ternary_rows_generic(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t K,
                          int64_t m0, int64_t m1) {
  constexpr int64_t kGenericRows = 8;
  int8_t* rows = reinterpret_cast<int8_t*>(scratch(Slot::Row, size_t(kGenericRows * K)));
  for (int64_t r0 = m0; r0 < m1; r0 += kGenericRows) {
    const int64_t count = std::min(kGenericRows, m1 - r0);
    for (int64_t r = 0; r < count; ++r) decode_row(w + (r0 + r) * (K / 4), K, rows + r * K);
    for (int64_t n = 0; n < N; ++n) {
      const int8_t* xr = x + n * K;
      for (int64_t r = 0; r < count; ++r) {
        const int8_t* wr = rows + r * K;
        int32_t acc = 0;  // |acc| <= 128 K <= 2^27
        for (int64_t k = 0; k < K; ++k) acc += int32_t(wr[k]) * xr[k];
        out[n * ldo + r0 + r] = acc;
      }
    }
  }
}

// f16 bits -> fp32, exact and branch-free for finite values (vectorizable, unlike core/half.hpp's): the
// 15 magnitude bits shifted into fp32 position read as a float 2^-112 times the value (subnormals
// included), so one multiplication rebiases the exponent. Inf/NaN keep an all-ones exponent.
inline float f16_to_f32_fast(uint16_t h) {
  const uint32_t magnitude = uint32_t(h & 0x7fffu) << 13, sign = uint32_t(h & 0x8000u) << 16;
  float f;
  std::memcpy(&f, &magnitude, 4);
  f *= 0x1p112f;
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t special = 0u - uint32_t((h & 0x7c00u) == 0x7c00u);  // all ones for inf / NaN
  bits = (bits & ~special) | ((0x7f800000u | magnitude) & special) | sign;
  std::memcpy(&f, &bits, 4);
  return f;
}

// 8 partial sums (a fixed order the compiler can vectorize; a single fp32 sum it may not reorder).
void f16_rows_generic(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0, int64_t m1) {
  const int64_t K8 = K / 8 * 8;
  for (int64_t m = m0; m < m1; ++m) {
    const uint16_t* wr = w + m * K;
    float part[8] = {};
    for (int64_t k = 0; k < K8; k += 8)
      for (int j = 0; j < 8; ++j) part[j] += f16_to_f32_fast(wr[k + j]) * x[k + j];
    float acc = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (int64_t k = K8; k < K; ++k) acc += f16_to_f32_fast(wr[k]) * x[k];
    out[m] = acc;
  }
}

int32_t i8_dot_generic(const int8_t* a, const int8_t* b, int64_t K) {
  int32_t acc = 0;  // |acc| <= 128*128*K < 2^31 for K <= kMaxKI8
  for (int64_t k = 0; k < K; ++k) acc += int32_t(a[k]) * b[k];
  return acc;
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 kernels.

// Code 3 -> code 1 in every 2-bit field: clear a field's high bit where its low bit is set.
TL_TARGET_AVX2 inline __m256i sanitize_avx2(__m256i v) {
  const __m256i high_bits = _mm256_set1_epi8(char(0xAA));
  const __m256i low_bits_moved_up = _mm256_and_si256(_mm256_slli_epi16(v, 1), high_bits);
  return _mm256_andnot_si256(low_bits_moved_up, v);
}

TL_TARGET_AVX2 inline int32_t hsum_avx2(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// GEMV for T tokens (x natural order), rows [m0, m1), R rows per iteration.
// A block's 32 bytes shifted by 6/4/2/0 give the codes of elements 0-31/32-63/64-95/96-127, matching four
// consecutive 32-byte loads of x. maddubs(u8 code, s8 x) sums two products: |lane| <= 2*2*128 = 512, so
// a block's four results summed stay in [-2048, 2032] and 16 blocks in [-32768, 32512]: int16 accumulation
// for 16 blocks, then widened to int32 with madd(., 1).
template <int R, int T>
TL_TARGET_AVX2 void ternary_gemv_group_avx2(int32_t* out, int64_t ldo, const int8_t* x, const uint8_t* w,
                                            int64_t K, int64_t m, const int32_t* xsum) {
  const int64_t row_bytes = K / 4, blocks = K / kBlock;
  const __m256i low2 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i acc[R][T];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < blocks; b0 += 16) {
    const int64_t b1 = std::min(blocks, b0 + 16);
    __m256i acc16[R][T];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) acc16[r][t] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        if (b % 2 == 0)  // two row groups ahead, once per cache line (see the AVX-512 GEMV)
          _mm_prefetch(reinterpret_cast<const char*>(w + (m + r + 2 * R) * row_bytes + b * kBlockBytes),
                       _MM_HINT_T0);
        const __m256i v = sanitize_avx2(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (m + r) * row_bytes + b * kBlockBytes)));
        const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(v, 6), low2);
        const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), low2);
        const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 2), low2);
        const __m256i c3 = _mm256_and_si256(v, low2);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const int8_t* xb = x + t * K + b * kBlock;
          const __m256i p0 =
              _mm256_maddubs_epi16(c0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb)));
          const __m256i p1 =
              _mm256_maddubs_epi16(c1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 32)));
          const __m256i p2 =
              _mm256_maddubs_epi16(c2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 64)));
          const __m256i p3 =
              _mm256_maddubs_epi16(c3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 96)));
          acc16[r][t] = _mm256_add_epi16(
              acc16[r][t], _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3)));
        }
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
        acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(acc16[r][t], ones));
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) out[t * ldo + m + r] = hsum_avx2(acc[r][t]) - xsum[t];
}

template <int T>
TL_TARGET_AVX2 void ternary_gemv_rows_avx2(int32_t* out, int64_t ldo, const int8_t* x, const uint8_t* w,
                                           int64_t K, int64_t m0, int64_t m1, const int32_t* xsum) {
  int64_t m = m0;
  for (; m + 2 <= m1; m += 2) ternary_gemv_group_avx2<2, T>(out, ldo, x, w, K, m, xsum);
  for (; m < m1; ++m) ternary_gemv_group_avx2<1, T>(out, ldo, x, w, K, m, xsum);
}

// The GEMM (N above the GEMV's limit) unpacks kPanelRows weight rows and a chunk of K at a time into a panel
// of u8 codes (steps, kPanelRows, 4): step s holds codes 4s..4s+3 of each row, so one 32-bit word per row
// multiplies 4 consecutive activations of a token, broadcast to all lanes. Word q (0..7) of an I2_S block
// holds elements 4q..4q+3 of each of its 4 element groups (shift 6: elements 0-31, 4: 32-63, 2: 64-95,
// 0: 96-127), i.e. the block's steps 8g + q. Rows past `rows` repeat the last valid row (their outputs are
// never stored). Blocks [b0, b1) of the rows go to the panel's steps 0 .. 32 (b1 - b0) - 1.
TL_TARGET_AVX2 void build_panel_avx2(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0,
                                     int64_t b1, uint8_t* panel) {
  const int64_t row_bytes = K / 4;
  const __m256i low2 = _mm256_set1_epi8(3);
  for (int64_t r8 = 0; r8 < kPanelRows; r8 += 8) {
    int32_t offsets[8];  // of rows r8 .. r8+7 from the first one
    const int64_t first = std::min(r8, rows - 1);
    for (int64_t j = 0; j < 8; ++j) offsets[j] = int32_t((std::min(r8 + j, rows - 1) - first) * row_bytes);
    const __m256i row_offsets = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(offsets));
    const uint8_t* base = w + (m0 + first) * row_bytes;
    for (int64_t b = b0; b < b1; ++b) {
#pragma GCC unroll 8
      for (int64_t q = 0; q < 8; ++q) {
        const __m256i v = sanitize_avx2(_mm256_i32gather_epi32(
            reinterpret_cast<const int*>(base + b * kBlockBytes + 4 * q), row_offsets, 1));
        uint8_t* dst = panel + ((32 * (b - b0) + q) * kPanelRows + r8) * 4;
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8 * g * kPanelRows * 4),
                              _mm256_and_si256(_mm256_srli_epi32(v, i2s_shift(g)), low2));
      }
    }
  }
}

constexpr int64_t kTokensAvx2 = 5;  // tokens per AVX2 micro-kernel tile: 10 of the 16 ymm accumulate

// 16 rows (one half of a panel: panel and partial point at the half) x NT tokens over `steps` <= 64
// steps. Per step, one 32-byte panel load holds 8 rows x 4 codes; maddubs with the token's broadcast 4
// activations gives two int16 per row, each in [-512, 508], so 64 steps fit int16 ([-32768, 32512]); then
// madd(., 1) widens them into the int32 partial sums (NT, 32) (added to unless `first`).
template <int NT>
TL_TARGET_AVX2 void gemm_micro_avx2(const uint8_t* panel, const uint8_t* xtile, int64_t steps,
                                    int32_t* partial, bool first) {
  __m256i acc_lo[NT], acc_hi[NT];  // int16 sums of rows 0-7 and 8-15
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) acc_lo[t] = acc_hi[t] = _mm256_setzero_si256();
  for (int64_t s4 = 0; s4 < steps / 4; ++s4)
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {  // steps 4 s4 + u; their activations: 16-byte pieces per token
      const uint8_t* p = panel + (4 * s4 + u) * kPanelRows * 4;
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
      const uint8_t* xs = xtile + s4 * kTokensAvx2 * 16 + 4 * u;
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) {
        // acc += maddubs(w, broadcast 4 activations) for both row halves; asm keeps GCC from hoisting all
        // the broadcasts and spilling accumulators (AVX2 has only 16 vector registers).
        __m256i xb, product;
        __asm__(
            "vpbroadcastd %[x], %[b]\n\t"
            "vpmaddubsw %[b], %[w0], %[p]\n\t"
            "vpaddw %[p], %[a0], %[a0]\n\t"
            "vpmaddubsw %[b], %[w1], %[p]\n\t"
            "vpaddw %[p], %[a1], %[a1]"
            : [a0] "+v"(acc_lo[t]), [a1] "+v"(acc_hi[t]), [b] "=&v"(xb), [p] "=&v"(product)
            : [w0] "v"(w0), [w1] "v"(w1), [x] "m"(*reinterpret_cast<const uint32_t*>(xs + 16 * t)));
      }
    }
  const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) {
    __m256i* dst = reinterpret_cast<__m256i*>(partial + 32 * t);
    const __m256i lo = _mm256_madd_epi16(acc_lo[t], ones), hi = _mm256_madd_epi16(acc_hi[t], ones);
    _mm256_storeu_si256(dst, first ? lo : _mm256_add_epi32(_mm256_loadu_si256(dst), lo));
    _mm256_storeu_si256(dst + 1, first ? hi : _mm256_add_epi32(_mm256_loadu_si256(dst + 1), hi));
  }
}

// out (nt tokens, ldo) columns 0..rows-1 = partial (nt, 32) - sum(x).
TL_TARGET_AVX2 void store_tile_avx2(int nt, const int32_t* partial, const int32_t* xsum, int32_t* out,
                                    int64_t ldo, int64_t rows) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i masks[4];
  for (int v = 0; v < 4; ++v)
    masks[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(std::min<int64_t>(rows, 32) - 8 * v)), lane);
  for (int t = 0; t < nt; ++t) {
    const __m256i sum = _mm256_set1_epi32(xsum[t]);
    for (int v = 0; v < 4; ++v)
      _mm256_maskstore_epi32(
          out + t * ldo + 8 * v, masks[v],
          _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(partial + 32 * t + 8 * v)),
                           sum));
  }
}

// One panel tile (both 16-row halves) x nt tokens, in rounds of at most 64 steps (the int16 bound).
TL_TARGET_AVX2 void gemm_tile_avx2(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps,
                                   int32_t* partial, bool first, bool last, const int32_t* xsum, int32_t* out,
                                   int64_t ldo, int64_t rows) {
  for (int64_t s0 = 0; s0 < steps; s0 += 64) {
    const int64_t n = std::min<int64_t>(64, steps - s0);
    const bool round_first = first && s0 == 0;
    const uint8_t* x = xtile + s0 * kTokensAvx2 * 4;
    for (int64_t half = 0; half < 2; ++half) {
      const uint8_t* p = panel + s0 * kPanelRows * 4 + half * 64;
      int32_t* part = partial + half * 16;
      switch (nt) {
        case 1:
          gemm_micro_avx2<1>(p, x, n, part, round_first);
          break;
        case 2:
          gemm_micro_avx2<2>(p, x, n, part, round_first);
          break;
        case 3:
          gemm_micro_avx2<3>(p, x, n, part, round_first);
          break;
        case 4:
          gemm_micro_avx2<4>(p, x, n, part, round_first);
          break;
        default:
          gemm_micro_avx2<5>(p, x, n, part, round_first);
          break;
      }
    }
  }
  if (last) store_tile_avx2(nt, partial, xsum, out, ldo, rows);
}

struct Avx2Gemm {
  static constexpr int64_t kTokens = kTokensAvx2;
  static void build_panel(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0, int64_t b1,
                          uint8_t* panel) {
    build_panel_avx2(w, K, m0, rows, b0, b1, panel);
  }
  static void tile(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps, int32_t* partial,
                   bool first, bool last, const int32_t* xsum, int32_t* out, int64_t ldo, int64_t rows) {
    gemm_tile_avx2(nt, panel, xtile, steps, partial, first, last, xsum, out, ldo, rows);
  }
};

TL_TARGET_AVX2 inline float hsum_ps_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int R>
TL_TARGET_AVX2 void f16_group_avx2(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m) {
  const int64_t K8 = K / 8 * 8;
  __m256 acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K8; k += 8) {
    const __m256 xv = _mm256_loadu_ps(x + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (k % 32 == 0) _mm_prefetch(reinterpret_cast<const char*>(w + (m + r + 2 * R) * K + k), _MM_HINT_T0);
      const __m256 wv =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (m + r) * K + k)));
      acc[r] = _mm256_fmadd_ps(wv, xv, acc[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float sum = hsum_ps_avx2(acc[r]);
    for (int64_t k = K8; k < K; ++k) sum += f16_to_f32(w[(m + r) * K + k]) * x[k];
    out[m + r] = sum;
  }
}

TL_TARGET_AVX2 void f16_rows_avx2(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0,
                                  int64_t m1) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) f16_group_avx2<4>(out, w, K, x, m);
  for (; m < m1; ++m) f16_group_avx2<1>(out, w, K, x, m);
}

// x16: xq widened to int16. madd of int16 pairs: |w0 x0 + w1 x1| <= 2*128*128 = 32768, exact in int32.
template <int R>
TL_TARGET_AVX2 void i8_group_avx2(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                  const int16_t* x16, int64_t m) {
  const int64_t K16 = K / 16 * 16;
  __m256i acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
  for (int64_t k = 0; k < K16; k += 16) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x16 + k));
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (k % 64 == 0) _mm_prefetch(reinterpret_cast<const char*>(w + (m + r + 2 * R) * K + k), _MM_HINT_T0);
      const __m256i wv =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (m + r) * K + k)));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(wv, xv));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    dots[r] = hsum_avx2(acc[r]) + i8_dot_generic(w + (m + r) * K + K16, xq + K16, K - K16);
}

// Rows [m0, m1) into dots[0 .. m1-m0).
TL_TARGET_AVX2 void i8_rows_avx2(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                 const int16_t* x16, int64_t m0, int64_t m1) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) i8_group_avx2<4>(dots + (m - m0), w, K, xq, x16, m);
  for (; m < m1; ++m) i8_group_avx2<1>(dots + (m - m0), w, K, xq, x16, m);
}

// ---------------------------------------------------------------------------------------------------------
// AVX-512 VNNI kernels.

// acc += dpbusd(u8 a, s8 b). Inline asm because GCC 12 wraps the intrinsic in register copies (and, with
// many accumulators, stack stores) on every call, which costs more front-end slots than the dpbusd itself.
TL_TARGET_AVX512 inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "vm"(b));
}
// Code 3 -> code 1, as sanitize_avx2: v & ~((v << 1) & 0xAA..) in one ternary logic op (a & ~(b & c)).
TL_TARGET_AVX512 inline __m512i sanitize_avx512(__m512i v) {
  return _mm512_ternarylogic_epi32(v, _mm512_slli_epi16(v, 1), _mm512_set1_epi8(char(0xAA)), 0x70);
}

// GEMV activations, permuted once per call so that codes unpacked from 64 packed bytes (two blocks)
// multiply x without shuffles: for each pair of blocks (256 elements) and shift group g, 64 bytes =
// x[256p + 32g .. +31] then x[256p + 128 + 32g .. +31]. A last odd block stays in natural order.
void permute_gemv_activations(const int8_t* x, int64_t K, int8_t* xp) {
  const int64_t pairs = K / 256;
  for (int64_t p = 0; p < pairs; ++p)
    for (int64_t g = 0; g < 4; ++g) {
      std::memcpy(xp + 256 * p + 64 * g, x + 256 * p + 32 * g, 32);
      std::memcpy(xp + 256 * p + 64 * g + 32, x + 256 * p + 128 + 32 * g, 32);
    }
  std::memcpy(xp + 256 * pairs, x + 256 * pairs, size_t(K - 256 * pairs));
}

// The 16-lane sums of a, b, c, d: a transpose-and-add tree (13 instructions instead of 4 x 8).
TL_TARGET_AVX512 inline __m128i reduce4_avx512(__m512i a, __m512i b, __m512i c, __m512i d) {
  // Per 128-bit chunk: ab = (a0+a2, b0+b2, a1+a3, b1+b3), cd likewise, then (a, b, c, d) partial sums.
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i half = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
}

// GEMV for T tokens (xp permuted as above, token stride K), R rows starting at m. Per 64 bytes of a row:
// sanitize, 4 shift/and unpacks shared by the T tokens, then one dpbusd per token and group (exact int32;
// |acc| <= 256 K). R x T accumulators of 16 partial sums each, reduced at the end.
template <int R, int T>
TL_TARGET_AVX512 void ternary_gemv_group_avx512(int32_t* out, int64_t ldo, const int8_t* xp, const uint8_t* w,
                                                int64_t K, int64_t m, const int32_t* xsum) {
  const int64_t row_bytes = K / 4, pairs = K / 256;
  const __m512i low2 = _mm512_set1_epi8(3);
  __m512i acc[R * T];  // (row, token) at r * T + t
#pragma GCC unroll 32
  for (int i = 0; i < R * T; ++i) acc[i] = _mm512_setzero_si512();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i c[R][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      // Prefetch two row groups ahead at the same offset (the hardware prefetchers alone leave this
      // loop waiting on loads; a prefetch never faults, even past the end of W).
      _mm_prefetch(reinterpret_cast<const char*>(w + (m + r + 2 * R) * row_bytes + 64 * p), _MM_HINT_T0);
      const __m512i v = sanitize_avx512(_mm512_loadu_si512(w + (m + r) * row_bytes + 64 * p));
      c[r][0] = _mm512_and_si512(_mm512_srli_epi16(v, 6), low2);
      c[r][1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low2);
      c[r][2] = _mm512_and_si512(_mm512_srli_epi16(v, 2), low2);
      c[r][3] = _mm512_and_si512(v, low2);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g)
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512i xv = _mm512_loadu_si512(xp + t * K + 256 * p + 64 * g);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) dpbusd(acc[r * T + t], c[r][g], xv);
      }
  }
  if (K % 256) {  // one block left: 32 bytes, codes in the low half, x in natural order
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512i v = sanitize_avx512(_mm512_zextsi256_si512(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (m + r) * row_bytes + 64 * pairs))));
      const __m512i cg[4] = {_mm512_and_si512(_mm512_srli_epi16(v, 6), low2),
                             _mm512_and_si512(_mm512_srli_epi16(v, 4), low2),
                             _mm512_and_si512(_mm512_srli_epi16(v, 2), low2), _mm512_and_si512(v, low2)};
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g)
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t)
          dpbusd(acc[r * T + t], cg[g],
                 _mm512_zextsi256_si512(_mm256_loadu_si256(
                     reinterpret_cast<const __m256i*>(xp + t * K + 256 * pairs + 32 * g))));
    }
  }
  int32_t sums[R * T];
  int i = 0;
#pragma GCC unroll 8
  for (; i + 4 <= R * T; i += 4)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(sums + i),
                     reduce4_avx512(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
#pragma GCC unroll 4
  for (; i < R * T; ++i) sums[i] = _mm512_reduce_add_epi32(acc[i]);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) out[t * ldo + m + r] = sums[r * T + t] - xsum[t];
}

// Rows [m0, m1) for T tokens: 4 rows per call up to 3 tokens, 2 rows from 4 tokens (register budget).
template <int T>
TL_TARGET_AVX512 void ternary_gemv_rows_avx512(int32_t* out, int64_t ldo, const int8_t* xp, const uint8_t* w,
                                               int64_t K, int64_t m0, int64_t m1, const int32_t* xsum) {
  constexpr int R = T <= 3 ? 4 : 2;
  int64_t m = m0;
  for (; m + R <= m1; m += R) ternary_gemv_group_avx512<R, T>(out, ldo, xp, w, K, m, xsum);
  for (; m < m1; ++m) ternary_gemv_group_avx512<1, T>(out, ldo, xp, w, K, m, xsum);
}

// Bytes ahead of the load that the one-token GEMV prefetches (measured: 4 KiB beat 2 KiB; 8 KiB was even).
constexpr int64_t kSeqPrefetchBytes = 4096;

// One token (decoding), rows [m0, m1) one at a time. Rows are contiguous, so a thread's loads form one
// sequential stream, prefetched kSeqPrefetchBytes ahead; the 4-row lockstep of ternary_gemv_group_avx512
// made 4 streams, and streamed about 10% slower from memory here. x loads are not shared between rows, but
// they hit L1. Two accumulators halve the chain of dependent dpbusd. Sanitize = false skips the code-3 step
// for bytes known to hold none (PackedCodes::Valid).
template <bool Sanitize>
TL_TARGET_AVX512 void ternary_gemv_one_token_avx512(int32_t* out, const int8_t* xp, const uint8_t* w,
                                                    int64_t K, int64_t m0, int64_t m1, int32_t xsum) {
  const int64_t row_bytes = K / 4, pairs = K / 256;
  const __m512i low2 = _mm512_set1_epi8(3);
  // The loop prefetches kSeqPrefetchBytes ahead: request the range's first bytes now, all at once, instead
  // of waiting for each (a decoded token starts about 2000 ranges).
  const uint8_t* first = w + m0 * row_bytes;
  const int64_t lead = std::min(kSeqPrefetchBytes, (m1 - m0) * row_bytes);
  for (int64_t i = 0; i < lead; i += 64) _mm_prefetch(reinterpret_cast<const char*>(first + i), _MM_HINT_T0);
  for (int64_t m = m0; m < m1; ++m) {
    const uint8_t* row = w + m * row_bytes;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    for (int64_t p = 0; p < pairs; ++p) {
      _mm_prefetch(reinterpret_cast<const char*>(row + 64 * p + kSeqPrefetchBytes), _MM_HINT_T0);
      const __m512i raw = _mm512_loadu_si512(row + 64 * p);
      const __m512i v = Sanitize ? sanitize_avx512(raw) : raw;
      const int8_t* x = xp + 256 * p;
      dpbusd(a0, _mm512_and_si512(_mm512_srli_epi16(v, 6), low2), _mm512_loadu_si512(x));
      dpbusd(a1, _mm512_and_si512(_mm512_srli_epi16(v, 4), low2), _mm512_loadu_si512(x + 64));
      dpbusd(a0, _mm512_and_si512(_mm512_srli_epi16(v, 2), low2), _mm512_loadu_si512(x + 128));
      dpbusd(a1, _mm512_and_si512(v, low2), _mm512_loadu_si512(x + 192));
    }
    if (K % 256) {  // one block left: 32 bytes, codes in the low half, x in natural order
      const __m512i raw =
          _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 64 * pairs)));
      const __m512i v = Sanitize ? sanitize_avx512(raw) : raw;
      const int8_t* x = xp + 256 * pairs;
      __m512i xg[4];  // (a lambda would not inherit the target attribute)
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g)
        xg[g] = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * g)));
      dpbusd(a0, _mm512_and_si512(_mm512_srli_epi16(v, 6), low2), xg[0]);
      dpbusd(a1, _mm512_and_si512(_mm512_srli_epi16(v, 4), low2), xg[1]);
      dpbusd(a0, _mm512_and_si512(_mm512_srli_epi16(v, 2), low2), xg[2]);
      dpbusd(a1, _mm512_and_si512(v, low2), xg[3]);
    }
    out[m] = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)) - xsum;
  }
}

constexpr int64_t kGemvChunkAvx512 = 8;  // tokens per AVX-512 GEMV pass over the weights

TL_TARGET_AVX512 void ternary_gemv_avx512(int32_t* out, int64_t ldo, const int8_t* xp, int64_t N,
                                          const uint8_t* w, int64_t K, int64_t m0, int64_t m1,
                                          const int32_t* xsum, bool valid_codes) {
  if (N == 1) {  // decoding: the hot path
    if (valid_codes)
      ternary_gemv_one_token_avx512<false>(out, xp, w, K, m0, m1, xsum[0]);
    else
      ternary_gemv_one_token_avx512<true>(out, xp, w, K, m0, m1, xsum[0]);
    return;
  }
  for (int64_t n0 = 0; n0 < N; n0 += kGemvChunkAvx512) {
    const int64_t T = std::min(kGemvChunkAvx512, N - n0);
    int32_t* o = out + n0 * ldo;
    const int8_t* x = xp + n0 * K;
    const int32_t* s = xsum + n0;
    switch (T) {
      case 1:
        ternary_gemv_rows_avx512<1>(o, ldo, x, w, K, m0, m1, s);
        break;
      case 2:
        ternary_gemv_rows_avx512<2>(o, ldo, x, w, K, m0, m1, s);
        break;
      case 3:
        ternary_gemv_rows_avx512<3>(o, ldo, x, w, K, m0, m1, s);
        break;
      case 4:
        ternary_gemv_rows_avx512<4>(o, ldo, x, w, K, m0, m1, s);
        break;
      case 5:
        ternary_gemv_rows_avx512<5>(o, ldo, x, w, K, m0, m1, s);
        break;
      case 6:
        ternary_gemv_rows_avx512<6>(o, ldo, x, w, K, m0, m1, s);
        break;
      case 7:
        ternary_gemv_rows_avx512<7>(o, ldo, x, w, K, m0, m1, s);
        break;
      default:
        ternary_gemv_rows_avx512<8>(o, ldo, x, w, K, m0, m1, s);
        break;
    }
  }
}

// As build_panel_avx2, for blocks [b0, b1) of the rows, into panel (32 (b1-b0), kPanelRows, 4). Rows past
// `rows` repeat the last valid row (their outputs are never stored). For 16 rows at a time, the 32-byte
// block of each row is loaded and the 16 x 8 matrix of 32-bit words transposed in registers, so that
// vector q holds word q of all 16 rows; then each word is unpacked into its 4 element groups.
TL_TARGET_AVX512 void build_panel_avx512(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0,
                                         int64_t b1, uint8_t* panel) {
  const int64_t row_bytes = K / 4;
  const __m512i low2 = _mm512_set1_epi8(3);
  // 64-bit lane picks merging two half-transposed vectors a, b: 128-bit chunks (a0 b0 a2 b2), (a1 b1 a3 b3).
  const __m512i pick_even = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
  const __m512i pick_odd = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  for (int64_t r16 = 0; r16 < kPanelRows; r16 += 16) {
    const uint8_t* row_ptr[16];
    for (int64_t j = 0; j < 16; ++j) row_ptr[j] = w + (m0 + std::min(r16 + j, rows - 1)) * row_bytes;
    for (int64_t b = b0; b < b1; ++b) {
      // r[i]: row i in the low 256 bits, row i + 8 in the high 256 bits.
      __m512i r[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i)
        r[i] = _mm512_inserti64x4(
            _mm512_castsi256_si512(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_ptr[i] + b * kBlockBytes))),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_ptr[i + 8] + b * kBlockBytes)), 1);
      // 4x4 word transposes inside each 128-bit chunk ...
      const __m512i t0 = _mm512_unpacklo_epi32(r[0], r[1]), t1 = _mm512_unpackhi_epi32(r[0], r[1]);
      const __m512i t2 = _mm512_unpacklo_epi32(r[2], r[3]), t3 = _mm512_unpackhi_epi32(r[2], r[3]);
      const __m512i t4 = _mm512_unpacklo_epi32(r[4], r[5]), t5 = _mm512_unpackhi_epi32(r[4], r[5]);
      const __m512i t6 = _mm512_unpacklo_epi32(r[6], r[7]), t7 = _mm512_unpackhi_epi32(r[6], r[7]);
      const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
      const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
      const __m512i u4 = _mm512_unpacklo_epi64(t4, t6), u5 = _mm512_unpackhi_epi64(t4, t6);
      const __m512i u6 = _mm512_unpacklo_epi64(t5, t7), u7 = _mm512_unpackhi_epi64(t5, t7);
      // ... then the chunks gathered in row order: word q of rows 0-3, 4-7, 8-11, 12-15.
      const __m512i words[8] = {
          _mm512_permutex2var_epi64(u0, pick_even, u4), _mm512_permutex2var_epi64(u1, pick_even, u5),
          _mm512_permutex2var_epi64(u2, pick_even, u6), _mm512_permutex2var_epi64(u3, pick_even, u7),
          _mm512_permutex2var_epi64(u0, pick_odd, u4),  _mm512_permutex2var_epi64(u1, pick_odd, u5),
          _mm512_permutex2var_epi64(u2, pick_odd, u6),  _mm512_permutex2var_epi64(u3, pick_odd, u7)};
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) {
        const __m512i v = sanitize_avx512(words[q]);
        uint8_t* dst = panel + ((32 * (b - b0) + q) * kPanelRows + r16) * 4;
        _mm512_storeu_si512(dst, _mm512_and_si512(_mm512_srli_epi32(v, 6), low2));
        _mm512_storeu_si512(dst + 8 * kPanelRows * 4, _mm512_and_si512(_mm512_srli_epi32(v, 4), low2));
        _mm512_storeu_si512(dst + 16 * kPanelRows * 4, _mm512_and_si512(_mm512_srli_epi32(v, 2), low2));
        _mm512_storeu_si512(dst + 24 * kPanelRows * 4, _mm512_and_si512(v, low2));
      }
    }
  }
}

constexpr int64_t kTokensAvx512 = 14;  // tokens per AVX-512 micro-kernel tile: 28 accumulators

// Accumulators of one micro-kernel tile over `steps` steps of a panel chunk: per step two 64-byte panel
// loads (16 rows x 4 codes each) and, per token, its 4 activations broadcast to every lane and two dpbusd
// (exact int32). partial (NT, 32) holds the sums of the previous K chunks (read unless `first`) and gets
// the new ones, unless `last`: then out (NT tokens, ldo) columns 0..rows-1 get the sums minus sum(x),
// turning codes into weights. Inline asm per token: with the intrinsics GCC 12 adds register copies, and
// an embedded-broadcast memory operand measured slower than a separate vpbroadcastd.
template <int NT>
TL_TARGET_AVX512 void gemm_micro_avx512(const uint8_t* panel, const uint8_t* xtile, int64_t steps,
                                        int32_t* partial, bool first, bool last, const int32_t* xsum,
                                        int32_t* out, int64_t ldo, int64_t rows) {
  __m512i acc[NT][2];
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) {
    acc[t][0] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(partial + 32 * t);
    acc[t][1] = first ? _mm512_setzero_si512() : _mm512_loadu_si512(partial + 32 * t + 16);
  }
  for (int64_t s4 = 0; s4 < steps / 4; ++s4) {
    const uint8_t* xq = xtile + s4 * kTokensAvx512 * 16;  // activations of steps 4 s4 .. 4 s4 + 3
    _mm_prefetch(reinterpret_cast<const char*>(xq + 1024), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(xq + 1024 + 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(xq + 1024 + 128), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(xq + 1024 + 192), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const uint8_t* p = panel + (4 * s4 + u) * kPanelRows * 4;
      const __m512i w0 = _mm512_loadu_si512(p);
      const __m512i w1 = _mm512_loadu_si512(p + 64);
      const uint8_t* xs = xq + 4 * u;
#pragma GCC unroll 16
      for (int t = 0; t < NT; ++t) {
        __m512i xb;
        __asm__(
            "vpbroadcastd %[x], %[b]\n\t"
            "vpdpbusd %[b], %[w0], %[a0]\n\t"
            "vpdpbusd %[b], %[w1], %[a1]"
            : [a0] "+v"(acc[t][0]), [a1] "+v"(acc[t][1]), [b] "=&v"(xb)
            : [w0] "v"(w0), [w1] "v"(w1), [x] "m"(*reinterpret_cast<const uint32_t*>(xs + 16 * t)));
      }
    }
  }
  if (!last) {
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
      _mm512_storeu_si512(partial + 32 * t, acc[t][0]);
      _mm512_storeu_si512(partial + 32 * t + 16, acc[t][1]);
    }
    return;
  }
  const __mmask16 mask0 = __mmask16(rows >= 16 ? 0xffff : (1u << rows) - 1);
  const __mmask16 mask1 = __mmask16(rows >= 32 ? 0xffff : rows <= 16 ? 0 : (1u << (rows - 16)) - 1);
#pragma GCC unroll 16
  for (int t = 0; t < NT; ++t) {
    const __m512i sum = _mm512_set1_epi32(xsum[t]);
    _mm512_mask_storeu_epi32(out + t * ldo, mask0, _mm512_sub_epi32(acc[t][0], sum));
    _mm512_mask_storeu_epi32(out + t * ldo + 16, mask1, _mm512_sub_epi32(acc[t][1], sum));
  }
}

TL_TARGET_AVX512 void gemm_tile_avx512(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps,
                                       int32_t* partial, bool first, bool last, const int32_t* xsum,
                                       int32_t* out, int64_t ldo, int64_t rows) {
#define TL_MICRO_CASE(n) \
  case n:                \
    return gemm_micro_avx512<n>(panel, xtile, steps, partial, first, last, xsum, out, ldo, rows);
  switch (nt) {
    TL_MICRO_CASE(1)
    TL_MICRO_CASE(2)
    TL_MICRO_CASE(3)
    TL_MICRO_CASE(4)
    TL_MICRO_CASE(5)
    TL_MICRO_CASE(6)
    TL_MICRO_CASE(7)
    TL_MICRO_CASE(8)
    TL_MICRO_CASE(9)
    TL_MICRO_CASE(10)
    TL_MICRO_CASE(11)
    TL_MICRO_CASE(12)
    TL_MICRO_CASE(13)
    default:
      return gemm_micro_avx512<14>(panel, xtile, steps, partial, first, last, xsum, out, ldo, rows);
  }
#undef TL_MICRO_CASE
}

struct Avx512Gemm {
  static constexpr int64_t kTokens = kTokensAvx512;
  static void build_panel(const uint8_t* w, int64_t K, int64_t m0, int64_t rows, int64_t b0, int64_t b1,
                          uint8_t* panel) {
    build_panel_avx512(w, K, m0, rows, b0, b1, panel);
  }
  static void tile(int nt, const uint8_t* panel, const uint8_t* xtile, int64_t steps, int32_t* partial,
                   bool first, bool last, const int32_t* xsum, int32_t* out, int64_t ldo, int64_t rows) {
    gemm_tile_avx512(nt, panel, xtile, steps, partial, first, last, xsum, out, ldo, rows);
  }
};

// R rows of the f16 GEMV from row m; 4 independent FMA chains per row group. Prefetches two row groups
// ahead (the weights stream from memory once).
template <int R>
TL_TARGET_AVX512 void f16_group_avx512(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m) {
  const int64_t K16 = K / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (K - K16)) - 1);
  __m512 acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K16; k += 16) {
    const __m512 xv = _mm512_loadu_ps(x + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (k % 32 == 0) _mm_prefetch(reinterpret_cast<const char*>(w + (m + r + 2 * R) * K + k), _MM_HINT_T0);
      const __m512 wv =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (m + r) * K + k)));
      acc[r] = _mm512_fmadd_ps(wv, xv, acc[r]);
    }
  }
  if (tail) {
    const __m512 xv = _mm512_maskz_loadu_ps(tail, x + K16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, w + (m + r) * K + K16));
      acc[r] = _mm512_fmadd_ps(wv, xv, acc[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) out[m + r] = _mm512_reduce_add_ps(acc[r]);
}

TL_TARGET_AVX512 void f16_rows_avx512(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0,
                                      int64_t m1) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) f16_group_avx512<4>(out, w, K, x, m);
  for (; m < m1; ++m) f16_group_avx512<1>(out, w, K, x, m);
}

// dpbusd wants one unsigned operand: (w + 128) as u8 is w ^ 0x80, so d = dpbusd(w ^ 0x80, x) - 128 sum(x).
// The int32 lanes may wrap (|sum (w+128) x| <= 255*128*K), but wrapping arithmetic is exact modulo 2^32
// and the true d fits int32 (K <= kMaxKI8), so d comes out exact.
template <int R>
TL_TARGET_AVX512 void i8_group_avx512(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                      uint32_t correction, int64_t m) {
  const int64_t K64 = K / 64 * 64;
  const __mmask64 tail = K - K64 == 0 ? __mmask64(0) : (__mmask64(1) << (K - K64)) - 1;
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  __m512i acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
  for (int64_t k = 0; k < K64; k += 64) {
    const __m512i xv = _mm512_loadu_si512(xq + k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (m + r + 2 * R) * K + k), _MM_HINT_T0);
      dpbusd(acc[r], _mm512_xor_si512(_mm512_loadu_si512(w + (m + r) * K + k), flip), xv);
    }
  }
  if (tail) {  // zero-filled lanes: (0 ^ 0x80) * 0 = 0
    const __m512i xv = _mm512_maskz_loadu_epi8(tail, xq + K64);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      dpbusd(acc[r], _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, w + (m + r) * K + K64), flip), xv);
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) dots[r] = int32_t(uint32_t(_mm512_reduce_add_epi32(acc[r])) - correction);
}

TL_TARGET_AVX512 void i8_rows_avx512(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                     int32_t xsum, int64_t m0, int64_t m1) {
  const uint32_t correction = uint32_t(xsum) * 128u;
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) i8_group_avx512<4>(dots + (m - m0), w, K, xq, correction, m);
  for (; m < m1; ++m) i8_group_avx512<1>(dots + (m - m0), w, K, xq, correction, m);
}

// max |x| and the int8 codes of model/quant.cpp's quantizer: max is exact in any order (and _mm512_max_ps
// with x first skips NaNs, as std::max(amax, x) does); cvtps_epi32 rounds half to even in the default
// rounding mode, as the scalar (v + 1.5*2^23) - 1.5*2^23 does, and the saturating narrowing is the clamp.
TL_TARGET_AVX512 float abs_max_avx512(const float* x, int64_t n) {
  __m512 m = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m);
  if (i < n)
    m = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(__mmask16((1u << (n - i)) - 1), x + i)), m);
  return _mm512_reduce_max_ps(m);
}

TL_TARGET_AVX512 void quantize_codes_avx512(const float* x, int64_t n, float s, int8_t* q) {
  const __m512 sv = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                     _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), sv))));
  if (i < n) {
    const __mmask16 tail = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_cvtsepi32_storeu_epi8(
        q + i, tail, _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + i), sv)));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Drivers.

void check_sizes(const char* what, int64_t M, int64_t K) {
  TL_CHECK(M >= 0 && K >= 0, "{}: negative size (M = {}, K = {})", what, M, K);
}

void ternary_gemv(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t M,
                  int64_t K, KernelIsa isa, const int32_t* xsum, bool parallel, bool valid_codes) {
  const int8_t* xs = x;
  if (isa == KernelIsa::Avx512Vnni) {  // permuted copy of the activations, shared by all threads
    int8_t* xp = reinterpret_cast<int8_t*>(scratch(Slot::Activations, size_t(N * K)));
    for (int64_t n = 0; n < N; ++n) permute_gemv_activations(x + n * K, K, xp + n * K);
    xs = xp;
  }
  // Units of 4 rows, so threads split on whole row groups.
  const int64_t groups = (M + 3) / 4;
  split_over_threads(groups, parallel, [&](int64_t g0, int64_t g1) {
    const int64_t m0 = g0 * 4, m1 = std::min(M, g1 * 4);
    if (isa == KernelIsa::Avx512Vnni)
      ternary_gemv_avx512(out, ldo, xs, N, w, K, m0, m1, xsum, valid_codes);
    else if (N == 1)
      ternary_gemv_rows_avx2<1>(out, ldo, xs, w, K, m0, m1, xsum);
    else if (N == 2)
      ternary_gemv_rows_avx2<2>(out, ldo, xs, w, K, m0, m1, xsum);
    else
      ternary_gemv_rows_avx2<3>(out, ldo, xs, w, K, m0, m1, xsum);
  });
}

// Cache blocking of the GEMM (per thread): K in chunks of kChunkBlocks blocks, so that a panel chunk
// (kPanelRows x 512 codes = 16 KiB) stays in L1 while all the token tiles pass over it; panel tiles in
// groups of kGroupTiles, so that the group's partial sums (N x 128 int32, in a contiguous per-thread
// buffer: out's row stride would alias cache sets) and the activation chunk (N x 512) stay in L2 while the
// group's tiles pass over them. Each panel chunk is unpacked once per call.
constexpr int64_t kChunkBlocks = 4;
constexpr int64_t kGroupTiles = 4;

// The first kilobyte of a micro-kernel call's activations and its partial sums, requested one call ahead
// (the micro-kernel prefetches its activations further on itself).
inline void prefetch_tile_start(const uint8_t* xtile, const int32_t* partial, int64_t nr) {
  for (int64_t i = 0; i < 1024; i += 64) _mm_prefetch(reinterpret_cast<const char*>(xtile + i), _MM_HINT_T0);
  const auto* p = reinterpret_cast<const char*>(partial);
  for (int64_t i = 0; i < nr * kPanelRows * 4; i += 64) _mm_prefetch(p + i, _MM_HINT_T0);
}

// Panel tiles [t0, t1) (rows 32 t0 .. 32 t1 - 1) against all N tokens of xpanel.
template <class Kernels>
void ternary_gemm_tiles(int32_t* out, int64_t ldo, const uint8_t* xpanel, int64_t N, const uint8_t* w,
                        int64_t M, int64_t K, const int32_t* xsum, int64_t t0, int64_t t1) {
  constexpr int64_t nr = Kernels::kTokens;
  const int64_t blocks = K / kBlock, token_tiles = (N + nr - 1) / nr;
  uint8_t* panel = scratch(Slot::Panel, size_t(kChunkBlocks * kBlock * kPanelRows));
  const int64_t partial_tile = nr * kPanelRows;  // partial sums of one micro-kernel call (nr, kPanelRows)
  int32_t* partials = reinterpret_cast<int32_t*>(
      scratch(Slot::Partial, size_t(kGroupTiles * token_tiles * partial_tile) * sizeof(int32_t)));
  for (int64_t g0 = t0; g0 < t1; g0 += kGroupTiles) {
    const int64_t g1 = std::min(t1, g0 + kGroupTiles);
    for (int64_t b0 = 0; b0 < blocks; b0 += kChunkBlocks) {
      const int64_t b1 = std::min(blocks, b0 + kChunkBlocks), steps = (b1 - b0) * kBlock / 4;
      for (int64_t tile = g0; tile < g1; ++tile) {
        const int64_t m0 = tile * kPanelRows, rows = std::min(kPanelRows, M - m0);
        Kernels::build_panel(w, K, m0, rows, b0, b1, panel);
        int32_t* partial = partials + (tile - g0) * token_tiles * partial_tile;
        for (int64_t tt = 0; tt < token_tiles; ++tt) {
          const int64_t n = tt * nr;
          if (tt + 1 < token_tiles)
            prefetch_tile_start(xpanel + (n + nr) * K + b0 * kBlock * nr, partial + (tt + 1) * partial_tile,
                                nr);
          Kernels::tile(int(std::min(nr, N - n)), panel, xpanel + n * K + b0 * kBlock * nr, steps,
                        partial + tt * partial_tile, b0 == 0, b1 == blocks, xsum + n, out + n * ldo + m0, ldo,
                        rows);
        }
      }
    }
  }
}

// Both phases in one parallel region: the activation panel and token sums (split over token tiles), then,
// after a barrier, the groups of panel tiles.
template <class Kernels>
void ternary_gemm(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t M,
                  int64_t K, bool parallel) {
  constexpr int64_t nr = Kernels::kTokens;
  const int64_t token_tiles = (N + nr - 1) / nr, tiles = (M + kPanelRows - 1) / kPanelRows;
  uint8_t* xpanel = scratch(Slot::Activations, size_t(token_tiles * nr * K));
  static thread_local std::vector<int32_t> xsum_buffer;
  xsum_buffer.resize(size_t(N));
  int32_t* xsum = xsum_buffer.data();
  auto run = [&](int64_t id, int64_t threads) {
    const int64_t a0 = token_tiles * id / threads, a1 = token_tiles * (id + 1) / threads;
    const int64_t n0 = std::min(N, a0 * nr), n1 = std::min(N, a1 * nr);
    build_activation_panel(x + n0 * K, n1 - n0, K, nr, xpanel + n0 * K);
    token_sums(x + n0 * K, n1 - n0, K, xsum + n0);
    if (threads == 1) {  // the serial path (it may run inside a caller's parallel region: no barrier)
      ternary_gemm_tiles<Kernels>(out, ldo, xpanel, N, w, M, K, xsum, 0, tiles);
      return;
    }
#pragma omp barrier
    // Groups of tiles handed out dynamically: a thread slowed down (a busy core) gets fewer. Each group
    // is computed whole by one thread, so the bits never depend on the schedule.
    const int64_t groups = (tiles + kGroupTiles - 1) / kGroupTiles;
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t g = 0; g < groups; ++g)
      ternary_gemm_tiles<Kernels>(out, ldo, xpanel, N, w, M, K, xsum, g * kGroupTiles,
                                  std::min(tiles, (g + 1) * kGroupTiles));
  };
  if (parallel && tiles > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    run(omp_get_thread_num(), omp_get_num_threads());
  } else {
    run(0, 1);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Public API.

bool kernel_isa_supported(KernelIsa isa) {
  static const bool supported[3] = {cpu_supports(KernelIsa::Generic), cpu_supports(KernelIsa::Avx2),
                                    cpu_supports(KernelIsa::Avx512Vnni)};
  const int i = int(isa);
  return i >= 0 && i < 3 && supported[i];
}

namespace {
constexpr std::array<EnumName<KernelIsa>, 3> kKernelIsas{
    {{KernelIsa::Generic, "generic"}, {KernelIsa::Avx2, "avx2"}, {KernelIsa::Avx512Vnni, "avx512vnni"}}};
}  // namespace

const char* kernel_isa_name(KernelIsa isa) {
  return name_of(kKernelIsas, isa).data();  // the table's literals are NUL-terminated
}

KernelIsa parse_kernel_isa(std::string_view name) {
  return parse_enum(kKernelIsas, name, "kernel ISA");
}

KernelIsa best_kernel_isa() {
  KernelIsa best = KernelIsa::Generic;
  for (KernelIsa isa : {KernelIsa::Avx2, KernelIsa::Avx512Vnni})
    if (kernel_isa_supported(isa)) best = isa;
  const char* forced = std::getenv("TERNLAB_ISA");
  if (forced == nullptr || *forced == '\0') return best;
  const KernelIsa want = parse_kernel_isa(forced);
  TL_CHECK(kernel_isa_supported(want), "TERNLAB_ISA={}: this CPU does not support these kernels (best: {})",
           forced, kernel_isa_name(best));
  return want;
}

void pack_i2s(const int8_t* codes, int64_t M, int64_t K, uint8_t* packed) {
  check_sizes("pack_i2s", M, K);
  TL_CHECK(K % kBlock == 0, "pack_i2s: K = {} is not a multiple of {}", K, kBlock);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < K / kBlock; ++b) {
      const int8_t* blk = codes + m * K + b * kBlock;
      const int bad = pack_i2s_block(blk, packed + m * (K / 4) + b * kBlockBytes);
      TL_CHECK(bad < 0, "pack_i2s: code {} at row {}, column {} is not in {{-1, 0, 1}}", int(blk[bad]), m,
               b * kBlock + bad);
    }
}

void unpack_i2s(const uint8_t* packed, int64_t M, int64_t K, int8_t* codes) {
  check_sizes("unpack_i2s", M, K);
  TL_CHECK(K % kBlock == 0, "unpack_i2s: K = {} is not a multiple of {}", K, kBlock);
  for (int64_t m = 0; m < M; ++m) decode_row(packed + m * (K / 4), K, codes + m * K);
}

void ternary_gemm_i32(int32_t* out, int64_t ldo, const int8_t* x, int64_t N, const uint8_t* w, int64_t M,
                      int64_t K, KernelIsa isa, PackedCodes codes) {
  TL_CHECK(N >= 0 && M >= 0 && K >= 0, "ternary_gemm_i32: negative size (N = {}, M = {}, K = {})", N, M, K);
  TL_CHECK(K % kBlock == 0, "ternary_gemm_i32: K = {} is not a multiple of {}", K, kBlock);
  TL_CHECK(K <= kMaxK, "ternary_gemm_i32: K = {} is above the supported {}", K, kMaxK);
  TL_CHECK(ldo >= M, "ternary_gemm_i32: ldo = {} is less than M = {}", ldo, M);
  check_isa(isa, "ternary_gemm_i32");
  if (N == 0 || M == 0) return;
  if (K == 0) {
    for (int64_t n = 0; n < N; ++n) std::fill(out + n * ldo, out + n * ldo + M, 0);
    return;
  }
  const bool parallel = M * K * N >= kParallelMinWork;
  if (isa == KernelIsa::Generic) {
    split_over_threads(M, parallel,
                       [&](int64_t m0, int64_t m1) { ternary_rows_generic(out, ldo, x, N, w, K, m0, m1); });
    return;
  }
  const bool avx512 = isa == KernelIsa::Avx512Vnni;
  if (N > (avx512 ? kGemvMaxTokensAvx512 : kGemvMaxTokensAvx2)) {
    if (avx512)
      ternary_gemm<Avx512Gemm>(out, ldo, x, N, w, M, K, parallel);
    else
      ternary_gemm<Avx2Gemm>(out, ldo, x, N, w, M, K, parallel);
    return;
  }
  int32_t xsum[std::max(kGemvMaxTokensAvx2, kGemvMaxTokensAvx512)];
  token_sums(x, N, K, xsum);
  ternary_gemv(out, ldo, x, N, w, M, K, isa, xsum, parallel, codes == PackedCodes::Valid);
}

TernaryGemvToken prepare_ternary_gemv_token(const int8_t* x, int64_t K, int8_t* buffer, KernelIsa isa) {
  TL_CHECK(K >= 0 && K % kBlock == 0 && K <= kMaxK,
           "prepare_ternary_gemv_token: K = {} is not a multiple of {} in [0, {}]", K, kBlock, kMaxK);
  check_isa(isa, "prepare_ternary_gemv_token");
  TernaryGemvToken t{x, K, 0, isa};
  token_sums(x, 1, K, &t.sum);
  if (isa == KernelIsa::Avx512Vnni) {
    permute_gemv_activations(x, K, buffer);
    t.x = buffer;
  }
  return t;
}

void ternary_gemv_token_rows(int32_t* out, const TernaryGemvToken& t, const uint8_t* w, int64_t m0,
                             int64_t m1, PackedCodes codes) {
  if (m1 <= m0) return;
  if (t.K == 0) {
    std::fill(out + m0, out + m1, 0);
    return;
  }
  switch (t.isa) {
    case KernelIsa::Avx512Vnni:
      if (codes == PackedCodes::Valid)
        ternary_gemv_one_token_avx512<false>(out, t.x, w, t.K, m0, m1, t.sum);
      else
        ternary_gemv_one_token_avx512<true>(out, t.x, w, t.K, m0, m1, t.sum);
      return;
    case KernelIsa::Avx2:
      return ternary_gemv_rows_avx2<1>(out, 0, t.x, w, t.K, m0, m1, &t.sum);
    case KernelIsa::Generic:
      return ternary_rows_generic(out, 0, t.x, 1, w, t.K, m0, m1);
  }
}

float quantize_activation_row_isa(const float* x, int64_t n, int8_t* q, KernelIsa isa) {
  check_sizes("quantize_activation_row_isa", 0, n);
  check_isa(isa, "quantize_activation_row_isa");
  if (isa != KernelIsa::Avx512Vnni) return quantize_activation_row(x, size_t(n), q);
  const float s = act_scale(abs_max_avx512(x, n));
  quantize_codes_avx512(x, n, s, q);
  return s;
}

void f16_gemv(float* out, const uint16_t* w, int64_t M, int64_t K, const float* x, KernelIsa isa) {
  check_sizes("f16_gemv", M, K);
  check_isa(isa, "f16_gemv");
  const bool parallel = M * K >= kParallelMinWork;
  const int64_t groups = (M + 3) / 4;
  split_over_threads(groups, parallel, [&](int64_t g0, int64_t g1) {
    const int64_t m0 = g0 * 4, m1 = std::min(M, g1 * 4);
    switch (isa) {
      case KernelIsa::Avx512Vnni:
        return f16_rows_avx512(out, w, K, x, m0, m1);
      case KernelIsa::Avx2:
        return f16_rows_avx2(out, w, K, x, m0, m1);
      case KernelIsa::Generic:
        return f16_rows_generic(out, w, K, x, m0, m1);
    }
  });
}

void i8_gemv(float* out, const int8_t* w, const float* wscale, int64_t M, int64_t K, const int8_t* xq,
             float xscale, KernelIsa isa) {
  check_sizes("i8_gemv", M, K);
  TL_CHECK(K <= kMaxKI8, "i8_gemv: K = {} is above the supported {}", K, kMaxKI8);
  check_isa(isa, "i8_gemv");
  int32_t xsum = 0;
  for (int64_t k = 0; k < K; ++k) xsum += xq[k];
  const int16_t* x16 = nullptr;
  if (isa == KernelIsa::Avx2) {
    int16_t* buf = reinterpret_cast<int16_t*>(scratch(Slot::Activations, size_t(K) * 2));
    for (int64_t k = 0; k < K; ++k) buf[k] = xq[k];
    x16 = buf;
  }
  const bool parallel = M * K >= kParallelMinWork;
  const int64_t groups = (M + 3) / 4;
  split_over_threads(groups, parallel, [&](int64_t g0, int64_t g1) {
    const int64_t m0 = g0 * 4, m1 = std::min(M, g1 * 4);
    int32_t* dots = reinterpret_cast<int32_t*>(scratch(Slot::Row, size_t(m1 - m0) * 4));  // rows m0..m1-1
    switch (isa) {
      case KernelIsa::Avx512Vnni:
        i8_rows_avx512(dots, w, K, xq, xsum, m0, m1);
        break;
      case KernelIsa::Avx2:
        i8_rows_avx2(dots, w, K, xq, x16, m0, m1);
        break;
      case KernelIsa::Generic:
        for (int64_t m = m0; m < m1; ++m) dots[m - m0] = i8_dot_generic(w + m * K, xq, K);
        break;
    }
    for (int64_t m = m0; m < m1; ++m) out[m] = float(dots[m - m0]) * wscale[m] / xscale;
  });
}

}  // namespace tl
