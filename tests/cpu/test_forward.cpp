// tl::CpuModel against an independent double-precision reference, and the properties a causal LM forward
// must have: KV-cache equality, batch independence, causality, RoPE, fixed scales, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "../common/model_util.hpp"
#include "../common/test_util.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "cpu/forward.hpp"
#include "cpu/generate.hpp"
#include "model/quant.hpp"
#include "naive_reference.hpp"

namespace tl {
namespace {

using test::random_tokens;

// The second test shape: n_kv == n_heads (no GQA), untied lm_head, SiLU, q_dim != hidden, 3 layers.
BitNetConfig shape2() {
  BitNetConfig c = config_preset("tiny");
  c.hidden_size = 48;
  c.intermediate_size = 96;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.head_dim = 16;  // q_dim 64 != hidden 48
  c.vocab_size = 300;
  c.max_position_embeddings = 64;
  c.hidden_act = Activation::Silu;
  c.tie_word_embeddings = false;
  return c;
}

Model random_model(const BitNetConfig& c, uint64_t seed) {
  Model m = make_model(c);
  init_random(m, seed);
  // Norm weights away from 1, so a missing or misplaced norm weight shows.
  test::spread_norm_gains(m, seed + 1);
  return m;
}

std::vector<float> all_logits(CpuModel& cm, const std::vector<int32_t>& tok, int64_t B, int64_t T,
                              ForwardTaps* taps = nullptr) {
  std::vector<float> hidden;
  cm.forward(tok, B, T, hidden, taps);
  std::vector<float> out(size_t(B * T * cm.config().vocab_size));
  cm.logits(hidden.data(), B * T, out.data());
  return out;
}

template <class A, class B>
double rel_l2(const A& a, const B& b) {
  double num = 0, den = 0;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num / den);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// Compares CpuModel with the naive reference: logits and every layer's output to 1e-5 relative L2, and
// every activation code (outside rounding ties) exactly.
void expect_matches_reference(const Model& m, int64_t B, int64_t T, uint64_t seed) {
  CpuModel cm(m);
  const auto tok = random_tokens(B * T, m.config.vocab_size, seed);
  ForwardTaps taps;
  for (int l = 0; l < m.config.num_hidden_layers; ++l) taps.layers.push_back(l);
  const auto got = all_logits(cm, tok, B, T, &taps);
  const auto ref = naive::forward(m, tok, B, T, &taps);

  const double err = rel_l2(got, ref.logits);
  EXPECT_LT(err, 1e-5) << "logits relative L2 error";
  for (const auto& [key, want] : ref.layer_output) {
    ASSERT_TRUE(taps.f32.count(key)) << key;
    EXPECT_LT(rel_l2(taps.f32[key], want), 1e-5) << key;
  }
  EXPECT_EQ(ref.mismatched, 0) << "activation codes differing from CpuModel's away from rounding ties";
  EXPECT_GT(ref.quantized, 0);
  EXPECT_LT(ref.ambiguous, ref.quantized / 100) << "too many near-ties for the comparison to mean much";
  // Logits must not be trivially small (the comparison would be vacuous).
  double norm = 0;
  for (double x : ref.logits) norm += x * x;
  EXPECT_GT(std::sqrt(norm / double(ref.logits.size())), 1e-3);
  std::printf(
      "  logits rel L2 = %.3g over %zu values; codes: %lld checked, %lld near ties, %lld resolved by taps\n",
      err, ref.logits.size(), (long long)ref.quantized, (long long)ref.ambiguous, (long long)ref.flipped);
}

// gated_activation_forward against the formulas written out, value by value and bit for bit: every tail
// length of the vector loop, signed zeros, NaN and infinities (relu2 maps NaN and -0 to 0), and a span
// large enough for the parallel path.
TEST(CpuForward, GatedActivationEqualsTheFormulas) {
  Rng rng(4);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int64_t n : {1, 2, 3, 4, 5, 7, 8, 9, 6912, 70001}) {
    std::vector<float> gate(static_cast<size_t>(n)), up(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      gate[size_t(i)] = float(rng.normal());
      up[size_t(i)] = float(rng.normal());
    }
    const float specials[] = {-0.0f, 0.0f, nan, -inf, inf, 1e-30f, -1e-30f};
    for (size_t i = 0; i < std::size(specials) && i < size_t(n); ++i) gate[i] = specials[i];
    for (Activation act : {Activation::Relu2, Activation::Silu}) {
      std::vector<float> got = gate;
      gated_activation_forward(got.data(), up.data(), n, act);
      for (int64_t i = 0; i < n; ++i) {
        const float g = gate[size_t(i)], u = up[size_t(i)];
        const float r = g > 0 ? g : 0.0f;
        const float want = act == Activation::Relu2 ? (r * r) * u : (g / (1.0f + std::exp(-g))) * u;
        const bool both_nan = std::isnan(want) && std::isnan(got[size_t(i)]);
        ASSERT_TRUE(both_nan || std::memcmp(&want, &got[size_t(i)], 4) == 0)
            << "n=" << n << " i=" << i << " g=" << g << " want " << want << " got " << got[size_t(i)];
      }
    }
  }
}

TEST(CpuForward, MatchesNaiveReferenceTiny) {
  expect_matches_reference(random_model(config_preset("tiny"), 11), 2, 24, 5);
}

TEST(CpuForward, MatchesNaiveReferenceNoGqaUntiedSilu) {
  expect_matches_reference(random_model(shape2(), 12), 2, 20, 6);
}

TEST(CpuForward, FixedScaleIsUsed) {
  Model m = random_model(config_preset("tiny"), 21);
  CpuModel absmean(m);
  const auto tok = random_tokens(16, m.config.vocab_size, 7);
  const auto base = all_logits(absmean, tok, 1, 16);
  // Every linear gets a fixed scale between 0.6 and 1.4 times its absmean.
  Rng rng(3);
  for (int64_t l = 0; l < m.config.num_hidden_layers; ++l)
    for (int w = 0; w < 7; ++w) {
      const auto name = Model::linear_name(l, w);
      m.fixed_scale[name] =
          absmean_scale(m.tensor(name).data(), m.tensor(name).size()) * float(0.6 + 0.8 * rng.uniform());
    }
  CpuModel fixed(m);
  for (int64_t l = 0; l < m.config.num_hidden_layers; ++l)
    for (int w = 0; w < 7; ++w)
      EXPECT_EQ(fixed.linear(l, w).scale, m.fixed_scale.at(Model::linear_name(l, w)));
  const auto got = all_logits(fixed, tok, 1, 16);
  EXPECT_GT(rel_l2(got, base), 1e-2) << "fixed scales had no effect";
  ForwardTaps taps;
  taps.layers = {0, 1};
  all_logits(fixed, tok, 1, 16, &taps);
  const auto ref = naive::forward(m, tok, 1, 16, &taps);
  EXPECT_LT(rel_l2(got, ref.logits), 1e-5);
  EXPECT_EQ(ref.mismatched, 0);
}

TEST(CpuForward, KVCacheMatchesFullForward) {
  for (const BitNetConfig& c : {config_preset("tiny"), shape2()}) {
    Model m = random_model(c, 31);
    CpuModel cm(m);
    const int64_t T = 32, V = c.vocab_size, C = c.hidden_size;
    const auto tok = random_tokens(T, V, 9);
    std::vector<float> full_hidden;
    cm.forward(tok, 1, T, full_hidden);
    std::vector<float> full(size_t(T * V));
    cm.logits(full_hidden.data(), T, full.data());

    // Prompt of T/2, then one token at a time.
    KVCache cache = cm.make_cache(T);
    std::vector<float> step_hidden, h;
    cm.forward_step(cache, std::span(tok).subspan(0, T / 2), h);
    step_hidden.insert(step_hidden.end(), h.begin(), h.end());
    for (int64_t t = T / 2; t < T; ++t) {
      cm.forward_step(cache, std::span(tok).subspan(size_t(t), 1), h);
      ASSERT_EQ(h.size(), size_t(C));
      step_hidden.insert(step_hidden.end(), h.begin(), h.end());
    }
    EXPECT_EQ(cache.length, T);
    // The hidden states are bit-identical: each row's BitLinear outputs are exact integers times the same
    // scales, and attention scores a (query, key) pair with the same code on both paths.
    EXPECT_EQ(max_abs_diff(step_hidden, full_hidden), 0.0);
    std::vector<float> step(size_t(T * V));
    cm.logits(step_hidden.data(), T, step.data());
    // The LM head's sgemm may sum in another order for another row count: tolerance 1e-5 absolute
    // (logits here are O(0.1 - 1)).
    EXPECT_LE(max_abs_diff(step, full), 1e-5);

    // The cache is full now.
    EXPECT_THROW(cm.forward_step(cache, std::span(tok).subspan(0, 1), h), Error);
    EXPECT_EQ(cache.length, T);
    cache.clear();
    cm.forward_step(cache, std::span(tok).subspan(0, 1), h);
    EXPECT_EQ(max_abs_diff(h, std::vector<float>(full_hidden.begin(), full_hidden.begin() + C)), 0.0);
  }
}

TEST(CpuForward, KVCacheErrors) {
  Model m = random_model(config_preset("tiny"), 41);
  CpuModel cm(m);
  EXPECT_THROW(cm.make_cache(m.config.max_position_embeddings + 1), Error);
  EXPECT_THROW(cm.make_cache(0), Error);
  KVCache cache = cm.make_cache(4);
  std::vector<float> h;
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  EXPECT_THROW(cm.forward_step(cache, five, h), Error);
  EXPECT_EQ(cache.length, 0);
  const std::vector<int32_t> bad = {1, int32_t(m.config.vocab_size)};
  EXPECT_THROW(cm.forward_step(cache, bad, h), Error);
  EXPECT_EQ(cache.length, 0);  // untouched on error
  Model other = random_model(shape2(), 1);
  KVCache wrong(other.config, 4);
  EXPECT_THROW(cm.forward_step(wrong, std::vector<int32_t>{1}, h), Error);
}

TEST(CpuForward, BatchIndependence) {
  Model m = random_model(config_preset("tiny"), 51);
  CpuModel cm(m);
  const int64_t B = 3, T = 12, C = m.config.hidden_size, V = m.config.vocab_size;
  const auto tok = random_tokens(B * T, V, 13);
  std::vector<float> batch_hidden;
  cm.forward(tok, B, T, batch_hidden);
  const auto batch_logits = all_logits(cm, tok, B, T);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> one(tok.begin() + b * T, tok.begin() + (b + 1) * T);
    std::vector<float> hidden;
    cm.forward(one, 1, T, hidden);
    std::vector<float> ref(batch_hidden.begin() + b * T * C, batch_hidden.begin() + (b + 1) * T * C);
    EXPECT_EQ(max_abs_diff(hidden, ref), 0.0) << "sequence " << b;
    const auto lg = all_logits(cm, one, 1, T);
    EXPECT_LE(max_abs_diff(lg, std::vector<float>(batch_logits.begin() + b * T * V,
                                                  batch_logits.begin() + (b + 1) * T * V)),
              1e-5);
  }
}

TEST(CpuForward, Causality) {
  Model m = random_model(config_preset("tiny"), 61);
  CpuModel cm(m);
  const int64_t T = 16, t0 = 9, V = m.config.vocab_size;
  auto tok = random_tokens(T, V, 17);
  const auto a = all_logits(cm, tok, 1, T);
  tok[t0] = (tok[t0] + 1) % int32_t(V);
  const auto b = all_logits(cm, tok, 1, T);
  for (int64_t t = 0; t < T; ++t) {
    double d = 0;
    for (int64_t v = 0; v < V; ++v) d = std::max(d, std::fabs(double(a[t * V + v]) - double(b[t * V + v])));
    if (t < t0)
      EXPECT_EQ(d, 0.0) << "position " << t << " saw a later token";
    else
      EXPECT_GT(d, 1e-4) << "position " << t << " did not see token " << t0;
  }
}

TEST(CpuForward, BadInputsThrow) {
  Model m = random_model(config_preset("tiny"), 71);
  CpuModel cm(m);
  std::vector<float> h;
  const int32_t V = int32_t(m.config.vocab_size);
  EXPECT_THROW(cm.forward(std::vector<int32_t>{1, V, 2}, 1, 3, h), Error);
  EXPECT_THROW(cm.forward(std::vector<int32_t>{1, -1, 2}, 1, 3, h), Error);
  EXPECT_THROW(cm.forward(std::vector<int32_t>{1, 2, 3}, 2, 2, h), Error);  // size != B*T
  const int64_t T = m.config.max_position_embeddings + 1;
  EXPECT_THROW(cm.forward(std::vector<int32_t>(size_t(T), 1), 1, T, h), Error);
  EXPECT_NO_THROW(cm.forward(std::vector<int32_t>{0, V - 1}, 1, 2, h));
  // A model whose linear has the wrong shape is rejected when preparing.
  Model bad = random_model(config_preset("tiny"), 72);
  for (auto& v : bad.views)
    if (v.name == Model::linear_name(1, kUp)) v.shape = {v.shape[1], v.shape[0]};
  EXPECT_THROW(CpuModel{bad}, Error);
}

TEST(CpuForward, TapsRecordCodesOfTheirInputs) {
  Model m = random_model(config_preset("tiny"), 81);
  CpuModel cm(m);
  const int64_t B = 2, T = 5, C = m.config.hidden_size, F = m.config.intermediate_size;
  const auto tok = random_tokens(B * T, m.config.vocab_size, 19);
  ForwardTaps taps;
  taps.layers = {1};
  std::vector<float> h;
  cm.forward(tok, B, T, h, &taps);
  EXPECT_FALSE(taps.f32.count("layers.0.output"));
  ASSERT_TRUE(taps.f32.count("layers.1.output"));
  EXPECT_EQ(taps.f32["layers.1.output"].size(), size_t(B * T * C));
  for (int w = 0; w < 7; ++w) {
    const std::string key = std::string("layers.1.") + kLinearNames[w] + ".input";
    ASSERT_TRUE(taps.f32.count(key) && taps.i8.count(key) && taps.f32.count(key + "_scale")) << key;
    const auto& x = taps.f32[key];
    const int64_t K = int64_t(x.size()) / (B * T);
    EXPECT_EQ(K, w == kDown ? F : (w == kO ? m.config.q_dim() : C)) << key;
    std::vector<int8_t> q(static_cast<size_t>(K));
    for (int64_t n = 0; n < B * T; ++n) {
      const float s = quantize_activation_row(x.data() + n * K, size_t(K), q.data());
      EXPECT_EQ(s, taps.f32[key + "_scale"][size_t(n)]);
      EXPECT_TRUE(std::equal(q.begin(), q.end(), taps.i8[key].begin() + n * K)) << key << " row " << n;
    }
  }
  // Layer 1's q_proj input is input_layernorm(layer 0's output).
  ForwardTaps t0;
  t0.layers = {0};
  cm.forward(tok, B, T, h, &t0);
  std::vector<float> want0(size_t(B * T * C));
  rmsnorm_forward(want0.data(), t0.f32["layers.0.output"].data(),
                  m.tensor("model.layers.1.input_layernorm.weight").data(), B * T, C,
                  float(m.config.rms_norm_eps));
  EXPECT_EQ(max_abs_diff(want0, taps.f32["layers.1.self_attn.q_proj.input"]), 0.0);
}

// ---------------------------------------------------------------------------------------------------------
// Residual hooks and greedy generation

// Records every call (site and order) and optionally scales or zeroes what it is given.
struct RecordingHooks : ResidualHooks {
  struct Call {
    char what;  // 'a' attention, 'm' MLP, 'b' block
    HookSite site;
  };
  std::vector<Call> calls;
  std::vector<std::vector<float>> block_in;  // x_in per block call
  float write_scale = 1.0f;                  // multiplies the attention and MLP writes (1: untouched)
  bool block_identity = false;               // x_out = x_in
  RecordingHooks() { attention = mlp = block = true; }
  void on_attention(const HookSite& s, float* o) override {
    calls.push_back({'a', s});
    if (write_scale != 1.0f)
      for (int64_t i = 0; i < s.rows() * s.C; ++i) o[i] *= write_scale;
  }
  void on_mlp(const HookSite& s, float* o) override {
    calls.push_back({'m', s});
    if (write_scale != 1.0f)
      for (int64_t i = 0; i < s.rows() * s.C; ++i) o[i] *= write_scale;
  }
  void on_block(const HookSite& s, const float* x_in, float* x_out) override {
    calls.push_back({'b', s});
    block_in.emplace_back(x_in, x_in + s.rows() * s.C);
    if (block_identity) std::copy(x_in, x_in + s.rows() * s.C, x_out);
  }
};

TEST(CpuHooks, NoOpHooksAreBitIdentical) {
  Model m = random_model(shape2(), 61);
  CpuModel cm(m);
  const int64_t B = 2, T = 9, C = m.config.hidden_size;
  const auto tok = random_tokens(B * T, m.config.vocab_size, 3);
  ForwardTaps ta, tb;
  ta.layers = tb.layers = {0, 1, 2};
  std::vector<float> plain, hooked, ep, eh;
  cm.forward(tok, B, T, plain, &ta);
  RecordingHooks h;
  cm.set_hooks(&h);
  EXPECT_EQ(cm.hooks(), &h);
  cm.forward(tok, B, T, hooked, &tb);
  EXPECT_EQ(0, std::memcmp(plain.data(), hooked.data(), plain.size() * sizeof(float)));
  EXPECT_EQ(ta.f32, tb.f32);
  EXPECT_EQ(ta.i8, tb.i8);
  // forward_embeddings and forward_step honour the hooks too, with no change either
  std::vector<float> x(size_t(B * T * C));
  for (int64_t n = 0; n < B * T; ++n)
    std::copy_n(cm.embedding_rows() + tok[size_t(n)] * C, C, x.data() + n * C);
  const size_t before = h.calls.size();
  cm.forward_embeddings(x.data(), B, T, eh);
  EXPECT_EQ(h.calls.size(), before + 9);
  EXPECT_EQ(0, std::memcmp(plain.data(), eh.data(), plain.size() * sizeof(float)));
  KVCache ch = cm.make_cache(T), cp = cm.make_cache(T);
  std::vector<float> s1, s2;
  cm.forward_step(ch, std::span(tok).subspan(0, 4), s1);
  cm.forward_step(ch, std::span(tok).subspan(4, 1), s1);
  cm.set_hooks(nullptr);
  cm.forward_step(cp, std::span(tok).subspan(0, 4), s2);
  cm.forward_step(cp, std::span(tok).subspan(4, 1), s2);
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(ch.k, cp.k);
}

TEST(CpuHooks, CalledPerLayerInOrderWithShapes) {
  Model m = random_model(shape2(), 62);
  CpuModel cm(m);
  const int64_t B = 2, T = 5, C = m.config.hidden_size, L = m.config.num_hidden_layers;
  const auto tok = random_tokens(B * T, m.config.vocab_size, 4);
  RecordingHooks h;
  cm.set_hooks(&h);
  ForwardTaps taps;
  taps.layers = {0, 1, 2};
  taps.outputs_only = true;
  std::vector<float> hidden;
  cm.forward(tok, B, T, hidden, &taps);
  ASSERT_EQ(h.calls.size(), size_t(3 * L));
  for (int64_t l = 0; l < L; ++l)
    for (int k = 0; k < 3; ++k) {
      const auto& c = h.calls[size_t(3 * l + k)];
      EXPECT_EQ(c.what, "amb"[k]);
      EXPECT_EQ(c.site.layer, l);
      EXPECT_EQ(c.site.B, B);
      EXPECT_EQ(c.site.T, T);
      EXPECT_EQ(c.site.C, C);
      EXPECT_EQ(c.site.pos0, 0);
    }
  // x_in of block l is the stream leaving block l-1 (the embeddings for block 0)
  for (int64_t l = 1; l < L; ++l)
    EXPECT_EQ(h.block_in[size_t(l)], taps.f32.at("layers." + std::to_string(l - 1) + ".output"));
  // forward_step: B = 1, T = the new tokens, pos0 = the cached length
  h.calls.clear();
  KVCache cache = cm.make_cache(8);
  cm.forward_step(cache, std::span(tok).subspan(0, 3), hidden);
  cm.forward_step(cache, std::span(tok).subspan(3, 1), hidden);
  ASSERT_EQ(h.calls.size(), size_t(6 * L));
  EXPECT_EQ(h.calls[0].site.T, 3);
  EXPECT_EQ(h.calls[0].site.B, 1);
  EXPECT_EQ(h.calls.back().site.T, 1);
  EXPECT_EQ(h.calls.back().site.pos0, 3);
}

// With every write zeroed, each block is the identity: hidden = final_norm(embeddings).
TEST(CpuHooks, ZeroWritesGiveNormedEmbeddings) {
  Model m = random_model(config_preset("tiny"), 63);
  CpuModel cm(m);
  const int64_t B = 2, T = 6, C = m.config.hidden_size;
  const auto tok = random_tokens(B * T, m.config.vocab_size, 5);
  std::vector<float> x(size_t(B * T * C)), want(x.size()), got;
  for (int64_t n = 0; n < B * T; ++n)
    std::copy_n(cm.embedding_rows() + tok[size_t(n)] * C, C, x.data() + n * C);
  rmsnorm_forward(want.data(), x.data(), m.tensor("model.norm.weight").data(), B * T, C,
                  float(m.config.rms_norm_eps));
  RecordingHooks zero;
  zero.write_scale = 0.0f;
  zero.block = false;
  cm.set_hooks(&zero);
  cm.forward(tok, B, T, got);
  EXPECT_EQ(got, want);
  RecordingHooks ident;  // the whole-block correction removed instead
  ident.attention = ident.mlp = false;
  ident.block_identity = true;
  cm.set_hooks(&ident);
  cm.forward(tok, B, T, got);
  EXPECT_EQ(got, want);
  cm.set_hooks(nullptr);
  cm.forward(tok, B, T, got);
  EXPECT_NE(got, want);
}

TEST(CpuHooks, ModifyingHookGivesSameResultCachedAndFull) {
  Model m = random_model(config_preset("tiny"), 64);
  CpuModel cm(m);
  const int64_t T = 12, C = m.config.hidden_size;
  const auto tok = random_tokens(T, m.config.vocab_size, 6);
  RecordingHooks half;
  half.write_scale = 0.5f;
  half.block = false;
  cm.set_hooks(&half);
  std::vector<float> full, h, steps;
  cm.forward(tok, 1, T, full);
  KVCache cache = cm.make_cache(T);
  cm.forward_step(cache, std::span(tok).subspan(0, 5), h);
  steps = h;
  for (int64_t t = 5; t < T; ++t) {
    cm.forward_step(cache, std::span(tok).subspan(size_t(t), 1), h);
    steps.insert(steps.end(), h.begin(), h.end());
  }
  EXPECT_EQ(steps, full);
  cm.set_hooks(nullptr);
  std::vector<float> plain;
  cm.forward(tok, 1, T, plain);
  EXPECT_NE(plain, full);
  EXPECT_EQ(plain.size(), size_t(T * C));
}

TEST(Generate, ArgmaxTakesTheLowestIndexOnTies) {
  const float row[] = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(argmax(row, 4), 1);
  EXPECT_EQ(argmax(row, 1), 0);
  EXPECT_THROW(argmax(row, 0), Error);
}

// The argmax of the last row of a full forward over prompt + output so far, one token at a time.
std::vector<int32_t> greedy_by_recompute(CpuModel& cm, std::vector<int32_t> seq, int max_new, int32_t eos) {
  const int64_t C = cm.config().hidden_size, V = cm.config().vocab_size;
  std::vector<int32_t> out;
  std::vector<float> hidden, logits(static_cast<size_t>(V));
  while (int(out.size()) < max_new && int64_t(seq.size()) < cm.config().max_position_embeddings) {
    const int64_t T = int64_t(seq.size());
    cm.forward(seq, 1, T, hidden);
    cm.logits(hidden.data() + (T - 1) * C, 1, logits.data());
    const int32_t next = argmax(logits.data(), V);
    out.push_back(next);
    seq.push_back(next);
    if (next == eos) break;
  }
  return out;
}

TEST(Generate, GreedyWithCacheEqualsFullRecompute) {
  for (const BitNetConfig& c : {config_preset("tiny"), shape2()}) {
    Model m = random_model(c, 71);
    CpuModel cm(m);
    const auto prompt = random_tokens(7, c.vocab_size, 8);
    const auto got = greedy_generate(cm, prompt, 20);
    EXPECT_EQ(got.size(), 20u);
    EXPECT_EQ(got, greedy_by_recompute(cm, prompt, 20, -1));
    // Stops after eos (included).
    const int32_t eos = got[5];
    const auto stop = greedy_generate(cm, prompt, 20, eos);
    const size_t first = size_t(std::find(got.begin(), got.end(), eos) - got.begin());
    EXPECT_EQ(stop, std::vector<int32_t>(got.begin(), got.begin() + first + 1));
    // Stops at the context limit: prompt + output never exceed max_position_embeddings.
    const int64_t ctx = c.max_position_embeddings;
    const auto long_prompt = random_tokens(ctx - 3, c.vocab_size, 9);
    const auto tail = greedy_generate(cm, long_prompt, 20);
    EXPECT_EQ(tail.size(), 3u);
    EXPECT_EQ(tail, greedy_by_recompute(cm, long_prompt, 20, -1));
    EXPECT_TRUE(greedy_generate(cm, prompt, 0).empty());
    EXPECT_THROW(greedy_generate(cm, std::vector<int32_t>{}, 5), Error);
    EXPECT_THROW(greedy_generate(cm, random_tokens(ctx + 1, c.vocab_size, 1), 5), Error);
    EXPECT_THROW(greedy_generate(cm, prompt, -1), Error);
  }
}

TEST(Generate, HooksAreActiveDuringGeneration) {
  Model m = random_model(config_preset("tiny"), 72);
  CpuModel cm(m);
  const auto prompt = random_tokens(4, m.config.vocab_size, 10);
  RecordingHooks zero;
  zero.write_scale = 0.0f;
  zero.block = false;
  cm.set_hooks(&zero);
  const auto hooked = greedy_generate(cm, prompt, 6);
  // prompt once (T = 4), then 5 single-token steps; 2 calls per layer each
  EXPECT_EQ(zero.calls.size(), size_t(6 * 2 * m.config.num_hidden_layers));
  EXPECT_EQ(hooked, greedy_by_recompute(cm, prompt, 6, -1));
  cm.set_hooks(nullptr);
  EXPECT_NE(hooked, greedy_generate(cm, prompt, 6));
}

}  // namespace
}  // namespace tl
