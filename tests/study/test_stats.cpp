// The study's statistics and its verdict rule, on constructed results with known answers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "../common/test_util.hpp"
#include "core/rng.hpp"
#include "study/stats.hpp"

using namespace tl;
using namespace tl::study;
using test::error_of;
using ::testing::HasSubstr;

namespace {

// An arm of `seeds` seeds over `windows` windows of 127 targets: per-token NLL mean + noise.
ArmScores make_arm(double mean, double noise, int seeds, int windows, uint64_t seed) {
  ArmScores a;
  Rng rng(seed);
  a.tokens.assign(size_t(windows), 127.0);
  for (int s = 0; s < seeds; ++s) {
    std::vector<double> row;
    for (int w = 0; w < windows; ++w) row.push_back(127.0 * (mean + noise * rng.normal()));
    a.nll.push_back(row);
  }
  return a;
}

Effect effect_with(double delta, double lo, double hi) {
  Effect e;
  e.delta = delta;
  e.ci = {lo, hi};
  e.ratio = std::exp(delta);
  e.windows = 64;
  return e;
}

}  // namespace

TEST(StudyStats, TQuantiles) {
  EXPECT_NEAR(t975(1), 12.7062, 1e-4);
  EXPECT_NEAR(t975(2), 4.3027, 1e-4);
  EXPECT_NEAR(t975(30), 2.0423, 1e-4);
  EXPECT_NEAR(t975(40), 2.0211, 1e-4);  // the expansion beyond the table
  EXPECT_NEAR(t975(60), 2.0003, 1e-4);
  EXPECT_NEAR(t975(120), 1.9799, 1e-4);
  EXPECT_NEAR(t975(1000000), 1.96, 1e-3);
  EXPECT_THAT(error_of([] { t975(0); }), HasSubstr("degrees of freedom"));
}

TEST(StudyStats, MeanInterval) {
  const std::vector<double> x = {1, 2, 3};
  const MeanCI m = mean_ci(x);
  EXPECT_EQ(m.n, 3);
  EXPECT_DOUBLE_EQ(m.mean, 2);
  EXPECT_DOUBLE_EQ(m.sd, 1);
  EXPECT_NEAR(m.ci.lo, 2 - 4.3027 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(m.ci.hi, 2 + 4.3027 / std::sqrt(3.0), 1e-9);
  const std::vector<double> one = {5};
  const MeanCI m1 = mean_ci(one);
  EXPECT_EQ(m1.ci.lo, 5);
  EXPECT_EQ(m1.ci.hi, 5);
}

TEST(StudyStats, BootstrapFindsAShiftAndItsSize) {
  // the same windows with a constant shift of -0.1 nats: Δ is exact and the interval tight around it
  const ArmScores r = make_arm(3.0, 0.5, 3, 64, 1);
  ArmScores t = r;
  for (auto& row : t.nll)
    for (auto& v : row) v -= 0.1 * 127;
  const Effect e = paired_bootstrap(t, r, 500, 7);
  EXPECT_NEAR(e.delta, -0.1, 1e-12);
  EXPECT_NEAR(e.ci.lo, -0.1, 1e-9);
  EXPECT_NEAR(e.ci.hi, -0.1, 1e-9);
  EXPECT_TRUE(e.paired_seeds);
  EXPECT_NEAR(e.ratio, std::exp(-0.1), 1e-12);
  // independent noise: the interval covers the true difference and excludes zero at this size
  const ArmScores t2 = make_arm(2.8, 0.5, 3, 64, 2);
  const Effect e2 = paired_bootstrap(t2, r, 2000, 7);
  EXPECT_LT(e2.ci.lo, -0.2 + 0.1);
  EXPECT_GT(e2.ci.hi, -0.2 - 0.1);
  EXPECT_LT(e2.ci.hi, 0);
  // the same inputs and seed give the same bits; another seed another interval
  const Effect e3 = paired_bootstrap(t2, r, 2000, 7);
  EXPECT_EQ(e2.ci.lo, e3.ci.lo);
  EXPECT_EQ(e2.ci.hi, e3.ci.hi);
  EXPECT_NE(paired_bootstrap(t2, r, 2000, 8).ci.lo, e2.ci.lo);
}

TEST(StudyStats, BootstrapResamplesWindowsNotTokens) {
  // Two windows, one far worse than the other: resampling windows gives a wide interval; a token-level
  // resample of 2 x 127 targets would give a narrow one.
  ArmScores r, t;
  r.tokens = t.tokens = {127, 127};
  r.nll = {{127 * 3.0, 127 * 3.0}};
  t.nll = {{127 * 2.0, 127 * 4.0}};
  const Effect e = paired_bootstrap(t, r, 2000, 3);
  EXPECT_NEAR(e.delta, 0, 1e-12);
  EXPECT_NEAR(e.ci.lo, -1, 1e-12);  // both windows drawn as the better one
  EXPECT_NEAR(e.ci.hi, 1, 1e-12);
}

TEST(StudyStats, BootstrapRejectsMismatchedArms) {
  const ArmScores a = make_arm(3, 0.5, 1, 10, 1), b = make_arm(3, 0.5, 1, 11, 1);
  EXPECT_THAT(error_of([&] { paired_bootstrap(a, b, 500, 1); }), HasSubstr("different windows"));
  ArmScores c = a;
  c.tokens[3] = 100;
  EXPECT_THAT(error_of([&] { paired_bootstrap(a, c, 500, 1); }), HasSubstr("window 3"));
  EXPECT_THAT(error_of([&] { paired_bootstrap(a, a, 10, 1); }), HasSubstr("100 resamples"));
  ArmScores empty;
  EXPECT_THAT(error_of([&] { paired_bootstrap(empty, a, 500, 1); }), HasSubstr("no seeds"));
}

TEST(StudyVerdict, Holds) {
  VerdictInput in;
  in.effect = effect_with(-0.2, -0.25, -0.15);
  in.vs_control = effect_with(-0.1, -0.14, -0.06);
  in.control_effect = effect_with(-0.1, -0.15, -0.05);
  const VerdictResult v = decide(in);
  EXPECT_EQ(v.verdict, Verdict::Holds);
  EXPECT_THAT(v.reason, HasSubstr("against the control"));
  // without a control, the effect alone decides
  in.vs_control.reset();
  in.control_effect.reset();
  EXPECT_EQ(decide(in).verdict, Verdict::Holds);
  // a claim that NLL rises
  VerdictInput up;
  up.direction = +1;
  up.effect = effect_with(0.4, 0.3, 0.5);
  EXPECT_EQ(decide(up).verdict, Verdict::Holds);
}

TEST(StudyVerdict, Confounded) {
  VerdictInput in;
  in.effect = effect_with(-0.4, -0.45, -0.35);
  // the control gives as much: the difference within ±δ
  in.vs_control = effect_with(0.001, -0.005, 0.008);
  in.control_effect = effect_with(-0.4, -0.45, -0.35);
  EXPECT_EQ(decide(in).verdict, Verdict::Confounded);
  // the control gives more
  in.vs_control = effect_with(0.05, 0.03, 0.07);
  EXPECT_EQ(decide(in).verdict, Verdict::Confounded);
  // the treatment beats the control, but by less than δ
  in.vs_control = effect_with(-0.008, -0.015, -0.001);
  const VerdictResult small = decide(in);
  EXPECT_EQ(small.verdict, Verdict::Confounded);
  EXPECT_THAT(small.reason, HasSubstr("almost as much"));
  // the difference is unclear but the control alone reproduces the effect
  in.vs_control = effect_with(-0.02, -0.06, 0.02);
  const VerdictResult v = decide(in);
  EXPECT_EQ(v.verdict, Verdict::Confounded);
  EXPECT_THAT(v.reason, HasSubstr("the control alone gives"));
}

TEST(StudyVerdict, DoesNotHold) {
  VerdictInput in;
  in.effect = effect_with(0.3, 0.2, 0.4);  // the opposite
  VerdictResult v = decide(in);
  EXPECT_EQ(v.verdict, Verdict::DoesNotHold);
  EXPECT_THAT(v.reason, HasSubstr("opposite"));
  in.effect = effect_with(0.0, -0.004, 0.006);  // no effect: within ±0.01
  v = decide(in);
  EXPECT_EQ(v.verdict, Verdict::DoesNotHold);
  EXPECT_THAT(v.reason, HasSubstr("no effect"));
  in.effect = effect_with(0.0, 0.0, 0.0);  // exactly nothing (a snap that changes no weight's effect)
  EXPECT_EQ(decide(in).verdict, Verdict::DoesNotHold);
  in.effect = effect_with(-0.004, -0.007, -0.002);  // real but below δ, even with a control beaten
  in.vs_control = effect_with(-0.5, -0.6, -0.4);
  v = decide(in);
  EXPECT_EQ(v.verdict, Verdict::DoesNotHold);
  EXPECT_THAT(v.reason, HasSubstr("negligible"));
}

TEST(StudyVerdict, Inconclusive) {
  VerdictInput in;
  in.effect = effect_with(-0.05, -0.15, 0.05);  // includes zero and reaches beyond ±δ
  VerdictResult v = decide(in);
  EXPECT_EQ(v.verdict, Verdict::Inconclusive);
  ASSERT_TRUE(v.windows_needed);
  // half-width 0.1, target |Δ| = 0.05: (0.1 / 0.05)² × 64 windows
  EXPECT_EQ(*v.windows_needed, 256);
  EXPECT_THAT(v.reason, HasSubstr("256 windows"));
  // the effect holds, but whether it beats its control cannot be told
  in.effect = effect_with(-0.2, -0.25, -0.15);
  in.vs_control = effect_with(-0.05, -0.12, 0.02);
  in.control_effect = effect_with(-0.15, -0.3, 0.01);
  v = decide(in);
  EXPECT_EQ(v.verdict, Verdict::Inconclusive);
  EXPECT_TRUE(v.windows_needed);
}

TEST(StudyVerdict, BandAndEquivalence) {
  const std::vector<std::string> names = {"shuffled", "random-init"};
  const std::vector<Interval> far = {{0.2, 0.3}, {-0.4, -0.2}}, near = {{0.2, 0.3}, {-0.01, 0.01}};
  EXPECT_EQ(decide_band({-0.01, 0.01}, 0.05, far, names).verdict, Verdict::Holds);
  const VerdictResult c = decide_band({-0.01, 0.01}, 0.05, near, names);
  EXPECT_EQ(c.verdict, Verdict::Confounded);
  EXPECT_THAT(c.reason, HasSubstr("random-init"));
  EXPECT_EQ(decide_band({0.1, 0.2}, 0.05, far, names).verdict, Verdict::DoesNotHold);
  EXPECT_EQ(decide_band({0.01, 0.07}, 0.05, far, names).verdict, Verdict::Inconclusive);
  const std::vector<Interval> edge = {{0.04, 0.06}, {0.2, 0.3}};
  EXPECT_EQ(decide_band({-0.01, 0.01}, 0.05, edge, names).verdict, Verdict::Inconclusive);

  EXPECT_EQ(decide_equivalence(effect_with(0.0, -0.001, 0.002), 0.01).verdict, Verdict::Holds);
  EXPECT_EQ(decide_equivalence(effect_with(0.3, 0.25, 0.35), 0.01).verdict, Verdict::DoesNotHold);
  EXPECT_EQ(decide_equivalence(effect_with(0.01, -0.01, 0.03), 0.01).verdict, Verdict::Inconclusive);
  // Δ 0.009 with half-width 0.0035 across δ = 0.01: the half-width must shrink to 0.001 (the distance to the
  // edge), so (0.0035 / 0.001)² × 64 windows
  const VerdictResult e = decide_equivalence(effect_with(0.009, 0.0055, 0.0125), 0.01);
  EXPECT_EQ(e.verdict, Verdict::Inconclusive);
  ASSERT_TRUE(e.windows_needed);
  EXPECT_NEAR(double(*e.windows_needed), 64 * 3.5 * 3.5, 1.0);
}

TEST(StudyVerdict, Names) {
  EXPECT_EQ(verdict_name(Verdict::Holds), "holds");
  EXPECT_EQ(verdict_name(Verdict::Confounded), "confounded");
  EXPECT_EQ(verdict_name(Verdict::DoesNotHold), "does not hold");
  EXPECT_EQ(verdict_name(Verdict::Inconclusive), "inconclusive");
}

TEST(StudyStats, SeedsOfTextsAreStable) {
  EXPECT_EQ(seed_of("c1/prune/s0", 0), seed_of("c1/prune/s0", 0));
  EXPECT_NE(seed_of("c1/prune/s0", 0), seed_of("c1/prune/s1", 0));
  EXPECT_NE(seed_of("c1/prune/s0", 0), seed_of("c1/prune/s0", 1));
}
