#include "model/quant.hpp"

#include <algorithm>
#include <cmath>

#include "core/enum_names.hpp"
#include "core/error.hpp"

namespace tl {

namespace {
// Round half to even for |v| < 2^22 without a libm call, so the loop vectorizes with plain SSE2: adding and
// subtracting 1.5·2^23 leaves v rounded to an integer in the default rounding mode. Activation codes satisfy
// |x·s| <= 127·(1 + 2^-23), far inside the range.
inline float round_half_even_small(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// max |x[i]| (0 for n = 0; NaNs are skipped, as std::max(amax, NaN) keeps amax). Sixteen running maxima
// instead of one: max is exact in any order, and one chain of dependent maxss costs 4 cycles per element
// (about 11 us per 6912-wide row, a sixth of a decoded token's non-GEMV time at 2b4t) where the lanes
// vectorize.
float abs_max(const float* x, size_t n) {
  float lane[16] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (size_t j = 0; j < 16; ++j) lane[j] = std::max(lane[j], std::fabs(x[i + j]));
  float amax = 0;
  for (; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  for (float v : lane) amax = std::max(amax, v);
  return amax;
}
}  // namespace

float absmean_scale(const float* w, size_t n) {
  // Fixed-size blocks summed in double, then the block sums in order: the result does not depend on the
  // number of threads (run-to-run reproducibility), and large tensors use all cores.
  constexpr size_t kBlock = size_t(1) << 16;
  const size_t nblocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(nblocks, 0.0);
#pragma omp parallel for schedule(static) if (nblocks > 4)
  for (size_t b = 0; b < nblocks; ++b) {
    double sum = 0;
    const size_t end = std::min(n, (b + 1) * kBlock);
    for (size_t i = b * kBlock; i < end; ++i) sum += std::fabs(double(w[i]));
    partial[b] = sum;
  }
  double sum = 0;
  for (double p : partial) sum += p;
  const float mean = n ? float(sum / double(n)) : 0.0f;
  return quant::absmean_alpha(mean);
}

size_t ternarize(const float* w, size_t n, float alpha, int8_t* codes) {
  // transformers: s = 1/alpha in fp32, then (w*s).round().clamp(-1,1)
  const float inv = 1.0f / alpha;
  size_t zeros = 0;
#pragma omp parallel for schedule(static) reduction(+ : zeros) if (n > (size_t(1) << 18))
  for (size_t i = 0; i < n; ++i) {
    codes[i] = int8_t(quant::weight_code(w[i], inv));
    zeros += (codes[i] == 0);
  }
  return zeros;
}

float act_scale(float amax) {
  // torch evaluates `127 / t` as t.reciprocal() * 127 (Tensor.__rtruediv__): two roundings, not one
  // division. Matching it keeps every int8 code identical to transformers' ActQuant.
  return quant::act_scale(amax);
}

float quantize_activation_row(const float* x, size_t n, int8_t* q) {
  const float s = act_scale(abs_max(x, n));
  for (size_t i = 0; i < n; ++i) q[i] = int8_t(quant::act_code_of_rounded(round_half_even_small(x[i] * s)));
  return s;
}

float fake_quantize_activation_row(const float* x, size_t n, float* out) {
  const float s = act_scale(abs_max(x, n));
  for (size_t i = 0; i < n; ++i) out[i] = quant::act_code_of_rounded(round_half_even_small(x[i] * s)) / s;
  return s;
}

float weight_scale_for(const Model& m, const ParamView& v) {
  auto it = m.fixed_scale.find(v.name);
  if (it != m.fixed_scale.end()) return it->second;
  return absmean_scale(m.params.data() + v.offset, v.numel);
}

TernaryWeight quantize_weight(const Model& m, const ParamView& v) {
  TL_CHECK(v.kind == ParamKind::Linear && v.shape.size() == 2, "quantize_weight: '{}' is not a linear weight",
           v.name);
  TernaryWeight t;
  t.out = v.shape[0];
  t.in = v.shape[1];
  t.codes.resize(v.numel);
  t.scale = weight_scale_for(m, v);
  t.zeros = ternarize(m.params.data() + v.offset, v.numel, t.scale, t.codes.data());
  return t;
}

namespace {
constexpr std::array<EnumName<WeightQuant>, 4> kWeightQuants{{{WeightQuant::Absmean, "absmean"},
                                                              {WeightQuant::Fixed, "fixed"},
                                                              {WeightQuant::RptFixed, "rpt-fixed"},
                                                              {WeightQuant::Off, "off"}}};
}  // namespace

std::string weight_quant_name(WeightQuant m) {
  return std::string(name_of(kWeightQuants, m));
}

WeightQuant parse_weight_quant(const std::string& s) {
  return parse_enum(kWeightQuants, s, "weight quantizer");
}

float quantize_row_i8(const float* w, size_t n, int8_t* q) {
  float amax = 0;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(w[i]));
  const float scale = quant::head_i8_scale(amax);
  for (size_t i = 0; i < n; ++i) q[i] = int8_t(quant::head_i8_code(w[i], scale));
  return scale;
}

}  // namespace tl
