// AVX-512 VNNI kernels (with F/BW/VL/DQ and the AVX2 set), compiled with TL_TARGET_AVX512 and called only
// where the CPU has them; see kernels.hpp.
#include "cpu/kernels/kernels.hpp"

#include <algorithm>
#include <cstring>

namespace tl::kernels_detail {
namespace {

// acc += dpbusd(u8 a, s8 b). Inline asm because GCC 12 wraps the intrinsic in register copies (and, with
// many accumulators, stack stores) on every call, which costs more front-end slots than the dpbusd itself.
TL_TARGET_AVX512 inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "vm"(b));
}
// Code 3 -> code 1, as sanitize_avx2: v & ~((v << 1) & 0xAA..) in one ternary logic op (a & ~(b & c)).
TL_TARGET_AVX512 inline __m512i sanitize_avx512(__m512i v) {
  return _mm512_ternarylogic_epi32(v, _mm512_slli_epi16(v, 1), _mm512_set1_epi8(char(0xAA)), 0x70);
}

}  // namespace

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

namespace {

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

}  // namespace

// Bytes ahead of the load that the one-token GEMV prefetches into L1 (measured: 4 KiB beat 2 KiB; 8 KiB was
// even), and further ahead into the outer caches (T2): one core keeps more lines in flight that way
// (measured on AMD EPYC Zen 5, one thread, 520 MB of weights: 19.8-21.2 GB/s with the L1 prefetch alone,
// 23.0-23.2 with both).
constexpr int64_t kSeqPrefetchBytes = 4096;
constexpr int64_t kFarPrefetchBytes = 16384;

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
      _mm_prefetch(reinterpret_cast<const char*>(row + 64 * p + kFarPrefetchBytes), _MM_HINT_T2);
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

// The drivers' instances (ternary_kernels.cpp).
template void ternary_gemv_one_token_avx512<false>(int32_t*, const int8_t*, const uint8_t*, int64_t, int64_t,
                                                   int64_t, int32_t);
template void ternary_gemv_one_token_avx512<true>(int32_t*, const int8_t*, const uint8_t*, int64_t, int64_t,
                                                  int64_t, int32_t);

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

namespace {

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

}  // namespace

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

namespace {

// One row of the f16 GEMV: four independent FMA chains over 64 columns a step, then 16 at a time, then a
// masked tail.
TL_TARGET_AVX512 inline __m512 f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
TL_TARGET_AVX512 inline float f16_row_avx512(const uint16_t* row, int64_t K, const float* x) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    a0 = _mm512_fmadd_ps(f16x16(row + k), _mm512_loadu_ps(x + k), a0);
    a1 = _mm512_fmadd_ps(f16x16(row + k + 16), _mm512_loadu_ps(x + k + 16), a1);
    a2 = _mm512_fmadd_ps(f16x16(row + k + 32), _mm512_loadu_ps(x + k + 32), a2);
    a3 = _mm512_fmadd_ps(f16x16(row + k + 48), _mm512_loadu_ps(x + k + 48), a3);
  }
  for (; k + 16 <= K; k += 16) a0 = _mm512_fmadd_ps(f16x16(row + k), _mm512_loadu_ps(x + k), a0);
  if (k < K) {
    const __mmask16 tail = __mmask16((1u << (K - k)) - 1);
    a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, row + k)),
                         _mm512_maskz_loadu_ps(tail, x + k), a1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

}  // namespace

// Rows one after another: a thread's loads form one sequential stream, which the hardware prefetchers
// follow best. Measured on the 2b4t head (bench_kernels head_f16: 128256 x 2560 from memory, one thread, AMD
// EPYC Zen 5): 4 rows in lockstep with software prefetches 13.8 GB/s, this 18.6-21.6 GB/s on 4 KiB pages
// and 22-24.5 on huge pages (docs/benchmarks.md).
TL_TARGET_AVX512 void f16_rows_avx512(float* out, const uint16_t* w, int64_t K, const float* x, int64_t m0,
                                      int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) out[m] = f16_row_avx512(w + m * K, K, x);
}

namespace {

// dpbusd wants one unsigned operand: (w + 128) as u8 is w ^ 0x80, so d = dpbusd(w ^ 0x80, x) - 128 sum(x).
// The int32 lanes may wrap (|sum (w+128) x| <= 255*128*K), but wrapping arithmetic is exact modulo 2^32
// and the true d fits int32 (K <= kMaxKI8), so d comes out exact. One row: four accumulators over 256
// columns a step, then 64 at a time, then a masked tail (zero-filled lanes: (0 ^ 0x80) * 0 = 0).
TL_TARGET_AVX512 inline int32_t i8_row_avx512(const int8_t* row, int64_t K, const int8_t* xq,
                                              uint32_t correction) {
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 256 <= K; k += 256) {
    dpbusd(a0, _mm512_xor_si512(_mm512_loadu_si512(row + k), flip), _mm512_loadu_si512(xq + k));
    dpbusd(a1, _mm512_xor_si512(_mm512_loadu_si512(row + k + 64), flip), _mm512_loadu_si512(xq + k + 64));
    dpbusd(a2, _mm512_xor_si512(_mm512_loadu_si512(row + k + 128), flip), _mm512_loadu_si512(xq + k + 128));
    dpbusd(a3, _mm512_xor_si512(_mm512_loadu_si512(row + k + 192), flip), _mm512_loadu_si512(xq + k + 192));
  }
  for (; k + 64 <= K; k += 64)
    dpbusd(a0, _mm512_xor_si512(_mm512_loadu_si512(row + k), flip), _mm512_loadu_si512(xq + k));
  if (k < K) {
    const __mmask64 tail = (__mmask64(1) << (K - k)) - 1;
    dpbusd(a1, _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, row + k), flip),
           _mm512_maskz_loadu_epi8(tail, xq + k));
  }
  const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
  return int32_t(uint32_t(_mm512_reduce_add_epi32(sum)) - correction);
}

}  // namespace

// Rows one after another, as f16_rows_avx512 (one sequential stream per thread).
TL_TARGET_AVX512 void i8_rows_avx512(int32_t* dots, const int8_t* w, int64_t K, const int8_t* xq,
                                     int32_t xsum, int64_t m0, int64_t m1) {
  const uint32_t correction = uint32_t(xsum) * 128u;
  for (int64_t m = m0; m < m1; ++m) dots[m - m0] = i8_row_avx512(w + m * K, K, xq, correction);
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

}  // namespace tl::kernels_detail
