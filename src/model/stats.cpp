#include "model/stats.hpp"

#include <algorithm>
#include <cmath>

#include "model/quant.hpp"

namespace tl {

std::vector<TensorStats> tensor_stats(const Model& m) {
  std::vector<TensorStats> out(m.views.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < m.views.size(); ++i) {
    const auto& v = m.views[i];
    const float* p = m.params.data() + v.offset;
    TensorStats s;
    s.name = v.name;
    s.kind = v.kind;
    s.shape = v.shape;
    s.numel = v.numel;
    double sum = 0, sum2 = 0, asum = 0;
    size_t zeros = 0;
    float mn = p[0], mx = p[0];
    for (size_t k = 0; k < v.numel; ++k) {
      const double x = p[k];
      sum += x;
      sum2 += x * x;
      asum += std::fabs(x);
      zeros += (p[k] == 0.0f);
      mn = std::min(mn, p[k]);
      mx = std::max(mx, p[k]);
    }
    const double n = double(v.numel);
    s.mean = sum / n;
    s.std = std::sqrt(std::max(0.0, sum2 / n - s.mean * s.mean));
    s.min = mn;
    s.max = mx;
    s.absmean = asum / n;
    s.latent_zero_frac = double(zeros) / n;
    if (v.kind == ParamKind::Linear) {
      const TernaryWeight t = quantize_weight(m, v);
      size_t neg = 0, pos = 0;
      for (int8_t c : t.codes) {
        neg += (c < 0);
        pos += (c > 0);
      }
      s.scale = t.scale;
      s.fixed_scale = m.fixed_scale.count(v.name) != 0;
      s.code_neg = double(neg) / n;
      s.code_pos = double(pos) / n;
      s.code_zero = double(t.zeros) / n;
    }
    out[i] = std::move(s);
  }
  return out;
}

ModelSummary summarize(const std::vector<TensorStats>& stats) {
  ModelSummary s;
  double zero = 0, neg = 0, pos = 0, latent_zero = 0;
  for (const auto& t : stats) {
    s.params += t.numel;
    switch (t.kind) {
      case ParamKind::Linear:
        s.linear_params += t.numel;
        zero += t.code_zero * double(t.numel);
        neg += t.code_neg * double(t.numel);
        pos += t.code_pos * double(t.numel);
        latent_zero += t.latent_zero_frac * double(t.numel);
        break;
      case ParamKind::Embedding:
        s.embedding_params += t.numel;
        break;
      case ParamKind::Norm:
        s.norm_params += t.numel;
        break;
      case ParamKind::LmHead:
        s.lm_head_params += t.numel;
        break;
    }
  }
  if (s.linear_params) {
    const double n = double(s.linear_params);
    s.code_zero = zero / n;
    s.code_neg = neg / n;
    s.code_pos = pos / n;
    s.latent_zero_frac = latent_zero / n;
  }
  return s;
}

}  // namespace tl
