// Optimizer pieces of the training loop, each as PyTorch computes it so a run can be compared with
// torch.optim.AdamW + CosineAnnealingLR + clip_grad_norm_ step by step (tools/golden/make_train_golden.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "model/backend.hpp"  // AdamWConfig, ParamPrecision

namespace tl {

// Errors: lr < 0 or not finite, betas outside [0, 1), eps <= 0, weight_decay < 0.
void validate(const AdamWConfig& c);

// torch.optim.AdamW (single-tensor path), over one flat parameter buffer:
//   p *= 1 - lr·wd;  m = lerp(m, g, 1-β1);  v = β2·v + (1-β2)·g²
//   p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)
class AdamW {
 public:
  AdamW(size_t n, AdamWConfig cfg, ParamPrecision precision = ParamPrecision::Fp32);
  // One step at learning rate lr (the schedule's value) over params/grads of the size given at
  // construction. In Bf16 mode params and grads must already hold bf16-representable values; params do
  // afterwards too.
  void step(std::span<float> params, std::span<const float> grads, double lr);
  int64_t steps() const { return t_; }
  const AdamWConfig& config() const { return cfg_; }
  ParamPrecision precision() const { return precision_; }
  // State for checkpoints: the moments (n each) and the step count.
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  AdamWConfig cfg_;
  ParamPrecision precision_;
  std::vector<float> m_, v_;  // (n) first and second moments
  int64_t t_ = 0;
};

// Learning rate of step t (0-based) of `total`: linear warm-up peak·(t+1)/warmup for t < warmup, then cosine
// from peak to min_lr like torch's CosineAnnealingLR(T_max = total - warmup, eta_min = min_lr):
// lr = min + (peak - min)(1 + cos(π (t - warmup) / (total - warmup))) / 2.
double cosine_lr(int64_t t, int64_t total, double peak, int64_t warmup = 0, double min_lr = 0);

// torch.nn.utils.clip_grad_norm_: the global L2 norm of grads (accumulated in double); if max_norm > 0,
// grads *= min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping (NaN/inf pass through).
double clip_grad_norm(std::span<float> grads, double max_norm);

// Round every value to bf16 (round to nearest even), in place.
void round_to_bf16(std::span<float> x);

}  // namespace tl
