// Sampler: validation, greedy ties, NaN refusal, reproducibility, the filters and the repetition penalty.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../common/test_util.hpp"
#include "infer/sampling.hpp"

namespace tl {
namespace {

using test::error_of;

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

// Plain sampling: temperature 1 and no filters.
SamplingParams unfiltered(uint64_t seed) {
  SamplingParams p;
  p.temperature = 1;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  p.seed = seed;
  return p;
}

TEST(Sampling, ValidateRejectsImpossibleValues) {
  const auto message = [](auto change) {
    SamplingParams p;
    change(p);
    return error_of([&] { validate(p); });
  };
  EXPECT_NE(message([](auto& p) { p.temperature = -0.1; }).find("temperature"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.temperature = std::nan(""); }).find("temperature"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.top_k = -1; }).find("top_k"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.top_p = 0; }).find("top_p"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.top_p = 1.5; }).find("top_p"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.top_p = std::nan(""); }).find("top_p"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.min_p = 2; }).find("min_p"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.repetition_penalty = 0; }).find("repetition_penalty"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.repetition_penalty = INFINITY; }).find("repetition_penalty"),
            std::string::npos);
  EXPECT_NE(message([](auto& p) { p.repeat_last_n = -2; }).find("repeat_last_n"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.max_tokens = -2; }).find("max_tokens"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.stop = {""}; }).find("stop"), std::string::npos);
  EXPECT_NE(message([](auto& p) { p.stop_ids = {-1}; }).find("stop"), std::string::npos);
  EXPECT_NO_THROW(validate(SamplingParams{}));
  EXPECT_NO_THROW(validate(greedy()));
  SamplingParams cold;
  cold.temperature = -1;
  EXPECT_THROW(Sampler{cold}, Error);
}

TEST(Sampling, GreedyTakesTheLowestIndexAmongTies) {
  Sampler s(greedy());
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f};
  EXPECT_EQ(s.sample(logits, {}), 1);
  EXPECT_EQ(greedy_token(logits), 1);
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(greedy_token(std::vector<float>{ninf, ninf, -5.0f}), 2);
}

TEST(Sampling, NanAndInfiniteLogitsAreErrors) {
  for (double temperature : {0.0, 0.8}) {
    SamplingParams p = unfiltered(1);
    p.temperature = temperature;
    Sampler s(p);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    EXPECT_NE(error_of([&] {
                s.sample(std::vector<float>{0.f, nan, 1.f}, {});
              }).find("token 1 is NaN"),
              std::string::npos);
    EXPECT_NE(error_of([&] { s.sample(std::vector<float>{inf, 0.f}, {}); }).find("+inf"), std::string::npos);
    EXPECT_NE(error_of([&] {
                s.sample(std::vector<float>{-inf, -inf}, {});
              }).find("-inf"),
              std::string::npos);
    EXPECT_NE(error_of([&] { s.sample(std::vector<float>{}, {}); }).find("empty"), std::string::npos);
  }
}

TEST(Sampling, SameSeedSameTokensOtherSeedOtherTokens) {
  std::vector<float> logits(100);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i)));  // many near-equal
  const auto draw = [&](uint64_t seed) {
    Sampler s(unfiltered(seed));
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.sample(logits, {}));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampling, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {std::log(0.7f), std::log(0.2f), std::log(0.1f)};
  Sampler s(unfiltered(7));
  std::vector<int> counts(3);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[size_t(s.sample(logits, {}))];
  EXPECT_NEAR(counts[0] / double(n), 0.7, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.2, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.1, 0.02);
}

TEST(Sampling, TemperatureSharpensAndFlattens) {
  const std::vector<float> logits = {1.0f, 0.0f};
  const auto share_of_best = [&](double temperature) {
    SamplingParams p = unfiltered(3);
    p.temperature = temperature;
    Sampler s(p);
    int best = 0;
    for (int i = 0; i < 5000; ++i) best += s.sample(logits, {}) == 0;
    return best / 5000.0;
  };
  EXPECT_NEAR(share_of_best(1.0), 1 / (1 + std::exp(-1.0)), 0.03);  // 0.73
  EXPECT_GT(share_of_best(0.2), 0.99);                              // e^5 : 1
  EXPECT_NEAR(share_of_best(100.0), 0.5, 0.03);
}

TEST(Sampling, TopKTopPAndMinPRemoveTheTail) {
  // Probabilities 0.5, 0.3, 0.15, 0.05.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  const auto seen = [&](auto change) {
    SamplingParams p = unfiltered(11);
    change(p);
    Sampler s(p);
    std::vector<bool> hit(4);
    for (int i = 0; i < 3000; ++i) hit[size_t(s.sample(logits, {}))] = true;
    return hit;
  };
  EXPECT_EQ(seen([](auto&) {}), (std::vector<bool>{true, true, true, true}));
  EXPECT_EQ(seen([](auto& p) { p.top_k = 1; }), (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ(seen([](auto& p) { p.top_k = 2; }), (std::vector<bool>{true, true, false, false}));
  EXPECT_EQ(seen([](auto& p) { p.top_p = 0.45; }), (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ(seen([](auto& p) { p.top_p = 0.79; }), (std::vector<bool>{true, true, false, false}));
  EXPECT_EQ(seen([](auto& p) { p.top_p = 0.9; }), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(seen([](auto& p) { p.min_p = 0.2; }),
            (std::vector<bool>{true, true, true, false}));  // 0.15 >= 0.1
  EXPECT_EQ(seen([](auto& p) { p.min_p = 0.5; }), (std::vector<bool>{true, true, false, false}));
  // A high temperature does not bring back what top-k removed.
  EXPECT_EQ(seen([](auto& p) {
              p.top_k = 2;
              p.temperature = 50;
            }),
            (std::vector<bool>{true, true, false, false}));
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p = greedy();
  p.repetition_penalty = 1.2;
  Sampler s(p);
  // Positive: 2.0 / 1.2 = 1.67 < 1.9.
  EXPECT_EQ(s.sample(std::vector<float>{2.0f, 1.9f}, std::vector<int32_t>{0}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{2.0f, 1.5f}, std::vector<int32_t>{0}), 0);  // 1.67 > 1.5
  // Negative: -1.0 * 1.2 = -1.2 < -1.1 (dividing would have raised it to -0.83).
  EXPECT_EQ(s.sample(std::vector<float>{-1.0f, -1.1f}, std::vector<int32_t>{0}), 1);
  // A token counts once however often it was seen.
  EXPECT_EQ(s.sample(std::vector<float>{2.0f, 1.5f}, std::vector<int32_t>{0, 0, 0, 0}), 0);
  // Tokens outside the window are not penalised.
  SamplingParams w = p;
  w.repeat_last_n = 2;
  Sampler windowed(w);
  EXPECT_EQ(windowed.sample(std::vector<float>{2.0f, 1.9f}, std::vector<int32_t>{0, 1, 1}), 0);
  EXPECT_EQ(windowed.sample(std::vector<float>{2.0f, 1.9f, 0.0f}, std::vector<int32_t>{1, 2, 0}), 1);
  w.repeat_last_n = 0;  // off
  Sampler off(w);
  EXPECT_EQ(off.sample(std::vector<float>{2.0f, 1.9f}, std::vector<int32_t>{0}), 0);
  w.repeat_last_n = -1;  // everything
  Sampler all(w);
  EXPECT_EQ(all.sample(std::vector<float>{2.0f, 1.9f}, std::vector<int32_t>{0, 1, 1, 1, 1, 1, 1}), 0);
  EXPECT_EQ(all.sample(std::vector<float>{2.0f, 1.0f}, std::vector<int32_t>{0, 5, 5, 5}), 0);
}

}  // namespace
}  // namespace tl
