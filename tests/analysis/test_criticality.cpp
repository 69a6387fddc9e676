// analysis/criticality against direct computations written here, on a tiny random model: the embedding
// entry point, every formula of rpt-spec §7, λ's endpoint identity, determinism, ε = 0, bad options.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "../common/test_util.hpp"
#include "analysis/criticality.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "model/model.hpp"

namespace tl {
namespace {

using test::random_tokens;

struct Tiny {
  Model model;
  Tiny(int layers = 2) {
    BitNetConfig c = config_preset("tiny");
    c.num_hidden_layers = layers;
    model = make_model(c);
    init_random(model, 7);
  }
};

// The L2 norm of n floats, plainly.
double norm2(const float* a, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i]) * a[i];
  return std::sqrt(s);
}

TEST(ForwardEmbeddings, EqualsTokenForwardBitForBit) {
  Tiny t(3);
  CpuModel cpu(t.model);
  const int64_t B = 2, T = 17, C = cpu.config().hidden_size;
  const auto tok = random_tokens(B * T, cpu.config().vocab_size, 3);
  ForwardTaps ta, tb;
  ta.layers = tb.layers = {0, 1, 2};
  std::vector<float> ha, hb;
  cpu.forward(tok, B, T, ha, &ta);
  std::vector<float> x(size_t(B * T * C));  // (B,T,C)
  for (int64_t n = 0; n < B * T; ++n)
    std::memcpy(x.data() + n * C, cpu.embedding_rows() + tok[size_t(n)] * C, size_t(C) * sizeof(float));
  cpu.forward_embeddings(x.data(), B, T, hb, &tb);
  ASSERT_EQ(ha.size(), hb.size());
  EXPECT_EQ(0, std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(float)));
  for (int l = 0; l < 3; ++l) {
    const auto key = "layers." + std::to_string(l) + ".output";
    EXPECT_EQ(ta.f32.at(key), tb.f32.at(key)) << key;
  }
  EXPECT_EQ(embed(cpu, tok), x);
  // A different input gives a different output (the embeddings are really used).
  x[5] += 1.0f;
  cpu.forward_embeddings(x.data(), B, T, hb);
  EXPECT_NE(ha, hb);
  EXPECT_THROW(cpu.forward_embeddings(x.data(), 1, 0, hb), Error);
  EXPECT_THROW(cpu.forward_embeddings(nullptr, 1, 2, hb), Error);
  EXPECT_THROW(cpu.forward_embeddings(x.data(), 1, cpu.config().max_position_embeddings + 1, hb), Error);
}

TEST(Criticality, HiddenStatesAreEmbeddingsThenBlockOutputs) {
  Tiny t;
  CpuModel cpu(t.model);
  const int64_t T = 9, C = cpu.config().hidden_size, L = 2;
  const auto tok = random_tokens(T, cpu.config().vocab_size, 4);
  const auto x = embed(cpu, tok);
  std::vector<float> h, hidden;
  hidden_states_from_embeddings(cpu, x.data(), T, h);
  ASSERT_EQ(h.size(), size_t((L + 1) * T * C));
  EXPECT_TRUE(std::equal(x.begin(), x.end(), h.begin()));
  ForwardTaps taps;
  taps.layers = {0, 1};
  cpu.forward(tok, 1, T, hidden, &taps);
  for (int64_t l = 0; l < L; ++l) {
    const auto& o = taps.f32.at("layers." + std::to_string(l) + ".output");
    EXPECT_TRUE(std::equal(o.begin(), o.end(), h.begin() + (l + 1) * T * C)) << l;
  }
  // outputs_only records the same outputs and nothing else
  ForwardTaps lean;
  lean.layers = {0, 1};
  lean.outputs_only = true;
  std::vector<float> hidden2;
  cpu.forward(tok, 1, T, hidden2, &lean);
  EXPECT_EQ(hidden, hidden2);
  EXPECT_EQ(lean.f32.size(), 2u);
  EXPECT_TRUE(lean.i8.empty());
  EXPECT_EQ(lean.f32.at("layers.1.output"), taps.f32.at("layers.1.output"));
  EXPECT_GT(taps.f32.size(), 2u);
}

TEST(Criticality, RelativePerturbationFormula) {
  const std::vector<float> a = {3, 4, 0}, b = {3, 4, 1};
  EXPECT_DOUBLE_EQ(relative_perturbation(a.data(), b.data(), 3), 1.0 / (5.0 + 1e-8));
  EXPECT_DOUBLE_EQ(relative_perturbation(a.data(), a.data(), 3), 0.0);
  const std::vector<float> z = {0, 0, 0};
  EXPECT_DOUBLE_EQ(relative_perturbation(z.data(), b.data(), 3), std::sqrt(26.0) / 1e-8);  // the 1e-8 guard
}

TEST(Criticality, BlockStatsMatchDirectComputation) {
  const int64_t L = 3, T = 4, C = 5;
  Rng rng(11);
  std::vector<float> h(size_t((L + 1) * T * C));
  for (auto& v : h) v = float(rng.normal() * 3);
  const BlockStats s = block_stats(h.data(), L, T, C);
  for (int64_t l = 0; l < L; ++l) {
    double in = 0, out = 0, corr = 0;
    for (int64_t t = 0; t < T; ++t) {
      const float* a = h.data() + (l * T + t) * C;
      const float* b = h.data() + ((l + 1) * T + t) * C;
      std::vector<float> d(static_cast<size_t>(C));
      for (int64_t c = 0; c < C; ++c) d[size_t(c)] = b[c] - a[c];
      in += norm2(a, size_t(C)) / T;
      out += norm2(b, size_t(C)) / T;
      corr += norm2(d.data(), size_t(C)) / T;
    }
    EXPECT_NEAR(s.in_norm[size_t(l)], in, 1e-9);
    EXPECT_NEAR(s.out_norm[size_t(l)], out, 1e-9);
    EXPECT_NEAR(s.corr_norm[size_t(l)], corr, 1e-6);  // the test's difference is rounded to fp32
    EXPECT_NEAR(s.br[size_t(l)], out / (in + 1e-8), 1e-9);
    EXPECT_NEAR(s.cr[size_t(l)], corr / (in + 1e-8), 1e-6);
  }
}

TEST(Criticality, LambdaEndpointIdentityAndStudyNumbers) {
  // The study's own check (rpt-spec §7.4): (ln 0.0282 - ln 0.0298) / 29 = -0.0019.
  std::vector<double> D(30, 0.04);
  D.front() = 0.0298;
  D.back() = 0.0282;
  D[13] = 0.0486;  // the bell does not enter λ
  EXPECT_NEAR(study_lambda(D), -0.0019, 5e-5);
  EXPECT_NEAR(study_amplification(D), 0.0282 / (0.0298 + 1e-12), 1e-12);
  // λ·(L-1) = ln(D_{L-1} + 1e-12) - ln(D_0 + 1e-12) = the telescoped sum of per-layer log ratios
  Rng rng(5);
  std::vector<double> E(7);
  for (auto& e : E) e = std::exp(rng.normal());
  E[0] = 0;  // the 1e-12 guard
  double telescoped = 0;
  for (size_t l = 1; l < E.size(); ++l) telescoped += std::log((E[l] + 1e-12) / (E[l - 1] + 1e-12));
  EXPECT_NEAR(study_lambda(E) * 6, std::log(E.back() + 1e-12) - std::log(1e-12), 1e-12);
  EXPECT_NEAR(study_lambda(E) * 6, telescoped, 1e-9);
  EXPECT_THROW(study_lambda({0.1}), Error);
}

TEST(Criticality, LabelsAndBands) {
  EXPECT_EQ(br_label(2.51), "SUPERCRITICAL");  // the study's mean BR
  EXPECT_EQ(br_label(1.09), "CRITICAL");
  EXPECT_EQ(br_label(0.91), "CRITICAL");
  EXPECT_EQ(br_label(0.89), "SUBCRITICAL");
  EXPECT_EQ(br_label(1.1000001), "SUPERCRITICAL");
  EXPECT_EQ(lambda_label(-0.002), "CRITICAL");
  EXPECT_EQ(lambda_label(-0.05), "SUBCRITICAL");
  EXPECT_EQ(lambda_label(0.06), "SUPERCRITICAL");
  EXPECT_EQ(soc_verdict(2.51, -0.002), "PARTIAL");
  EXPECT_EQ(soc_verdict(1.0, 0.0), "VALIDATED");
  EXPECT_EQ(soc_verdict(2.0, 0.2), "NOT CONFIRMED");
}

TEST(Criticality, StudySummaryAggregates) {
  BlockStats a, b;
  a.in_norm = {1, 2, 3};
  a.out_norm = a.corr_norm = a.in_norm;
  b = a;
  a.br = {0.9, 1.0, 3.0};
  b.br = {1.1, 1.02, 1.0};
  a.cr = b.cr = {0.5, 0.5, 0.5};
  Profile p{0.01, {0.02, 0.04, 0.01}}, q{0.03, {0.04, 0.02, 0.03}};
  const StudySummary s = study_summary({a, b}, {p, q});
  EXPECT_DOUBLE_EQ(s.br[0], 1.0);
  EXPECT_DOUBLE_EQ(s.br[2], 2.0);
  EXPECT_DOUBLE_EQ(s.D[0], 0.03);
  EXPECT_DOUBLE_EQ(s.D[2], 0.02);
  EXPECT_DOUBLE_EQ(s.D_in, 0.02);
  const double avg = (1.0 + 1.01 + 2.0) / 3;
  EXPECT_NEAR(s.avg_br, avg, 1e-15);
  const double var = ((1 - avg) * (1 - avg) + (1.01 - avg) * (1.01 - avg) + (2 - avg) * (2 - avg)) / 3;
  EXPECT_NEAR(s.std_br, std::sqrt(var), 1e-15);  // population std
  EXPECT_EQ(s.min_br_layer, 0);
  EXPECT_EQ(s.max_br_layer, 2);
  EXPECT_EQ(s.layers_in_band, 2);
  EXPECT_NEAR(s.lambda, (std::log(0.02 + 1e-12) - std::log(0.03 + 1e-12)) / 2, 1e-15);
  EXPECT_EQ(s.br_label, "SUPERCRITICAL");
}

TEST(Criticality, PercentileIsNumpyLinear) {
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 25), 1.75);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 100), 4);
  EXPECT_DOUBLE_EQ(percentile({7}, 2.5), 7);
}

// The study's view recomputed here from the building blocks: mean over texts of δ_l with ε = 0.01 and the
// seed-0 noise, and of the clean BR.
TEST(Criticality, RunMatchesDirectComputation) {
  Tiny t;
  CpuModel cpu(t.model);
  const int64_t L = 2, C = cpu.config().hidden_size;
  std::vector<std::vector<int32_t>> texts = {random_tokens(12, 512, 1), random_tokens(7, 512, 2),
                                             random_tokens(20, 512, 3)};
  CriticalityOptions opt;
  opt.eps = {1e-3, 0.01};
  opt.seeds = 2;
  opt.seed = 42;
  const CriticalityResult r = run_criticality(cpu, texts, opt);
  std::vector<double> D(size_t(L), 0.0), br(size_t(L), 0.0), D3(size_t(L), 0.0);
  std::vector<std::vector<double>> g0;  // ε = 1e-3: log-growth samples of layer 1
  std::vector<double> first3, last3;    // ε = 1e-3: δ of the first and last block per sample
  for (size_t i = 0; i < texts.size(); ++i) {
    const int64_t T = int64_t(texts[i].size());
    const auto x = embed(cpu, texts[i]);
    std::vector<float> h, hp, xp(x.size());
    hidden_states_from_embeddings(cpu, x.data(), T, h);
    const auto bs = block_stats(h.data(), L, T, C);
    for (int64_t s = 0; s < 2; ++s) {
      Rng rng(noise_seed(42, s, int64_t(i)));
      for (double eps : {1e-3, 0.01}) {
        Rng r2 = rng;  // the same draw for every ε
        for (size_t k = 0; k < x.size(); ++k) xp[k] = x[k] + float(eps) * float(r2.normal());
        hidden_states_from_embeddings(cpu, xp.data(), T, hp);
        const size_t n = size_t(T * C);
        std::vector<double> d;
        for (int64_t l = 0; l < L; ++l) {
          double num = 0, den = 0;
          for (size_t k = 0; k < n; ++k) {
            const double a = h[(l + 1) * n + k], b = hp[(l + 1) * n + k];
            num += (b - a) * (b - a);
            den += a * a;
          }
          d.push_back(std::sqrt(num) / (std::sqrt(den) + 1e-8));
        }
        if (eps == 0.01 && s == 0)
          for (int64_t l = 0; l < L; ++l) D[size_t(l)] += d[size_t(l)] / 3;
        if (eps == 1e-3) {
          for (int64_t l = 0; l < L; ++l) D3[size_t(l)] += d[size_t(l)] / 6;
          g0.push_back({std::log(d[1] / d[0])});
          first3.push_back(d[0]);
          last3.push_back(d[1]);
        }
      }
    }
    for (int64_t l = 0; l < L; ++l) br[size_t(l)] += bs.br[size_t(l)] / 3;
  }
  for (int64_t l = 0; l < L; ++l) {
    EXPECT_NEAR(r.study.D[size_t(l)], D[size_t(l)], 1e-12 * (1 + D[size_t(l)]));
    EXPECT_NEAR(r.study.br[size_t(l)], br[size_t(l)], 1e-12);
    EXPECT_NEAR(r.sweep[0].D[size_t(l)], D3[size_t(l)], 1e-12);
  }
  EXPECT_NEAR(r.study.lambda, std::log(D[1] + 1e-12) - std::log(D[0] + 1e-12), 1e-12);
  std::vector<double> g;
  for (auto& v : g0) g.push_back(v[0]);
  EXPECT_NEAR(r.sweep[0].growth[1].median, percentile(g, 50), 1e-12);
  EXPECT_EQ(r.sweep[0].growth[1].n, 6);
  ASSERT_EQ(r.sweep[0].delta_first.size(), 6u);  // text-major, seed-minor
  for (size_t k = 0; k < 6; ++k) {
    EXPECT_NEAR(r.sweep[0].delta_first[k], first3[k], 1e-12 * (1 + first3[k]));
    EXPECT_NEAR(r.sweep[0].delta_last[k], last3[k], 1e-12 * (1 + last3[k]));
  }
  EXPECT_LE(r.sweep[0].growth[1].ci_lo, r.sweep[0].growth[1].median);
  EXPECT_GE(r.sweep[0].growth[1].ci_hi, r.sweep[0].growth[1].median);
  // the study's view is the sweep's ε = 0.01 seed-0 run
  EXPECT_GT(r.study.D[0], r.sweep[0].D[0]);  // larger ε, larger δ
  EXPECT_EQ(r.text_tokens, (std::vector<int64_t>{12, 7, 20}));
}

TEST(Criticality, DeterministicUnderSeedAndSeedMatters) {
  Tiny t;
  CpuModel cpu(t.model);
  const std::vector<std::vector<int32_t>> texts = {random_tokens(10, 512, 8), random_tokens(15, 512, 9)};
  CriticalityOptions opt;
  opt.eps = {1e-2};
  opt.seeds = 2;
  opt.seed = 1;
  auto a = to_json(run_criticality(cpu, texts, opt));
  auto b = to_json(run_criticality(cpu, texts, opt));
  a.erase("seconds");
  b.erase("seconds");
  EXPECT_EQ(a, b);
  opt.seed = 2;
  auto c = to_json(run_criticality(cpu, texts, opt));
  EXPECT_NE(a["study"]["layers"][0]["delta"], c["study"]["layers"][0]["delta"]);
  EXPECT_EQ(a["study"]["layers"][0]["branching_ratio"], c["study"]["layers"][0]["branching_ratio"]);
}

TEST(Criticality, ZeroEpsilonGivesZeroDelta) {
  Tiny t;
  CpuModel cpu(t.model);
  const int64_t T = 11, L = 2, C = cpu.config().hidden_size;
  const auto x = embed(cpu, random_tokens(T, 512, 5));
  const auto noise = gaussian_noise(noise_seed(0, 0, 0), x.size());
  std::vector<float> xp(x.size()), h, hp;
  for (size_t k = 0; k < x.size(); ++k) xp[k] = x[k] + 0.0f * noise[k];
  hidden_states_from_embeddings(cpu, x.data(), T, h);
  hidden_states_from_embeddings(cpu, xp.data(), T, hp);
  const Profile p = perturbation_profile(h.data(), hp.data(), L, T, C);
  EXPECT_EQ(p.delta_in, 0.0);
  for (double d : p.delta) EXPECT_EQ(d, 0.0);
  // and a positive ε gives a positive δ at every layer
  for (size_t k = 0; k < x.size(); ++k) xp[k] = x[k] + 0.01f * noise[k];
  hidden_states_from_embeddings(cpu, xp.data(), T, hp);
  const Profile q = perturbation_profile(h.data(), hp.data(), L, T, C);
  EXPECT_GT(q.delta_in, 0.0);
  for (double d : q.delta) EXPECT_GT(d, 0.0);
}

TEST(Criticality, BadOptionsAreErrors) {
  CriticalityOptions o;
  EXPECT_NO_THROW(validate(o));
  o.eps = {1e-2, 0};
  EXPECT_THROW(validate(o), Error);
  o.eps = {-1e-3};
  EXPECT_THROW(validate(o), Error);
  o.eps = {};
  EXPECT_THROW(validate(o), Error);
  o.eps = {NAN};
  EXPECT_THROW(validate(o), Error);
  o = CriticalityOptions{};
  o.seeds = 0;
  EXPECT_THROW(validate(o), Error);
  EXPECT_THROW(select_analysis_texts({std::string(200, 'a')}, 0), Error);
  EXPECT_THROW(select_analysis_texts({std::string(200, 'a')}, 1, 0), Error);
  Tiny t;
  CpuModel cpu(t.model);
  EXPECT_THROW(run_criticality(cpu, {}, CriticalityOptions{}), Error);
  EXPECT_THROW(run_criticality(cpu, {{}}, CriticalityOptions{}), Error);
  CriticalityOptions bad;
  bad.eps = {0};
  EXPECT_THROW(run_criticality(cpu, {{1, 2, 3}}, bad), Error);
  Tiny one(1);
  CpuModel cpu1(one.model);
  EXPECT_THROW(run_criticality(cpu1, {{1, 2, 3}}, CriticalityOptions{}), Error);  // λ needs 2 layers
}

TEST(Criticality, AnalysisTextSelection) {
  const std::string e = "\xc3\xa9";  // é: 2 bytes, 1 character
  std::vector<std::string> rows = {
      "",
      " " + std::string(100, 'a') + " \n",  // exactly 100 after strip: dropped (the study keeps > 100)
      "  " + std::string(101, 'b') + "\n",  // kept, stripped
      " " + std::string(600, 'x') + e + "\n",
      std::string(300, 'y') + e + e + std::string(300, 'z'),
      std::string(150, 'w'),
  };
  auto t = select_analysis_texts(rows, 3, 500);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0], std::string(101, 'b'));
  EXPECT_EQ(t[1], std::string(500, 'x'));
  EXPECT_EQ(t[2], std::string(300, 'y') + e + e + std::string(198, 'z'));  // 500 code points, 502 bytes
  EXPECT_EQ(select_analysis_texts(rows, 20, 500).size(), 4u);
}

// A model of one decoder layer holding layer `l` of m (embeddings and final norm shared): running it from a
// stream gives block l's output, independently of the hook machinery.
Model single_layer(const Model& m, int64_t l) {
  BitNetConfig c = m.config;
  c.num_hidden_layers = 1;
  Model one = make_model(c);
  for (const auto& v : one.views) {
    std::string src = v.name;
    const std::string p0 = Model::layer_prefix(0);
    if (src.rfind(p0, 0) == 0) src = Model::layer_prefix(l) + src.substr(p0.size());
    const auto from = m.tensor(src);
    std::copy(from.begin(), from.end(), one.params.begin() + long(v.offset));
  }
  return one;
}

// Benettin's renormalisation recomputed block by block with one-layer models: g_l and the rescaled state.
TEST(Criticality, FtleMatchesBlockByBlockComputation) {
  Tiny t(3);
  CpuModel cpu(t.model);
  const int64_t T = 9, L = 3, C = cpu.config().hidden_size;
  const auto tok = random_tokens(T, 512, 21);
  const auto x = embed(cpu, tok);
  std::vector<float> h;
  hidden_states_from_embeddings(cpu, x.data(), T, h);
  const auto dir = gaussian_noise(77, x.size());
  const double eps = 0.01;
  const FtleProfile p = ftle_profile(cpu, x.data(), T, h.data(), dir.data(), eps);
  ASSERT_EQ(p.vanished_at, -1);
  ASSERT_EQ(p.g.size(), size_t(L));
  const size_t n = size_t(T * C);
  // state entering block 0: x + eps·‖x‖·dir/‖dir‖
  std::vector<float> state(n);
  const double s0 = eps * norm2(x.data(), n) / norm2(dir.data(), n);
  for (size_t k = 0; k < n; ++k) state[k] = x[k] + float(s0 * dir[k]);
  for (int64_t l = 0; l < L; ++l) {
    Model one = single_layer(t.model, l);
    CpuModel block(one);
    std::vector<float> hl;
    hidden_states_from_embeddings(block, state.data(), T, hl);  // (2,T,C): state, block l's output
    const float* clean = h.data() + (l + 1) * n;
    std::vector<float> dev(n);
    for (size_t k = 0; k < n; ++k) dev[k] = hl[n + k] - clean[k];
    const double d = norm2(dev.data(), n), ref = norm2(clean, n);
    EXPECT_NEAR(p.g[size_t(l)], std::log(d / (eps * ref)), 1e-9) << "layer " << l;
    for (size_t k = 0; k < n; ++k) state[k] = clean[k] + float(eps * ref / d * dev[k]);
  }
  // the hook is removed afterwards: a plain forward is untouched
  std::vector<float> h2;
  hidden_states_from_embeddings(cpu, x.data(), T, h2);
  EXPECT_EQ(h, h2);
  // a perturbation below fp32 resolution vanishes at the embeddings: no growth is recorded
  const FtleProfile z = ftle_profile(cpu, x.data(), T, h.data(), dir.data(), 1e-12);
  EXPECT_EQ(z.vanished_at, 0);
  EXPECT_TRUE(z.g.empty());
  EXPECT_THROW(ftle_profile(cpu, x.data(), T, h.data(), dir.data(), 1.5), Error);
}

TEST(Criticality, MaskedStatsEqualStatsWithoutTheRows) {
  Tiny t;
  CpuModel cpu(t.model);
  const int64_t T = 8, L = 2, C = cpu.config().hidden_size;
  auto tok = random_tokens(T, 512, 4);
  tok[0] = 0;  // "BOS"
  const auto x = embed(cpu, tok);
  std::vector<float> h;
  hidden_states_from_embeddings(cpu, x.data(), T, h);
  const auto keep = measurement_mask(tok, h.data(), L, C, true, 0, 0);
  ASSERT_EQ(keep[0], 0);
  for (int64_t k = 1; k < T; ++k) EXPECT_EQ(keep[size_t(k)], tok[size_t(k)] == 0 ? 0 : 1);
  // the same arrays without the excluded rows
  std::vector<float> hk;
  int64_t kept = 0;
  for (int64_t l = 0; l <= L; ++l)
    for (int64_t k = 0; k < T; ++k)
      if (keep[size_t(k)]) hk.insert(hk.end(), h.begin() + (l * T + k) * C, h.begin() + (l * T + k + 1) * C);
  for (auto v : keep) kept += v;
  const BlockStats a = block_stats(h.data(), L, T, C, keep.data());
  const BlockStats b = block_stats(hk.data(), L, kept, C);
  for (int64_t l = 0; l < L; ++l) {
    EXPECT_NEAR(a.br[size_t(l)], b.br[size_t(l)], 1e-12);
    EXPECT_NEAR(a.cr[size_t(l)], b.cr[size_t(l)], 1e-12);
  }
  std::vector<float> hp(h);
  for (auto& v : hp) v *= 1.01f;
  std::vector<float> hpk(hk);
  for (auto& v : hpk) v *= 1.01f;
  const Profile pa = perturbation_profile(h.data(), hp.data(), L, T, C, keep.data());
  const Profile pb = perturbation_profile(hk.data(), hpk.data(), L, kept, C);
  EXPECT_NEAR(pa.delta[1], pb.delta[1], 1e-12);
  // an outlier token: 1000x the others' norm at the embeddings is excluded at factor 20, not at 0
  std::vector<float> big(h);
  for (int64_t c = 0; c < C; ++c) big[size_t(3 * C + c)] *= 1000.0f;
  const auto ko = measurement_mask(tok, big.data(), L, C, false, -1, 20);
  EXPECT_EQ(ko[3], 0);
  EXPECT_EQ(std::count(ko.begin(), ko.end(), 0), 1);
  const auto none = measurement_mask(tok, big.data(), L, C, false, -1, 0);
  EXPECT_EQ(std::count(none.begin(), none.end(), 0), 0);
  std::vector<uint8_t> all_out(size_t(T), 0);
  EXPECT_THROW(block_stats(h.data(), L, T, C, all_out.data()), Error);
}

TEST(Criticality, ShuffleKeepsTheValuesAndMovesThem) {
  Tiny t;
  Model m = t.model;
  shuffle_linear_weights(m, 5);
  for (const auto& v : m.views) {
    std::vector<float> a(t.model.params.begin() + long(v.offset),
                         t.model.params.begin() + long(v.offset + v.numel));
    std::vector<float> b(m.params.begin() + long(v.offset), m.params.begin() + long(v.offset + v.numel));
    if (v.kind != ParamKind::Linear) {
      EXPECT_EQ(a, b) << v.name;  // embeddings and norms untouched
      continue;
    }
    EXPECT_NE(a, b) << v.name;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b) << v.name;  // a permutation
  }
  Model m2 = t.model;
  shuffle_linear_weights(m2, 5);
  EXPECT_EQ(m.params, m2.params);  // seeded
  Model m3 = t.model;
  shuffle_linear_weights(m3, 6);
  EXPECT_NE(m.params, m3.params);
}

TEST(Criticality, ControlsRunInOnePassAndDiffer) {
  Tiny t;
  const std::vector<std::vector<int32_t>> texts = {random_tokens(10, 512, 8), random_tokens(13, 512, 9)};
  CriticalityOptions opt;
  opt.eps = {1e-2};
  opt.seeds = 2;
  opt.ftle_eps = {1e-2};
  opt.bootstrap = 50;
  CpuModel cpu(t.model);
  auto alone = to_json(run_criticality(cpu, texts, opt));
  Model m = t.model;
  const CriticalityReport rep = run_criticality_with_controls(m, texts, opt, {"random-init", "shuffled"}, 3);
  ASSERT_EQ(rep.controls.size(), 2u);
  EXPECT_EQ(rep.controls[0].first, "shuffled");  // always before random-init
  EXPECT_EQ(rep.controls[1].first, "random-init");
  auto mj = to_json(rep.model);
  alone.erase("seconds");
  mj.erase("seconds");
  EXPECT_EQ(alone, mj);  // the model's own numbers do not depend on the controls
  EXPECT_NE(rep.controls[0].second.study.br, rep.model.study.br);
  EXPECT_NE(rep.controls[1].second.study.br, rep.controls[0].second.study.br);
  const auto j = to_json(rep);
  EXPECT_EQ(j["comparison"].size(), 3u);
  EXPECT_TRUE(j["controls"].contains("shuffled"));
  EXPECT_EQ(j["ftle"].size(), 1u);
  EXPECT_NE(to_markdown(rep, "x").find("Null-model controls"), std::string::npos);
  EXPECT_THROW(validate_controls({"shuffle"}), Error);
  Model m4 = t.model;
  EXPECT_THROW(run_criticality_with_controls(m4, texts, opt, {"bogus"}, 3), Error);
  EXPECT_EQ(m4.params, t.model.params);  // rejected before anything ran
}

// A BlockRunner that runs one block per call, as the GPU's does (cuda/criticality_runner): block l is a
// one-layer CpuModel of its own, so only the runner contract (in-place changes, stopping) links the blocks.
class OneBlockAtATime final : public BlockRunner {
 public:
  explicit OneBlockAtATime(const Model& m) : full_(m) {
    for (int64_t l = 0; l < m.config.num_hidden_layers; ++l) layers_.push_back(single_layer(m, l));
    for (const Model& one : layers_) blocks_.push_back(std::make_unique<CpuModel>(one));  // layers_ is final
  }
  const BitNetConfig& config() const override { return full_.config(); }
  const float* embedding_rows() const override { return full_.embedding_rows(); }
  void run_blocks(const float* x, int64_t T, const AfterBlock& after_block) override {
    const size_t n = size_t(T * config().hidden_size);
    std::vector<float> stream(x, x + n), h;  // stream (T,C); h (2,T,C)
    for (size_t l = 0; l < blocks_.size(); ++l) {
      hidden_states_from_embeddings(*blocks_[l], stream.data(), T, h);
      std::copy(h.begin() + long(n), h.end(), stream.begin());
      ++blocks_run;
      if (!after_block(int64_t(l), stream.data())) return;
    }
  }
  int64_t blocks_run = 0;

 private:
  CpuModel full_;
  std::vector<Model> layers_;
  std::vector<std::unique_ptr<CpuModel>> blocks_;
};

// Every measurement goes through the runner: a block-at-a-time runner gives the CPU's numbers bit for bit
// (each block's output depends on its input only), and one that stops is not asked for more blocks.
TEST(Criticality, BlockAtATimeRunnerGivesTheSameNumbers) {
  Tiny t(3);
  CpuModel cpu(t.model);
  OneBlockAtATime stepwise(t.model);
  auto tok = random_tokens(14, 512, 30);
  tok[0] = 1;  // "BOS"
  const std::vector<std::vector<int32_t>> texts = {tok, random_tokens(9, 512, 31)};
  CriticalityOptions opt;
  opt.eps = {1e-3, 1e-2};
  opt.seeds = 2;
  opt.ftle_eps = {1e-12, 1e-2};  // the first vanishes at block 0
  opt.bootstrap = 20;
  opt.exclude_bos = true;
  opt.bos_id = 1;
  opt.outlier_factor = 3;
  auto a = to_json(run_criticality(cpu, texts, opt));
  auto b = to_json(run_criticality(stepwise, texts, opt));
  a.erase("seconds");
  b.erase("seconds");
  EXPECT_EQ(a, b);
  EXPECT_EQ(b["ftle"][0]["vanished"], 4);
  // a vanishing FTLE sample stops after the first block
  const int64_t T = int64_t(tok.size());
  const auto x = embed(stepwise, tok);
  EXPECT_EQ(x, embed(cpu, tok));
  std::vector<float> h;
  hidden_states_from_embeddings(stepwise, x.data(), T, h);
  const auto dir = gaussian_noise(5, x.size());
  stepwise.blocks_run = 0;
  EXPECT_EQ(ftle_profile(stepwise, x.data(), T, h.data(), dir.data(), 1e-12).vanished_at, 0);
  EXPECT_EQ(stepwise.blocks_run, 1);
  // a controls run with a runner factory: the same numbers as the default CPU runners
  Model m1 = t.model, m2 = t.model;
  auto r1 = to_json(run_criticality_with_controls(m1, texts, opt, {"shuffled", "random-init"}, 3));
  auto r2 = to_json(run_criticality_with_controls(
      m2, texts, opt, {"shuffled", "random-init"}, 3,
      [](const Model& m) -> std::unique_ptr<BlockRunner> { return std::make_unique<OneBlockAtATime>(m); }));
  for (auto* j : {&r1, &r2}) {
    j->erase("seconds");
    for (auto& [name, c] : (*j)["controls"].items()) c.erase("seconds");
  }
  EXPECT_EQ(r1, r2);
  EXPECT_EQ(m1.params, m2.params);
}

// Counts its calls; changes nothing.
struct CountingHooks : ResidualHooks {
  int64_t attention_calls = 0, block_calls = 0;
  CountingHooks() { attention = block = true; }
  void on_attention(const HookSite&, float*) override { ++attention_calls; }
  void on_block(const HookSite&, const float*, float*) override { ++block_calls; }
};

// The CPU runner's block hook runs after hooks already installed (actprune's), and puts them back.
TEST(Criticality, CpuRunnerKeepsInstalledHooksAndStops) {
  Tiny t(3);
  CpuModel cpu(t.model);
  CountingHooks counting;
  cpu.set_hooks(&counting);
  CpuBlockRunner runner(cpu);
  const auto tok = random_tokens(8, 512, 40);
  const auto x = embed(runner, tok);
  std::vector<int64_t> seen;
  runner.run_blocks(x.data(), int64_t(tok.size()), [&](int64_t l, float*) {
    seen.push_back(l);
    return l < 1;  // stop after block 1
  });
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(counting.attention_calls, 3);  // the forward ran through, the installed hooks saw every layer
  EXPECT_EQ(counting.block_calls, 3);
  EXPECT_EQ(cpu.hooks(), &counting);
  cpu.set_hooks(nullptr);
  EXPECT_THROW(runner.run_blocks(x.data(), 0, [](int64_t, float*) { return true; }), Error);
}

TEST(Criticality, NewOptionsAreValidated) {
  CriticalityOptions o;
  o.ftle_eps = {0};
  EXPECT_THROW(validate(o), Error);
  o.ftle_eps = {1};
  EXPECT_THROW(validate(o), Error);
  o.ftle_eps = {};
  EXPECT_NO_THROW(validate(o));
  o.outlier_factor = 0.5;
  EXPECT_THROW(validate(o), Error);
  o.outlier_factor = 10;
  EXPECT_NO_THROW(validate(o));
  o.exclude_bos = true;
  EXPECT_THROW(validate(o), Error);  // no BOS id
  o.bos_id = 1;
  EXPECT_NO_THROW(validate(o));
}

}  // namespace
}  // namespace tl
