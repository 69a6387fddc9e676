// Pruning (src/prune): the study's sampled threshold, exact quantiles, N:M, the random control, the
// code-level accounting, and the `ternlab prune` command end to end.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "../common/test_util.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "model/quant.hpp"
#include "prune/prune.hpp"

using namespace tl;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

Model tiny_model(uint64_t seed = 0) {
  Model m = make_model(config_preset("tiny"));
  init_random(m, seed);
  return m;
}

std::vector<PruneInput> latent_inputs(const Model& m) {
  std::vector<PruneInput> in;
  for (const auto* v : prune_targets(m)) in.push_back({std::span(m.params.data() + v->offset, v->numel)});
  return in;
}

// Brute force: the k-th smallest candidate magnitude, k = min(int(n * p / 100), n - 1).
float brute_quantile(std::vector<float> mags, double p) {
  std::sort(mags.begin(), mags.end());
  const size_t idx = std::min(size_t(double(mags.size()) * p / 100.0), mags.size() - 1);
  return mags[idx];
}

size_t count_zeros(std::span<const float> w) {
  return size_t(std::count(w.begin(), w.end(), 0.0f));
}

// All linears zero except tensor `name`, which gets `values`.
Model model_with_one_tensor(const std::string& name, const std::vector<float>& values) {
  Model m = tiny_model();
  for (const auto* v : prune_targets(m)) std::fill_n(m.params.data() + v->offset, v->numel, 0.0f);
  auto t = m.tensor(name);
  EXPECT_EQ(t.size(), values.size());
  std::copy(values.begin(), values.end(), t.begin());
  return m;
}

const std::string kQ0 = Model::linear_name(0, kQ);

}  // namespace

// ---------------------------------------------------------------- the study's rule (seed)

TEST(SeedRule, ZerosAreExcludedFromTheStatistic) {
  const std::vector<float> w = {0, 0, 0, 0, 1, -2, 3, 4};
  const std::vector<PruneInput> in = {{std::span(w)}};
  size_t samples = 0;
  // Non-zeros {1, 2, 3, 4}: idx = int(4 * 50 / 100) = 2 -> 3. Counting the zeros would give idx 4 -> 1.
  EXPECT_EQ(seed_threshold(in, 50, 0, kSeedSampleCap, &samples), 3.0f);
  EXPECT_EQ(samples, 4u);
  EXPECT_EQ(exact_threshold(in, 50), 3.0f);
  // idx is clamped to len - 1
  EXPECT_EQ(seed_threshold(in, 99.99, 0), 4.0f);
}

TEST(SeedRule, StrictGreaterThanPrunesTheThresholdValueAndExpectedCount) {
  // q_proj of layer 0 holds 1..4096 with alternating signs, every other linear is zero.
  std::vector<float> vals(64 * 64);
  for (size_t i = 0; i < vals.size(); ++i) vals[i] = float(i + 1) * (i % 2 ? -1.0f : 1.0f);
  Model m = model_with_one_tensor(kQ0, vals);
  PruneOptions o;
  o.method = PruneMethod::Seed;
  o.sparsity = 10;
  const PruneResult r = prune_model(m, o);
  // idx = int(4096 * 0.1) = 409 -> thr = 410; keep |w| > 410: exactly 410 pruned (idx + 1).
  ASSERT_TRUE(r.report.threshold);
  EXPECT_EQ(*r.report.threshold, 410.0f);
  EXPECT_EQ(r.report.pruned, 410u);
  const auto q = m.tensor(kQ0);
  EXPECT_EQ(q[409], 0.0f);    // |w| == thr: pruned
  EXPECT_EQ(q[410], 411.0f);  // just above: kept
  EXPECT_EQ(count_zeros(q), 410u);
  const auto& t = r.report.tensors[size_t(
      std::find_if(r.report.tensors.begin(), r.report.tensors.end(), [](auto& s) { return s.name == kQ0; }) -
      r.report.tensors.begin())];
  EXPECT_EQ(t.pruned, 410u);
  EXPECT_DOUBLE_EQ(t.latent_sparsity_after, 410.0 / 4096.0);
  // Zeros stay zero and are not counted as pruned: the other 13 linears had only zeros.
  EXPECT_EQ(r.report.candidates, 4096u);
  EXPECT_EQ(r.report.latent_zeros_after, r.report.numel - 4096 + 410);
}

TEST(SeedRule, TiesAtTheThresholdAreAllPruned) {
  std::vector<float> vals(64 * 64, 5.0f);
  for (size_t i = 0; i < 100; ++i) vals[i] = 1.0f + float(i) * 0.01f;  // 100 small distinct values
  Model m = model_with_one_tensor(kQ0, vals);
  PruneOptions o;
  o.method = PruneMethod::Global;
  o.sparsity = 50;  // idx 2048 falls among the 3996 fives -> all of them go
  const PruneResult r = prune_model(m, o);
  EXPECT_EQ(*r.report.threshold, 5.0f);
  EXPECT_EQ(r.report.pruned, 4096u);
}

TEST(SeedRule, FiftyThousandCapPerTensor) {
  Rng rng(7);
  std::vector<float> big(120'000), small(1'000);
  for (auto& x : big) x = float(rng.normal());
  for (auto& x : small) x = float(rng.normal());
  big[5] = 0;  // a zero is not a candidate: 119,999 non-zeros, still capped
  size_t samples = 0;
  std::vector<PruneInput> in = {{std::span(big)}};
  seed_threshold(in, 10, 1, kSeedSampleCap, &samples);
  EXPECT_EQ(samples, 50'000u);
  in.push_back({std::span(small)});
  seed_threshold(in, 10, 1, kSeedSampleCap, &samples);
  EXPECT_EQ(samples, 51'000u);
}

TEST(SeedRule, SmallTensorsAreOverweightedSoTheRealisedFractionDiffers) {
  // 120,000 large magnitudes in [1, 2) and 10,000 small ones in [0, 1). At p = 10 the exact global quantile
  // prunes 13,001 (all small + 3,001 large); the pooled sample is 50,000 large + 10,000 small, whose 10%
  // quantile (idx 6000) lies among the small values: only 6,001 go.
  std::vector<float> big(120'000), small(10'000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = 1.0f + float(i) / float(big.size());
  for (size_t i = 0; i < small.size(); ++i) small[i] = (float(i) + 1.0f) / float(small.size() + 1);
  const std::vector<PruneInput> in = {{std::span(big)}, {std::span(small)}};
  auto realised = [&](float thr) {
    size_t n = 0;
    for (float x : big) n += std::fabs(x) <= thr;
    for (float x : small) n += std::fabs(x) <= thr;
    return double(n) / 130'000.0;
  };
  const float seed_thr = seed_threshold(in, 10, 3);
  const float exact_thr = exact_threshold(in, 10);
  EXPECT_EQ(seed_thr, small[6000]);
  EXPECT_NEAR(realised(seed_thr), 6001.0 / 130'000.0, 1e-12);
  EXPECT_NEAR(realised(exact_thr), 13'001.0 / 130'000.0, 1e-12);
  EXPECT_LT(realised(seed_thr), 0.05);  // far from the 10% asked for
}

TEST(SeedRule, DeterministicUnderASeedAndDifferentUnderAnother) {
  Rng rng(11);
  std::vector<float> a(200'000), b(80'000);
  for (auto& x : a) x = float(rng.normal());
  for (auto& x : b) x = float(rng.normal()) * 3.0f;
  const std::vector<PruneInput> in = {{std::span(a)}, {std::span(b)}};
  const float t1 = seed_threshold(in, 37, 1), t1b = seed_threshold(in, 37, 1), t2 = seed_threshold(in, 37, 2);
  EXPECT_EQ(t1, t1b);
  EXPECT_NE(t1, t2);
}

// ---------------------------------------------------------------- exact quantiles

TEST(GlobalRule, ExactQuantileMatchesBruteForceSort) {
  Model m = tiny_model(3);
  // Plant zeros and ties so they matter.
  auto q = m.tensor(kQ0);
  for (size_t i = 0; i < 500; ++i) q[i] = 0;
  for (size_t i = 500; i < 900; ++i) q[i] = (i % 2 ? -0.01f : 0.01f);
  const auto in = latent_inputs(m);
  std::vector<float> mags;
  for (const auto& t : in)
    for (float x : t.w)
      if (x != 0) mags.push_back(std::fabs(x));
  for (double p : {0.0, 0.5, 10.0, 33.3, 50.0, 90.0, 99.999}) {
    size_t n = 0;
    EXPECT_EQ(exact_threshold(in, p, &n), brute_quantile(mags, p)) << p;
    EXPECT_EQ(n, mags.size());
  }
  // Code level: the candidates are the non-zero codes of the quantizer.
  std::vector<PruneInput> cin = in;
  std::vector<float> cmags;
  const auto targets = prune_targets(m);
  for (size_t t = 0; t < targets.size(); ++t) {
    cin[t].code_scale = weight_scale_for(m, *targets[t]);
    const TernaryWeight tw = quantize_weight(m, *targets[t]);
    for (size_t i = 0; i < tw.codes.size(); ++i)
      if (tw.codes[i] != 0) cmags.push_back(std::fabs(cin[t].w[i]));
  }
  for (double p : {1.0, 25.0, 75.0}) EXPECT_EQ(exact_threshold(cin, p), brute_quantile(cmags, p)) << p;

  // And prune_model prunes exactly the candidates at or below it.
  Model g = m;
  PruneOptions o;
  o.method = PruneMethod::Global;
  o.sparsity = 20;
  const PruneResult r = prune_model(g, o);
  const float thr = brute_quantile(mags, 20);
  EXPECT_EQ(*r.report.threshold, thr);
  size_t expect = 0;
  for (float x : mags) expect += x <= thr;
  EXPECT_EQ(r.report.pruned, expect);
  EXPECT_EQ(r.report.samples, mags.size());
}

TEST(PerTensorRule, EachTensorLosesItsOwnQuantile) {
  Model m = tiny_model(5);
  const Model orig = m;
  PruneOptions o;
  o.method = PruneMethod::PerTensor;
  o.sparsity = 30;
  const PruneResult r = prune_model(m, o);
  EXPECT_FALSE(r.report.threshold);
  for (const auto& s : r.report.tensors) {
    std::vector<float> mags;
    for (float x : orig.tensor(s.name))
      if (x != 0) mags.push_back(std::fabs(x));
    const float thr = brute_quantile(mags, 30);
    ASSERT_TRUE(s.threshold);
    EXPECT_EQ(*s.threshold, thr) << s.name;
    size_t expect = 0;
    for (float x : mags) expect += x <= thr;
    EXPECT_EQ(s.pruned, expect) << s.name;
    const size_t k = size_t(double(mags.size()) * 0.3);
    EXPECT_GE(s.pruned, k + 1);  // idx + 1 distinct values (more only on ties)
    EXPECT_NEAR(double(s.pruned) / double(s.candidates), 0.3, 0.01) << s.name;
  }
}

// ---------------------------------------------------------------- N:M

TEST(NMRule, AtMostNPerGroupAndExactlyNWhenPossible) {
  for (auto [n, mm] : {std::pair{2, 4}, std::pair{1, 4}, std::pair{3, 8}}) {
    Model m = tiny_model(9);
    auto q = m.tensor(kQ0);
    for (size_t i = 0; i < 64; ++i) q[i * 3] = 0;  // some groups start with zeros
    const Model orig = m;
    PruneOptions o;
    o.method = PruneMethod::NM;
    o.nm_n = n;
    o.nm_m = mm;
    const PruneResult r = prune_model(m, o);
    for (const auto* v : prune_targets(m)) {
      const std::span<const float> w = m.tensor(v->name), w0 = orig.tensor(v->name);
      const int64_t in = v->shape[1];
      for (int64_t row = 0; row < v->shape[0]; ++row)
        for (int64_t g = 0; g < in; g += mm) {
          int nz = 0, nz0 = 0;
          for (int j = 0; j < mm; ++j) {
            nz += w[size_t(row * in + g + j)] != 0;
            nz0 += w0[size_t(row * in + g + j)] != 0;
          }
          ASSERT_EQ(nz, std::min(n, nz0)) << v->name << " row " << row << " group " << g;
        }
    }
    EXPECT_DOUBLE_EQ(r.report.tensors[0].target, 100.0 * (mm - n) / mm);
  }
  // Ties: the lower index wins.
  std::vector<float> w = {1, 1, 1, 1, 0.5f, -2, 2, 0.5f};
  std::vector<uint8_t> prune(8);
  nm_select({std::span<const float>(w)}, 1, 8, 2, 4, prune.data());
  EXPECT_EQ(prune, (std::vector<uint8_t>{0, 0, 1, 1, 1, 0, 0, 1}));
}

// ---------------------------------------------------------------- random control

TEST(RandomControl, FractionsSeedsAndMatching) {
  Model m = tiny_model(2);
  const Model orig = m;
  PruneOptions o;
  o.method = PruneMethod::Random;
  o.sparsity = 25;
  o.seed = 4;
  const PruneResult r = prune_model(m, o);
  for (const auto& s : r.report.tensors) EXPECT_EQ(s.pruned, size_t(double(s.candidates) * 0.25)) << s.name;
  Model again = orig, other = orig;
  prune_model(again, o);
  EXPECT_EQ(again.params, m.params);
  o.seed = 5;
  prune_model(other, o);
  EXPECT_NE(other.params, m.params);

  // Random pruning is not magnitude pruning: it removes some large weights.
  bool large_removed = false;
  for (const auto* v : prune_targets(m)) {
    const float thr = brute_quantile(
        [&] {
          std::vector<float> a;
          for (float x : orig.tensor(v->name)) a.push_back(std::fabs(x));
          return a;
        }(),
        50);
    const std::span<const float> w = m.tensor(v->name), w0 = orig.tensor(v->name);
    for (size_t i = 0; i < w.size(); ++i) large_removed |= (w[i] == 0 && std::fabs(w0[i]) > thr);
  }
  EXPECT_TRUE(large_removed);

  // --match per-tensor / seed: the same count per tensor as that method.
  for (PruneMethod match : {PruneMethod::PerTensor, PruneMethod::Seed}) {
    Model a = orig, b = orig;
    PruneOptions mo;
    mo.method = match;
    mo.sparsity = 15;
    const PruneResult ra = prune_model(a, mo);
    PruneOptions ro = mo;
    ro.method = PruneMethod::Random;
    ro.match = match;
    ro.seed = 8;
    const PruneResult rb = prune_model(b, ro);
    ASSERT_EQ(ra.report.tensors.size(), rb.report.tensors.size());
    for (size_t t = 0; t < ra.report.tensors.size(); ++t)
      EXPECT_EQ(ra.report.tensors[t].pruned, rb.report.tensors[t].pruned);
    EXPECT_NE(a.params, b.params);
  }
}

// ---------------------------------------------------------------- accounting and scope

namespace {
void check_accounting(const Model& before, const Model& after, const PruneResult& r) {
  const auto targets = prune_targets(before);
  ASSERT_EQ(r.report.tensors.size(), targets.size());
  size_t changed_total = 0;
  for (size_t t = 0; t < targets.size(); ++t) {
    const auto& s = r.report.tensors[t];
    const ParamView& v = *targets[t];
    const TernaryWeight qb = quantize_weight(before, v), qa = quantize_weight(after, after.view(v.name));
    size_t changed = 0;
    for (size_t i = 0; i < qb.codes.size(); ++i) changed += qb.codes[i] != qa.codes[i];
    EXPECT_EQ(s.codes_changed, changed) << v.name;
    EXPECT_EQ(s.scale_before, qb.scale);
    EXPECT_EQ(s.scale_after, qa.scale);
    EXPECT_DOUBLE_EQ(s.code_zero_before, double(qb.zeros) / double(v.numel));
    EXPECT_DOUBLE_EQ(s.code_zero_after, double(qa.zeros) / double(v.numel));
    EXPECT_DOUBLE_EQ(s.latent_sparsity_after, double(count_zeros(after.tensor(v.name))) / double(v.numel));
    EXPECT_DOUBLE_EQ(s.scale_rel_change, (double(qa.scale) - double(qb.scale)) / double(qb.scale));
    // The mask is the support of the pruned tensor.
    const auto w = after.tensor(v.name);
    for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(r.masks[t].keep[i], w[i] != 0 ? 1 : 0);
    changed_total += changed;
  }
  EXPECT_EQ(r.report.codes_changed, changed_total);
  // Non-linear tensors are untouched, bit for bit.
  for (const auto& v : before.views)
    if (v.kind != ParamKind::Linear) {
      const auto a = before.tensor(v.name), b = after.tensor(v.name);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << v.name;
    }
}
}  // namespace

TEST(Accounting, CodesAndScalesAgainstTheQuantizer) {
  for (PruneMethod method : {PruneMethod::Seed, PruneMethod::Global, PruneMethod::PerTensor, PruneMethod::NM,
                             PruneMethod::Random}) {
    const Model orig = tiny_model(1);
    Model m = orig;
    PruneOptions o;
    o.method = method;
    o.sparsity = 30;
    const PruneResult r = prune_model(m, o);
    SCOPED_TRACE(std::string(prune_method_name(method)));
    check_accounting(orig, m, r);
    EXPECT_GT(r.report.pruned, 0u);
    // Pruning lowers mean|W|, so every scale drops.
    EXPECT_LT(r.report.scale_rel_change_max, 0.0);
  }
}

TEST(Accounting, LatentLevelAt25PercentOnlyHitsTheDeadZone) {
  const Model orig = tiny_model(1);
  Model m = orig;
  PruneOptions o;
  o.sparsity = 25;
  const PruneResult r = prune_model(m, o);
  // Gaussian weights: the smallest 25% of |w| (below ~0.32 sigma) all sit in the dead zone (|w| <= ~0.4
  // sigma).
  EXPECT_EQ(r.report.pruned_code_nonzero, 0u);
  EXPECT_GT(r.report.codes_changed, 0u);  // yet codes change: the lower scale promotes 0 -> +-1
}

TEST(Accounting, CodeLevelPrunesOnlyNonZeroCodes) {
  const Model orig = tiny_model(6);
  Model m = orig;
  PruneOptions o;
  o.method = PruneMethod::Global;
  o.level = PruneLevel::Codes;
  o.sparsity = 10;
  const PruneResult r = prune_model(m, o);
  check_accounting(orig, m, r);
  EXPECT_GT(r.report.pruned, 0u);
  EXPECT_EQ(r.report.pruned_code_nonzero, r.report.pruned);
  size_t nonzero_codes = 0;
  for (const auto* v : prune_targets(orig)) {
    const TernaryWeight tw = quantize_weight(orig, *v);
    nonzero_codes += tw.codes.size() - tw.zeros;
    // dead-zone latents are untouched
    const std::span<const float> w = m.tensor(v->name), w0 = orig.tensor(v->name);
    for (size_t i = 0; i < w.size(); ++i)
      if (tw.codes[i] == 0) {
        ASSERT_EQ(w[i], w0[i]);
      }
  }
  EXPECT_EQ(r.report.candidates, nonzero_codes);
  EXPECT_NEAR(r.report.pruned_frac_of_candidates, 0.10, 0.001);
}

TEST(Accounting, FixedScalesStayFixed) {
  const Model orig = [] {
    Model m = tiny_model(4);
    for (const auto* v : prune_targets(m)) m.fixed_scale[v->name] = 0.02f;
    return m;
  }();
  Model m = orig;
  PruneOptions o;
  o.method = PruneMethod::Global;
  o.sparsity = 40;
  const PruneResult r = prune_model(m, o);
  check_accounting(orig, m, r);
  EXPECT_EQ(m.fixed_scale, orig.fixed_scale);
  for (const auto& s : r.report.tensors) {
    EXPECT_TRUE(s.fixed_scale);
    EXPECT_EQ(s.scale_after, 0.02f);
    EXPECT_EQ(s.scale_rel_change, 0.0);
  }
  const auto j = to_json(r.report);
  EXPECT_EQ(j["totals"]["codes_changed"], r.report.codes_changed);
  EXPECT_EQ(j["options"]["method"], "global");
  EXPECT_EQ(j["tensors"].size(), r.report.tensors.size());
}

TEST(Scope, OnlyTheLinearsAreTargets) {
  const Model m = tiny_model();
  const auto t = prune_targets(m);
  EXPECT_EQ(t.size(), 7u * size_t(m.config.num_hidden_layers));
  for (const auto* v : t) {
    EXPECT_EQ(v->kind, ParamKind::Linear);
    EXPECT_EQ(v->name.find("embed"), std::string::npos);
    EXPECT_EQ(v->name.find("norm"), std::string::npos);
  }
}

// ---------------------------------------------------------------- bad options

TEST(BadOptions, ClearErrors) {
  using test::error_of;
  const Model m = tiny_model();
  EXPECT_THAT(error_of([] { parse_prune_method("magnitude"); }), HasSubstr("unknown method 'magnitude'"));
  EXPECT_THAT(error_of([] { parse_prune_level("bits"); }), HasSubstr("unknown level 'bits'"));
  EXPECT_THAT(error_of([] { parse_nm("3:2"); }), HasSubstr("N must not exceed M"));
  EXPECT_THAT(error_of([] { parse_nm("0:4"); }), HasSubstr("at least 1"));
  EXPECT_THAT(error_of([] { parse_nm("2-4"); }), HasSubstr("malformed N:M"));
  EXPECT_THAT(error_of([] { parse_nm("a:4"); }), HasSubstr("malformed N:M"));
  EXPECT_THAT(error_of([] { parse_nm("2:"); }), HasSubstr("malformed N:M"));
  EXPECT_EQ(parse_nm("2:4"), (std::pair{2, 4}));
  for (double p : {100.0, -1.0, 150.0, double(NAN)}) {
    PruneOptions o;
    o.sparsity = p;
    EXPECT_THAT(error_of([&] { validate_prune_options(o, m); }), HasSubstr("[0, 100)"));
  }
  PruneOptions nm;
  nm.method = PruneMethod::NM;
  nm.nm_n = 2;
  nm.nm_m = 3;
  EXPECT_THAT(error_of([&] { validate_prune_options(nm, m); }), HasSubstr("in % M == 0"));
  nm.nm_m = 4;
  nm.level = PruneLevel::Codes;
  EXPECT_THAT(error_of([&] { validate_prune_options(nm, m); }), HasSubstr("latent weights only"));
  PruneOptions mt;
  mt.match = PruneMethod::Seed;
  EXPECT_THAT(error_of([&] { validate_prune_options(mt, m); }), HasSubstr("only for method random"));
  Model mm = m;
  EXPECT_THAT(error_of([&] { prune_model(mm, nm); }), HasSubstr("latent weights only"));
}

// ---------------------------------------------------------------- the command end to end

namespace {

using CmdResult = tl::test::CommandResult;

CmdResult run_cmd(const std::string& args) {
  return tl::test::run_command(std::string(TERNLAB_BINARY) + " " + args);
}

// An independent reader of the mask file's layout (8-byte length, JSON header, U8 data).
struct RawMasks {
  nlohmann::json header;
  std::string data;
};
RawMasks read_raw(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  std::memcpy(&n, all.data(), 8);
  return {nlohmann::json::parse(all.substr(8, n)), all.substr(8 + n)};
}

}  // namespace

TEST(Command, PruneWritesCheckpointMasksAndReport) {
  const fs::path dir = fs::temp_directory_path() / ("ternlab-prune-test-" + std::to_string(getpid()));
  fs::remove_all(dir);
  const auto ck = dir / "ck", out = dir / "out";
  ASSERT_EQ(run_cmd("init --preset tiny -o " + ck.string()).code, 0);
  const CmdResult r =
      run_cmd("prune " + ck.string() + " -o " + out.string() + " --method global --sparsity 20");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("codes changed"));
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                        "masks.safetensors", "prune_report.json", "prune_report.md"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  {
    std::ifstream mf(out / "prune_report.md");
    const std::string md((std::istreambuf_iterator<char>(mf)), std::istreambuf_iterator<char>());
    EXPECT_THAT(md, HasSubstr("ternary-code zeros"));
    EXPECT_THAT(md, HasSubstr("model.layers.1.mlp.down_proj.weight"));
  }

  // The same prune in process: init's model (seed 0) as saved in bf16.
  Model m = tiny_model(0);
  for (float& x : m.params) x = bf16_to_f32(f32_to_bf16(x));
  PruneOptions o;
  o.method = PruneMethod::Global;
  o.sparsity = 20;
  const PruneResult pr = prune_model(m, o);

  const RawMasks raw = read_raw(out / "masks.safetensors");
  EXPECT_EQ(raw.header["__metadata__"]["method"], "global");
  EXPECT_EQ(raw.header["__metadata__"]["sparsity"], "20.0");
  EXPECT_EQ(raw.header["__metadata__"]["level"], "latent");
  EXPECT_EQ(raw.header["__metadata__"]["threshold"], fmt::format("{}", *pr.report.threshold));
  ASSERT_EQ(raw.header.size(), pr.masks.size() + 1);
  for (const auto& mk : pr.masks) {
    const auto& h = raw.header[mk.name];
    EXPECT_EQ(h["dtype"], "U8");
    EXPECT_EQ(h["shape"], (std::vector<int64_t>{mk.out, mk.in}));
    const size_t b = h["data_offsets"][0], e = h["data_offsets"][1];
    ASSERT_EQ(e - b, mk.keep.size());
    EXPECT_EQ(std::memcmp(raw.data.data() + b, mk.keep.data(), mk.keep.size()), 0) << mk.name;
  }
  std::ifstream rf(out / "prune_report.json");
  const auto rep = nlohmann::json::parse(rf);
  EXPECT_EQ(rep["totals"]["pruned"], pr.report.pruned);
  EXPECT_EQ(rep["totals"]["codes_changed"], pr.report.codes_changed);

  // --json and a custom mask path; a second prune of the pruned model sees the zeros as non-candidates.
  const CmdResult j =
      run_cmd("prune " + out.string() + " -o " + (dir / "out2").string() +
              " --method per-tensor --sparsity 10 --json --mask-out " + (dir / "m.st").string());
  ASSERT_EQ(j.code, 0) << j.out;
  const auto jj = nlohmann::json::parse(j.out.substr(j.out.find('{')));
  EXPECT_EQ(jj["totals"]["candidates"], pr.report.numel - pr.report.latent_zeros_after);
  EXPECT_TRUE(fs::exists(dir / "m.st"));

  // Bad flags: non-zero exit and a message.
  auto bad = [&](const std::string& args, const std::string& msg) {
    const CmdResult b = run_cmd("prune " + ck.string() + " " + args);
    EXPECT_NE(b.code, 0) << args;
    EXPECT_THAT(b.out, HasSubstr(msg)) << args;
  };
  bad("-o " + ck.string() + " --sparsity 10", "is the input checkpoint");
  bad("-o " + (dir / "x").string() + " --sparsity 100", "[0, 100)");
  bad("-o " + (dir / "x").string() + " --sparsity 10 --method magnitude", "unknown method");
  bad("-o " + (dir / "x").string() + " --sparsity 10 --level bits", "unknown level");
  bad("-o " + (dir / "x").string() + " --method nm --nm 4:2", "N must not exceed M");
  bad("-o " + (dir / "x").string() + " --method nm --nm 2:3", "in % M == 0");
  bad("-o " + (dir / "x").string() + " --method seed", "--sparsity P is required");
  EXPECT_FALSE(fs::exists(dir / "x" / "model.safetensors"));
  fs::remove_all(dir);
}
