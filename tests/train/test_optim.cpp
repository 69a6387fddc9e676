// train/optim: AdamW against the update written out in double, the bf16 mode's lost updates (rpt-spec
// §4.5), the cosine schedule and global-norm clipping.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "train/optim.hpp"

namespace tl {
namespace {

TEST(AdamW, MatchesTheUpdateWrittenOutInDouble) {
  const size_t n = 257;
  Rng rng(3);
  std::vector<float> p(n), g(n);
  for (auto& x : p) x = float(rng.normal());
  std::vector<double> pd(p.begin(), p.end()), m(n, 0), v(n, 0);
  AdamWConfig c;
  c.lr = 1e-2;
  c.weight_decay = 0.1;
  AdamW opt(n, c);
  for (int t = 1; t <= 5; ++t) {
    for (auto& x : g) x = float(rng.normal() * 0.1);
    const double lr = cosine_lr(t - 1, 5, c.lr);
    opt.step(p, g, lr);
    for (size_t i = 0; i < n; ++i) {
      pd[i] *= 1 - lr * c.weight_decay;
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i];
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * double(g[i]) * g[i];
      const double mh = m[i] / (1 - std::pow(c.beta1, t)), vh = v[i] / (1 - std::pow(c.beta2, t));
      pd[i] -= lr * mh / (std::sqrt(vh) + c.eps);
    }
  }
  EXPECT_EQ(opt.steps(), 5);
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(p[i], pd[i], 1e-6 * (1 + std::abs(pd[i]))) << i;
}

TEST(AdamW, ZeroGradientAndZeroWeightStayZero) {
  // A pruned weight (0) with a zeroed gradient never moves: m = v = 0 and decay keeps 0 at 0.
  std::vector<float> p = {0.0f, 1.0f}, g = {0.0f, 0.5f};
  AdamW opt(2, AdamWConfig{});
  for (int t = 0; t < 10; ++t) opt.step(p, g, 1e-3);
  EXPECT_EQ(p[0], 0.0f);
  EXPECT_NE(p[1], 1.0f);
}

TEST(AdamW, Bf16ModeLosesUpdatesBelowHalfASpacing) {
  // rpt-spec §4.5: |w| in [0.25, 0.5) has bf16 spacing 2^-9; half of it (9.8e-4) exceeds an Adam step of
  // ~5e-4, so the weight is frozen; |w| in [0.125, 0.25) moves one spacing per step; fp32 moves both.
  AdamWConfig c;
  c.lr = 5e-4;
  std::vector<float> p = {0.3f, 0.2f}, g = {1e-3f, 1e-3f};
  round_to_bf16(p);
  round_to_bf16(g);
  const std::vector<float> p0 = p;
  AdamW bf(2, c, ParamPrecision::Bf16);
  bf.step(p, g, c.lr);
  EXPECT_EQ(p[0], p0[0]);  // frozen
  EXPECT_NE(p[1], p0[1]);  // one spacing
  EXPECT_EQ(p[1], p0[1] - 0x1.0p-10f);
  for (float x : p) EXPECT_EQ(x, bf16_to_f32(f32_to_bf16(x)));  // still bf16 values
  std::vector<float> q = p0;
  AdamW f32(2, c);
  f32.step(q, g, c.lr);
  EXPECT_NE(q[0], p0[0]);
  EXPECT_NEAR(q[0], p0[0] * (1 - 5e-6) - 5e-4, 1e-7);
}

TEST(Schedule, CosineLikeTorchWithOptionalWarmup) {
  // torch.optim.lr_scheduler.CosineAnnealingLR(T_max=300): lr_t = 2.5e-4 (1 + cos(π t / 300))
  for (int t : {0, 1, 150, 299})
    EXPECT_NEAR(cosine_lr(t, 300, 5e-4), 2.5e-4 * (1 + std::cos(M_PI * t / 300)), 1e-15);
  EXPECT_DOUBLE_EQ(cosine_lr(0, 300, 5e-4), 5e-4);
  EXPECT_NEAR(cosine_lr(0, 10, 1.0, 4), 0.25, 1e-15);
  EXPECT_NEAR(cosine_lr(3, 10, 1.0, 4), 1.0, 1e-15);
  EXPECT_NEAR(cosine_lr(4, 10, 1.0, 4), 1.0, 1e-15);  // cosine starts at the peak
  EXPECT_NEAR(cosine_lr(7, 10, 1.0, 4, 0.1), 0.1 + 0.9 * 0.5, 1e-15);
  EXPECT_THROW(cosine_lr(0, 0, 1.0), Error);
  EXPECT_THROW(cosine_lr(0, 10, 1.0, 10), Error);
}

TEST(Clip, GlobalNormLikeTorch) {
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(clip_grad_norm(g, 10.0), 5.0);
  EXPECT_EQ(g[0], 3.0f);  // below the limit: untouched
  EXPECT_DOUBLE_EQ(clip_grad_norm(g, 1.0), 5.0);
  EXPECT_NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
  EXPECT_NEAR(g[1], 4.0 / (5.0 + 1e-6), 1e-7);
  std::vector<float> bad = {1.0f, NAN};
  EXPECT_TRUE(std::isnan(clip_grad_norm(bad, 1.0)));
  EXPECT_EQ(bad[0], 1.0f);  // a NaN norm scales nothing: the caller stops the run
}

TEST(AdamW, BadConfigsAreErrors) {
  AdamWConfig c;
  c.lr = -1;
  EXPECT_THROW(validate(c), Error);
  c = AdamWConfig{};
  c.beta1 = 1;
  EXPECT_THROW(validate(c), Error);
  c = AdamWConfig{};
  c.weight_decay = -0.1;
  EXPECT_THROW(validate(c), Error);
  c = AdamWConfig{};
  c.eps = 0;
  EXPECT_THROW(validate(c), Error);
  AdamW opt(3, AdamWConfig{});
  std::vector<float> p(2), g(3);
  EXPECT_THROW(opt.step(p, g, 1e-3), Error);
}

}  // namespace
}  // namespace tl
