#include "train/optim.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/half.hpp"

namespace tl {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int64_t kParallelMin = 1 << 16;  // elements below which threads cost more than they save

inline float bf(float x) {
  return bf16_to_f32(f32_to_bf16(x));
}

}  // namespace

void validate(const AdamWConfig& c) {
  TL_CHECK(std::isfinite(c.lr) && c.lr >= 0, "--lr must be a finite number >= 0, found {}", c.lr);
  TL_CHECK(c.beta1 >= 0 && c.beta1 < 1, "AdamW beta1 must be in [0, 1), found {}", c.beta1);
  TL_CHECK(c.beta2 >= 0 && c.beta2 < 1, "AdamW beta2 must be in [0, 1), found {}", c.beta2);
  TL_CHECK(std::isfinite(c.eps) && c.eps > 0, "AdamW eps must be > 0, found {}", c.eps);
  TL_CHECK(std::isfinite(c.weight_decay) && c.weight_decay >= 0, "--weight-decay must be >= 0, found {}",
           c.weight_decay);
}

AdamW::AdamW(size_t n, AdamWConfig cfg, ParamPrecision precision)
    : cfg_(cfg), precision_(precision), m_(n, 0.0f), v_(n, 0.0f) {
  validate(cfg_);
}

void AdamW::step(std::span<float> params, std::span<const float> grads, double lr) {
  TL_CHECK(params.size() == m_.size() && grads.size() == m_.size(),
           "AdamW: {} parameters and {} gradients for an optimizer of {}", params.size(), grads.size(),
           m_.size());
  ++t_;
  // Python-side scalars, in double as torch computes them, then used as fp32 in the kernels.
  const double bc1 = 1 - std::pow(cfg_.beta1, double(t_));
  const double bc2 = 1 - std::pow(cfg_.beta2, double(t_));
  const float decay = float(1 - lr * cfg_.weight_decay);
  const float w1 = float(1 - cfg_.beta1), b2 = float(cfg_.beta2), w2 = float(1 - cfg_.beta2);
  const float step_size = float(lr / bc1), bc2_sqrt = float(std::sqrt(bc2)), eps = float(cfg_.eps);
  const int64_t n = int64_t(m_.size());
  float* p = params.data();
  const float* g = grads.data();
  float* m = m_.data();
  float* v = v_.data();
  if (precision_ == ParamPrecision::Fp32) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      p[i] *= decay;
      m[i] += w1 * (g[i] - m[i]);  // lerp(m, g, 1-β1)
      v[i] = v[i] * b2 + w2 * g[i] * g[i];
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p[i] += -step_size * (m[i] / denom);
    }
  } else {  // every op's result rounded to bf16, as torch does on bf16 tensors
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      p[i] = bf(p[i] * decay);
      m[i] = bf(m[i] + w1 * (gi - m[i]));
      v[i] = bf(v[i] * b2);
      v[i] = bf(v[i] + w2 * (gi * gi));
      const float denom = bf(bf(bf(std::sqrt(v[i])) / bc2_sqrt) + eps);
      p[i] = bf(p[i] + -step_size * (m[i] / denom));
    }
  }
}

double cosine_lr(int64_t t, int64_t total, double peak, int64_t warmup, double min_lr) {
  TL_CHECK(total > 0 && warmup >= 0 && warmup < total, "lr schedule: {} warm-up steps of {} total", warmup,
           total);
  if (t < warmup) return peak * double(t + 1) / double(warmup);
  const double progress = double(t - warmup) / double(total - warmup);
  return min_lr + (peak - min_lr) * (1 + std::cos(kPi * progress)) / 2;
}

double clip_grad_norm(std::span<float> grads, double max_norm) {
  double ss = 0;
  const int64_t n = int64_t(grads.size());
  float* g = grads.data();
#pragma omp parallel for schedule(static) reduction(+ : ss) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) ss += double(g[i]) * double(g[i]);
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1) {
      const float c = float(coef);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) g[i] *= c;
    }
  }
  return norm;
}

void round_to_bf16(std::span<float> x) {
  for (auto& v : x) v = bf(v);
}

}  // namespace tl
