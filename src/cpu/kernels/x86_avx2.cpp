// AVX2 kernels (with FMA and F16C), compiled with TL_TARGET_AVX2 and called only where the CPU has them;
// see kernels.hpp.
#include "cpu/kernels/kernels.hpp"

#include <algorithm>

#include "core/half.hpp"

namespace tl::kernels_detail {
namespace {

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

}  // namespace

template <int T>
TL_TARGET_AVX2 void ternary_gemv_rows_avx2(int32_t* out, int64_t ldo, const int8_t* x, const uint8_t* w,
                                           int64_t K, int64_t m0, int64_t m1, const int32_t* xsum) {
  int64_t m = m0;
  for (; m + 2 <= m1; m += 2) ternary_gemv_group_avx2<2, T>(out, ldo, x, w, K, m, xsum);
  for (; m < m1; ++m) ternary_gemv_group_avx2<1, T>(out, ldo, x, w, K, m, xsum);
}

// The drivers' instances (ternary_kernels.cpp).
template void ternary_gemv_rows_avx2<1>(int32_t*, int64_t, const int8_t*, const uint8_t*, int64_t, int64_t,
                                        int64_t, const int32_t*);
template void ternary_gemv_rows_avx2<2>(int32_t*, int64_t, const int8_t*, const uint8_t*, int64_t, int64_t,
                                        int64_t, const int32_t*);
template void ternary_gemv_rows_avx2<3>(int32_t*, int64_t, const int8_t*, const uint8_t*, int64_t, int64_t,
                                        int64_t, const int32_t*);

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

namespace {

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

}  // namespace

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

namespace {

TL_TARGET_AVX2 inline float hsum_ps_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

TL_TARGET_AVX2 inline __m256 f16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// One row of the f16 GEMV: four independent FMA chains over 32 columns a step, then 8 at a time, then the
// tail in scalar code.
TL_TARGET_AVX2 inline float f16_row_avx2(const uint16_t* row, int64_t K, const float* x) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 = _mm256_fmadd_ps(f16x8(row + k), _mm256_loadu_ps(x + k), a0);
    a1 = _mm256_fmadd_ps(f16x8(row + k + 8), _mm256_loadu_ps(x + k + 8), a1);
    a2 = _mm256_fmadd_ps(f16x8(row + k + 16), _mm256_loadu_ps(x + k + 16), a2);
    a3 = _mm256_fmadd_ps(f16x8(row + k + 24), _mm256_loadu_ps(x + k + 24), a3);
  }
  for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(f16x8(row + k), _mm256_loadu_ps(x + k), a0);
  float sum = hsum_ps_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; k < K; ++k) sum += f16_to_f32(row[k]) * x[k];
  return sum;
}

// One row of the int8 GEMV. x16: xq widened to int16. madd of int16 pairs: |w0 x0 + w1 x1| <= 2*128*128 =
// 32768, exact in int32.
TL_TARGET_AVX2 inline __m256i i8x16_madd(const int8_t* w, const int16_t* x16) {
  return _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x16)));
}
TL_TARGET_AVX2 inline int32_t i8_row_avx2(const int8_t* row, int64_t K, const int8_t* xq,
                                          const int16_t* x16) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 = _mm256_add_epi32(a0, i8x16_madd(row + k, x16 + k));
    a1 = _mm256_add_epi32(a1, i8x16_madd(row + k + 16, x16 + k + 16));
  }
  for (; k + 16 <= K; k += 16) a0 = _mm256_add_epi32(a0, i8x16_madd(row + k, x16 + k));
  return hsum_avx2(_mm256_add_epi32(a0, a1)) + i8_dot_generic(row + k, xq + k, K - k);
}

}  // namespace

// Rows one after another: a thread's loads form one sequential stream, which the hardware prefetchers
// follow best (as f16_rows_avx512).
TL_TARGET_AVX2 void f16_rows_avx2(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0,
                                  int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) out[m] = f16_row_avx2(w + m * K, K, x);
}

// Rows [m0, m1) into dots[0 .. m1-m0), one after another.
TL_TARGET_AVX2 void i8_rows_avx2(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                 const int16_t* x16, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) dots[m - m0] = i8_row_avx2(w + m * K, K, xq, x16);
}

}  // namespace tl::kernels_detail
