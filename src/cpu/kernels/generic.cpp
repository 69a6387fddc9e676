// Generic kernels (plain C++; the compiler may vectorize them for the baseline ISA); see kernels.hpp.
#include "cpu/kernels/kernels.hpp"

#include <algorithm>
#include <cstring>

namespace tl::kernels_detail {

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

namespace {

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

}  // namespace

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

}  // namespace tl::kernels_detail
