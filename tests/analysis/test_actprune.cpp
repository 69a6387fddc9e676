// analysis/actprune against direct computations written here, on synthetic tensors and a tiny random model:
// torch.quantile's interpolation, ties, counts, every mode's rule inside a real forward, the random control's
// count and seeding, determinism, the natural-sparsity capture, bad options.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/test_util.hpp"
#include "analysis/actprune.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "model/model.hpp"

namespace tl {
namespace {

using test::error_of;
using test::random_tokens;

Model tiny_model(uint64_t seed = 7) {
  Model m = make_model(config_preset("tiny"));
  init_random(m, seed);
  return m;
}

// torch.quantile(v, q), linear interpolation, written out plainly: full sort, fp32 rank, torch's lerp.
float direct_quantile(std::vector<float> v, double q) {
  std::sort(v.begin(), v.end());
  const float rank = float(q) * float(v.size() - 1);
  const size_t lo = size_t(rank), hi = size_t(std::ceil(rank));
  const float w = rank - float(lo);
  return w < 0.5f ? v[lo] + w * (v[hi] - v[lo]) : v[hi] - (v[hi] - v[lo]) * (1.0f - w);
}

std::vector<float> gaussian(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal());
  return v;
}

TEST(ActPrune, TorchQuantileInterpolatesLinearly) {
  // numpy / torch values: [1, 2, 3, 3, 4, 5] at q = 0.5 -> 3, 0.3 -> 2.5, 0.1 -> 1.5, 0 -> 1, 1 -> 5
  const std::vector<float> v = {5, 1, 3, 3, 2, 4};
  auto q = [&](double p) {
    std::vector<float> c = v;
    return torch_quantile(c, p);
  };
  EXPECT_FLOAT_EQ(q(0.5), 3.0f);
  EXPECT_FLOAT_EQ(q(0.3), 2.5f);
  EXPECT_FLOAT_EQ(q(0.1), 1.5f);
  EXPECT_EQ(q(0.0), 1.0f);
  EXPECT_EQ(q(1.0), 5.0f);
  std::vector<float> one = {2.5f};
  EXPECT_EQ(torch_quantile(one, 0.7), 2.5f);
  // A large tensor against the plain computation, bit for bit.
  const auto g = gaussian(10007, 1);
  for (double p : {0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 0.999, 1.0}) {
    std::vector<float> c = g;
    EXPECT_EQ(torch_quantile(c, p), direct_quantile(g, p)) << p;
  }
  std::vector<float> empty;
  EXPECT_THROW(torch_quantile(empty, 0.5), Error);
  std::vector<float> c = v;
  EXPECT_THROW(torch_quantile(c, 1.5), Error);
}

TEST(ActPrune, PruneBelowQuantileKeepsTiesAndCounts) {
  std::vector<float> abs;
  // |x| sorted 0,0,0,0.5,1,1,2,3: P50 -> rank 3.5 -> thr 0.75; the three zeros and 0.5 go
  std::vector<float> x = {0, 1, -1, 0, 2, 0.5f, -3, 0};
  EXPECT_EQ(prune_below_quantile(x.data(), 8, 50, abs), 4);
  EXPECT_EQ(x, (std::vector<float>{0, 1, -1, 0, 2, 0, -3, 0}));
  // thr falls exactly on a tied value: values equal to it are kept
  std::vector<float> t = {1, -1, 1, 1, 2};
  EXPECT_EQ(count_below_quantile(t.data(), 5, 50, abs), 0);
  EXPECT_EQ(prune_below_quantile(t.data(), 5, 50, abs), 0);
  EXPECT_EQ(t, (std::vector<float>{1, -1, 1, 1, 2}));
  // P0 changes nothing
  auto g = gaussian(640, 2);
  const auto g0 = g;
  EXPECT_EQ(prune_below_quantile(g.data(), 640, 0, abs), 0);
  EXPECT_EQ(g, g0);
  // The count is #(|x| < thr) for the directly computed thr, and only those change.
  for (double p : {10.0, 37.5, 50.0, 90.0, 99.9}) {
    std::vector<float> a(g0.size());
    for (size_t i = 0; i < a.size(); ++i) a[i] = std::fabs(g0[i]);
    const float thr = direct_quantile(a, p / 100);
    int64_t want = 0;
    for (float v : a) want += v < thr;
    auto y = g0;
    EXPECT_EQ(count_below_quantile(y.data(), 640, p, abs), want) << p;
    EXPECT_EQ(prune_below_quantile(y.data(), 640, p, abs), want) << p;
    for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(y[i], a[i] < thr ? 0.0f : g0[i]);
    EXPECT_NEAR(double(want) / 640, p / 100, 2.0 / 640);
  }
}

TEST(ActPrune, RandomSubsetHasExactCountAndIsSeeded) {
  const auto g = gaussian(1000, 3);
  auto zeros = [](const std::vector<float>& v) { return std::count(v.begin(), v.end(), 0.0f); };
  auto a = g, b = g, c = g;
  Rng r1(5), r2(5), r3(6);
  zero_random_subset(a.data(), 1000, 377, r1);
  zero_random_subset(b.data(), 1000, 377, r2);
  zero_random_subset(c.data(), 1000, 377, r3);
  EXPECT_EQ(zeros(a), 377);
  EXPECT_EQ(zeros(c), 377);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto all = g;
  zero_random_subset(all.data(), 1000, 1000, r1);
  EXPECT_EQ(zeros(all), 1000);
  EXPECT_THROW(zero_random_subset(all.data(), 10, 11, r1), Error);
  // Uniform: each position is chosen with probability k/n (5000 draws of 3 of 10, 1500 expected each).
  std::vector<int> hits(10, 0);
  Rng r(9);
  for (int d = 0; d < 5000; ++d) {
    std::vector<float> v(10, 1.0f);
    zero_random_subset(v.data(), 10, 3, r);
    for (int i = 0; i < 10; ++i) hits[size_t(i)] += v[size_t(i)] == 0.0f;
  }
  for (int h : hits) EXPECT_NEAR(h, 1500, 150);
  EXPECT_NE(mask_seed(0, 50, 0, 0), mask_seed(1, 50, 0, 0));
  EXPECT_NE(mask_seed(0, 50, 0, 0), mask_seed(0, 60, 0, 0));
  EXPECT_NE(mask_seed(0, 50, 0, 0), mask_seed(0, 50, 1, 0));
  EXPECT_NE(mask_seed(0, 50, 0, 0), mask_seed(0, 50, 0, 1));
}

// Checks each call of the wrapped hook against the rule written out here.
struct Spy : ActPruneHook {
  PruneMode mode;
  double p;
  int64_t calls = 0, checked_zeroed = 0;
  Spy(PruneMode m, double level, uint64_t seed, int64_t L)
      : ActPruneHook(m, level, seed, L), mode(m), p(level) {}

  // x (rows of `row` values) before and after pruning: the zeroed set is |x| < thr of each row.
  void expect_rule(const std::vector<float>& before, const std::vector<float>& after, int64_t row) {
    for (size_t i0 = 0; i0 < before.size(); i0 += size_t(row)) {
      std::vector<float> a(static_cast<size_t>(row));
      for (size_t i = 0; i < a.size(); ++i) a[i] = std::fabs(before[i0 + i]);
      const float thr = direct_quantile(a, p / 100);
      for (size_t i = 0; i < a.size(); ++i) {
        ASSERT_EQ(after[i0 + i], a[i] < thr ? 0.0f : before[i0 + i]) << i0 + i;
        checked_zeroed += a[i] < thr;
      }
    }
  }
  void check_write(const HookSite& s, float* o, bool attention) {
    const int64_t n = s.T * s.C;
    std::vector<float> before(o, o + s.rows() * s.C);
    const int64_t z0 = zeroed;
    if (attention)
      ActPruneHook::on_attention(s, o);
    else
      ActPruneHook::on_mlp(s, o);
    for (int64_t b = 0; b < s.B; ++b)  // each write, each sequence: its own whole-tensor quantile
      expect_rule(std::vector<float>(before.begin() + b * n, before.begin() + (b + 1) * n),
                  std::vector<float>(o + b * n, o + (b + 1) * n), n);
    EXPECT_EQ(zeroed - z0, checked_zeroed - z0_checked);
    z0_checked = checked_zeroed;
    ++calls;
  }
  void on_attention(const HookSite& s, float* o) override { check_write(s, o, true); }
  void on_mlp(const HookSite& s, float* o) override { check_write(s, o, false); }
  void on_block(const HookSite& s, const float* x_in, float* x_out) override {
    const int64_t n = s.T * s.C, N = s.rows() * s.C;
    std::vector<float> r(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) r[size_t(i)] = x_out[i] - x_in[i];  // r = x_out - x_in in fp32
    const int64_t z0 = zeroed;
    ActPruneHook::on_block(s, x_in, x_out);
    if (mode == PruneMode::Random) {
      std::vector<float> abs;
      int64_t want = 0;
      for (int64_t b = 0; b < s.B; ++b) want += count_below_quantile(r.data() + b * n, n, p, abs);
      EXPECT_EQ(zeroed - z0, want);    // exactly the study's count of this (layer, sequence)
      for (int64_t i = 0; i < N; ++i)  // each element keeps r or drops it
        EXPECT_TRUE(x_out[i] == x_in[i] || x_out[i] == x_in[i] + r[size_t(i)]);
    } else {
      // x_out = x_in + r * (|r| >= thr), thr over each sequence's (T,C) (study) or each token's C
      const int64_t row = mode == PruneMode::PerToken ? s.C : n;
      int64_t want = 0;
      for (int64_t i0 = 0; i0 < N; i0 += row) {
        std::vector<float> a(static_cast<size_t>(row));
        for (int64_t i = 0; i < row; ++i) a[size_t(i)] = std::fabs(r[size_t(i0 + i)]);
        const float thr = direct_quantile(a, p / 100);
        for (int64_t i = 0; i < row; ++i) {
          const bool drop = a[size_t(i)] < thr;
          want += drop;
          ASSERT_EQ(x_out[i0 + i], x_in[i0 + i] + (drop ? 0.0f : r[size_t(i0 + i)])) << i0 + i;
        }
      }
      EXPECT_EQ(zeroed - z0, want);
    }
    ++calls;
  }
  int64_t z0_checked = 0;
};

TEST(ActPrune, EveryModeAppliesItsRuleInsideTheForward) {
  Model m = tiny_model();
  CpuModel cpu(m);
  const int64_t B = 2, T = 11, C = cpu.config().hidden_size, L = cpu.config().num_hidden_layers;
  const auto tok = random_tokens(B * T, cpu.config().vocab_size, 3);
  std::vector<float> base, h;
  cpu.forward(tok, B, T, base);
  for (PruneMode mode : {PruneMode::Study, PruneMode::Split, PruneMode::PerToken, PruneMode::Random}) {
    for (double p : {25.0, 60.0}) {
      Spy spy(mode, p, 1, L);
      EXPECT_EQ(spy.block, mode != PruneMode::Split);
      EXPECT_EQ(spy.attention && spy.mlp, mode == PruneMode::Split);
      cpu.set_hooks(&spy);
      cpu.forward(tok, B, T, h);
      cpu.set_hooks(nullptr);
      EXPECT_EQ(spy.calls, mode == PruneMode::Split ? 2 * L : L) << prune_mode_name(mode);
      const int64_t per_call = B * T * C;
      EXPECT_EQ(spy.elements, spy.calls * per_call);
      EXPECT_NEAR(double(spy.zeroed) / double(spy.elements), p / 100, 0.02) << prune_mode_name(mode);
      EXPECT_GT(spy.energy, 0);
      EXPECT_NE(h, base);
    }
  }
}

TEST(ActPrune, ZeroLevelChangesNothingAndRandomIsSeeded) {
  Model m = tiny_model();
  CpuModel cpu(m);
  const int64_t T = 16, L = cpu.config().num_hidden_layers;
  const auto tok = random_tokens(T, cpu.config().vocab_size, 4);
  std::vector<float> base, h;
  cpu.forward(tok, 1, T, base);
  for (PruneMode mode : {PruneMode::Split, PruneMode::PerToken, PruneMode::Random}) {
    ActPruneHook hook(mode, 0, 0, L);  // P0: thr = min, nothing below it
    cpu.set_hooks(&hook);
    cpu.forward(tok, 1, T, h);
    EXPECT_EQ(hook.zeroed, 0);
    if (mode == PruneMode::Split) {
      EXPECT_EQ(h, base);  // the writes are untouched, bit for bit
    }
  }
  auto run_random = [&](uint64_t seed, int64_t* zeroed) {
    ActPruneHook hook(PruneMode::Random, 50, seed, L);
    cpu.set_hooks(&hook);
    std::vector<float> out;
    cpu.forward(tok, 1, T, out);
    cpu.set_hooks(nullptr);
    *zeroed = hook.zeroed;
    return out;
  };
  int64_t z1, z2, z3;
  const auto a = run_random(11, &z1), b = run_random(11, &z2), c = run_random(12, &z3);
  EXPECT_EQ(a, b);
  EXPECT_EQ(z1, z2);
  EXPECT_NE(a, c);
  // The random mask at layer 0 has the study's count on the same r (layer 0 sees the same input).
  ActPruneHook study(PruneMode::Study, 50, 0, 1), random(PruneMode::Random, 50, 11, 1);
  const int64_t C = cpu.config().hidden_size;
  const auto xin = gaussian(size_t(T * C), 5), xout0 = gaussian(size_t(T * C), 6);
  auto xs = xout0, xr = xout0;
  const HookSite site{0, 1, T, C, 0};
  study.on_block(site, xin.data(), xs.data());
  random.on_block(site, xin.data(), xr.data());
  EXPECT_EQ(study.zeroed, random.zeroed);
  EXPECT_NE(xs, xr);
  EXPECT_LT(study.energy_removed, random.energy_removed);  // magnitude pruning removes the small ones
}

TEST(ActPrune, RandomMaskDoesNotDependOnTheBatch) {
  Model m = tiny_model();
  CpuModel cpu(m);
  const int64_t T = 9, L = cpu.config().num_hidden_layers, C = cpu.config().hidden_size;
  const auto tok = random_tokens(2 * T, cpu.config().vocab_size, 8);
  std::vector<float> both, one, two;
  ActPruneHook h2(PruneMode::Random, 40, 3, L);
  cpu.set_hooks(&h2);
  cpu.forward(tok, 2, T, both);
  ActPruneHook h1(PruneMode::Random, 40, 3, L);
  cpu.set_hooks(&h1);
  cpu.forward(std::span(tok).subspan(0, size_t(T)), 1, T, one);
  cpu.forward(std::span(tok).subspan(size_t(T)), 1, T, two);
  cpu.set_hooks(nullptr);
  one.insert(one.end(), two.begin(), two.end());
  EXPECT_EQ(one, both);
  EXPECT_EQ(h1.zeroed, h2.zeroed);
  EXPECT_EQ(both.size(), size_t(2 * T * C));
}

TEST(ActPrune, NaturalSparsityObservesOnly) {
  Model m = tiny_model();
  CpuModel cpu(m);
  const int64_t T = 10, L = cpu.config().num_hidden_layers, C = cpu.config().hidden_size;
  const auto tok = random_tokens(T, cpu.config().vocab_size, 9);
  std::vector<float> base, h;
  ForwardTaps taps;
  taps.layers = {0};
  taps.outputs_only = true;
  cpu.forward(tok, 1, T, base, &taps);
  NaturalSparsityHook nat(L);
  cpu.set_hooks(&nat);
  cpu.forward(tok, 1, T, h);
  cpu.set_hooks(nullptr);
  EXPECT_EQ(h, base);
  const auto s = nat.average();
  ASSERT_EQ(s.size(), size_t(L));
  // layer 0: r = output - embeddings
  const auto& out = taps.f32.at("layers.0.output");
  double sum = 0, mx = 0;
  int64_t below = 0;
  for (int64_t n = 0; n < T; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const double a =
          std::fabs(double(out[size_t(n * C + c)] - cpu.embedding_rows()[tok[size_t(n)] * C + c]));
      sum += a;
      mx = std::max(mx, a);
      below += a < 0.01;
    }
  EXPECT_NEAR(s[0].mean, sum / double(T * C), 1e-12);
  EXPECT_EQ(s[0].max, mx);
  EXPECT_NEAR(s[0].pct_below[1], 100.0 * double(below) / double(T * C), 1e-9);
  EXPECT_GT(s[0].std, 0);
}

std::vector<PplWindow> test_windows(const CpuModel& cpu, int n) {
  PplOptions o;
  o.max_windows = n;
  return make_ppl_windows(random_tokens(128 * (n + 1), cpu.config().vocab_size, 21), o);
}

TEST(ActPrune, RunIsDeterministicAndLevelZeroIsTheBaseline) {
  Model m = tiny_model();
  CpuModel cpu(m);
  const auto windows = test_windows(cpu, 3);
  const Tokenizer tok = Tokenizer::byte_level(int32_t(cpu.config().vocab_size));
  ActPruneOptions opt;
  opt.levels = {0, 30, 60};
  opt.prompts = {"The capital of France is", "Water boils at"};
  opt.max_new = 5;
  PplOptions ppl;
  ppl.max_windows = 3;
  const ActPruneResult a = run_actprune(cpu, windows, ppl, tok, opt);
  EXPECT_EQ(cpu.hooks(), nullptr);
  const ActPruneResult b = run_actprune(cpu, windows, ppl, tok, opt);
  ASSERT_EQ(a.points.size(), 4u * 3u);
  auto ja = to_json(a), jb = to_json(b);
  ja["seconds"] = jb["seconds"] = 0;
  for (auto* j : {&ja, &jb}) {
    (*j)["baseline"]["ppl"]["seconds"] = 0;
    for (auto& p : (*j)["points"]) p["ppl"]["seconds"] = 0;
  }
  EXPECT_EQ(ja, jb);
  EXPECT_EQ(a.baseline.tokens_scored, 3 * 127);
  ASSERT_EQ(a.baseline_generations.size(), 2u);
  EXPECT_EQ(a.baseline_generations[0].prompt_ids.front(), tok.bos_id());  // tokenizer(prompt): BOS first
  EXPECT_LE(a.baseline_generations[0].ids.size(), 5u);
  ASSERT_EQ(a.natural.size(), size_t(cpu.config().num_hidden_layers));
  const ActPrunePoint* study60 = nullptr;
  const ActPrunePoint* random60 = nullptr;
  for (const auto& p : a.points) {
    EXPECT_FALSE(p.skipped);
    if (p.level == 0) {
      EXPECT_EQ(p.ppl.ppl, a.baseline.ppl);
      EXPECT_EQ(p.zeroed, 0);
      EXPECT_EQ(p.generations[0].ids, a.baseline_generations[0].ids);
      continue;
    }
    EXPECT_NE(p.ppl.ppl, a.baseline.ppl);
    EXPECT_NEAR(p.pct_zeroed, p.level, 2.0) << prune_mode_name(p.mode);
    EXPECT_NEAR(p.ppl_ratio, p.ppl.ppl / a.baseline.ppl, 1e-12);
    // counted over the PPL pass only: elements = windows x layers x T x C (x 2 writes for split)
    const int64_t per = 3 * 2 * 128 * cpu.config().hidden_size;
    EXPECT_EQ(p.elements, p.mode == PruneMode::Split ? 2 * per : per);
    if (p.level == 60 && p.mode == PruneMode::Study) study60 = &p;
    if (p.level == 60 && p.mode == PruneMode::Random) random60 = &p;
  }
  ASSERT_TRUE(study60 && random60);
  EXPECT_LT(study60->pct_energy_removed, random60->pct_energy_removed);
  // a different seed changes only the random mode
  opt.seed = 1;
  const ActPruneResult c = run_actprune(cpu, windows, ppl, tok, opt);
  for (size_t i = 0; i < c.points.size(); ++i) {
    if (c.points[i].mode == PruneMode::Random && c.points[i].level > 0) {
      EXPECT_NE(c.points[i].ppl.ppl, a.points[i].ppl.ppl);
    } else {
      EXPECT_EQ(c.points[i].ppl.ppl, a.points[i].ppl.ppl);
    }
  }
  // Markdown and the table name every point.
  const std::string md = to_markdown(a, "t");
  EXPECT_NE(md.find("| random | P60 |"), std::string::npos);
  EXPECT_NE(actprune_table(a).find("per-token"), std::string::npos);
}

TEST(ActPrune, StopRuleSkipsTheRestOfAMode) {
  Model m = tiny_model();
  CpuModel cpu(m);
  const auto windows = test_windows(cpu, 1);
  const Tokenizer tok = Tokenizer::byte_level(int32_t(cpu.config().vocab_size));
  ActPruneOptions opt;
  opt.modes = {PruneMode::Study};
  opt.levels = {10, 90, 95};
  opt.prompts = {"a"};
  opt.max_new = 1;
  opt.natural = false;
  opt.stop_factor = 1.0 + 1e-12;  // any level worse than the baseline stops the mode
  PplOptions ppl;
  ppl.max_windows = 1;
  const auto r = run_actprune(cpu, windows, ppl, tok, opt);
  EXPECT_TRUE(r.natural.empty());
  bool stopped = false;
  for (const auto& p : r.points) {
    EXPECT_EQ(p.skipped, stopped);
    if (!p.skipped && !(p.ppl.ppl <= opt.stop_factor * r.baseline.ppl)) stopped = true;
  }
  opt.stop_rule = false;
  for (const auto& p : run_actprune(cpu, windows, ppl, tok, opt).points) EXPECT_FALSE(p.skipped);
}

TEST(ActPrune, BadOptionsAreRejected) {
  EXPECT_EQ(parse_prune_modes("study,split,per-token,random").size(), 4u);
  EXPECT_EQ(parse_prune_levels("0,10,50.5,99.9"), (std::vector<double>{0, 10, 50.5, 99.9}));
  EXPECT_NE(error_of([] { parse_prune_modes(""); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prune_modes("study,foo"); }).find("unknown mode 'foo'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prune_modes("study,study"); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prune_levels(""); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prune_levels("100"); }).find("[0, 100)"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prune_levels("-5"); }).find("[0, 100)"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prune_levels("10,x"); }).find("'x' is not a number"), std::string::npos);
  EXPECT_NE(error_of([] { parse_prune_levels("20,10"); }).find("increasing"), std::string::npos);
  ActPruneOptions o;
  o.max_new = -1;
  EXPECT_THROW(validate(o), Error);
  o = ActPruneOptions{};
  o.modes.clear();
  EXPECT_THROW(validate(o), Error);
  o = ActPruneOptions{};
  o.levels = {50, 100};
  EXPECT_THROW(validate(o), Error);
  EXPECT_THROW(ActPruneHook(PruneMode::Study, 100, 0, 2), Error);
  EXPECT_EQ(study_prompts().size(), 3u);
}

}  // namespace
}  // namespace tl
