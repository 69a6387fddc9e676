#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <omp.h>

#include "core/error.hpp"
#include "model/model.hpp"
#include "model/quant.hpp"

using namespace tl;

TEST(WeightQuant, AbsmeanScaleAndHalfToEvenCodes) {
  // mean|w| = 1.0 -> alpha 1; 0.5 and -0.5 round to 0 (half to even), 1.5 -> 2 -> clamped to 1, -2.5 -> -2 ->
  // -1
  std::vector<float> w = {0.5f, -0.5f, 1.5f, -2.5f, 0.49f, -0.51f, 0.0f, 2.5f};
  // sum |w| = 0.5+0.5+1.5+2.5+0.49+0.51+0+2.5 = 8.5 -> mean 1.0625
  const float alpha = absmean_scale(w.data(), w.size());
  EXPECT_FLOAT_EQ(alpha, 1.0625f);
  std::vector<int8_t> c(w.size());
  std::vector<float> unit = {0.5f, -0.5f, 1.5f, -2.5f, 0.49f, -0.51f, 0.0f, 2.5f};
  const size_t zeros = ternarize(unit.data(), unit.size(), 1.0f, c.data());
  EXPECT_EQ(c, (std::vector<int8_t>{0, 0, 1, -1, 0, -1, 0, 1}));
  EXPECT_EQ(zeros, 4u);
  // 1.5 * 1 rounds to 2 (even) before the clamp; 0.5 to 0 — the dead zone is |w| <= alpha/2 inclusive
}

TEST(WeightQuant, ScaleClampedAt1e5) {
  std::vector<float> w(16, 0.0f);
  EXPECT_FLOAT_EQ(absmean_scale(w.data(), w.size()), 1e-5f);
}

TEST(ActQuant, PerRowAbsmaxInt8) {
  std::vector<float> x = {1.0f, -0.5f, 0.25f, 0.0f, 2.0f / 254.0f};
  std::vector<int8_t> q(x.size());
  const float s = quantize_activation_row(x.data(), x.size(), q.data());
  EXPECT_FLOAT_EQ(s, 127.0f);
  // -0.5*127 = -63.5 -> -64 (even); 0.25*127 = 31.75 -> 32; 2/254*127 = 1.0
  EXPECT_EQ(q, (std::vector<int8_t>{127, -64, 32, 0, 1}));
  std::vector<float> fq(x.size());
  fake_quantize_activation_row(x.data(), x.size(), fq.data());
  EXPECT_FLOAT_EQ(fq[1], -64.0f / 127.0f);
  std::vector<float> zeros(4, 0.0f);
  std::vector<int8_t> qz(4);
  EXPECT_FLOAT_EQ(quantize_activation_row(zeros.data(), 4, qz.data()), 127.0f / 1e-5f);
}

TEST(HeadQuant, Int8RowsAreSymmetricAbsmaxHalfToEven) {
  // max|w| = 2.54 -> scale 0.02; w / scale is about 127, -63.5, 0.5, 12.5, -127 (float decides the ties)
  const std::vector<float> w = {2.54f, -1.27f, 0.01f, 0.25f, -2.54f};
  std::vector<int8_t> q(w.size());
  const float scale = quantize_row_i8(w.data(), w.size(), q.data());
  EXPECT_FLOAT_EQ(scale, 2.54f / 127.0f);
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_EQ(q[i], int8_t(std::nearbyint(w[i] / scale))) << i;  // the formula, at these exact values
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[4], -127);  // symmetric: -128 is never used
  // An all-zero row keeps scale 1 and zero codes (no division by zero).
  const std::vector<float> zero(3, 0.0f);
  std::vector<int8_t> qz(3, 9);
  EXPECT_EQ(quantize_row_i8(zero.data(), zero.size(), qz.data()), 1.0f);
  EXPECT_EQ(qz, (std::vector<int8_t>{0, 0, 0}));
}

TEST(ModelViews, CanonicalLayoutAndFixedScale) {
  Model m = make_model(config_preset("tiny"));
  const auto& cfg = m.config;
  // embed + per layer (2 norms in, 4 attn, sub norm, post norm, 3 mlp, sub norm) + final norm; tied: no
  // lm_head
  EXPECT_EQ(m.views.size(), 1 + 11 * size_t(cfg.num_hidden_layers) + 1);
  EXPECT_FALSE(m.has("lm_head.weight"));
  const auto& q = m.view(Model::linear_name(1, kQ));
  EXPECT_EQ(q.shape, (std::vector<int64_t>{cfg.q_dim(), cfg.hidden_size}));
  const auto& down = m.view(Model::linear_name(0, kDown));
  EXPECT_EQ(down.shape, (std::vector<int64_t>{cfg.hidden_size, cfg.intermediate_size}));
  init_random(m, 5);
  auto t = quantize_weight(m, q);
  EXPECT_FLOAT_EQ(t.scale, absmean_scale(m.params.data() + q.offset, q.numel));
  m.fixed_scale[q.name] = 10.0f;  // huge scale: everything in the dead zone
  auto t2 = quantize_weight(m, q);
  EXPECT_EQ(t2.scale, 10.0f);
  EXPECT_EQ(t2.zeros, q.numel);
  EXPECT_THROW(quantize_weight(m, m.view("model.norm.weight")), Error);
}

TEST(ModelViews, TwoB4TParameterCount) {
  // The exact BitNet b1.58-2B-4T shapes (counts from the reference, §1.1) — views only, no allocation check.
  BitNetConfig c = config_preset("2b4t");
  size_t total = size_t(c.vocab_size * c.hidden_size);
  size_t linear = 0;
  const size_t C = size_t(c.hidden_size), F = size_t(c.intermediate_size), KV = size_t(c.kv_dim());
  linear = size_t(c.num_hidden_layers) * (2 * C * C + 2 * KV * C + 3 * C * F);
  total += linear + size_t(c.num_hidden_layers) * (3 * C + F) + C;
  EXPECT_EQ(linear, 2084044800u);
  EXPECT_EQ(total, 2412820480u);
}

TEST(Config, PresetsAndValidation) {
  EXPECT_THROW(config_preset("huge"), Error);
  BitNetConfig c = config_preset("tiny");
  c.num_key_value_heads = 3;  // 4 heads not a multiple of 3
  EXPECT_THROW(c.validate(), Error);
}

TEST(WeightQuant, ScaleDoesNotDependOnThreadCount) {
  std::vector<float> w(3'000'001);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(std::sin(double(i) * 0.37) * (1.0 + double(i % 7)));
  omp_set_num_threads(1);
  const float one = absmean_scale(w.data(), w.size());
  omp_set_num_threads(2);
  const float two = absmean_scale(w.data(), w.size());
  omp_set_num_threads(3);
  const float three = absmean_scale(w.data(), w.size());
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, three);
}

TEST(ActQuant, FastRoundingEqualsNearbyint) {
  // Rows built so that x*s hits exact half-integers and values a few ulps around them.
  std::vector<float> x;
  for (int k = -254; k <= 254; ++k) {
    const float v = float(k) / 2.0f;  // s = 1 for amax = 127: x*s = k/2
    x.push_back(v);
    x.push_back(std::nextafter(v, 1000.0f));
    x.push_back(std::nextafter(v, -1000.0f));
  }
  x.push_back(127.0f);
  std::vector<int8_t> q(x.size());
  const float s = quantize_activation_row(x.data(), x.size(), q.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = std::clamp(std::nearbyint(x[i] * s), -128.0f, 127.0f);
    ASSERT_EQ(q[i], int8_t(want)) << "x=" << x[i];
  }
}

// model/quant_math.hpp is what the CUDA kernels compile too: its formulas, checked on the host.
TEST(QuantMath, SharedFormulasAndNanPassesThrough) {
  using namespace tl::quant;
  EXPECT_EQ(weight_code(0.49f, 1.0f), 0.0f);
  EXPECT_EQ(weight_code(0.5f, 1.0f), 0.0f);  // half to even
  EXPECT_EQ(weight_code(1.5f, 1.0f), 1.0f);  // clamped
  EXPECT_EQ(weight_code(-7.0f, 1.0f), -1.0f);
  EXPECT_TRUE(std::signbit(weight_code(-0.3f, 1.0f)));  // -0: a code compared as a value is 0
  EXPECT_EQ(act_scale(0.0f), (1.0f / 1e-5f) * 127.0f);  // floor, then reciprocal times 127
  EXPECT_EQ(act_scale(2.0f), 0.5f * 127.0f);
  EXPECT_EQ(act_code(300.0f, 1.0f), 127.0f);
  EXPECT_EQ(act_code(-300.0f, 1.0f), -128.0f);
  EXPECT_EQ(act_code(2.5f, 1.0f), 2.0f);
  EXPECT_EQ(absmean_alpha(0.0f), kWeightScaleEps);
  EXPECT_EQ(absmean_alpha(0.25), 0.25);
  EXPECT_EQ(head_i8_scale(0.0f), 1.0f);
  EXPECT_EQ(head_i8_scale(254.0f), 2.0f);
  EXPECT_EQ(head_i8_code(-1000.0f, 1.0f), -127.0f);  // symmetric: never -128
  // NaN is not turned into a valid code (fminf/fmaxf would make it a bound): the loss sees it.
  const float nan = std::nanf("");
  EXPECT_TRUE(std::isnan(weight_code(nan, 1.0f)));
  EXPECT_TRUE(std::isnan(act_code(nan, 1.0f)));
  EXPECT_TRUE(std::isnan(act_scale(nan)));
  // The double twin (train/ops' finite-difference model) uses the same formulas.
  EXPECT_EQ(act_code(2.5, 1.0), 2.0);
  EXPECT_EQ(act_scale(2.0), 63.5);
}
